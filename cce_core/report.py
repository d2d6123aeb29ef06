"""The reproduction report: each claim of the paper against our numbers, decided by rule, and every number and
table the book shows (``metrics.json``, the glue values, the seed, loss-variant and NSD-loss tables).

The measurements come from :mod:`cce_core.evaluate`, their intervals from :mod:`cce_core.stats`; this module only
compares, decides and formats.

**Verdicts** (issue 18). The paper's claims are about a training procedure, so every verdict reads the seed level:
per training seed, the image-level paired mean of cascade − CE (its image-level CI kept as a description of those two
networks); across seeds, :func:`cce_core.stats.crossed_interval` where the seeds' per-image values are stored (seeds
and images random; else :func:`cce_core.stats.seed_interval`; ``metrics.json``: ``seeds.across.<measure>``). With
one seed a verdict speaks of "these two trained networks" only. Whether a run can test the paper's claims depends
on what it did (:func:`cce_core.stats.scale_tier`: samples, D, width and distinct training images), not on the
preset's name: a verdict is made only at "paper scale"; below it the text says what was observed, and the page
names the tier once. Value claims (0.79, 0.56) are decided by equivalence (:func:`cce_core.stats.equivalence`) on
the BN-normalised NSD only, the reading whose null model is the paper's N(0, I) (section 3); the ordering claim
(cascade lower) is judged for each reading.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from .evaluate import QUALITY, READING_LABELS, READINGS, ModelNSD
from .nsd import NSDResult
from .stats import (
    EQUIVALENCE_MARGIN,
    MIN_SAMPLES,
    PAPER_BOTTLENECK,
    PAPER_CCE,
    PAPER_CE,
    PAPER_EFFECT,
    PAPER_TRAIN_IMAGES,
    PAPER_WIDTH,
    TIER_RULES,
    Equivalence,
    PairedComparison,
    SeedInterval,
    VarianceComponents,
    agree_in_sign,
    bootstrap_ci,
    calibration_table,
    crossed_interval,
    equivalence,
    nsd_loss_calibration,
    nsd_loss_verdict,
    paired_comparison,
    prediction_interval,
    ratio_interval,
    scale_tier,
    seed_direction,
    seed_interval,
    summary,
    variance_components,
)


@dataclass(frozen=True)
class RunScale:
    """What a training run did: the fewest image samples any compared model saw, its bottleneck D and width, and
    the fewest distinct training images any of them was trained on (from each run's ``config.json``)."""

    samples_per_model: int
    bottleneck: int
    width: int
    train_images: int

    @property
    def tier(self) -> str:
        """"paper scale", "paper architecture, reduced data" or "reduced scale" (:data:`TIER_RULES`)."""
        return scale_tier(self.samples_per_model, self.bottleneck, self.width, self.train_images)

    @property
    def shortfalls(self) -> list[str]:
        """Each way the run falls short of paper scale (empty at paper scale)."""
        out = []
        if self.samples_per_model < MIN_SAMPLES:
            out.append(f"{self.samples_per_model:,} image samples per model (paper scale ≥ {MIN_SAMPLES:,})")
        if self.bottleneck != PAPER_BOTTLENECK:
            out.append(f"D = {self.bottleneck} (paper {PAPER_BOTTLENECK})")
        if self.width != PAPER_WIDTH:
            out.append(f"width {self.width} (paper {PAPER_WIDTH})")
        if self.train_images < PAPER_TRAIN_IMAGES:
            out.append(f"{self.train_images:,} distinct training images (paper {PAPER_TRAIN_IMAGES:,})")
        return out

    @property
    def is_paper_scale(self) -> bool:
        return self.tier == "paper scale"


def scale_note(scale: RunScale) -> str | None:
    """Why a run cannot test the paper's claims (its tier and shortfalls), or None for a paper-scale run."""
    if scale.is_paper_scale:
        return None
    return f"not testable at this scale ({scale.tier}): " + ", ".join(scale.shortfalls)


def tier_line(scale: RunScale) -> str:
    """The run's tier in one sentence, stated once per page: what verdicts it allows, and why."""
    if scale.is_paper_scale:
        return "Tier: paper scale. The verdicts below decide the paper's claims at the seed level."
    return (f"Tier: {scale.tier} ({', '.join(scale.shortfalls)}). Verdicts on the paper's claims are made only at "
            "paper scale; at this tier each line says what was observed, with its seed-level interval.")


def verdict_word(verdict: str) -> str:
    """The verdict of a verdict sentence (:func:`verdict_order`, :func:`verdict_value`), for a table's verdict
    column: "reproduced", "not reproduced", "inconclusive", "equivalent", "different", "observed" (below paper
    scale) or "one seed"."""
    return verdict.split(":", 1)[0].strip()


def image_level_order(ci: tuple[float, float] | list[float]) -> str:
    """The sign of one seed's paired difference cascade − CE from its image-level 95% CI: a description of these
    two trained networks, not of the method."""
    lo, hi = ci
    return ("cascade lower for these two networks" if hi < 0 else "cascade higher for these two networks" if lo > 0
            else "no difference detected for these two networks")


def _ci_text(ci: tuple[float, float] | list[float], fmt: str) -> str:
    return f"[{format(ci[0], fmt)}, {format(ci[1], fmt)}]"


def verdict_order(across: dict, per_seed_ci: list[float] | None, scale: RunScale, what: str, good: str,
                  fmt: str = "+.4f") -> str:
    """A cascade − CE comparison decided at the seed level (``across``: :meth:`SeedInterval.as_dict` of the S
    per-seed means, with ``direction``). ``good``: "lower" or "higher", the side the paper's claim (or a better
    inpainting) is on; ``what`` names the measure. One seed: "these two trained networks", with their image-level
    CI ``per_seed_ci``, and no verdict. Paper scale, from the seed-level 95% CI: "reproduced" (on the claim's
    side of 0), "not reproduced" (on the other side: contrary evidence) or "inconclusive" (it covers 0: an
    underpowered run is no evidence either way); below paper scale: "observed", the same numbers without a verdict
    (the page names the tier)."""
    s, mean = across["n_seeds"], across["mean"]
    if across["ci95"] is None:
        ci = f", image-level 95% CI {_ci_text(per_seed_ci, fmt)}" if per_seed_ci is not None else ""
        return (f"one seed: these two trained networks differ by {format(mean, fmt)} in {what} (cascade − CE{ci}); "
                "one seed says nothing about the method")
    side = {"lower": "cascade lower", "higher": "cascade higher"}.get(across["direction"], "no difference detected")
    agree, _ = agree_in_sign(across["per_seed"])
    observed = (f"{side} in {what}: cascade − CE {format(mean, fmt)} over {s} seeds, seed-level 95% CI "
                f"{_ci_text(across['ci95'], fmt)}; {agree} of {s} seeds agree in sign")
    if not scale.is_paper_scale:
        return f"observed: {observed}"
    word = ("reproduced" if across["direction"] == good else "inconclusive"
            if across["direction"] == "no difference detected" else "not reproduced")
    return f"{word}: {observed}"


def verdict_value(ours: dict, eq: Equivalence, paper_mean: float, scale: RunScale, per_seed_ci: list[float] | None,
                  model: str) -> str:
    """Claim: the BN-normalised NSD of ``model`` equals the paper's ``paper_mean``, by equivalence
    (:func:`cce_core.stats.equivalence`, margin :data:`EQUIVALENCE_MARGIN`): "equivalent", "different" or
    "inconclusive" at paper scale; below it, what was observed; with one seed, these two networks only."""
    if ours["ci95"] is None:
        ci = f", image-level 95% CI {_ci_text(per_seed_ci, '.3f')}" if per_seed_ci is not None else ""
        return (f"one seed: this trained {model} has NSD {ours['mean']:.3f}{ci}; without a seed-level standard "
                f"error there is no equivalence test against the paper's {paper_mean}")
    observed = (f"ours {ours['mean']:.3f} over {ours['n_seeds']} seeds (seed-level 95% CI "
                f"{_ci_text(ours['ci95'], '.3f')}); ours − paper's {paper_mean} = {eq.difference:+.3f}, 90% CI "
                f"{_ci_text(eq.ci90, '+.3f')} against the margin ±{eq.margin:.3f}")
    if not scale.is_paper_scale:
        return f"observed: {observed} (the equivalence test would read {eq.verdict!r})"
    return f"{eq.verdict}: {observed}"




# --- comparisons of the CE and the cascade ----------------------------------------------------------------

#: Which way each number points, for the report page.
DIRECTION = {"nsd": "lower is better (the paper: codes of one image under different masks stay close)",
             "l1": "lower is better (mean absolute error in the hole)",
             "psnr": "higher is better, but it favours blur (a blurred mean prediction has a low squared error)",
             "ssim": "higher is better (local structure: mean, contrast and correlation in 7×7 windows)"}


def direction(ci: tuple[float, float] | list[float], higher_is_better: bool) -> str:
    """How one seed's cascade compares with its CE from the image-level 95% CI of the paired difference (cascade −
    CE): a description of these two trained networks, not of the method."""
    lo, hi = ci
    if lo > 0 or hi < 0:
        better = (lo > 0) == higher_is_better
        return f"cascade {'better' if better else 'worse'} for these two networks"
    return "no difference detected for these two networks"


def paired_quality(a: dict[str, np.ndarray], b: dict[str, np.ndarray], seed: int = 0) -> dict[str, dict]:
    """Per measure, b - a per image (b: the cascade, a: the CE): mean, 95% bootstrap CI, share of images where b
    is better, and the direction in words."""
    out = {}
    for name, higher in QUALITY.items():
        diff = b[name] - a[name]
        lo, hi = bootstrap_ci(diff, seed=seed)
        better = diff > 0 if higher else diff < 0
        out[name] = {"mean": float(diff.mean()), "ci95": [lo, hi], "fraction_better": float(better.mean()),
                     "direction": direction((lo, hi), higher), "per_image": diff.tolist()}
    return out


def curve_summary(curves: dict[str, list[dict]]) -> dict[str, Any]:
    """Whether NSD falls as the inpainting improves along training (section 3's premise), per model: the steps,
    BN-normalised NSD and PSNR of each snapshot and their Spearman rank correlation (-1: NSD falls exactly as PSNR
    rises; None with fewer than 3 snapshots), and one sentence for the report."""
    out: dict[str, Any] = {"models": {}}
    parts = []
    for name, rows in curves.items():
        steps = [r["step"] for r in rows]
        nsd_values = [r["nsd_normalized"] for r in rows]
        psnr_values = [r["psnr"] for r in rows]
        rho = float(spearmanr(nsd_values, psnr_values).statistic) if len(rows) >= 3 else None
        out["models"][name] = {"steps": steps, "nsd_normalized": nsd_values, "psnr": psnr_values,
                               "spearman_nsd_psnr": rho}
        if rho is None:
            parts.append(f"{name}: fewer than 3 snapshots, no trend")
            continue
        trend = ("NSD fell as PSNR rose" if rho <= -0.5 else "NSD rose as PSNR rose" if rho >= 0.5
                 else "no monotone relation between NSD and PSNR")
        parts.append(f"{name}: over {len(rows)} snapshots (steps {steps[0]}-{steps[-1]}), NSD "
                     f"{nsd_values[0]:.3f} → {nsd_values[-1]:.3f}, "
                     f"PSNR {psnr_values[0]:.2f} → {psnr_values[-1]:.2f} dB, "
                     f"Spearman ρ(NSD, PSNR) = {rho:+.2f}: {trend}")
    out["summary"] = "; ".join(parts) + "."
    return out


# --- metrics.json and glue ---------------------------------------------------------------------------------

def compare_readings(results: dict[str, ModelNSD], seed: int = 0) -> dict[str, PairedComparison]:
    """Paired NSD(cascade) - NSD(CE) on the same images and masks, for each of the three readings."""
    return {r: paired_comparison(getattr(results["ce128"], r), getattr(results["cce128"], r), seed=seed)
            for r in READINGS}


def run_info(config_json: str | Path, step: int | None = None) -> dict[str, Any]:
    """What a training run did, from its ``config.json`` (and the checkpoint's step, if given): samples seen,
    width, D, data and seed."""
    meta = json.loads(Path(config_json).read_text())
    cfg = meta["config"]
    steps = cfg["steps"] if step is None else step
    return {"model": cfg["model"], "mask": cfg["mask"], "steps": steps, "batch_size": cfg["batch_size"],
            "samples": steps * cfg["batch_size"], "bottleneck": cfg["bottleneck"], "width": cfg["width"],
            "seed": cfg["seed"], "full_known_weight": cfg.get("full_known_weight", 1.0),
            "train_data": meta["data"]["description"], "train_images": meta["data"]["images"]}


def scale_of(runs: dict[str, dict]) -> RunScale:
    """The run's scale for the verdicts: the fewest samples any model saw, the compared models' D and width, and the
    fewest distinct training images any of them was trained on."""
    dims = {(r["bottleneck"], r["width"]) for r in runs.values()}
    if len(dims) != 1:
        raise ValueError(f"the runs differ in bottleneck/width: {sorted(dims)}")
    (d, w), = dims
    return RunScale(samples_per_model=min(r["samples"] for r in runs.values()), bottleneck=d, width=w,
                    train_images=min(int(r["train_images"]) for r in runs.values()))


def run_scale_line(runs: dict[str, dict], eval_data: str, k: int, n: int, device: str) -> str:
    """One line saying the run's scale: samples per model, width, D, training data, evaluation data, k, n, device."""
    r = min(runs.values(), key=lambda r: r["samples"])
    most = max(x["samples"] for x in runs.values())
    if most > r["samples"]:  # runs cut by a time budget saw different numbers of samples
        seen = (f"{r['samples']:,} to {most:,} image samples per model (the fewest: {r['steps']:,} steps × batch "
                f"{r['batch_size']})")
    else:
        seen = f"{r['samples']:,} image samples per model ({r['steps']:,} steps × batch {r['batch_size']})"
    return (f"{seen}, "
            f"width {r['width']}, D = {r['bottleneck']}, trained on {r['train_data']}; NSD on k = {k} images of "
            f"{eval_data} × n = {n} masks; device {device}")


def _nsd_entry(res: NSDResult, seed: int) -> dict[str, Any]:
    lo, hi = bootstrap_ci(res.per_image, seed=seed)
    return {"mean": res.mean, "std": res.std, "ci95": [lo, hi], "dims": res.dims, "reading": res.reading,
            "per_image": res.per_image.tolist()}


def agreement(nsd_means: dict[str, float], quality: dict[str, dict], pair: dict[str, dict],
              nsd_direction: str) -> dict[str, Any]:
    """Does NSD agree with each quality measure? For the CE/cascade pair: the same direction; across the models
    NSD is defined for (the random-block ones): the same order, best first."""
    by_nsd = sorted(nsd_means, key=nsd_means.get)
    out: dict[str, Any] = {"order_nsd": by_nsd, "pair_nsd": nsd_direction}
    for name, higher in QUALITY.items():
        means = {m: quality[m][name]["mean"] for m in nsd_means}
        order = sorted(means, key=means.get, reverse=higher)
        out[name] = {"order": order, "same_order": order == by_nsd, "pair": pair[name]["direction"],
                     "pair_agrees": _same_way(nsd_direction, pair[name]["direction"])}
    return out


def _same_way(nsd_direction: str, quality_direction: str) -> bool:
    """NSD 'cascade lower' means better; agreement when both point the same way (or both show no difference)."""
    nsd_says = "better" if "lower" in nsd_direction else "worse" if "higher" in nsd_direction else "none"
    q_says = "better" if "better" in quality_direction else "worse" if "worse" in quality_direction else "none"
    return nsd_says == q_says


def build_metrics(*, preset: str, seed: int, mask: str, eval_data: str, k: int, n: int, q: int,
                  runs: dict[str, dict], results: dict[str, ModelNSD], quality: dict[str, dict[str, np.ndarray]],
                  provenance: dict, ood: dict[str, ModelNSD] | None = None, ood_data: str | None = None,
                  checkpoints: list[dict] | None = None) -> dict[str, Any]:
    """One seed's numbers, as one JSON-serialisable dict (written to ``metrics.json``): per model and reading the NSD
    with its image-level interval, and per cascade − CE comparison the image-level paired mean and interval. The
    verdicts are made across seeds (:func:`seeds_report`, ``metrics["seeds"]`` and ``metrics["verdicts"]``).

    ``runs``: :func:`run_info` per run name (``ce128-random_blocks`` ...); ``results``: NSD of ``ce128``,
    ``cce128`` and ``ce64`` (mask ``mask``); ``quality``: :func:`model_quality` per run name (both masks).
    """
    compared = {name: r for name, r in runs.items() if r["mask"] == mask}
    scale = scale_of(compared)
    comparisons = compare_readings(results, seed)
    metrics: dict[str, Any] = {
        "preset": preset, "seed": seed, "mask": mask, "k": k, "n": n, "quality_masks_per_image": q,
        "samples_per_model": scale.samples_per_model, "bottleneck": scale.bottleneck, "width": scale.width,
        "train_images": scale.train_images, "tier": scale.tier, "paper_scale": scale.is_paper_scale,
        "eval_data": eval_data, "train_data": next(iter(compared.values()))["train_data"],
        "run_scale": run_scale_line(compared, eval_data, k, n, provenance["device"]),
        "runs": runs, "provenance": provenance, "models": {}, "paired": {},
    }
    for m, res in results.items():
        for r in READINGS:
            metrics["models"][f"{m}_{r}"] = _nsd_entry(getattr(res, r), seed)
    for r, c in comparisons.items():
        metrics["paired"][r] = {"mean": c.mean, "ci95": list(c.ci), "p_value": c.p_value,
                                "fraction_lower": c.fraction_lower, "order": image_level_order(c.ci)}
    metrics["quality"] = {name: {mq: summary(v, seed) for mq, v in qv.items()} for name, qv in quality.items()}
    masks_measured = sorted({runs[name]["mask"] for name in quality})
    metrics["quality_paired"] = {mk: paired_quality(quality[f"ce128-{mk}"], quality[f"cce128-{mk}"], seed)
                                 for mk in masks_measured if f"ce128-{mk}" in quality and f"cce128-{mk}" in quality}
    if mask in metrics["quality_paired"]:
        nsd_means = {f"{m}-{mask}": results[m].normalized.mean for m in results}
        metrics["agreement"] = agreement(nsd_means, metrics["quality"], metrics["quality_paired"][mask],
                                         image_level_order(comparisons["normalized"].ci))
    if ood:
        oc = {r: paired_comparison(getattr(ood["ce128"], r), getattr(ood["cce128"], r), seed=seed) for r in READINGS}
        metrics["ood"] = {"data": ood_data, "paired": {r: {"mean": c.mean, "ci95": list(c.ci),
                                                           "per_image": c.diff.tolist()} for r, c in oc.items()},
                          **{f"{m}_{r}": {"mean": getattr(res, r).mean, "std": getattr(res, r).std}
                             for m, res in ood.items() for r in READINGS}}
    if checkpoints:
        metrics["checkpoints"] = checkpoints
    return metrics


def _agreement_text(metrics: dict) -> str:
    a = metrics.get("agreement")
    if not a:
        return "No agreement check: the CE/cascade pair was not measured with the NSD masks."
    names = {"l1": "in-hole L1", "psnr": "PSNR", "ssim": "SSIM"}
    pair = "; ".join(f"{names[q]}: {a[q]['pair']} ({'agrees' if a[q]['pair_agrees'] else 'disagrees'})"
                     for q in QUALITY)
    model = {"ce64": "64 CE", "ce128": "CE", "cce128": "cascade"}

    def ranking(runs: list[str]) -> str:
        return ", ".join(model.get(r.split("-")[0], r) for r in runs)

    order = "; ".join(f"{names[q]}: {ranking(a[q]['order'])} ({'same' if a[q]['same_order'] else 'different'})"
                      for q in QUALITY)
    kind = metrics["mask"].replace("_", " ")
    return (f"CE vs cascade ({kind}): BN-normalised NSD says {a['pair_nsd']}; {pair}. "
            f"The three {kind} models ranked best first, by NSD: {ranking(a['order_nsd'])}; by {order}.")


def glue_values(metrics: dict) -> dict[str, float | int | str]:
    """Every value the book pastes from the evaluation notebook, by glue key (floats, ints and strs only)."""
    g: dict[str, float | int | str] = {}
    for key, text in metrics["verdicts"].items():  # made across seeds: metrics["seeds"] (seeds_report)
        g[f"verdict_{key}"] = str(text)
        g[f"verdict_{key}_word"] = verdict_word(str(text))
    if "seeds" in metrics:
        g.update(seeds_glue(metrics["seeds"]))
    for key, e in metrics["models"].items():
        g[f"nsd_{key}_mean"], g[f"nsd_{key}_std"] = float(e["mean"]), float(e["std"])
        g[f"nsd_{key}_lo"], g[f"nsd_{key}_hi"] = float(e["ci95"][0]), float(e["ci95"][1])
    for r, c in metrics["paired"].items():
        g[f"diff_{r}_mean"] = float(c["mean"])
        g[f"diff_{r}_lo"], g[f"diff_{r}_hi"] = float(c["ci95"][0]), float(c["ci95"][1])
        g[f"diff_{r}_p"], g[f"diff_{r}_frac"] = float(c["p_value"]), float(100 * c["fraction_lower"])
    for name, qs in metrics["quality"].items():
        key = name.replace("-random_blocks", "_rb").replace("-central", "_c")
        for mq, s in qs.items():
            g[f"q_{key}_{mq}_mean"] = float(s["mean"])
            g[f"q_{key}_{mq}_lo"], g[f"q_{key}_{mq}_hi"] = float(s["ci95"][0]), float(s["ci95"][1])
    for mk, qs in metrics["quality_paired"].items():
        key = {"random_blocks": "rb", "central": "c"}.get(mk, mk)
        for mq, s in qs.items():
            g[f"qdiff_{key}_{mq}_mean"] = float(s["mean"])
            g[f"qdiff_{key}_{mq}_lo"], g[f"qdiff_{key}_{mq}_hi"] = float(s["ci95"][0]), float(s["ci95"][1])
            g[f"qdiff_{key}_{mq}_frac"] = float(100 * s["fraction_better"])
            g[f"qdiff_{key}_{mq}_direction"] = str(s["direction"])
    g["quality_agreement"] = _agreement_text(metrics)
    g["quality_q"] = int(metrics["quality_masks_per_image"])
    if "ood" in metrics:
        o = metrics["ood"]
        p = o["paired"]["normalized"]
        g["ood_summary"] = (f"On {o['data']}, seed {metrics['seed']}'s networks: BN-normalised NSD "
                            f"{o['ce128_normalized']['mean']:.3f} (CE) vs {o['cce128_normalized']['mean']:.3f} "
                            f"(cascade); paired difference (cascade − CE) {p['mean']:+.3f}, image-level 95% CI "
                            f"{_ci_text(p['ci95'], '+.3f')}. Raw: "
                            f"{o['ce128_raw']['mean']:.3f} vs {o['cce128_raw']['mean']:.3f}; eval-standardised: "
                            f"{o['ce128_standardized']['mean']:.4f} vs {o['cce128_standardized']['mean']:.4f}.")
    else:
        g["ood_summary"] = "This run measured no out-of-distribution set."
    g["eval_description"] = str(metrics["eval_data"])
    g["train_description"] = str(metrics["train_data"])
    g["eval_k"], g["eval_n"] = int(metrics["k"]), int(metrics["n"])
    g["samples_per_model"] = int(metrics["samples_per_model"])
    g["run_bottleneck"], g["run_width"] = int(metrics["bottleneck"]), int(metrics["width"])
    g["run_preset"] = str(metrics["preset"])
    g["run_seed"] = int(metrics["seed"])
    g["run_scale"] = str(metrics["run_scale"])
    fkw = sorted({float(r["full_known_weight"]) for r in metrics["runs"].values() if r["mask"] != "central"})
    g["run_full_known_weight"] = ", ".join(f"{w:g}" for w in fkw)
    for key in ("device", "commit", "date", "torch"):
        g[f"prov_{key}"] = str(metrics["provenance"][key])
    return g


# --- several training seeds: the unit of inference (issue 11 §5, issue 18) ------------------------------------------

#: The cascade − CE comparisons made per seed and across seeds: each NSD reading, the quality measures with the
#: NSD's mask and with the central mask, and each NSD reading out of distribution (where measured).
SEED_MEASURES = {**{f"nsd_{r}": f"NSD {READING_LABELS[r]}" for r in READINGS},
                 "l1": "in-hole L1", "psnr": "PSNR (dB)", "ssim": "SSIM",
                 **{f"central_{q}": f"{lbl}, central mask" for q, lbl in (("l1", "in-hole L1"), ("psnr", "PSNR (dB)"),
                                                                          ("ssim", "SSIM"))},
                 **{f"ood_nsd_{r}": f"NSD {READING_LABELS[r]}, out of distribution" for r in READINGS}}
#: Each model's own BN-normalised NSD per seed (for the value claims and the figure), not a comparison.
MODEL_MEASURES = {"ce128_nsd_normalized": "CE, NSD BN-normalised",
                  "cce128_nsd_normalized": "cascade, NSD BN-normalised"}
_FORMAT = {"psnr": "+.2f", "central_psnr": "+.2f"}
#: The side of 0 where each comparison favours the cascade (the paper's claim for NSD).
_GOOD = {**{x: "lower" for x in SEED_MEASURES if "nsd" in x}, "l1": "lower", "central_l1": "lower",
         **{x: "higher" for x in ("psnr", "ssim", "central_psnr", "central_ssim")}}


def load_seed_metrics(paths: list[str | Path]) -> list[dict]:
    """The ``metrics.json`` of other seeds' evaluations; a missing one is a one-line FileNotFoundError."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"another seed's metrics {p} does not exist (its nsd_eval must run first)")
        out.append(json.loads(p.read_text()))
    return out


def _seed_row(m: dict) -> dict[str, dict]:
    """One seed's image-level means and 95% CIs of every comparison it measured (and both models' NSD)."""
    row = {f"nsd_{r}": m["paired"][r] for r in READINGS}
    qp = m.get("quality_paired", {})
    row.update(qp.get(m["mask"], {}))
    if m["mask"] != "central":
        row.update({f"central_{q}": e for q, e in qp.get("central", {}).items()})
    row.update({f"ood_nsd_{r}": e for r, e in m.get("ood", {}).get("paired", {}).items()})
    row.update({f"{x}_nsd_normalized": m["models"][f"{x}_normalized"] for x in ("ce128", "cce128")})
    models = m["models"]
    for r in READINGS:  # the paired NSD per image: cascade − CE on the same image and masks
        a, b = models.get(f"ce128_{r}", {}).get("per_image"), models.get(f"cce128_{r}", {}).get("per_image")
        if a is not None and b is not None:
            row[f"nsd_{r}"] = {**row[f"nsd_{r}"], "per_image": np.subtract(b, a).tolist()}
    return {x: {"mean": float(e["mean"]), "ci95": [float(c) for c in e["ci95"]],
                **({"per_image": e["per_image"]} if "per_image" in e else {})} for x, e in row.items()}


def _across(per_seed: list[float], per_image: list | None = None, level: bool = False) -> dict[str, Any]:
    """One measure across seeds. With ``per_image`` (one row of per-image values per seed, the same images):
    :func:`cce_core.stats.crossed_interval` (seeds and images random); without: the t-interval over the per-seed
    values. A comparison (cascade − CE) gets its ``direction``, how many seeds ``agree`` in sign and the
    ``prediction95`` interval for one more seed; a model's own ``level`` gets none of them (its sign means nothing)."""
    iv = crossed_interval(per_image) if per_image is not None else seed_interval(per_seed)
    out = {**iv.as_dict(), "prediction95": prediction_interval(iv.per_seed)}
    if per_image is not None:  # for comparison: the t-interval over the seed means, which treats the images as fixed
        out["seed_t_ci95"] = list(seed_interval(iv.per_seed).ci95 or []) or None
    if not level:
        out.update(direction=seed_direction(iv), agree=list(agree_in_sign(iv.per_seed)))
    return out


def _per_image_rows(rows: list[dict]) -> list | None:
    """The seeds' per-image values of one measure as a (seeds, images) list, or None where a seed lacks them (a run
    made before they were stored) or the seeds measured different numbers of images."""
    values = [r.get("per_image") for r in rows]
    if len(values) < 2 or any(v is None for v in values) or len({len(v) for v in values}) != 1:
        return None
    return values


def seeds_report(metrics_list: list[dict]) -> dict[str, Any]:
    """The seed-level result of a run (issue 18), from each seed's ``metrics.json`` (the book's seed first).

    Per seed: the image-level paired mean of every cascade − CE comparison (:data:`SEED_MEASURES`) with its
    image-level 95% CI (a description of that seed's two networks). Across seeds (``across``, one entry per measure
    and per :data:`MODEL_MEASURES`): :func:`_across`'s interval (``ci95``, ``method``, ...) with its
    ``direction`` and how many seeds ``agree`` in sign. ``verdicts`` read from ``across`` only
    (:func:`verdict_order`, :func:`verdict_value`); ``tier`` is the lowest of the seeds'. Each seed is paired within
    itself (its own evaluation masks); the seeds must share the mask, k, n, D, width and preset.
    """
    if not metrics_list:
        raise ValueError("seeds_report needs at least one seed's metrics")
    seeds = [int(m["seed"]) for m in metrics_list]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the metrics repeat a seed: {seeds}")
    for key in ("mask", "k", "n", "bottleneck", "width", "preset"):
        values = {m[key] for m in metrics_list}
        if len(values) > 1:
            raise ValueError(f"the seeds' metrics differ in {key}: {sorted(values, key=str)}")
    per_seed = {s: _seed_row(m) for s, m in zip(seeds, metrics_list)}
    # a measure of the book's seed (e.g. the central mask, trained for the first seed only) is kept across the
    # seeds that measured it; the random-block NSD readings are measured by every seed
    measures = [x for x in [*SEED_MEASURES, *MODEL_MEASURES] if x in per_seed[seeds[0]]]
    across = {}
    for x in measures:
        rows = [per_seed[s][x] for s in seeds if x in per_seed[s]]
        across[x] = _across([r["mean"] for r in rows], _per_image_rows(rows), level=x in MODEL_MEASURES)
    first = metrics_list[0]
    scale = RunScale(min(int(m["samples_per_model"]) for m in metrics_list), first["bottleneck"], first["width"],
                     min(int(m["train_images"]) for m in metrics_list))
    one = per_seed[seeds[0]]  # the image-level CI that a measure of one seed reports
    verdicts = {f"lower_{'std' if x == 'nsd_standardized' else x[4:]}" if x.startswith("nsd_") else
                f"ood_lower_{x[8:]}" if x.startswith("ood_") else f"better_{x}":
                verdict_order(across[x], one[x]["ci95"] if across[x]["n_seeds"] == 1 else None, scale,
                              SEED_MEASURES[x], _GOOD[x], _FORMAT.get(x, "+.4f"))
                for x in measures if x in SEED_MEASURES}
    equivalences = {}
    for m, paper in (("ce128", PAPER_CE), ("cce128", PAPER_CCE)):
        x = f"{m}_nsd_normalized"
        eq = equivalence(_interval(across[x]), paper)
        equivalences[m] = eq.as_dict()
        verdicts[f"{m.replace('128', '')}_value"] = verdict_value(across[x], eq, paper, scale,
                                                                  one[x]["ci95"] if len(seeds) == 1 else None,
                                                                  _MODEL_LABELS[m])
    return {"seeds": seeds, "mask": first["mask"], "per_seed": per_seed, "across": across, "verdicts": verdicts,
            "equivalence": equivalences, "margin": EQUIVALENCE_MARGIN, "samples_per_model": scale.samples_per_model,
            "train_images": scale.train_images, "tier": scale.tier, "tier_line": tier_line(scale),
            "tier_rules": TIER_RULES, "summary": _seeds_summary(seeds, across, scale)}


def _interval(a: dict) -> SeedInterval:
    """The :class:`cce_core.stats.SeedInterval` of an ``across`` entry."""
    fields = ("mean", "ci95", "sd", "n_seeds", "per_seed", "method", "df", "se", "n_images", "p_value")
    kw = {f: a.get(f) for f in fields}
    kw["ci95"] = tuple(a["ci95"]) if a["ci95"] is not None else None
    kw["per_seed"] = tuple(a["per_seed"])
    if kw["se"] is None and a.get("sd") is not None:  # an entry written before se was stored: the seed t-interval
        kw["se"] = a["sd"] / a["n_seeds"] ** 0.5
    return SeedInterval(**kw)


def _fmt(x: str, v: float) -> str:
    return format(v, _FORMAT.get(x, "+.4f"))


def _seeds_summary(seeds: list[int], across: dict, scale: RunScale) -> str:
    """The headline: cascade − CE (BN-normalised NSD) over the seeds, its seed-level interval, the seeds agreeing in
    sign and the tier; with one seed, what these two trained networks show."""
    a = across["nsd_normalized"]
    if a["ci95"] is None:
        return (f"One training seed ({seeds[0]}): these two trained networks differ by {a['mean']:+.4f} in "
                f"BN-normalised NSD (cascade − CE). One seed describes these two networks, not the training "
                f"procedure: the seed-to-seed spread, which a verdict needs, is unknown. Tier: {scale.tier}.")
    agree, s = a["agree"]
    return (f"Across {s} training seeds ({', '.join(map(str, seeds))}), cascade − CE in BN-normalised NSD is "
            f"{a['mean']:+.4f} on average, seed-level 95% CI [{a['ci95'][0]:+.4f}, {a['ci95'][1]:+.4f}] "
            f"({a['method']}); {agree} of {s} seeds agree in sign (the paper: {PAPER_EFFECT:+.2f}). "
            f"Tier: {scale.tier}.")


def seeds_rows(report: dict) -> list[dict]:
    """The per-seed table: one row per seed (each comparison's image-level mean and 95% CI), then, with several
    seeds, the mean over seeds with its seed-level 95% CI."""
    cols = [x for x in report["across"] if x in SEED_MEASURES]
    rows = [{"seed": str(s), **{f"Δ {SEED_MEASURES[x]}": f"{_fmt(x, row[x]['mean'])} "
                                f"[{_fmt(x, row[x]['ci95'][0])}, {_fmt(x, row[x]['ci95'][1])}]" if x in row
                                else "— (not trained for this seed)" for x in cols}}
            for s, row in report["per_seed"].items()]
    if len(report["seeds"]) > 1:
        rows.append({"seed": "mean over seeds [seed-level 95% CI]",
                     **{f"Δ {SEED_MEASURES[x]}": f"{_fmt(x, a['mean'])} [{_fmt(x, a['ci95'][0])}, "
                                                 f"{_fmt(x, a['ci95'][1])}]" if a["ci95"] is not None
                        else f"{_fmt(x, a['mean'])} (one seed)"
                        for x, a in report["across"].items() if x in cols}})
    return rows


def seeds_glue(report: dict) -> dict[str, str | int | float]:
    """The seed-level glue values: ``seeds_n``, ``seeds_list``, ``seeds_summary`` (the headline), ``run_tier``,
    ``tier_line``, ``tier_rules``, ``equivalence_margin``; per comparison ``across_<measure>_mean`` and
    ``across_<measure>_ci`` (the seed-level interval in words, or why there is none) and ``across_<measure>_agree``
    ("2 of 3")."""
    g: dict[str, str | int | float] = {
        "seeds_n": len(report["seeds"]), "seeds_list": ", ".join(map(str, report["seeds"])),
        "seeds_summary": report["summary"], "run_tier": report["tier"], "tier_line": report["tier_line"],
        "tier_rules": report["tier_rules"], "equivalence_margin": float(report["margin"])}
    for x, a in report["across"].items():
        f = _FORMAT.get(x, ".3f" if x in MODEL_MEASURES else "+.4f")
        g[f"across_{x}_mean"] = float(a["mean"])
        g[f"across_{x}_ci"] = (_ci_text(a["ci95"], f) if a["ci95"] is not None else
                               "none (one seed)" if len(report["seeds"]) == 1 else
                               f"none (seed {report['seeds'][0]} only: its models were trained for one seed)")
        if "agree" in a:
            g[f"across_{x}_agree"] = f"{a['agree'][0]} of {a['agree'][1]}"
        g[f"across_{x}_t_ci"] = (_ci_text(a["seed_t_ci95"], f) if a.get("seed_t_ci95") else
                                 "none (no per-image values, or one seed)")
    return g


def design_components(report: dict, measure: str = "nsd_normalized") -> VarianceComponents:
    """The run's own seed-level design for the calibration (:func:`cce_core.stats.calibration_table`): the variance
    components of the seeds' per-image differences in ``measure`` (:func:`seeds_report`). With one seed the seed sd
    cannot be told from the rest: it is 0, and the per-image spread is split evenly between the images and the rest
    (an assumption, said in :func:`calibration_glue`'s text)."""
    rows = [report["per_seed"][s][measure] for s in report["seeds"]]
    per_image = _per_image_rows(rows)
    if per_image is not None:
        return variance_components(per_image)
    values = rows[0].get("per_image")
    if values is None:
        raise ValueError(f"the seeds' metrics hold no per-image values of {measure} (a run made before they were "
                         "stored): the design's variance components cannot be read from it")
    half = float(np.std(values, ddof=1)) / np.sqrt(2)  # one seed: images and the rest split evenly (assumed)
    return VarianceComponents(0.0, half, half, 1, len(values))


#: The calibration table's rules: (column prefix, label).
CALIBRATION_RULES = (("crossed", "seeds and images random (the book's)"), ("t", "t over seed means"),
                     ("satterthwaite", "single t, Satterthwaite df"), ("image_one_seed", "one seed's image-level CI"),
                     ("image_every_seed", "every seed's image-level CI"))


def calibration_glue(rows: list[dict], comps: VarianceComponents) -> dict[str, str]:
    """The calibration in words for the report: ``calib_design`` (the simulated design), ``calib_t_vs_crossed``
    (both seed-level rules under no effect at 5 seeds, with the run's seed sd and with 0) and ``calib_power``
    (the book's rule at each effect of :func:`cce_core.stats.calibration_table`, 3 and 5 seeds)."""
    null = {(r["n_seeds"], r["seed_sd_of"]): r for r in rows if r["case"] == "no effect"}
    five, zero = null[5, "the run"], null[5, "zero"]
    power: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["case"] != "no effect":
            power.setdefault(r["case"], {})[r["n_seeds"]] = r["crossed_lower"]
    return {
        "calib_design": (f"sd {comps.seed_sd:.4f} between seeds, {comps.image_sd:.4f} between images and "
                         f"{comps.residual_sd:.4f} for the rest, k = {comps.n_images} images"
                         + ("; with one seed the seeds' part is unknown, taken as 0, and the per-image spread is "
                            "split evenly between the images and the rest, an assumption" if comps.n_seeds == 1
                            else "")),
        "calib_t_vs_crossed": (
            f"with 5 seeds the t-interval over seed means says \"lower\" under no effect in "
            f"{100 * five['t_lower']:.1f}% of studies and the book's interval in {100 * five['crossed_lower']:.1f}%; "
            f"with a seed sd of 0 "
            f"{100 * zero['t_lower']:.1f}% and {100 * zero['crossed_lower']:.1f}%"),
        "calib_power": "; ".join(f"{case}: {100 * p[3]:.0f}% with 3 seeds, {100 * p[5]:.0f}% with 5"
                                 for case, p in power.items()),
    }


def calibration_rows(rows: list[dict]) -> list[dict]:
    """:func:`cce_core.stats.calibration_table`'s rows for the report: the case, the seed sd, S, and per rule the
    rate of "lower" (and, under no effect, of "higher") in percent; "–" where a rule does not apply."""
    out = []
    for r in rows:
        null = r["case"] == "no effect"
        row = {"case": "no effect: lower / higher (%)" if null else f"effect {r['case']}: lower (%)",
               "seed sd": f"{r['seed_sd']:.4f}", "seeds": r["n_seeds"]}
        for key, label in CALIBRATION_RULES:
            lo, hi = r.get(f"{key}_lower"), r.get(f"{key}_higher")
            missing = lo is None or lo != lo  # None, or NaN after a pandas round trip
            row[label] = "–" if missing else f"{100 * lo:.1f} / {100 * hi:.1f}" if null else f"{100 * lo:.1f}"
        out.append(row)
    return out


# --- the reconstruction-loss weighting of the random-block models (issue 11 §2) ----------------------------------

#: What the loss-weighting comparison says when the run trained one weighting only.
ONE_WEIGHTING = ("one weighting only: this run trained the random-block models with the default uniform weighting "
                 "(reproduce --loss-variants adds eq. (1)'s, missing pixels only)")
_MODEL_LABELS = {"ce64": "64 CE", "ce128": "CE", "cce128": "cascade"}


def loss_variant_comparison(default: dict[str, ModelNSD], hole: dict[str, ModelNSD],
                            q_default: dict[str, dict[str, np.ndarray]], q_hole: dict[str, dict[str, np.ndarray]],
                            seed: int = 0) -> dict[str, Any]:
    """The random-block models trained with eq. (1)'s weighting (``full_known_weight = 0``, ``hole``) against the
    default uniform one (``default``), per model (``ce128``, ``cce128``), on the same images and masks: the paired
    difference hole − default (mean, 95% CI) of NSD in each reading and of in-hole L1/PSNR/SSIM; and, under
    eq. (1)'s weighting, the paired cascade − CE BN-normalised NSD (does the ordering survive the change?)."""
    out: dict[str, Any] = {"models": {}}
    for m in hole:
        nsd_part = {}
        for r in READINGS:
            c = paired_comparison(getattr(default[m], r), getattr(hole[m], r), seed=seed)
            nsd_part[r] = {"default": getattr(default[m], r).mean, "hole": getattr(hole[m], r).mean,
                           "mean": c.mean, "ci95": list(c.ci)}
        q_part = {}
        for q in QUALITY:
            d = q_hole[m][q] - q_default[m][q]
            lo, hi = bootstrap_ci(d, seed=seed)
            q_part[q] = {"default": float(q_default[m][q].mean()), "hole": float(q_hole[m][q].mean()),
                         "mean": float(d.mean()), "ci95": [lo, hi]}
        out["models"][m] = {"nsd": nsd_part, "quality": q_part}
    parts = []
    for m, e in out["models"].items():
        n, p = e["nsd"]["normalized"], e["quality"]["psnr"]
        parts.append(f"{_MODEL_LABELS.get(m, m)}: BN-normalised NSD {n['default']:.4f} → {n['hole']:.4f} "
                     f"(Δ {n['mean']:+.4f}, 95% CI [{n['ci95'][0]:+.4f}, {n['ci95'][1]:+.4f}]), in-hole PSNR "
                     f"Δ {p['mean']:+.2f} dB [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]")
    text = ("Random-block models trained with eq. (1)'s weighting (missing pixels only) against the default uniform "
            "weighting, same images and masks, eq. (1) − uniform: " + "; ".join(parts) + ".")
    if "ce128" in hole and "cce128" in hole:
        c = paired_comparison(hole["ce128"].normalized, hole["cce128"].normalized, seed=seed)
        out["cascade_minus_ce"] = {"mean": c.mean, "ci95": list(c.ci), "order": image_level_order(c.ci)}
        text += (f" With eq. (1)'s weighting, cascade − CE (BN-normalised) is {c.mean:+.4f}, image-level 95% CI "
                 f"[{c.ci[0]:+.4f}, {c.ci[1]:+.4f}]: {image_level_order(c.ci)}.")
    out["summary"] = text
    return out


def loss_variant_rows(cmp: dict[str, Any]) -> list[dict]:
    """The loss-weighting table: one row per model, each NSD reading and quality measure as uniform → eq. (1)
    with the paired difference and its 95% CI."""
    rows = []
    for m, e in cmp["models"].items():
        row = {"model": _MODEL_LABELS.get(m, m)}
        for r, v in e["nsd"].items():
            row[f"NSD {READING_LABELS[r]}"] = (f"{v['default']:.4f} → {v['hole']:.4f} ({v['mean']:+.4f} "
                                               f"[{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}])")
        for q, v in e["quality"].items():
            f = _FORMAT.get(q, "+.4f")
            row[SEED_MEASURES[q]] = (f"{v['default']:{f.lstrip('+')}} → {v['hole']:{f.lstrip('+')}} "
                                         f"({v['mean']:{f}} [{v['ci95'][0]:{f}}, {v['ci95'][1]:{f}}])")
        rows.append(row)
    return rows


# --- beyond the paper: the NSD-loss runs -------------------------------------------------------------------

#: The NSD-loss chapter's measures: (label, higher is better, compared as a ratio to lambda = 0 instead of a
#: difference). NSD in two readings (the BN-normalised one divides by the running variance the penalty could bend,
#: the eval-standardised one by the evaluation codes' own spread), the collapse checks and the in-hole quality.
NSD_LOSS_MEASURES: dict[str, tuple[str, bool, bool]] = {
    "nsd_normalized": ("NSD BN-normalised", False, False),
    "nsd_standardized": ("NSD eval-standardised", False, False),
    "code_spread": ("codes' spread between images", True, True),
    "fill_spread": ("fills' spread between images", True, True),
    "l1": ("in-hole L1", False, False),
    "psnr": ("PSNR (dB)", True, False),
    "ssim": ("SSIM", True, False),
}
#: From each run's last log line (:func:`cce_core.train.log_code_stats`): levels only, no verdict.
NSD_LOSS_LOG = {"code_weight_norm": "‖W‖ at the end", "code_var_ratio": "running / batch variance at the end"}


def _nsd_loss_values(r: dict) -> dict[str, Any]:
    """One evaluated model (:func:`cce_core.evaluate.evaluate_nsd_runs`' entry): its per-image arrays and scalars."""
    return {"nsd_normalized": r["nsd"].normalized.per_image, "nsd_standardized": r["nsd"].standardized.per_image,
            "code_spread": r["code_spread"], "fill_spread": r["fill_spread"], **r["quality"]}


def nsd_loss_summary(results: dict[int, dict[float, dict]]) -> dict[float, dict]:
    """The NSD-loss runs of one model compared with lambda = 0 at the seed level (:mod:`cce_core.stats`).

    ``results[seed][lambda]``: :func:`cce_core.evaluate.evaluate_nsd_runs`' entries (the same images and masks for
    every seed and lambda), optionally with ``"last_log"`` (the run's last log line). Per lambda: ``levels`` (each
    measure's mean over seeds, and the last log line's code statistics); for lambda > 0 ``diff`` (per measure the
    :class:`~cce_core.stats.SeedInterval` of the per-seed paired difference to the same seed's lambda = 0, the mean
    over images of per-image differences, or the per-seed ratio for the spreads) and ``verdict`` per NSD reading
    (:func:`cce_core.stats.nsd_loss_verdict` on in-hole L1, PSNR and SSIM).
    """
    seeds = sorted(results)
    if not seeds:
        raise ValueError("no seeds to compare")
    lambdas = sorted(results[seeds[0]])
    if 0.0 not in lambdas or any(sorted(results[s]) != lambdas for s in seeds):
        raise ValueError("every seed needs the same weights, lambda = 0 among them: "
                         f"{ {s: sorted(results[s]) for s in seeds} }")
    vals = {s: {lam: _nsd_loss_values(results[s][lam]) for lam in lambdas} for s in seeds}
    out: dict[float, dict] = {}
    for lam in lambdas:
        levels = {m: float(np.mean([np.mean(vals[s][lam][m]) for s in seeds])) for m in NSD_LOSS_MEASURES}
        logs = [results[s][lam].get("last_log") or {} for s in seeds]
        levels.update({k: float(np.mean([g[k] for g in logs])) for k in NSD_LOSS_LOG if all(k in g for g in logs)})
        entry: dict[str, Any] = {"levels": levels, "seeds": seeds}
        if lam != 0:
            diff = {}
            for m, (_, _, ratio) in NSD_LOSS_MEASURES.items():
                if ratio:  # a spread: its ratio to lambda = 0, interval on the log scale (positive bounds)
                    diff[m] = ratio_interval([vals[s][lam][m] / vals[s][0.0][m] for s in seeds])
                else:  # the same images for every seed: seeds and images random
                    d = [np.asarray(vals[s][lam][m]) - np.asarray(vals[s][0.0][m]) for s in seeds]
                    diff[m] = crossed_interval(d) if len(seeds) > 1 else seed_interval([float(np.mean(d[0]))])
            quality = {q: (diff[q], NSD_LOSS_MEASURES[q][1]) for q in QUALITY}
            entry["diff"] = diff
            entry["verdict"] = {reading: nsd_loss_verdict(diff[f"nsd_{reading}"], quality)
                                for reading in ("normalized", "standardized")}
        out[lam] = entry
    return out


def nsd_loss_calibration_text(results: dict[int, dict[float, dict]], measure: str = "psnr",
                               n_sims: int = 20_000) -> str:
    """How often :func:`cce_core.stats.nsd_loss_verdict` would say "supported" or "not supported" when the NSD
    loss changes no quality measure, with and without Holm's correction (:func:`cce_core.stats.nsd_loss_calibration`),
    on this run's design: its seeds, its images and the variance components of its per-image ``measure`` differences
    (the first lambda > 0 against lambda = 0; ``results`` as :func:`nsd_loss_summary` takes them)."""
    seeds = sorted(results)
    if len(seeds) < 2:
        return "With one training seed there is no seed-level verdict, so nothing to calibrate."
    lam = min(x for x in results[seeds[0]] if x > 0)
    d = [np.asarray(results[s][lam]["quality"][measure]) - np.asarray(results[s][0.0]["quality"][measure])
         for s in seeds]
    comps = variance_components(d)
    c = nsd_loss_calibration(comps, n_seeds=len(seeds), n_sims=n_sims)
    return (f"In {n_sims:,} simulated studies of this design ({len(seeds)} seeds, {comps.n_images} images, the "
            f"variance components of the {measure} differences at λ = {lam:g}) with no effect on any quality "
            f"measure, the rule says \"supported\" in {100 * c['holm_supported']:.1f}% and \"not supported\" in "
            f"{100 * c['holm_not_supported']:.1f}% of them (nominal 2.5% each); without Holm's correction it would "
            f"say so in {100 * c['uncorrected_supported']:.1f}% and {100 * c['uncorrected_not_supported']:.1f}%.")


def _interval_text(iv: SeedInterval, ratio: bool) -> str:
    f = ".2f" if ratio else "+.3g"
    sign = "×" if ratio else "Δ"
    if iv.ci95 is None:
        return f"{sign} {iv.mean:{f}} (one seed: no interval)"
    return f"{sign} {iv.mean:{f}} [{iv.ci95[0]:{f}}, {iv.ci95[1]:{f}}]"


def nsd_loss_rows(summaries: dict[str, dict[float, dict]]) -> list[dict]:
    """The chapter's table: one row per model and lambda, every cell a string (no NaN). lambda = 0: each measure's
    mean over seeds; lambda > 0: the mean, then the seed-level 95% CI of the paired difference to lambda = 0 (Δ) or
    of the ratio (×) for the spreads; with one seed the interval is missing and the cell says why."""
    rows = []
    for model, by_weight in summaries.items():
        for lam, e in by_weight.items():
            row: dict[str, Any] = {"model": model, "λ": f"{lam:g}", "seeds": len(e["seeds"])}
            for m, (label, _, ratio) in NSD_LOSS_MEASURES.items():
                level = e["levels"][m]
                text = f"{level:.3g}" if ratio else f"{level:.4g}"
                if lam == 0:
                    row[label] = text + (" (reference)" if ratio else "")
                else:
                    row[label] = f"{text}; {_interval_text(e['diff'][m], ratio)}"
            for k, label in NSD_LOSS_LOG.items():
                row[label] = (f"{e['levels'][k]:.3g}" if k in e["levels"]
                              else "not logged (a run older than this log field)")
            rows.append(row)
    return rows


def nsd_loss_findings(summary: dict[float, dict], model: str) -> str:
    """What the NSD loss did to one model (:func:`nsd_loss_summary`), one clause per lambda > 0: each NSD reading
    as a ratio of the means over seeds to lambda = 0's, the spreads between images (seed-level ratio intervals),
    the in-hole PSNR difference (seed-level interval) and the bottleneck convolution's weight norm at the end."""
    base = summary[0.0]["levels"]
    parts = []
    for lam, e in summary.items():
        if lam == 0:
            continue
        lv, d = e["levels"], e["diff"]
        ratio = {m: f"×{d[m].mean:.2g}" + (f" [{d[m].ci95[0]:.2g}, {d[m].ci95[1]:.2g}]" if d[m].ci95 else "")
                 for m in ("code_spread", "fill_spread")}
        psnr = d["psnr"]
        text = (f"λ = {lam:g}: NSD ×{lv['nsd_normalized'] / base['nsd_normalized']:.2g} BN-normalised and "
                f"×{lv['nsd_standardized'] / base['nsd_standardized']:.2g} eval-standardised (means over seeds, "
                f"against λ = 0); the codes' spread between images {ratio['code_spread']}, the fills' "
                f"{ratio['fill_spread']}; in-hole PSNR {psnr.mean:+.2f} dB"
                + (f" [{psnr.ci95[0]:+.2f}, {psnr.ci95[1]:+.2f}]" if psnr.ci95 else ""))
        if "code_weight_norm" in lv and "code_weight_norm" in base:
            text += f"; ‖W‖ at the end {lv['code_weight_norm']:.3g} (λ = 0: {base['code_weight_norm']:.3g})"
        parts.append(text)
    return f"The {model}: " + "; ".join(parts) + "."


def nsd_loss_verdict_text(entry: dict, lam: float) -> str:
    """One sentence per lambda > 0: the verdict of :func:`cce_core.stats.nsd_loss_verdict` in both NSD readings."""
    v = entry["verdict"]
    return (f"λ = {lam:g} ({len(entry['seeds'])} seed{'s' * (len(entry['seeds']) > 1)}): "
            f"judged by the BN-normalised NSD, {v['normalized']}; judged by the eval-standardised NSD, "
            f"{v['standardized']}")


# --- execution statistics (run.json) --------------------------------------------------------------------------

def _seed_and_name(key: str, first_seed: int) -> tuple[int, str]:
    """run.json's step key (``seed1/train-ce64-central``, ``nsd_eval``) as (seed, step name)."""
    folder, _, name = key.rpartition("/")
    return (int(folder.removeprefix("seed")) if folder else first_seed), name


def execution_rows(run: dict) -> list[dict]:
    """The steps of a reproduction, from its ``run.json`` (:class:`cce_core.reproduce.Recorder`): one row per step in
    the order it ran (call, seed, step, notebook, wall time in s, status), the notebook that failed if one did, and
    each call's wall time and status. A reproduction made in several calls into one folder (``--train-only``, then
    the notebooks) lists the earlier calls first (``earlier_calls``); a later call that reused a training shows it
    at about 0 s. Trainings (``train-*``) run without a notebook of their own (the Training page shows them all)."""
    rows = []
    calls = [*run.get("earlier_calls", []), run]
    for i, call in enumerate(calls, 1):
        label = f"{i} ({str(call.get('commit') or call.get('provenance', {}).get('commit', ''))[:7]})"
        for key, seconds in (call.get("wall_seconds") or {}).items():
            seed, name = _seed_and_name(key, run["seed"])
            training = name.startswith("train-")
            rows.append({"call": label, "seed": seed, "step": name,
                         "notebook": "— (training only)" if training else f"{key}.ipynb",
                         "wall time (s)": seconds, "status": "done"})
        failed = re.search(r"notebook (\S+)\.ipynb failed", call.get("error") or "")
        if failed:
            rows.append({"call": label, "seed": "", "step": failed.group(1), "notebook": f"{failed.group(1)}.ipynb",
                         "wall time (s)": None, "status": "failed"})
        rows.append({"call": label, "seed": "", "step": "whole call", "notebook": "",
                     "wall time (s)": call.get("total_wall_seconds"), "status": call.get("status", "unknown")})
    return rows


def training_rows(run: dict) -> list[dict]:
    """Each training of a reproduction, from its ``run.json``: seed, run, image samples seen (and planned), the
    step's wall time (training and its notebook), the training's own time and samples per second where
    ``run.json`` records the split (``stage_seconds``, runs made since it does; None before), and the device."""
    first = run["seed"]
    groups = run["training"] if "seed_folders" in run else {f"seed{first}": run["training"]}
    stages = run.get("stage_seconds", {})
    rows = []
    for group, trainings in groups.items():
        seed = int(group.removeprefix("seed"))
        prefix = "" if seed == first else f"seed{seed}/"
        for name, t in trainings.items():
            key = f"{prefix}train-{name}"
            train_s = t.get("train_seconds") or stages.get(key, {}).get("training")  # the log's, where it has it
            rows.append({"seed": seed, "run": name, "samples": t["samples"], "planned samples": t["planned_samples"],
                         "step wall time (s)": run.get("wall_seconds", {}).get(key),
                         "training (s)": train_s,
                         "samples/s": round(t["samples"] / train_s, 1) if train_s else None,
                         "device": t["device"]})
    return rows


# --- the scale ladder: the seed-level comparison at each training length (issue 21) ----------------------------------

#: The measures of the scale ladder (cascade − CE per point), with the side that favours the cascade.
LADDER_MEASURES = {**{f"nsd_{r}": "lower" for r in READINGS}, "l1": "lower", "psnr": "higher", "ssim": "higher"}


def scale_ladder(points: dict[int, dict[str, dict[str, dict]]], batch_size: int, bottleneck: int, width: int,
                 train_images: int, models: tuple[str, str] = ("ce128", "cce128")) -> list[dict[str, Any]]:
    """The seed-level result at each training length (``metrics.json`` → ``scale_ladder``).

    ``points``: per seed, :func:`cce_core.evaluate.ladder_seed`'s per-image values ``{step: {model: {measure:
    [k]}}}``. Per step (ascending): ``samples`` (step x ``batch_size``), ``per_seed`` {seed: {measure: the paired
    mean cascade − CE over the images and its image-level bootstrap 95% CI}},
    ``paired`` {measure: :func:`cce_core.stats.crossed_interval` over the seeds' per-image differences
    with ``direction``, ``agree``, ``prediction95`` (one more seed) and the ``verdict`` sentence
    (:func:`verdict_order` at that point's tier)}, and ``models`` {model: {measure: seed interval of the model's own
    mean}}. Every seed must have measured every step."""
    seeds = sorted(points)
    steps = sorted({int(st) for s in seeds for st in points[s]})
    ce, cce = models
    out = []
    for st in steps:
        if any(str(st) not in points[s] for s in seeds):
            raise ValueError(f"the ladder point at step {st} is missing for seed(s) "
                             f"{[s for s in seeds if str(st) not in points[s]]}")
        rows = {s: points[s][str(st)] for s in seeds}
        scale = RunScale(st * batch_size, bottleneck, width, train_images)
        entry: dict[str, Any] = {"step": st, "samples": st * batch_size, "n_seeds": len(seeds), "tier": scale.tier,
                                 "per_seed": {}, "paired": {}, "models": {}}
        for s in seeds:
            diffs = {x: np.subtract(rows[s][cce][x], rows[s][ce][x]) for x in LADDER_MEASURES}
            entry["per_seed"][s] = {x: {"mean": float(d.mean()), "ci95": list(bootstrap_ci(d, seed=s))}
                                    for x, d in diffs.items()}
        for x, good in LADDER_MEASURES.items():
            per_image = [np.subtract(rows[s][cce][x], rows[s][ce][x]).tolist() for s in seeds]
            a = _across([entry["per_seed"][s][x]["mean"] for s in seeds], per_image if len(seeds) > 1 else None)
            a["verdict"] = verdict_order(a, None, scale, SEED_MEASURES.get(x, x), good, _FORMAT.get(x, "+.4f"))
            entry["paired"][x] = a
        for m in models:
            entry["models"][m] = {x: _across([float(np.mean(rows[s][m][x])) for s in seeds],
                                             [list(rows[s][m][x]) for s in seeds] if len(seeds) > 1 else None,
                                             level=True) for x in LADDER_MEASURES}
        out.append(entry)
    return out


def ladder_rows(ladder: list[dict], measures: tuple[str, ...] = ("nsd_normalized", "nsd_standardized", "psnr"),
                ) -> list[dict]:
    """The ladder's table: one row per training length, per measure the seed-level mean cascade − CE with its 95%
    CI, the seeds agreeing in sign and the seed-level direction."""
    rows = []
    for e in ladder:
        row: dict[str, Any] = {"samples per model": f"{e['samples']:,}", "seeds": e["n_seeds"]}
        for x in measures:
            a, f = e["paired"][x], _FORMAT.get(x, "+.4f")
            row[f"Δ {SEED_MEASURES[x]} [95% CI]"] = f"{format(a['mean'], f)} {_ci_text(a['ci95'], f)}"
            row[f"{SEED_MEASURES[x]}: seeds agreeing, seed level"] = (f"{a['agree'][0]} of {a['agree'][1]}, "
                                                                      f"{a['direction']}")
        rows.append(row)
    return rows


def ladder_summary(ladder: list[dict], measure: str = "nsd_normalized") -> str:
    """The ladder in one sentence for the landing page: the seed-level cascade − CE at the shortest and the longest
    training, how the seeds agree there, and the prediction interval for one more seed at the longest."""
    first, last = ladder[0], ladder[-1]
    f = _FORMAT.get(measure, "+.4f")

    def at(e: dict) -> str:
        a = e["paired"][measure]
        return (f"{format(a['mean'], f)} {_ci_text(a['ci95'], f)} at {e['samples']:,} samples "
                f"({a['agree'][0]} of {a['agree'][1]} seeds agree in sign: {a['direction']})")

    pred = last["paired"][measure]["prediction95"]
    return (f"Along training, cascade − CE in {SEED_MEASURES[measure]} (mean over {last['n_seeds']} seeds, seed-level "
            f"95% CI): {at(first)}; {at(last)}. One more seed trained for {last['samples']:,} samples should land in "
            f"{_ci_text(pred, f)} (95% prediction interval).")


def seed_metrics_of(generated: str | Path) -> list[dict]:
    """The seeds' ``metrics.json`` of a run's ``generated/`` folder: the book's seed first, then ``seed*/``."""
    generated = Path(generated)
    others = sorted(generated.glob("seed*/metrics.json"), key=lambda p: int(p.parent.name[4:]))
    return load_seed_metrics([generated / "metrics.json", *others])


if __name__ == "__main__":  # python -m cce_core.report RUN/generated: the headline and the calibration of its design
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m cce_core.report RUN/generated")
    ms = seed_metrics_of(sys.argv[1])
    rep = seeds_report(ms)
    crossed = rep["across"]["nsd_normalized"]  # seeds_report keeps the t-interval beside it (seed_t_ci95)
    print(f"cascade − CE, BN-normalised NSD, {len(ms)} seeds: {crossed['mean']:+.5f}; t over seed means "
          f"{_ci_text(crossed['seed_t_ci95'], '+.5f')}; {crossed['method']} {_ci_text(crossed['ci95'], '+.5f')}")
    comps = design_components(rep)
    print(f"design: {comps}")
    for row in calibration_rows(calibration_table(comps, rep["across"]["ce128_nsd_normalized"]["mean"])):
        print(" | ".join(str(v) for v in row.values()))
    print(nsd_loss_calibration(comps))
