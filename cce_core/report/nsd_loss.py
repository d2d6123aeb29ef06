"""Beyond the paper: the NSD-loss runs (the NSD-loss page): summaries over seeds, the verdict per λ and the
calibration of the Holm-corrected verdict rule."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluate import QUALITY
from ..stats import (
    SeedInterval,
    crossed_interval,
    nsd_loss_calibration,
    nsd_loss_verdict,
    ratio_interval,
    seed_interval,
    variance_components,
)

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
    """The chapter's table, one row per model and measure and one column per lambda (narrow enough for the page),
    every cell a string (no NaN). lambda = 0: each measure's mean over seeds; lambda > 0: the mean, then the
    seed-level 95% CI of the paired difference to lambda = 0 (Δ) or of the ratio (×) for the spreads; with one seed
    the interval is missing and the cell says why. The seeds per lambda are in the column's name."""
    rows = []
    for model, by_weight in summaries.items():
        cols = {lam: f"λ = {lam:g} ({len(e['seeds'])} seed{'s' * (len(e['seeds']) > 1)})"
                for lam, e in by_weight.items()}
        for m, (label, _, ratio) in NSD_LOSS_MEASURES.items():
            row: dict[str, Any] = {"model": model, "measure": label}
            for lam, e in by_weight.items():
                level = e["levels"][m]
                text = f"{level:.3g}" if ratio else f"{level:.4g}"
                row[cols[lam]] = (text + (" (reference)" if ratio else "") if lam == 0
                                  else f"{text}; {_interval_text(e['diff'][m], ratio)}")
            rows.append(row)
        for k, label in NSD_LOSS_LOG.items():
            rows.append({"model": model, "measure": label,
                         **{cols[lam]: f"{e['levels'][k]:.3g}" if k in e["levels"]
                            else "not logged (a run older than this log field)" for lam, e in by_weight.items()}})
    return rows


def collapse_check(spread: SeedInterval) -> str:
    """The collapse check in words, from the seed-level ratio interval of the codes' spread between images (λ > 0
    over λ = 0): a lower end below 1 leaves a shrinking of the spread by up to that much possible."""
    if spread.ci95 is None:
        return "with one seed, no interval for the codes' spread: a collapse is neither shown nor excluded"
    lo = spread.ci95[0]
    if lo < 1:
        return (f"the codes' spread between images may be up to {100 * (1 - lo):.0f}% smaller than at λ = 0: a "
                f"partial collapse is not excluded")
    return "the codes' spread between images did not shrink (95% interval above 1): no sign of a collapse"


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
        text += f" ({collapse_check(d['code_spread'])})"
        parts.append(text)
    return f"The {model}: " + "; ".join(parts) + "."


def nsd_loss_landing(summaries: dict[str, dict[float, dict]]) -> str:
    """The NSD-loss chapter in one sentence for the landing page, from :func:`nsd_loss_summary` per model
    (``{"CE": ..., "cascade": ...}``): per lambda > 0 the BN-normalised NSD as a ratio to lambda = 0 (means over
    seeds) for each model, and the verdict in that reading (the CE's; the cascade's too where it differs)."""
    first = next(iter(summaries.values()))
    seeds = len(first[0.0]["seeds"])
    parts = []
    for lam in (x for x in first if x > 0):
        ratios = " and ".join(f"×{e[lam]['levels']['nsd_normalized'] / e[0.0]['levels']['nsd_normalized']:.2g} "
                              f"({name})" for name, e in summaries.items())
        verdicts = {name: e[lam]["verdict"]["normalized"] for name, e in summaries.items()}
        said = dict.fromkeys(verdicts.values())
        verdict = next(iter(said)) if len(said) == 1 else "; ".join(f"{n}: {v}" for n, v in verdicts.items())
        parts.append(f"at λ = {lam:g}, NSD {ratios}: {verdict}")
    return f"Trained with NSD as a loss (beyond the paper), {seeds} seed{'s' * (seeds > 1)}: " + "; ".join(parts) + "."


def nsd_loss_verdict_text(entry: dict, lam: float) -> str:
    """One sentence per lambda > 0: the verdict of :func:`cce_core.stats.nsd_loss_verdict` in both NSD readings."""
    v = entry["verdict"]
    return (f"λ = {lam:g} ({len(entry['seeds'])} seed{'s' * (len(entry['seeds']) > 1)}): "
            f"judged by the BN-normalised NSD, {v['normalized']}; judged by the eval-standardised NSD, "
            f"{v['standardized']}")
