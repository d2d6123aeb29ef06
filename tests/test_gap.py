"""The evaluation-side factors of the NSD gap (cce_core.gap): each variant against a direct computation written
out here (hooks on a copy of the network, explicit loops over images and masks, numpy estimator), the chance
line's BatchNorm fit, the per-checkpoint cache, the factor's ratio and share, and the spread over images."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cce_core import gap
from cce_core.cascade import CascadeContextEncoder
from cce_core.checkpoint import atomic_save, build_models, load_model, model_state
from cce_core.config import make_config
from cce_core.evaluate import eval_masks, model_nsd
from cce_core.gap import (
    OURS,
    PAPER_SPREAD,
    VARIANTS,
    Variant,
    chance_model,
    factor_effect,
    fit_bn,
    measure_checkpoint,
    spread,
    variant_masks,
    variant_nsd,
)
from cce_core.masks import PATHAK_FILL, fill_hole, random_blocks
from cce_core.models import ContextEncoder
from cce_core.nsd import nsd
from cce_core.seeding import derive_seed

K, N, D = 3, 4, 12


def _images(k: int, seed: int) -> torch.Tensor:
    return torch.rand(k, 3, 128, 128, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _calibration(k: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    return _images(k, 7), random_blocks(k, 128, torch.Generator().manual_seed(8))


def _model(cascade: bool) -> ContextEncoder | CascadeContextEncoder:
    """A tiny CE (or cascade) with its BatchNorm statistics fitted, so that every reading is away from defaults."""
    torch.manual_seed(0)
    ce = fit_bn(ContextEncoder(128, D, "full", width=8), *_calibration())
    if not cascade:
        return ce
    ce64 = fit_bn(ContextEncoder(64, D, "full", width=8), *_calibration())
    return fit_bn(CascadeContextEncoder(ce64, ce), *_calibration())


def _fill(model, v: Variant, seed: int) -> torch.Tensor:
    """What fills the hole of mask i: (N, 3, s, s), written out independently of cce_core.gap."""
    if v.fill == "pathak":
        return torch.tensor(PATHAK_FILL).view(1, 3, 1, 1).expand(N, 3, 1, 1)
    if v.fill == "zero":
        return torch.zeros(N, 3, 1, 1)
    side = 64 if isinstance(model, CascadeContextEncoder) else 128
    g = torch.Generator().manual_seed(derive_seed(0, gap.NOISE_STREAM))
    return torch.rand(N, 3, side, side, generator=g) * 2 - 1


def _net_input(model, x: torch.Tensor, m: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The encoder's input for one image x (1, 3, 128, 128), mask m (1, 1, 128, 128) and fill f: eq. (1) spelled
    out for the cascade (its 64 CE's hole filled with f), the filled image for a CE."""
    if not isinstance(model, CascadeContextEncoder):
        return x * (1 - m) + f * m
    small, sm = F.avg_pool2d(x * (1 - m), 2), F.max_pool2d(m, 2)
    pred = model.ce64(small * (1 - sm) + f * sm)
    coarse = F.interpolate(small * (1 - sm) + pred * sm, scale_factor=2, mode="bilinear", align_corners=False)
    return x * (1 - m) + coarse * m


@torch.no_grad()
def _direct_codes(model, images: torch.Tensor, masks: torch.Tensor, v: Variant) -> np.ndarray:
    """Codes (k, n, D) by forward passes of a copy of the network with a hook on the code's module: eval mode one
    (image, mask) at a time; train mode with the batch the variant names, built by explicit loops."""
    work = copy.deepcopy(model)
    work.train(v.bn_mode != "eval")
    ce = work.ce128 if isinstance(work, CascadeContextEncoder) else work
    module = {"conv": ce.bottleneck_conv, "bn": ce.bottleneck_act[0], "act": ce.bottleneck_act[1]}[v.code]
    out = []
    module.register_forward_hook(lambda mod, inp, o: out.append(o.flatten(1).clone()))
    fills = _fill(model, v, 0)
    inputs = [[_net_input(work, images[j:j + 1], masks[i:i + 1], fills[i:i + 1]) for i in range(N)] for j in range(K)]
    codes = np.zeros((K, N, D))
    for j in range(K):
        for i in range(N):
            if v.bn_mode == "eval":
                ce(inputs[j][i])
                codes[j, i] = out.pop().numpy()[0]
        if v.bn_mode == "masks":  # the n masked copies of image j as one batch
            ce(torch.cat(inputs[j]))
            codes[j] = out.pop().numpy()
    if v.bn_mode == "images":  # the k images under mask i as one batch
        for i in range(N):
            ce(torch.cat([inputs[j][i] for j in range(K)]))
            codes[:, i] = out.pop().numpy()
    return codes


def _direct_nsd(codes: np.ndarray, scale: np.ndarray, v: Variant) -> dict[str, np.ndarray]:
    """Section 3's estimator on codes (k, n, D), in the three readings, with the variant's Zbar and factor."""
    out = {}
    pooled = codes.reshape(-1, D).std(0)
    for reading, s in (("raw", np.ones(D)), ("normalized", scale), ("standardized", pooled)):
        z = codes / s
        zbar = z.mean(axis=1, keepdims=True) if v.zbar == "image" else z.mean(axis=(0, 1), keepdims=True)
        per_image = ((z - zbar) ** 2).sum(axis=(1, 2)) / (N * D)
        out[reading] = per_image * (N / (N - 1) if v.unbiased else 1)
    return out


def _scale(model, v: Variant) -> np.ndarray:
    ce = model.ce128 if isinstance(model, CascadeContextEncoder) else model
    bn = ce.bottleneck_bn
    return (np.sqrt(bn.running_var.double().numpy() + bn.eps) if v.code == "conv"
            else bn.weight.detach().double().abs().numpy())


def _check(model, v: Variant, measured, rtol: float = 1e-4) -> None:
    expected = _direct_nsd(_direct_codes(model, _images(K, 1), variant_masks(v.masks, N, 0), v), _scale(model, v), v)
    for reading, values in expected.items():
        np.testing.assert_allclose(getattr(measured, reading).per_image, values, rtol=rtol, err_msg=reading)


@pytest.mark.parametrize("cascade", [False, True])
def test_the_default_variant_is_the_books_nsd(cascade, one_thread):
    model = _model(cascade)
    ours = variant_nsd(model, _images(K, 1), OURS, n=N, seed=0, batch_size=3)
    book = model_nsd(model, _images(K, 1), eval_masks("random_blocks", N, 0), batch_size=3, progress=False)
    for reading in ("raw", "standardized", "normalized"):
        np.testing.assert_array_equal(getattr(ours, reading).per_image, getattr(book, reading).per_image)


@pytest.mark.parametrize("name", [x for x in VARIANTS if x not in ("masks_region", "chance")] + ["mixed"])
def test_each_variant_matches_a_direct_computation(name, one_thread):
    v = VARIANTS.get(name) or Variant(code="act", bn_mode="masks", masks="large", fill="noise", zbar="all",
                                      unbiased=True)
    model = _model(False)
    state = copy.deepcopy(model.state_dict())
    measured = variant_nsd(model, _images(K, 1), v, n=N, seed=0, batch_size=3)
    _check(model, v, measured)
    assert all(torch.equal(t, state[k]) for k, t in model.state_dict().items())  # train-mode BN ran on a copy


@pytest.mark.parametrize("v", [Variant(fill="noise"), Variant(fill="zero", bn_mode="masks"),
                               Variant(code="bn", bn_mode="images")], ids=["noise", "zero-masks", "bn-images"])
def test_cascade_variants_match_a_direct_computation(v, one_thread):
    model = _model(True)
    _check(model, v, variant_nsd(model, _images(K, 1), v, n=N, seed=0))


def test_bn_code_in_eval_mode_reads_as_the_conv_code(one_thread):
    model = _model(False)
    conv, bn = (variant_nsd(model, _images(K, 1), Variant(code=c), n=N) for c in ("conv", "bn"))
    np.testing.assert_allclose(bn.normalized.per_image, conv.normalized.per_image, rtol=1e-4)
    # train mode on the n copies: the BN output's within-image variance per dimension is gamma^2 (biased batch var)
    masks = variant_nsd(model, _images(K, 1), Variant(code="bn", bn_mode="masks"), n=N)
    np.testing.assert_allclose(masks.normalized.per_image, 1.0, rtol=1e-3)


def test_variant_masks_and_choices():
    assert torch.equal(variant_masks("blocks", 5, 3), eval_masks("random_blocks", 5, 3))
    large = variant_masks("large", 20, 3)
    assert (large.flatten(1).mean(1) <= 0.25).all() and not torch.equal(large[:5], variant_masks("blocks", 5, 3))
    for m in torch.cat([large[:, 0], large[:, 0].transpose(1, 2)]).numpy():  # every run of holes in a row or
        edges = np.diff(np.pad(m, ((0, 0), (1, 1))), axis=1)                  # column is at least 32 px long
        assert ((np.nonzero(edges == -1)[1] - np.nonzero(edges == 1)[1]) >= 32).all()
    with pytest.raises(ValueError, match="fill must be one of"):
        Variant(fill="grey")
    with pytest.raises(ValueError, match="needs calibration"):
        variant_nsd(_model(False), _images(K, 1), Variant(chance_seed=0), n=N)


@torch.no_grad()
def test_fit_bn_changes_the_statistics_only(one_thread):
    ce = ContextEncoder(128, D, "full", width=8)
    params = {k: p.clone() for k, p in ce.named_parameters()}
    images, masks = _calibration(6)
    fit_bn(ce, images, masks, batch_size=3)
    assert all(torch.equal(p, params[k]) for k, p in ce.named_parameters())
    assert not ce.training and all(bn.momentum == 0.1 for bn in ce.modules() if isinstance(bn, torch.nn.BatchNorm2d))
    # the cumulative average of the two batches' statistics, from the conv output of a train-mode copy
    out = []
    twin = copy.deepcopy(ce).train()
    twin.bottleneck_conv.register_forward_hook(lambda mod, inp, o: out.append(o.flatten(1).double()))
    for b in (slice(0, 3), slice(3, 6)):
        twin(fill_hole(images[b], masks[b]))
    bn = ce.bottleneck_bn
    np.testing.assert_allclose(bn.running_mean, (out[0].mean(0) + out[1].mean(0)) / 2, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(bn.running_var, (out[0].var(0) + out[1].var(0)) / 2, rtol=1e-4)
    assert int(bn.num_batches_tracked) == 2


@pytest.mark.parametrize("cascade", [False, True])
def test_the_chance_line_is_an_untrained_copy_with_fitted_statistics(cascade, one_thread):
    model = _model(cascade)
    state = copy.deepcopy(model.state_dict())
    cal = _calibration()
    chance = chance_model(model, *cal, seed=0)
    assert all(torch.equal(t, state[k]) for k, t in model.state_dict().items())  # the trained model is untouched
    ce, trained = (m.ce128 if cascade else m for m in (chance, model))
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(0, gap.CHANCE_STREAM))
        fresh = ContextEncoder(128, D, "full", width=8)
    assert all(torch.equal(p, q) for p, q in zip(ce.parameters(), fresh.parameters()))  # weights: the init
    assert not torch.equal(ce.bottleneck_bn.running_var, fresh.bottleneck_bn.running_var)  # statistics: fitted
    assert not torch.equal(ce.bottleneck_conv.weight, trained.bottleneck_conv.weight)
    if cascade:  # the cascade keeps its trained 64 CE
        kept, trained64 = chance.ce64.state_dict(), model.ce64.state_dict()
        assert all(torch.equal(t, trained64[k]) for k, t in kept.items())
    res = variant_nsd(model, _images(K, 1), VARIANTS["chance"], n=N, calibration=cal)
    assert np.isfinite(res.normalized.per_image).all() and res.normalized.mean > 0
    _check(chance, OURS, res)


def _checkpoint(path, seed: int) -> None:
    cfg = make_config("smoke", model="ce128", mask="random_blocks", bottleneck=D, width=8)
    torch.manual_seed(seed)
    g, _ = build_models(cfg)
    atomic_save(model_state(cfg, fit_bn(g, *_calibration()), 20), path)


class Stopped(Exception):
    """A measuring run stopped half-way."""


def test_the_cache_resumes_and_remeasures_a_changed_checkpoint(tmp_path, monkeypatch, one_thread):
    ckpt, cache, images, cal = tmp_path / "checkpoint.pt", tmp_path / "gap.json", _images(K, 1), _calibration()
    _checkpoint(ckpt, 0)
    calls, real = [], gap.variant_nsd

    def counted(model, imgs, v, *args, **kwargs):
        calls.append(v)
        if v.fill == "noise":
            raise Stopped
        return real(model, imgs, v, *args, **kwargs)

    monkeypatch.setattr(gap, "variant_nsd", counted)
    variants = {"ours": OURS, "zbar_all": VARIANTS["zbar_all"], "chance": VARIANTS["chance"]}
    first = measure_checkpoint(ckpt, variants, images, n=N, cache=cache, calibration=cal)
    assert len(calls) == 3
    assert first["ours"]["normalized"] == real(load_model(ckpt), images, OURS, N).normalized.per_image.tolist()
    assert measure_checkpoint(ckpt, variants, images, n=N, cache=cache, calibration=cal) == first and len(calls) == 3
    with pytest.raises(Stopped):  # "fill_zero" is written before "fill_noise" stops the run
        measure_checkpoint(ckpt, {**variants, "fill_zero": VARIANTS["fill_zero"], "fill_noise": VARIANTS["fill_noise"]},
                           images, n=N, cache=cache, calibration=cal)
    assert len(calls) == 5
    measure_checkpoint(ckpt, {**variants, "fill_zero": VARIANTS["fill_zero"]}, images, n=N, cache=cache,
                       calibration=cal)
    assert len(calls) == 5
    measure_checkpoint(ckpt, variants, images, n=N, cache=cache, calibration=(cal[0].flip(0), cal[1]))
    assert calls[5:] == [VARIANTS["chance"]]  # other calibration data: the chance line only
    _checkpoint(ckpt, 1)  # a changed checkpoint: everything again
    changed = measure_checkpoint(ckpt, variants, images, n=N, cache=cache, calibration=cal)
    assert len(calls) == 9 and changed["ours"]["normalized"] != first["ours"]["normalized"]
    with pytest.raises(ValueError, match="other images"):
        measure_checkpoint(ckpt, variants, images.flip(0), n=N, cache=cache)


def test_factor_effect_interval_covers_the_true_ratio():
    rng, sims, true, paper, ours = np.random.default_rng(0), 2000, 3.0, 0.79, 0.041
    covered = shared = 0
    for _ in range(sims):  # studies of 3 seeds; log-normal NSD, paired by seed
        ref = np.exp(rng.normal(math.log(ours), 0.3, 3))
        arm = ref * np.exp(rng.normal(math.log(true), 0.25, 3))
        fe = factor_effect(arm, ref, paper=paper, ours=ours)
        covered += fe.ratio.ci95[0] <= true <= fe.ratio.ci95[1]
        shared += fe.share_ci[0] <= math.log(true) / math.log(paper / ours) <= fe.share_ci[1]
    assert abs(covered / sims - 0.95) < 3 * math.sqrt(0.95 * 0.05 / sims) and shared == covered


def test_factor_effect_on_known_values():
    ref = np.array([0.04, 0.05, 0.03])
    fe = factor_effect(2 * ref, ref)
    ours = math.exp(np.log(ref).mean())
    assert fe.ratio.mean == pytest.approx(2) and fe.gap == pytest.approx(math.log(0.79 / ours))
    assert fe.share == pytest.approx(math.log(2) / math.log(0.79 / ours))
    assert fe.share_ci == pytest.approx((fe.share,) * 2)
    assert factor_effect([0.1], [0.05], ours=0.05).share_ci is None  # one seed: no interval
    with pytest.raises(ValueError, match="same seeds"):
        factor_effect([0.1, 0.2], [0.1])


def test_spread_over_images():
    assert spread([0.6, 0.79, 0.98]) == pytest.approx((0.19, 0.19 / 0.79))
    assert spread(nsd(np.random.default_rng(0).normal(size=(5, 4, 3))))[0] > 0
    assert PAPER_SPREAD["ce128"] == pytest.approx(0.215, abs=1e-3) and PAPER_SPREAD["cce128"] == pytest.approx(0.304,
                                                                                                              abs=1e-3)


def _measured(values: dict[str, dict[str, list[float]]], k: int = 6) -> dict[int, dict[str, dict]]:
    """Fake measure_checkpoint results: per seed, model and variant, k per-image values scattered around a mean."""
    rng = np.random.default_rng(0)
    out = {}
    for s in range(3):
        out[s] = {m: {name: {"normalized": (means[s] * np.exp(rng.normal(0, 0.2, k))).tolist()}
                      for name, means in by.items()} for m, by in values.items()}
    return out


def test_gap_rows_search_and_answer():
    """The page's table: ratios to the book's reading per seed, shares of log(paper / ours); the search finds the
    reading inside the paper's ± sd for both models with the cascade lower, and the answer says so."""
    from cce_core.gap import PAPER_NSD, gap_answer, gap_rows, paper_search

    ours = {"ce128": [0.04, 0.05, 0.045], "cce128": [0.05, 0.045, 0.05]}
    measured = _measured({m: {"ours": v, "zbar_all": [11 * x for x in v] if m == "cce128" else [17 * x for x in v],
                              "chance": [0.9, 0.9, 0.9]} for m, v in ours.items()})
    rows = gap_rows(measured)
    by = {(r["model"], r["key"]): r for r in rows}
    for m in ours:
        exact = [np.mean(measured[s][m]["ours"]["normalized"]) for s in range(3)]
        assert by[(m, "ours")]["NSD"] == pytest.approx(np.exp(np.mean(np.log(exact))))
        arm = [np.mean(measured[s][m]["zbar_all"]["normalized"]) for s in range(3)]
        ratio = np.exp(np.mean(np.log(np.divide(arm, exact))))
        assert by[(m, "zbar_all")]["ratio"] == pytest.approx(ratio)
        assert by[(m, "zbar_all")]["share of gap"] == pytest.approx(
            math.log(ratio) / math.log(PAPER_NSD[m] / by[(m, "ours")]["NSD"]))
        assert "ratio" not in by[(m, "ours")]
    search = paper_search(rows)
    assert [r["key"] for r in search][0] == "zbar_all" and search[0]["both within the paper's ± sd"]
    assert search[0]["cascade below CE"] and not any(r["both within the paper's ± sd"] for r in search[1:])
    from cce_core.gap import chance_levels

    for s in measured.values():  # the other readings, for chance_levels
        for by in s.values():
            for v in by.values():
                v["raw"] = v["standardized"] = v["normalized"]
    levels = chance_levels(measured)
    expected = np.exp(np.mean(np.log([np.mean(measured[s]["ce128"]["chance"]["normalized"]) for s in range(3)])))
    assert levels["ce128"]["normalized"] == pytest.approx(expected) == levels["ce128"]["raw"]
    assert set(levels) == {"ce128", "cce128"}
    answer = gap_answer(search, rows)
    assert "Z̄ over all codes" in answer and "inside the paper's" in answer and "chance line" in answer


def test_cell_rows_pair_each_arm_with_its_reference_by_seed():
    """Training-side cells: the ratio of the arm to the seed's own model at the same step, over the seeds the cell
    has (width 64: two of three), its share of the book's gap, the spread ratio; the search and the answer."""
    from cce_core.gap import cell_rows, cell_search, cell_variants, cells_answer

    rng, k = np.random.default_rng(1), 6

    def per_image(mean):
        return {"normalized": (mean * np.exp(rng.normal(0, 0.2, k))).tolist()}

    ref = {0: 0.04, 1: 0.05, 2: 0.045}
    cells = {s: {"d4000": {m: {"arm": {"ours": per_image(3 * r), "zbar_all": per_image(18 * r if m == "ce128" else
                                                                                            12 * r)},
                               "reference": {"ours": per_image(r), "zbar_all": per_image(6 * r)}}
                           for m in ("ce128", "cce128")}} for s, r in ref.items()}
    for s in (0, 1):
        cells[s]["width64"] = {"ce128": {"arm": {"ours": per_image(1.5 * ref[s])},
                                         "reference": {"ours": per_image(ref[s])}}}
    ours = {"ce128": 0.04, "cce128": 0.046}
    rows = cell_rows(cells, ours, {"d4000": "D = 4000"})
    by = {(r["cell"], r["model"], r["key"]): r for r in rows}
    assert len(rows) == 5 and by[("width64", "ce128", "ours")]["seeds"] == 2
    r = by[("d4000", "ce128", "ours")]
    arm = [np.mean(cells[s]["d4000"]["ce128"]["arm"]["ours"]["normalized"]) for s in ref]
    exact = [np.mean(cells[s]["d4000"]["ce128"]["reference"]["ours"]["normalized"]) for s in ref]
    assert r["ratio"] == pytest.approx(np.exp(np.mean(np.log(np.divide(arm, exact)))))
    assert r["share of gap"] == pytest.approx(math.log(r["ratio"]) / math.log(0.79 / 0.04))
    assert r["factor"] == "D = 4000" and 2 < r["ratio"] < 4.5 and r["ratio ci95"][0] < r["ratio"] < r["ratio ci95"][1]
    assert r["spread ratio"] > 0 and r["reference NSD"] == pytest.approx(np.exp(np.mean(np.log(exact))))
    search = cell_search(rows)
    assert search[0]["key"] == "zbar_all" and search[0]["within the paper's ± sd"] and search[0]["cascade below CE"]
    assert next(x for x in search if x["cell"] == "width64")["cascade below CE"] is None
    answer = cells_answer(rows, search)
    assert "D = 4000 moves the CE's NSD most: ×3" in answer and "land within the paper's values" in answer
    ranked = [{"key": x} for x in ("chance", "zbar_all", "ours", "code_bn", "unbiased")]
    assert list(cell_variants(ranked, "d4000")) == ["ours", "zbar_all", "code_bn"]
    assert list(cell_variants(ranked, "fillnoise", top=1)) == ["ours", "zbar_all", "fill_noise"]


def test_the_closest_choices_are_combined_in_pairs_of_different_factors():
    """The search measures pairs of the three single choices closest to the paper, where they change different
    fields of a Variant (two code tensors cannot be combined), each named "a+b" with both labels."""
    from cce_core.gap import VARIANT_LABELS, VARIANT_SHORT, combined_variants, variant_label

    ranked = [{"key": k} for k in ("chance", "zbar_all", "code_act", "code_bn", "bn_masks", "ours")]
    combos = combined_variants(ranked)
    assert combos == {"zbar_all+code_act": Variant(zbar="all", code="act"),
                      "zbar_all+code_bn": Variant(zbar="all", code="bn")}  # code_act and code_bn: one field
    assert variant_label("zbar_all+code_act") == f"{VARIANT_LABELS['zbar_all']} + {VARIANT_LABELS['code_act']}"
    assert VARIANT_SHORT.keys() == VARIANT_LABELS.keys() and max(map(len, VARIANT_SHORT.values())) <= 24
    assert variant_label("zbar_all+bn_masks", short=True) == "Z̄ over all codes + BN train, batch = masks"
    assert combined_variants(ranked, top=1) == {}
