"""Several training seeds compared (issue 11 §5) and the loss-weighting comparison (§2), on synthetic numbers."""

import numpy as np
import pytest

from cce_core.evaluate import READINGS, ModelNSD
from cce_core.nsd import NSDResult
from cce_core.report import (
    ONE_SEED,
    ONE_WEIGHTING,
    RunScale,
    load_seed_metrics,
    loss_variant_comparison,
    loss_variant_rows,
    seeds_glue,
    seeds_report,
    seeds_rows,
    verdict_across_seeds,
)
from cce_core.runs import ensure_run, run_name

SMALL = RunScale(samples_per_model=320, bottleneck=64, width=16)


def fake_metrics(seed: int, nsd_ci: tuple[float, float], psnr_ci: tuple[float, float] = (0.1, 0.3),
                 samples: int = 2_000_000, d: int = 4000, width: int = 64) -> dict:
    """A metrics.json as build_metrics writes it, reduced to what the seed comparison reads."""
    mid = (nsd_ci[0] + nsd_ci[1]) / 2
    paired = {r: {"mean": mid * (10 if r == "raw" else 1), "ci95": [c * (10 if r == "raw" else 1) for c in nsd_ci]}
              for r in READINGS}
    quality = {"l1": {"mean": -0.01, "ci95": [-0.02, -0.005]},
               "psnr": {"mean": sum(psnr_ci) / 2, "ci95": list(psnr_ci)},
               "ssim": {"mean": 0.0, "ci95": [-0.01, 0.01]}}
    return {"seed": seed, "mask": "random_blocks", "k": 250, "n": 100, "bottleneck": d, "width": width,
            "preset": "paper", "samples_per_model": samples, "paired": paired,
            "quality_paired": {"random_blocks": quality, "central": {"psnr": {"mean": 9.0, "ci95": [8.0, 10.0]}}}}


# --- the rule ----------------------------------------------------------------------------------------------------

def test_verdict_across_seeds_holds_only_in_every_seed():
    assert verdict_across_seeds({0: (-0.3, -0.1), 1: (-0.2, -0.01), 2: (-0.5, -0.4)}, "cascade lower") \
        == "cascade lower holds in every seed (3 of 3: seeds 0, 1, 2)"
    text = verdict_across_seeds({0: (-0.3, -0.1), 1: (-0.2, 0.05), 2: (0.1, 0.2)}, "cascade lower")
    assert text.startswith("cascade lower holds in 1 of 3 seeds (seed 0)")
    assert "opposite, significantly, in seed 2" in text
    assert "not in every seed" in text and "holds in every seed" not in text
    text = verdict_across_seeds({0: (0.1, 0.2), 1: (0.3, 0.4)}, "cascade better", below=False)
    assert text.endswith("(2 of 2: seeds 0, 1)")
    assert "holds in 0 of 2" in verdict_across_seeds({0: (0.1, 0.2), 1: (0.3, 0.4)}, "cascade lower")
    assert verdict_across_seeds({0: (-0.3, -0.1)}, "cascade lower") == ONE_SEED
    with pytest.raises(ValueError, match="not an interval"):
        verdict_across_seeds({0: (0.2, 0.1), 1: (0.0, 0.1)}, "x")


def test_verdict_across_seeds_names_the_scale():
    text = verdict_across_seeds({0: (-0.3, -0.1), 1: (-0.2, -0.01)}, "cascade lower", scale=SMALL)
    assert text.startswith("not testable at this scale: 320 image samples") and "holds in every seed" in text


# --- the aggregation ---------------------------------------------------------------------------------------------

def test_seeds_report_per_seed_and_across():
    ms = [fake_metrics(0, (-0.30, -0.10)), fake_metrics(1, (-0.20, 0.02)), fake_metrics(2, (-0.5, -0.3))]
    rep = seeds_report(ms)
    assert rep["seeds"] == [0, 1, 2] and set(rep["per_seed"]) == {0, 1, 2}
    means = [-0.2, -0.09, -0.4]
    a = rep["across"]["nsd_normalized"]
    assert a["mean"] == pytest.approx(np.mean(means)) and a["sd"] == pytest.approx(np.std(means, ddof=1))
    assert (a["min"], a["max"]) == pytest.approx((-0.4, -0.09))
    assert rep["across"]["nsd_raw"]["mean"] == pytest.approx(10 * np.mean(means))
    assert "holds in 2 of 3 seeds (seeds 0, 2)" in rep["verdicts"]["lower_normalized"]
    assert "holds in every seed" in rep["verdicts"]["better_l1"]
    assert "holds in every seed" in rep["verdicts"]["better_psnr"]
    assert "0 of 3" in rep["verdicts"]["better_ssim"]
    g = seeds_glue(rep)
    assert g["seeds_n"] == 3 and g["verdict_lower_all_seeds"] == rep["verdicts"]["lower_normalized"]
    assert "3 training seeds (0, 1, 2)" in g["seeds_summary"]
    assert "NSD BN-normalised -0.2300 (sd 0.1572" in g["seeds_summary"]
    assert "not testable" not in g["seeds_summary"]  # paper-scale fake metrics
    rows = seeds_rows(rep)
    assert [r["seed"] for r in rows] == ["0", "1", "2", "mean of seeds (sd)"]
    assert rows[1]["Δ NSD BN-normalised"] == "-0.0900 [-0.2000, +0.0200]"


def test_seeds_report_one_seed_says_nothing_to_compare():
    rep = seeds_report([fake_metrics(4, (-0.3, -0.1), samples=320)])
    g = seeds_glue(rep)
    assert g["seeds_n"] == 1 and g["seeds_summary"] == ONE_SEED and g["verdict_lower_all_seeds"] == ONE_SEED
    assert [r["seed"] for r in seeds_rows(rep)] == ["4"]


def test_seeds_report_refuses_incomparable_seeds(tmp_path):
    with pytest.raises(ValueError, match="differ in bottleneck"):
        seeds_report([fake_metrics(0, (-1, 0)), fake_metrics(1, (-1, 0), d=512)])
    with pytest.raises(ValueError, match="repeat a seed"):
        seeds_report([fake_metrics(0, (-1, 0)), fake_metrics(0, (-1, 0))])
    with pytest.raises(FileNotFoundError, match="seed1/metrics.json does not exist"):
        load_seed_metrics([tmp_path / "seed1" / "metrics.json"])


def test_seeds_summary_below_paper_scale_says_so():
    rep = seeds_report([fake_metrics(0, (-0.3, -0.1), samples=320), fake_metrics(1, (-0.3, -0.1))])
    assert rep["summary"].endswith("All seeds: not testable at this scale: 320 image samples per model "
                                   "(paper scale ≥ 1,000,000).")
    assert rep["verdicts"]["lower_normalized"].startswith("not testable at this scale")


# --- the loss weighting ------------------------------------------------------------------------------------------

def _model_nsd(per_image: np.ndarray) -> ModelNSD:
    """The three readings of one model: here the same per-image values, scaled by 1, 2 and 3."""
    return ModelNSD(**{r: NSDResult(per_image=per_image * (1 + i), n=10, dims=8, normalized=r == "normalized",
                                    standardized=r == "standardized") for i, r in enumerate(READINGS)})


def test_loss_variant_comparison_is_paired():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 1.0, 20)
    default = {"ce128": _model_nsd(base), "cce128": _model_nsd(base * 0.9)}
    hole = {"ce128": _model_nsd(base - 0.1), "cce128": _model_nsd(base * 0.9 - 0.2 + 0.01 * rng.standard_normal(20))}
    q = {m: {"l1": base * 0.1, "psnr": base * 20, "ssim": base} for m in default}
    qh = {m: {"l1": base * 0.1, "psnr": base * 20 + 1.0, "ssim": base} for m in default}
    cmp = loss_variant_comparison(default, hole, q, qh)
    ce = cmp["models"]["ce128"]["nsd"]["normalized"]
    # the same shift on every image
    assert ce["mean"] == pytest.approx(-0.1) and ce["ci95"] == pytest.approx([-0.1, -0.1])
    assert cmp["models"]["ce128"]["nsd"]["raw"]["mean"] == pytest.approx(-0.2)
    assert cmp["models"]["cce128"]["quality"]["psnr"]["mean"] == pytest.approx(1.0)
    assert cmp["cascade_minus_ce"]["order"] == "cascade lower, significantly"
    assert "CE: BN-normalised NSD" in cmp["summary"] and "Δ -0.1000" in cmp["summary"]
    rows = loss_variant_rows(cmp)
    assert [r["model"] for r in rows] == ["CE", "cascade"] and "(+1.00 [+1.00, +1.00])" in rows[1]["PSNR (dB)"]
    assert ONE_WEIGHTING.startswith("one weighting only")


def test_hole_runs_have_their_own_name_and_refuse_the_central_mask(tmp_path):
    assert run_name("ce128", "random_blocks", 0.0) == "ce128-random_blocks-hole"
    assert run_name("ce128", "random_blocks") == run_name("ce128", "random_blocks", 1.0) == "ce128-random_blocks"
    assert run_name("ce64", "random_blocks", 0.5) == "ce64-random_blocks-known0.5"
    with pytest.raises(ValueError, match="central mask"):
        ensure_run(tmp_path, "ce128", "central", "smoke", ["embedded"], full_known_weight=0.0)
