"""Verdict rules (cce_core.report.verdicts), inpainting quality measures (cce_core.evaluate) and the metrics/glue
builder (cce_core.report.metrics)."""

import numpy as np
import pytest
import torch

from cce_core.evaluate import QUALITY, hole_quality, model_nsd, model_quality
from cce_core.masks import central_mask, random_blocks
from cce_core.models import ContextEncoder
from cce_core.nsd import NSDResult
from cce_core.report import (
    RunScale,
    build_metrics,
    glue_values,
    paired_quality,
    scale_note,
    seeds_report,
)
from cce_core.stats import MIN_SAMPLES, PAPER_TRAIN_IMAGES

PAPER_SCALE = RunScale(samples_per_model=MIN_SAMPLES, bottleneck=4000, width=64, train_images=PAPER_TRAIN_IMAGES)


def _result(values, normalized=True):
    return NSDResult(np.asarray(values, dtype=float), n=100, dims=8, normalized=normalized)


# --- the scale rule ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale, testable", [
    (PAPER_SCALE, True),
    (RunScale(7_500_000, 4000, 64, 1_000_000), True),
    (RunScale(MIN_SAMPLES - 1, 4000, 64, 10**6), False),  # too few samples, even with the paper's architecture
    (RunScale(10_000_000, 512, 64, 10**6), False),  # enough samples, wrong D
    (RunScale(10_000_000, 4000, 32, 10**6), False),  # enough samples, wrong width
    (RunScale(1_000_000, 4000, 64, 9600), False),  # 1 M samples from train-gpu.zip's 9,600 images: ~107 epochs
])
def test_scale_rule_uses_what_the_run_did(scale, testable):
    assert scale.is_paper_scale == testable
    note = scale_note(scale)
    assert (note is None) == testable
    if not testable:
        assert note.startswith(f"not testable at this scale ({scale.tier})")
    if scale.train_images == 9600:
        assert scale.tier == "paper architecture, reduced data" and "9,600 distinct training images" in note


# --- quality measures -----------------------------------------------------------------------------------------

def test_hole_quality_known_values():
    images = torch.zeros(2, 3, 32, 32)
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:24, 8:24] = 1
    out = images.clone()
    out[0] += masks[0] * 0.2  # error 0.2 in [-1, 1] = 0.1 in [0, 1], only in the hole
    out[1] = images[1]  # perfect
    out[1, :, 0, 0] = 1.0  # an error on a known pixel does not count
    q = hole_quality(out, images, masks)
    np.testing.assert_allclose(q["l1"], [0.1, 0.0], atol=1e-7)
    np.testing.assert_allclose(q["psnr"][0], 20.0, rtol=1e-6)  # 10 log10(1 / 0.01)
    assert q["psnr"][1] == pytest.approx(100.0)  # MSE clamped at 1e-10
    assert q["ssim"][1] > q["ssim"][0] and q["ssim"][1] <= 1.0
    with pytest.raises(ValueError, match="no missing pixel"):
        hole_quality(out, images, torch.zeros(2, 1, 32, 32))


def test_psnr_favours_blur():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 64, 64, generator=g) * 2 - 1
    masks = torch.zeros(4, 1, 64, 64)
    masks[:, :, 16:48, 16:48] = 1
    blur = images * (1 - masks)  # the hole filled with the mean value 0 ([-1, 1] scale): the blurriest guess
    sharp = torch.where(masks.bool().expand_as(images), torch.rand(4, 3, 64, 64, generator=g) * 2 - 1, images)
    qb, qs = hole_quality(blur, images, masks), hole_quality(sharp, images, masks)
    assert qb["psnr"].mean() > qs["psnr"].mean()  # a plausible-looking texture loses to a flat fill on PSNR


def test_model_quality_and_paired():
    torch.manual_seed(0)
    a = ContextEncoder(128, 8, "full", width=8).eval()
    b = ContextEncoder(64, 8, "full", width=8).eval()
    images = (torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    masks = random_blocks(2, 128, torch.Generator().manual_seed(2))
    qa, qb = model_quality(a, images, masks, batch_size=2), model_quality(b, images, masks)
    assert set(qa) == set(QUALITY) and all(v.shape == (3,) for v in qa.values())
    pq = paired_quality(qa, qa)
    assert all(p["mean"] == 0 and p["direction"] == "no difference detected for these two networks"
               for p in pq.values())
    assert set(paired_quality(qa, qb)) == set(QUALITY)


def test_build_metrics_and_glue_keys():
    torch.manual_seed(0)
    models = {"ce128": ContextEncoder(128, 8, "full", width=8).eval(),
              "cce128": ContextEncoder(128, 8, "full", width=8).eval(),
              "ce64": ContextEncoder(64, 8, "full", width=8).eval()}
    images = (torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    masks = random_blocks(4, 128, torch.Generator().manual_seed(2))
    results = {m: model_nsd(models[m], images, masks, progress=False) for m in models}
    run = {"steps": 10, "batch_size": 4, "samples": 40, "bottleneck": 8, "width": 8, "seed": 0,
           "full_known_weight": 1.0, "train_data": "embedded (16 crops)", "train_images": 16}
    runs = {f"{m}-{mk}": {**run, "model": m, "mask": mk} for m in models for mk in ("random_blocks", "central")}
    quality = {f"{m}-random_blocks": model_quality(models[m], images, masks[:2]) for m in models}
    quality.update({f"{m}-central": model_quality(models[m], images, central_mask(1, 128))
                    for m in ("ce128", "cce128")})
    prov = {"device": "CPU", "commit": "abc", "date": "today", "torch": "2"}
    metrics = build_metrics(preset="smoke", seed=0, mask="random_blocks", eval_data="embedded (4 crops)", k=4, n=4,
                            q=2, runs=runs, results=results, quality=quality, provenance=prov)
    assert metrics["train_images"] == 16 and metrics["tier"] == "reduced scale" and "verdicts" not in metrics
    metrics["seeds"] = seeds_report([metrics])
    metrics["verdicts"] = metrics["seeds"]["verdicts"]
    g = glue_values(metrics)
    for m in ("ce128", "cce128"):
        for stat in ("mean", "std", "lo", "hi"):
            assert isinstance(g[f"nsd_{m}_normalized_{stat}"], float)
    for stat in ("mean", "lo", "hi"):
        assert isinstance(g[f"diff_normalized_{stat}"], float)
    assert isinstance(g["verdict_lower_normalized"], str) and g["verdict_lower_normalized"].startswith("one seed")
    assert "40 image samples per model" in g["run_scale"] and "D = 8" in g["run_scale"] and "k = 4" in g["run_scale"]
    assert g["run_batch_size"] == ", ".join(sorted({str(r["batch_size"]) for r in metrics["runs"].values()}))
    assert g["nsd_ce128_normalized_mean"] == pytest.approx(results["ce128"].normalized.mean)
    assert all(isinstance(v, (float, int, str)) for v in g.values())
    for key in ("qdiff_rb_psnr_mean", "qdiff_c_ssim_lo", "q_ce64_rb_l1_mean", "quality_agreement",
                "verdict_lower_raw", "verdict_lower_std", "verdict_ce_value", "verdict_cce_value",
                "verdict_better_psnr", "verdict_better_central_ssim", "seeds_summary", "run_tier", "tier_line",
                "across_nsd_normalized_ci"):
        assert key in g, key
    assert g["quality_agreement"].startswith("Seed 0's networks, on its 4 images (4 NSD masks, the first 2 for "
                                             "quality)")


def test_checkpoint_curve(tmp_path):
    import shutil

    from cce_core.config import make_config
    from cce_core.evaluate import checkpoint_curve
    from cce_core.train import train

    cfg = make_config("smoke", model="ce128", mask="random_blocks", steps=4, batch_size=4, width=8, bottleneck=16,
                      log_every=1, checkpoint_every=2, device="cpu", embedded_count=8)
    ckpt = train(cfg, tmp_path / "run", stop_after=2, progress=False)
    shutil.copy(ckpt, tmp_path / "step2.pt")
    train(cfg, tmp_path / "run", resume=True, progress=False)
    images = (torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    g = torch.Generator().manual_seed(2)
    rows = checkpoint_curve([tmp_path / "step2.pt", ckpt], images, random_blocks(3, 128, g), random_blocks(1, 128, g))
    assert [r["step"] for r in rows] == [2, 4]
    assert rows[0]["nsd_normalized"] != rows[1]["nsd_normalized"] and all(np.isfinite(r["psnr"]) for r in rows)


def test_summaries_name_their_seeds_images_and_masks():
    """Issue 30 fault 10: the out-of-distribution summary leads with the seed-level result (what the verdicts read)
    and says that the image-level interval is the first seed's; the along-training summary opens with its source."""
    from cce_core.report import curve_summary, ladder_curves
    from cce_core.report.metrics import ood_summary

    stat = {"mean": 0.05, "ci95": [0.04, 0.06]}
    ood = {"data": "bsds (100 images)", "paired": {"normalized": {"mean": 0.004, "ci95": [0.001, 0.007]}},
           **{f"{m}_{r}": stat for m in ("ce128", "cce128") for r in ("normalized", "raw", "standardized")}}
    metrics = {"ood": ood, "seed": 0, "n": 100}
    alone = ood_summary(metrics)
    assert alone.startswith("On bsds (100 images), seed 0's networks")
    assert "image-level 95% CI [+0.001, +0.007]" in alone
    metrics["seeds"] = {"across": {"ood_nsd_normalized": {"n_seeds": 5, "mean": 0.0032, "ci95": [-0.0004, 0.0067],
                                                          "agree": [4, 5], "direction": "no difference detected"}}}
    both = ood_summary(metrics)
    assert both.startswith("Over 5 seeds, each on the same bsds (100 images) with 100 masks per image")
    assert "4 of 5 seeds agree in sign: no difference detected" in both and both.endswith(alone[-20:])
    assert ood_summary({}) == "This run measured no out-of-distribution set."
    entry = {"step": 75, "samples": 2400, "models": {m: {"nsd_normalized": {"mean": 0.07}, "psnr": {"mean": 14.0}}
                                                     for m in ("ce128", "cce128")}}
    ladder = [entry, {**entry, "step": 150, "samples": 4800}, {**entry, "step": 300, "samples": 9600}]
    curves = ladder_curves(ladder)
    assert [r["step"] for r in curves["cce128"]] == [75, 150, 300] and curves["ce128"][0]["psnr"] == 14.0
    text = curve_summary(curves, "mean over 5 seeds, 250 images with 25 masks")["summary"]
    assert text.startswith("mean over 5 seeds, 250 images with 25 masks: CE: over 3 points") and "ce128" not in text
