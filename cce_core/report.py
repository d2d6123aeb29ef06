"""The reproduction report: each claim of the paper against our numbers, decided by rule, and every number and
table the book shows (``metrics.json``, the glue values, the seed, loss-variant and NSD-loss tables).

The measurements come from :mod:`cce_core.evaluate`, their intervals from :mod:`cce_core.stats`; this module only
compares, decides and formats.

**Verdicts.** Whether a run can test the paper's claims depends on what it did, not on the preset's name: a run is at
**paper scale** when every model saw at least :data:`MIN_SAMPLES` image samples with the paper's architecture
(D = 4000, width 64). Below that every verdict says "not testable at this scale" and what was observed.
The value claims (0.79, 0.56) are judged on the BN-normalised NSD only, the reading whose null model is the
paper's N(0, I) (section 3); the ordering claim (cascade lower) is judged for each reading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from .evaluate import QUALITY, READING_LABELS, READINGS, ModelNSD
from .nsd import NSDResult
from .stats import (
    PairedComparison,
    SeedInterval,
    bootstrap_ci,
    nsd_loss_verdict,
    paired_comparison,
    seed_interval,
    summary,
)

#: The paper's headline numbers (section 5): NSD mean +- std over k = 250 images and n = 100 masks.
PAPER = {"ce": (0.79, 0.17), "cce": (0.56, 0.17), "k": 250, "n": 100, "train_images": 100_000}
#: Image samples per model in Pathak's recipe (500 epochs of Paris StreetView, spec 7.2); the paper is silent.
PATHAK_SAMPLES = 7_500_000
#: The paper-scale rule: at least this many image samples per model, with D and width as in the paper.
MIN_SAMPLES = 1_000_000
PAPER_BOTTLENECK, PAPER_WIDTH = 4000, 64


@dataclass(frozen=True)
class RunScale:
    """What a training run did: the fewest image samples any compared model saw, its bottleneck D and width."""

    samples_per_model: int
    bottleneck: int
    width: int

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
        return out

    @property
    def is_paper_scale(self) -> bool:
        return not self.shortfalls


def scale_note(scale: RunScale) -> str | None:
    """Why a run cannot test the paper's claims, or None for a paper-scale run."""
    if scale.is_paper_scale:
        return None
    return "not testable at this scale: " + ", ".join(scale.shortfalls)


def observed_order(cmp: PairedComparison) -> str:
    """The sign of the paired difference cascade - CE, from its 95% CI."""
    lo, hi = cmp.ci
    if hi < 0:
        return "cascade lower, significantly"
    if lo > 0:
        return "cascade higher, significantly"
    return "no significant difference"


def verdict_lower(cmp: PairedComparison, scale: RunScale, reading: str | None = None) -> str:
    """Claim: the cascade has a lower NSD than the plain CE (paired difference cascade - CE < 0, 95% CI below 0).

    ``reading`` (e.g. "BN-normalised") is named in the text."""
    lo, hi = cmp.ci
    observed = (f"{observed_order(cmp)} ({reading + ' ' if reading else ''}cascade − CE {cmp.mean:+.3g}, "
                f"95% CI [{lo:+.3g}, {hi:+.3g}])")
    note = scale_note(scale)
    if note:
        return f"{note}; observed here: {observed}"
    return f"reproduced: {observed}" if hi < 0 else f"not reproduced: {observed}"


def verdict_value(result: NSDResult, paper_mean: float, scale: RunScale, seed: int = 0) -> str:
    """Claim: NSD equals the paper's value; consistent if the paper's mean lies in our 95% bootstrap interval.

    Only the BN-normalised reading is comparable with the paper's number (raw depends on an arbitrary scale,
    eval-standardised on the evaluation set), so any other reading is refused.
    """
    if not result.normalized:
        raise ValueError(f"value verdicts use the BN-normalised NSD only, got the {result.reading} reading")
    lo, hi = bootstrap_ci(result.per_image, seed=seed)
    inside = lo <= paper_mean <= hi
    observed = (f"ours {result.mean:.2f} ± {result.std:.2f} (BN-normalised), 95% CI of the mean "
                f"[{lo:.2f}, {hi:.2f}] {'contains' if inside else 'excludes'} {paper_mean}")
    note = scale_note(scale)
    if note:
        return f"{note}; {observed}"
    return ("reproduced" if inside else "not reproduced") + f": {observed}"


#: What the seed comparison says when a run trained one seed only.
ONE_SEED = "one seed only: nothing to compare"


def verdict_across_seeds(cis: dict[int, tuple[float, float]], claim: str, below: bool = True,
                         scale: RunScale | None = None) -> str:
    """Does a claim hold in EVERY training seed (issue 11 §5)? ``cis``: per seed, the 95% CI of the paired
    difference cascade − CE; the claim holds in a seed when its CI lies entirely below 0 (``below``) or entirely
    above 0 (``below=False``). Rule: "holds in every seed" only if it holds in each of at least two seeds; a seed
    whose CI lies entirely on the other side is named as contradicting it. ``claim`` is the claim in words, named
    in the text; with ``scale`` below paper scale the text starts with why it is not testable.
    """
    if len(cis) < 2:
        return ONE_SEED
    for s, (lo, hi) in cis.items():
        if not lo <= hi:
            raise ValueError(f"seed {s}: the CI [{lo}, {hi}] is not an interval")
    holds = [s for s, (lo, hi) in cis.items() if (hi < 0 if below else lo > 0)]
    against = [s for s, (lo, hi) in cis.items() if (lo > 0 if below else hi < 0)]
    k = len(cis)

    def named(seeds: list[int]) -> str:
        return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"

    if len(holds) == k:
        observed = f"{claim} holds in every seed ({k} of {k}: {named(holds)})"
    else:
        observed = (f"{claim} holds in {len(holds)} of {k} seeds" + (f" ({named(holds)})" if holds else "")
                    + (f"; the opposite, significantly, in {named(against)}" if against else "")
                    + ("; not in every seed" if holds else ""))
    note = scale_note(scale) if scale is not None else None
    return f"{note}; observed across seeds: {observed}" if note else observed


# --- comparisons of the CE and the cascade ----------------------------------------------------------------

#: Which way each number points, for the report page.
DIRECTION = {"nsd": "lower is better (the paper: codes of one image under different masks stay close)",
             "l1": "lower is better (mean absolute error in the hole)",
             "psnr": "higher is better, but it favours blur (a blurred mean prediction has a low squared error)",
             "ssim": "higher is better (local structure: mean, contrast and correlation in 7×7 windows)"}


def direction(ci: tuple[float, float] | list[float], higher_is_better: bool) -> str:
    """How the cascade compares with the CE from the 95% CI of the paired difference (cascade - CE)."""
    lo, hi = ci
    if lo > 0 or hi < 0:
        better = (lo > 0) == higher_is_better
        return f"cascade {'better' if better else 'worse'}, significantly"
    return "no significant difference"


def paired_quality(a: dict[str, np.ndarray], b: dict[str, np.ndarray], seed: int = 0) -> dict[str, dict]:
    """Per measure, b - a per image (b: the cascade, a: the CE): mean, 95% bootstrap CI, share of images where b
    is better, and the direction in words."""
    out = {}
    for name, higher in QUALITY.items():
        diff = b[name] - a[name]
        lo, hi = bootstrap_ci(diff, seed=seed)
        better = diff > 0 if higher else diff < 0
        out[name] = {"mean": float(diff.mean()), "ci95": [lo, hi], "fraction_better": float(better.mean()),
                     "direction": direction((lo, hi), higher)}
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
    """The run's scale for the verdicts: the fewest samples any model saw, and the compared models' D and width."""
    dims = {(r["bottleneck"], r["width"]) for r in runs.values()}
    if len(dims) != 1:
        raise ValueError(f"the runs differ in bottleneck/width: {sorted(dims)}")
    (d, w), = dims
    return RunScale(samples_per_model=min(r["samples"] for r in runs.values()), bottleneck=d, width=w)


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
            "per_image": np.round(res.per_image, 6).tolist()}


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


def _verdict_key(reading: str) -> str:
    """The key of the ordering verdict of an NSD reading in ``metrics.json`` (``lower_std`` for eval-standardised)."""
    return f"lower_{'std' if reading == 'standardized' else reading}"


def build_metrics(*, preset: str, seed: int, mask: str, eval_data: str, k: int, n: int, q: int,
                  runs: dict[str, dict], results: dict[str, ModelNSD], quality: dict[str, dict[str, np.ndarray]],
                  provenance: dict, ood: dict[str, ModelNSD] | None = None, ood_data: str | None = None,
                  checkpoints: list[dict] | None = None) -> dict[str, Any]:
    """Everything the report quotes, as one JSON-serialisable dict (written to ``metrics.json``).

    ``runs``: :func:`run_info` per run name (``ce128-random_blocks`` ...); ``results``: NSD of ``ce128``,
    ``cce128`` and ``ce64`` (mask ``mask``); ``quality``: :func:`model_quality` per run name (both masks).
    """
    compared = {name: r for name, r in runs.items() if r["mask"] == mask}
    scale = scale_of(compared)
    comparisons = compare_readings(results, seed)
    verdicts = {_verdict_key(r): verdict_lower(comparisons[r], scale, reading=READING_LABELS[r]) for r in READINGS}
    verdicts["ce_value"] = verdict_value(results["ce128"].normalized, PAPER["ce"][0], scale, seed)
    verdicts["cce_value"] = verdict_value(results["cce128"].normalized, PAPER["cce"][0], scale, seed)
    metrics: dict[str, Any] = {
        "preset": preset, "seed": seed, "mask": mask, "k": k, "n": n, "quality_masks_per_image": q,
        "samples_per_model": scale.samples_per_model, "bottleneck": scale.bottleneck, "width": scale.width,
        "paper_scale": scale.is_paper_scale, "eval_data": eval_data,
        "train_data": next(iter(compared.values()))["train_data"],
        "run_scale": run_scale_line(compared, eval_data, k, n, provenance["device"]),
        "runs": runs, "provenance": provenance, "verdicts": verdicts, "models": {}, "paired": {},
    }
    for m, res in results.items():
        for r in READINGS:
            metrics["models"][f"{m}_{r}"] = _nsd_entry(getattr(res, r), seed)
    for r, c in comparisons.items():
        metrics["paired"][r] = {"mean": c.mean, "ci95": list(c.ci), "p_value": c.p_value,
                                "fraction_lower": c.fraction_lower, "verdict": verdicts[_verdict_key(r)]}
    metrics["quality"] = {name: {mq: summary(v, seed) for mq, v in qv.items()} for name, qv in quality.items()}
    masks_measured = sorted({runs[name]["mask"] for name in quality})
    metrics["quality_paired"] = {mk: paired_quality(quality[f"ce128-{mk}"], quality[f"cce128-{mk}"], seed)
                                 for mk in masks_measured if f"ce128-{mk}" in quality and f"cce128-{mk}" in quality}
    if mask in metrics["quality_paired"]:
        nsd_means = {f"{m}-{mask}": results[m].normalized.mean for m in results}
        metrics["agreement"] = agreement(nsd_means, metrics["quality"], metrics["quality_paired"][mask],
                                         observed_order(comparisons["normalized"]))
    if ood:
        oc = paired_comparison(ood["ce128"].normalized, ood["cce128"].normalized, seed=seed)
        metrics["ood"] = {"data": ood_data, "paired_normalized": {"mean": oc.mean, "ci95": list(oc.ci)},
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
    for key, text in metrics["verdicts"].items():
        g[f"verdict_{key}"] = str(text)
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
        lo, hi = o["paired_normalized"]["ci95"]
        g["ood_summary"] = (f"On {o['data']}: BN-normalised NSD {o['ce128_normalized']['mean']:.3f} (CE) vs "
                            f"{o['cce128_normalized']['mean']:.3f} (cascade); paired difference (cascade − CE) "
                            f"{o['paired_normalized']['mean']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]. Raw: "
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


# --- several training seeds (issue 11 §5) ------------------------------------------------------------------------

#: The per-seed numbers compared across seeds: the paired cascade − CE difference of each NSD reading and of each
#: quality measure (mask of the NSD comparison), with the number format of each.
SEED_MEASURES = {**{f"nsd_{r}": f"NSD {READING_LABELS[r]}" for r in READINGS},
                 "l1": "in-hole L1", "psnr": "PSNR (dB)", "ssim": "SSIM"}
_FORMAT = {"psnr": "+.2f"}


def load_seed_metrics(paths: list[str | Path]) -> list[dict]:
    """The ``metrics.json`` of other seeds' evaluations; a missing one is a one-line FileNotFoundError."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"another seed's metrics {p} does not exist (its nsd_eval must run first)")
        out.append(json.loads(p.read_text()))
    return out


def seeds_report(metrics_list: list[dict], seed: int = 0) -> dict[str, Any]:
    """Several training seeds side by side (issue 11 §5), from each seed's ``metrics.json`` (the book's seed first).

    Per seed: the paired cascade − CE difference (mean, 95% CI over images) of NSD in each reading and of in-hole
    L1/PSNR/SSIM (the NSD mask's models). Across seeds: the mean of the per-seed means, their standard deviation
    (ddof 1) and range. Per claim (cascade lower NSD in each reading; cascade better in each quality measure):
    :func:`verdict_across_seeds`, i.e. whether it holds in every seed. Each seed is paired within
    itself (its own evaluation masks); the seeds must share the mask, k, n, D and width.
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
    mask = metrics_list[0]["mask"]
    per_seed: dict[int, dict[str, dict]] = {}
    for s, m in zip(seeds, metrics_list):
        row = {f"nsd_{r}": {"mean": float(m["paired"][r]["mean"]), "ci95": list(m["paired"][r]["ci95"])}
               for r in READINGS}
        for q, e in m.get("quality_paired", {}).get(mask, {}).items():
            row[q] = {"mean": float(e["mean"]), "ci95": list(e["ci95"])}
        per_seed[s] = row
    measures = [x for x in SEED_MEASURES if all(x in row for row in per_seed.values())]
    across = {}
    for x in measures:
        means = np.array([per_seed[s][x]["mean"] for s in seeds])
        across[x] = {"mean": float(means.mean()), "sd": float(means.std(ddof=1)) if len(means) > 1 else None,
                     "min": float(means.min()), "max": float(means.max())}
    scale = RunScale(min(int(m["samples_per_model"]) for m in metrics_list), metrics_list[0]["bottleneck"],
                     metrics_list[0]["width"])
    claims = {f"lower_{r}": (f"nsd_{r}", f"cascade lower ({READING_LABELS[r]} NSD)", True) for r in READINGS}
    claims.update({f"better_{q}": (q, f"cascade better ({SEED_MEASURES[q]})", not QUALITY[q])
                   for q in QUALITY if q in measures})
    verdicts, observed = {}, {}
    for key, (x, claim, below) in claims.items():
        cis = {s: tuple(per_seed[s][x]["ci95"]) for s in seeds}
        verdicts[key] = verdict_across_seeds(cis, claim, below=below, scale=scale)
        observed[key] = verdict_across_seeds(cis, claim, below=below)
    return {"seeds": seeds, "mask": mask, "per_seed": per_seed, "across": across, "verdicts": verdicts,
            "summary": _seeds_summary(seeds, across, observed, scale)}


def _fmt(x: str, v: float) -> str:
    return format(v, _FORMAT.get(x, "+.4f"))


def _seeds_summary(seeds: list[int], across: dict, observed: dict, scale: RunScale) -> str:
    if len(seeds) < 2:
        return ONE_SEED
    spread = "; ".join(f"{SEED_MEASURES[x]} {_fmt(x, a['mean'])} (sd {_fmt(x, a['sd']).lstrip('+')}, "
                       f"{_fmt(x, a['min'])} to {_fmt(x, a['max'])})" for x, a in across.items())
    note = scale_note(scale)
    return (f"{len(seeds)} training seeds ({', '.join(map(str, seeds))}), each evaluated with its own masks and "
            f"paired within itself. Cascade − CE, mean over the seeds of the per-seed means (sd across seeds, "
            f"range): {spread}. In every seed? " + "; ".join(observed.values()) + "."
            + (f" All seeds: {note}." if note else ""))


def seeds_rows(report: dict) -> list[dict]:
    """The per-seed table: one row per seed (mean and 95% CI of each paired difference), then, with several
    seeds, the mean of the per-seed means with their sd across seeds."""
    rows = []
    for s, row in report["per_seed"].items():
        rows.append({"seed": str(s), **{f"Δ {SEED_MEASURES[x]}": f"{_fmt(x, row[x]['mean'])} "
                                        f"[{_fmt(x, row[x]['ci95'][0])}, {_fmt(x, row[x]['ci95'][1])}]"
                                        for x in report["across"]}})
    if len(report["seeds"]) > 1:
        rows.append({"seed": "mean of seeds (sd)",
                     **{f"Δ {SEED_MEASURES[x]}": f"{_fmt(x, a['mean'])} (sd {_fmt(x, a['sd']).lstrip('+')})"
                        for x, a in report["across"].items()}})
    return rows


def seeds_glue(report: dict) -> dict[str, str | int]:
    """The seed comparison's glue values (besides the table): ``seeds_n``, ``seeds_summary`` and the verdicts
    ``verdict_lower_all_seeds`` (BN-normalised, the headline), ``verdict_lower_raw_all_seeds``,
    ``verdict_lower_standardized_all_seeds``, ``verdict_better_<measure>_all_seeds``."""
    g: dict[str, str | int] = {"seeds_n": len(report["seeds"]), "seeds_summary": report["summary"],
                               "verdict_lower_all_seeds": report["verdicts"]["lower_normalized"]}
    for key, text in report["verdicts"].items():
        if key != "lower_normalized":
            g[f"verdict_{key}_all_seeds"] = text
    return g


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
        out["cascade_minus_ce"] = {"mean": c.mean, "ci95": list(c.ci), "order": observed_order(c)}
        text += (f" With eq. (1)'s weighting, cascade − CE (BN-normalised) is {c.mean:+.4f}, 95% CI "
                 f"[{c.ci[0]:+.4f}, {c.ci[1]:+.4f}]: {observed_order(c)}.")
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
                per_seed = [vals[s][lam][m] / vals[s][0.0][m] if ratio
                            else float(np.mean(np.asarray(vals[s][lam][m]) - np.asarray(vals[s][0.0][m])))
                            for s in seeds]
                diff[m] = seed_interval(per_seed)
            quality = {q: (diff[q], NSD_LOSS_MEASURES[q][1]) for q in QUALITY}
            entry["diff"] = diff
            entry["verdict"] = {reading: nsd_loss_verdict(diff[f"nsd_{reading}"], quality)
                                for reading in ("normalized", "standardized")}
        out[lam] = entry
    return out


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


def nsd_loss_verdict_text(entry: dict, lam: float) -> str:
    """One sentence per lambda > 0: the verdict of :func:`cce_core.stats.nsd_loss_verdict` in both NSD readings."""
    v = entry["verdict"]
    return (f"λ = {lam:g} ({len(entry['seeds'])} seed{'s' * (len(entry['seeds']) > 1)}): "
            f"with the BN-normalised NSD {v['normalized']}; with the eval-standardised NSD {v['standardized']}")
