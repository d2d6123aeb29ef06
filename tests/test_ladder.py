"""The scale ladder of the CPU study (issue 21): its training lengths, the measurement of one seed's snapshots
(cached, resumable), the seed-level comparison at each length, and the reproduction's options around it."""

import json

import numpy as np
import pytest
import torch
from test_train import assert_same
from torch.utils.flop_counter import FlopCounterMode

from cce_core import evaluate
from cce_core import reproduce as reproduce_mod
from cce_core.checkpoint import load_checkpoint
from cce_core.compute import gflop_per_sample, ladder_compute
from cce_core.config import ladder_steps, make_config
from cce_core.evaluate import eval_masks, ladder_seed, snapshot_at
from cce_core.models import ContextEncoder
from cce_core.report import (
    LADDER_MEASURES,
    ladder_rows,
    ladder_summary,
    point_summary,
    scale_ladder,
    seeds_glue,
    seeds_report,
    seeds_rows,
)
from cce_core.reproduce import check_inputs, reproduce, toc_for
from cce_core.runs import ensure_extended, ensure_fair_cascades, ensure_run, extended_run_name, fair_run_name
from cce_core.stats import seed_interval
from cce_core.train import train


def test_ladder_steps_are_a_factor_two_apart_and_end_at_the_run():
    assert ladder_steps(600, 75) == [75, 150, 300, 600]
    assert ladder_steps(20, 5, points=3) == [5, 10, 20]
    for steps, every, points in ((20, 5, 4), (600, 100, 4), (600, None, 4), (300, 75, 4)):
        with pytest.raises(ValueError, match="no ladder"):
            ladder_steps(steps, every, points)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, folder, one_thread):
    """Two smoke trainings of the 128 CE (seeds 0 and 1), snapshots every 5 of their 20 steps."""
    root = tmp_path_factory.mktemp("ladder")
    return {s: ensure_run(root / f"seed{s}", "ce128", "random_blocks", "smoke", [folder], seed=s).parent
            for s in (0, 1)}


def test_snapshot_at_finds_snapshots_and_the_final_checkpoint(smoke_runs):
    run = smoke_runs[0]
    assert snapshot_at(run, 5).name == "step-0000005.pt"
    assert snapshot_at(run, 20).name in ("step-0000020.pt", "checkpoint.pt")
    with pytest.raises(FileNotFoundError, match="no snapshot at step 7"):
        snapshot_at(run, 7)


def test_ladder_seed_resumes_from_its_cache_and_refuses_other_images(smoke_runs, tmp_path, monkeypatch):
    images = torch.randint(0, 256, (3, 3, 128, 128), dtype=torch.uint8)
    masks = eval_masks("random_blocks", 3, seed=0)
    runs = {"a": smoke_runs[0], "b": smoke_runs[1]}
    cache = tmp_path / "ladder.json"
    first = ladder_seed(runs, [5, 10], images, masks, masks[:1], cache=cache)
    assert set(first) == {"5", "10"} and set(first["5"]) == {"a", "b"}
    assert set(first["5"]["a"]) == {f"nsd_{r}" for r in evaluate.READINGS} | set(evaluate.QUALITY) | {"measured"}
    assert all(len(v) == 3 for x, v in first["10"]["b"].items() if x != "measured")
    assert first["5"]["a"]["psnr"] != first["10"]["a"]["psnr"]  # two different snapshots were measured

    def no_model(*args, **kwargs):
        raise AssertionError("a cached point was measured again")

    monkeypatch.setattr(evaluate, "load_model", no_model)
    assert ladder_seed(runs, [5, 10], images, masks, masks[:1], cache=cache) == first
    with pytest.raises(ValueError, match="other images or masks"):
        ladder_seed(runs, [5], images.flip(0), masks, masks[:1], cache=cache)


def _points(deltas: dict[int, float], k: int = 50, steps=(75, 150)) -> dict:
    """Per seed, per-image values where the cascade's NSD is the CE's minus ``deltas[seed]`` (and PSNR plus it)."""
    rng = np.random.default_rng(0)
    out = {}
    for s, d in deltas.items():
        out[s] = {}
        for st in steps:
            ce = {x: rng.normal(0.5, 0.1, k) for x in LADDER_MEASURES}
            cce = {x: ce[x] + (d if x in ("psnr", "ssim") else -d) for x in LADDER_MEASURES}
            out[s][str(st)] = {"ce128": {x: v.tolist() for x, v in ce.items()},
                               "cce128": {x: v.tolist() for x, v in cce.items()}}
    return out


def test_scale_ladder_pairs_within_each_seed_and_decides_across_seeds():
    deltas = {0: 0.05, 1: 0.07, 2: 0.06}
    ladder = scale_ladder(_points(deltas), batch_size=32, bottleneck=512, width=32, train_images=9600)
    assert [e["samples"] for e in ladder] == [2400, 4800]
    e = ladder[-1]
    assert e["per_seed"][1]["nsd_normalized"]["mean"] == pytest.approx(-0.07)
    iv = seed_interval([-0.05, -0.07, -0.06])
    assert e["paired"]["nsd_normalized"]["mean"] == pytest.approx(iv.mean)
    assert e["paired"]["nsd_normalized"]["ci95"] == pytest.approx(list(iv.ci95))
    assert e["paired"]["nsd_normalized"]["direction"] == "lower"
    assert e["paired"]["psnr"]["direction"] == "higher"
    assert e["paired"]["nsd_normalized"]["verdict"].startswith("observed: cascade lower")  # reduced scale
    lo, hi = e["paired"]["nsd_normalized"]["prediction95"]
    assert lo < iv.ci95[0] and hi > iv.ci95[1]  # one more seed: wider than the interval of the mean
    assert e["models"]["ce128"]["nsd_normalized"]["n_seeds"] == 3
    rows = ladder_rows(ladder)
    assert rows[0]["samples per model"] == "2,400"
    assert rows[0]["Δ NSD BN-normalised [95% CI]"].endswith("; 3 of 3 agree, lower")
    assert "2,400 samples" in ladder_summary(ladder) and "19,200" not in ladder_summary(ladder)


def test_point_summary_states_one_point_with_its_masks():
    """Issue 29: the fair ladder's last point measured again on all the NSD page's masks, in words: each measure's
    seed-level interval, the seeds agreeing, one more seed's prediction interval and the masks it was measured on."""
    e = scale_ladder(_points({0: 0.05, 1: 0.07, 2: 0.06}), 32, 512, 32, 9600)[-1]
    text = point_summary(e, 100)
    a = e["paired"]["nsd_normalized"]
    assert text.startswith("At 4,800 samples, cascade − CE: NSD BN-normalised -0.0600 [")
    assert f"{a['prediction95'][0]:+.4f}" in text and "3 of 3 seeds agree in sign: lower" in text
    assert "PSNR (dB) +0.06" in text and "first 100 evaluation masks" in text


def test_scale_ladder_sees_no_difference_where_the_seeds_disagree():
    ladder = scale_ladder(_points({0: 0.05, 1: -0.05, 2: 0.01}), 32, 512, 32, 9600)
    assert ladder[0]["paired"]["nsd_normalized"]["direction"] == "no difference detected"


def test_scale_ladder_refuses_a_missing_point():
    points = _points({0: 0.05, 1: 0.06})
    del points[1]["150"]
    with pytest.raises(ValueError, match="step 150 is missing for seed"):
        scale_ladder(points, 32, 512, 32, 9600)


def _seed_metrics(seed: int, diff: float, central: bool) -> dict:
    """A minimal metrics.json of one seed for seeds_report."""
    e = {"mean": diff, "ci95": [diff - 0.01, diff + 0.01]}
    qp = {"random_blocks": {"l1": e, "psnr": e, "ssim": e}}
    if central:
        qp["central"] = {"l1": e, "psnr": e, "ssim": e}
    return {"seed": seed, "mask": "random_blocks", "k": 250, "n": 100, "bottleneck": 512, "width": 32,
            "preset": "study", "samples_per_model": 19200, "train_images": 9600,
            "paired": {r: e for r in ("normalized", "raw", "standardized")}, "quality_paired": qp,
            "models": {f"{m}_normalized": {"mean": 0.05, "ci95": [0.04, 0.06]} for m in ("ce128", "cce128")}}


def test_seeds_report_keeps_a_measure_of_the_first_seed_only():
    report = seeds_report([_seed_metrics(0, -0.01, True), _seed_metrics(1, -0.02, False),
                           _seed_metrics(2, -0.03, False)])
    assert report["across"]["nsd_normalized"]["n_seeds"] == 3
    assert report["across"]["central_l1"]["n_seeds"] == 1 and report["across"]["central_l1"]["ci95"] is None
    assert report["verdicts"]["better_central_l1"].startswith("one seed")
    assert "image-level 95% CI [-0.0200, +0.0000]" in report["verdicts"]["better_central_l1"]
    assert "seed 0 only" in seeds_glue(report)["across_central_l1_ci"]
    rows = {r["cascade − CE in"]: r for r in seeds_rows(report)}
    assert rows["in-hole L1, central mask"]["seed 1"] == "—"  # not trained for this seed
    assert rows["in-hole L1, central mask"]["over seeds [seed-level 95% CI]"].endswith("(one seed)")
    assert "[" in rows["NSD BN-normalised"]["over seeds [seed-level 95% CI]"]


def test_reproduce_refuses_a_ladder_it_cannot_make(tmp_path):
    args = dict(data=None, eval_data=None, ood_data=None, out=tmp_path / "o", device="cpu", seed=0, force=False,
                time_budget=None, pack=None, fast=False, nsd_loss=False, loss_variants=False, ladder=True,
                allow_dirty=True)
    with pytest.raises(ValueError, match="2 or more seeds"):
        check_inputs("study", seeds=[0], **args)
    with pytest.raises(ValueError, match="no ladder"):
        check_inputs("smoke", seeds=[0, 1], **args)  # 20 steps: no 4 points a factor 2 apart
    assert check_inputs("study", seeds=[0, 1], **args).ladder
    with pytest.raises(ValueError, match="--ladder with --fair-ladder"):
        check_inputs("study", seeds=[0, 1], **{**args, "ladder": False}, fair_ladder=True)
    with pytest.raises(ValueError, match="--extend-ladder continues the fair ladder"):
        check_inputs("study", seeds=[0, 1], **args, extend_ladder=True)


def test_nsd_loss_seeds_are_a_subset_of_the_seeds(tmp_path):
    args = dict(data=None, eval_data=None, ood_data=None, out=tmp_path / "o", device="cpu", seed=0, force=False,
                time_budget=None, pack=None, fast=False, nsd_loss=False, loss_variants=False, allow_dirty=True)
    plan = check_inputs("study", seeds=[0, 1, 2, 3], nsd_loss_seeds=[2, 0], **args)
    assert plan.nsd_loss and plan.nsd_loss_seeds == [0, 2]  # in the order of --seeds
    assert check_inputs("study", seeds=[0, 1], **{**args, "nsd_loss": True}).nsd_loss_seeds == [0, 1]
    assert check_inputs("study", seeds=[0, 1], **args).nsd_loss_seeds == []
    for bad in ([5], [1, 1]):
        with pytest.raises(ValueError, match="--nsd-loss-seeds"):
            check_inputs("study", seeds=[0, 1], nsd_loss_seeds=bad, **args)


def test_train_only_with_central_once_trains_the_central_models_for_the_first_seed(tmp_path, one_thread,
                                                                                   monkeypatch):
    """--central-once trains the central models for the first seed only; --fair-ladder (here a 3-point ladder of
    the smoke preset) adds each seed's cascades at the points before the last."""
    monkeypatch.setattr(reproduce_mod, "LADDER_POINTS", 3)
    out = tmp_path / "run"
    reproduce("smoke", out=out, seeds=[0, 1], central_once=True, train_only=True, book=False, device="cpu",
              allow_dirty=True, ladder=True, fair_ladder=True, extend_ladder=True)
    run = json.loads((out / "generated" / "run.json").read_text())
    assert run["status"] == "trained" and run["central_once"] and run["ladder"]["fair"]
    fair = {"cce128-random_blocks-fair5", "cce128-random_blocks-fair10", "cce128-random_blocks-fair40",
            "ce64-random_blocks-x40", "ce128-random_blocks-x40"}  # --extend-ladder: twice the length
    assert set(run["training"]["seed0"]) == {f"{m}-{mk}" for m in ("ce64", "ce128", "cce128")
                                             for mk in ("random_blocks", "central")} | fair
    assert set(run["training"]["seed1"]) == {f"{m}-random_blocks" for m in ("ce64", "ce128", "cce128")} | fair
    assert run["training"]["seed1"]["cce128-random_blocks-fair5"]["samples"] == 5 * 16
    assert run["training"]["seed1"]["ce128-random_blocks-x40"]["samples"] == 40 * 16
    assert all(t["train_seconds"] > 0 for t in run["training"]["seed1"].values())
    assert not (out / "generated" / "nsd_eval.ipynb").exists()  # no notebook ran


def test_the_study_part_of_the_toc_follows_the_run(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    assert "scale_ladder" not in toc_for(tmp_path)
    (tmp_path / "scale_ladder.ipynb").write_text("{}")
    assert "book/generated/scale_ladder" in toc_for(tmp_path)


def test_fair_cascades_train_each_stage_for_the_point_s_samples(tmp_path, folder, one_thread):
    """The fair ladder (issue 29): at each point a cascade whose 64 CE is its own snapshot at that step and whose
    128 stage trained that many steps; at the full length the seed's own cascade; asked again, reused."""
    runs = ensure_fair_cascades(tmp_path / "runs", [5, 10, 20], "smoke", [folder], seed=0)
    assert runs[20] == tmp_path / "runs" / "cce128-random_blocks"
    ce64 = tmp_path / "runs" / "ce64-random_blocks"
    for st in (5, 10):
        assert runs[st] == tmp_path / "runs" / fair_run_name("random_blocks", st)
        ckpt = load_checkpoint(runs[st])
        assert ckpt["step"] == st and ckpt["config"]["steps"] == st and ckpt["config"]["seed"] == 0
        assert ckpt["ce64"]["step"] == st, "the 64 CE is not the snapshot at the point"
        snap = load_checkpoint(snapshot_at(ce64, st))
        assert all(torch.equal(snap["G"][k], v) for k, v in ckpt["ce64"]["G"].items())
    assert load_checkpoint(runs[20])["ce64"]["step"] == 20
    stamps = {st: (r / "checkpoint.pt").stat().st_mtime_ns for st, r in runs.items()}
    again = ensure_fair_cascades(tmp_path / "runs", [5, 10, 20], "smoke", [folder], seed=0)
    assert again == runs and stamps == {st: (r / "checkpoint.pt").stat().st_mtime_ns for st, r in runs.items()}


def test_training_flops_are_counted_and_the_cascade_carries_its_64_ce():
    """The compute axis: FLOPs per sample counted from one iteration; the cascade's iteration costs more than the
    128 CE's (its 64 CE's forward), the 64 CE's less; a fair cascade at s costs s · (F64 + Fcce)."""
    g = gflop_per_sample("smoke")
    assert 0 < g["ce64"] < g["ce128"] < g["cce128"]
    cfg = make_config("smoke", model="ce64", mask="random_blocks")
    ce64 = ContextEncoder(64, cfg.bottleneck, cfg.output, cfg.variant, cfg.width).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ce64(torch.zeros(3, 3, 64, 64))
    assert g["cce128"] - g["ce128"] == pytest.approx(counter.get_total_flops() / 3 / 1e9, rel=1e-9)
    fair = ladder_compute([100, 200], {"ce64": 1.0, "ce128": 2.0, "cce128": 3.0})
    head = ladder_compute([100, 200], {"ce64": 1.0, "ce128": 2.0, "cce128": 3.0}, ce64_samples=200)
    assert fair == {"ce128": [0.2, 0.4], "cce128": [0.4, 0.8]}
    assert head == {"ce128": [0.2, 0.4], "cce128": [0.5, 0.8]}


def test_extended_runs_continue_the_seeds_run_exactly(tmp_path, folder, one_thread):
    """The ladder twice as far (issue 29): the seed's 128 CE continued to 40 steps in a run of its own is the run a
    40-step training of the seed makes, bit for bit, and the seed's own run is left at 20; the fair cascade at 40
    stands on the 64 CE continued the same way."""
    ext = ensure_extended(tmp_path / "runs", "ce128", "random_blocks", "smoke", [folder], 40, seed=0)
    own = tmp_path / "runs" / "ce128-random_blocks"
    assert ext == tmp_path / "runs" / extended_run_name("ce128", "random_blocks", 40) / "checkpoint.pt"
    assert load_checkpoint(own / "checkpoint.pt")["step"] == 20 and load_checkpoint(ext)["step"] == 40
    whole = train(make_config("smoke", model="ce128", mask="random_blocks", data=[folder], seed=0, steps=40),
                  tmp_path / "whole", progress=False)
    a, b = load_checkpoint(whole), load_checkpoint(ext)
    assert_same(a["G"], b["G"], "G")
    assert_same(a["rng"], b["rng"], "rng")
    assert load_checkpoint(snapshot_at(ext.parent, 25))["step"] == 25  # snapshots go on after the copy
    fair = ensure_fair_cascades(tmp_path / "runs", [40], "smoke", [folder], seed=0)[40]
    assert load_checkpoint(fair / "checkpoint.pt")["ce64"]["step"] == 40
    assert (tmp_path / "runs" / extended_run_name("ce64", "random_blocks", 40) / "checkpoint.pt").exists()
    with pytest.raises(ValueError, match="past the preset's 20 steps"):
        ensure_extended(tmp_path / "runs", "ce128", "random_blocks", "smoke", [folder], 20)
    with pytest.raises(ValueError, match="plain CEs"):
        ensure_extended(tmp_path / "runs", "cce128", "random_blocks", "smoke", [folder], 40)
