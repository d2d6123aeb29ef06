"""One run's comparison of the CE and the cascade (the NSD and inpainting-quality chapters): paired differences,
the along-training summary, ``metrics.json`` and the values the book glues."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from ..evaluate import QUALITY, READINGS, ModelNSD
from ..nsd import NSDResult
from ..stats import (
    PairedComparison,
    bootstrap_ci,
    paired_comparison,
    summary,
)
from .seeds import seeds_glue
from .verdicts import MODEL_LABELS, RunScale, _agreeing, _ci_text, image_level_order, verdict_word

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


def curve_summary(curves: dict[str, list[dict]], source: str = "") -> dict[str, Any]:
    """Whether NSD falls as the inpainting improves along training (section 3's premise), per model: the steps,
    BN-normalised NSD and PSNR of each snapshot and their Spearman rank correlation (-1: NSD falls exactly as PSNR
    rises; None with fewer than 3 snapshots), and one sentence for the report, opened by ``source`` (which seeds,
    images and masks the values are of: every summary names them)."""
    out: dict[str, Any] = {"models": {}, "source": source}
    parts = []
    for name, rows in curves.items():
        steps = [r["step"] for r in rows]
        nsd_values = [r["nsd_normalized"] for r in rows]
        psnr_values = [r["psnr"] for r in rows]
        rho = float(spearmanr(nsd_values, psnr_values).statistic) if len(rows) >= 3 else None
        out["models"][name] = {"steps": steps, "nsd_normalized": nsd_values, "psnr": psnr_values,
                               "spearman_nsd_psnr": rho}
        if rho is None:
            parts.append(f"{MODEL_LABELS.get(name, name)}: fewer than 3 snapshots, no trend")
            continue
        trend = ("NSD fell as PSNR rose" if rho <= -0.5 else "NSD rose as PSNR rose" if rho >= 0.5
                 else "no monotone relation between NSD and PSNR")
        parts.append(f"{MODEL_LABELS.get(name, name)}: over {len(rows)} points (steps {steps[0]}–{steps[-1]}), NSD "
                     f"{nsd_values[0]:.3f} → {nsd_values[-1]:.3f}, "
                     f"PSNR {psnr_values[0]:.2f} → {psnr_values[-1]:.2f} dB, "
                     f"Spearman ρ(NSD, PSNR) = {rho:+.2f}: {trend}")
    out["summary"] = (f"{source}: " if source else "") + "; ".join(parts) + "."
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
    def ranking(runs: list[str]) -> str:
        return ", ".join(MODEL_LABELS.get(r.split("-")[0], r) for r in runs)

    order = "; ".join(f"{names[q]}: {ranking(a[q]['order'])} ({'same' if a[q]['same_order'] else 'different'})"
                      for q in QUALITY)
    kind = metrics["mask"].replace("_", " ")
    return (f"Seed {metrics['seed']}'s networks, on its {metrics['k']} images ({metrics['n']} NSD masks, the first "
            f"{metrics['quality_masks_per_image']} for quality): CE vs cascade ({kind}): BN-normalised NSD says "
            f"{a['pair_nsd']}; {pair}. "
            f"The three {kind} models ranked best first, by NSD: {ranking(a['order_nsd'])}; by {order}.")


def ood_summary(metrics: dict) -> str:
    """The out-of-distribution result in words: over the seeds first (the seed-level interval the verdicts read),
    then the first seed's networks alone (its image-level interval, a description of those two networks); each part
    names its images and masks."""
    if "ood" not in metrics:
        return "This run measured no out-of-distribution set."
    o = metrics["ood"]
    p = o["paired"]["normalized"]
    across = metrics.get("seeds", {}).get("across", {}).get("ood_nsd_normalized")
    lead = ""
    if across and across.get("ci95") is not None:  # the seed-level result first: the one the verdicts read
        lead = (f"Over {across['n_seeds']} seeds, each on the same {o['data']} with {metrics['n']} masks per image: "
                f"cascade − CE in BN-normalised NSD {across['mean']:+.4f}, seed-level 95% CI "
                f"{_ci_text(across['ci95'], '+.4f')} ({_agreeing(across)}: {across['direction']}). The first seed's "
                "networks alone (a description of those two networks): ")
    return lead + (f"On {o['data']}, seed {metrics['seed']}'s networks: BN-normalised NSD "
                   f"{o['ce128_normalized']['mean']:.3f} (CE) vs {o['cce128_normalized']['mean']:.3f} (cascade); "
                   f"paired difference (cascade − CE) {p['mean']:+.3f}, image-level 95% CI "
                   f"{_ci_text(p['ci95'], '+.3f')}. "
                   f"Raw: {o['ce128_raw']['mean']:.3f} vs {o['cce128_raw']['mean']:.3f}; eval-standardised: "
                   f"{o['ce128_standardized']['mean']:.4f} vs {o['cce128_standardized']['mean']:.4f}.")


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
    g["ood_summary"] = ood_summary(metrics)
    g["eval_description"] = str(metrics["eval_data"])
    g["train_description"] = str(metrics["train_data"])
    g["eval_k"], g["eval_n"] = int(metrics["k"]), int(metrics["n"])
    g["samples_per_model"] = int(metrics["samples_per_model"])
    g["run_bottleneck"], g["run_width"] = int(metrics["bottleneck"]), int(metrics["width"])
    batches = sorted({int(r["batch_size"]) for r in metrics["runs"].values()})
    g["run_batch_size"] = ", ".join(map(str, batches))  # the recipe's is 64 (Pathak's batchSize)
    g["run_preset"] = str(metrics["preset"])
    g["run_seed"] = int(metrics["seed"])
    g["run_scale"] = str(metrics["run_scale"])
    fkw = sorted({float(r["full_known_weight"]) for r in metrics["runs"].values() if r["mask"] != "central"})
    g["run_full_known_weight"] = ", ".join(f"{w:g}" for w in fkw)
    for key in ("device", "commit", "date", "torch"):
        g[f"prov_{key}"] = str(metrics["provenance"][key])
    return g
