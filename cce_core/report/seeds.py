"""Several training seeds, the unit of inference: per-seed rows, the interval across seeds (seeds and images
random where the per-image values are stored) and the calibration of that rule on the run's own design (the report
page's seed and calibration tables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate import READING_LABELS, READINGS
from ..stats import (
    EQUIVALENCE_MARGIN,
    PAPER_CCE,
    PAPER_CE,
    PAPER_EFFECT,
    TIER_RULES,
    SeedInterval,
    VarianceComponents,
    agree_in_sign,
    crossed_interval,
    equivalence,
    prediction_interval,
    seed_direction,
    seed_interval,
    variance_components,
)
from .verdicts import MODEL_LABELS, RunScale, _ci_text, tier_line, verdict_order, verdict_value

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
                                                                  MODEL_LABELS[m])
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
    """The per-seed table, one row per comparison (narrow enough for the page): each seed's image-level paired mean
    (its image-level CI is in ``metrics.json`` and, for NSD, on the forest plot), then, with several seeds, the
    mean over seeds with its seed-level 95% CI."""
    cols = [x for x in report["across"] if x in SEED_MEASURES]
    rows = []
    for x in cols:
        row = {"cascade − CE in": SEED_MEASURES[x],
               **{f"seed {s}": _fmt(x, r[x]["mean"]) if x in r else "—" for s, r in report["per_seed"].items()}}
        if len(report["seeds"]) > 1:
            a = report["across"][x]
            row["over seeds [seed-level 95% CI]"] = (f"{_fmt(x, a['mean'])} [{_fmt(x, a['ci95'][0])}, "
                                                     f"{_fmt(x, a['ci95'][1])}]" if a["ci95"] is not None
                                                     else f"{_fmt(x, a['mean'])} (one seed)")
        rows.append(row)
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


#: The calibration table's rules: (column prefix, short label, what the rule is).
CALIBRATION_RULES = (
    ("crossed", "crossed (book)", "the book's interval, seeds and images random, each part with its own t quantile"),
    ("t", "t, seed means", "the t-interval over the seeds' means (images fixed)"),
    ("satterthwaite", "Satterthwaite", "seeds and images random, one t quantile with Satterthwaite's df"),
    ("image_one_seed", "one seed, images", "one seed's image-level interval"),
    ("image_every_seed", "every seed, images", "every seed's image-level interval on the same side"))


def calibration_glue(rows: list[dict], comps: VarianceComponents) -> dict[str, str]:
    """The calibration in words for the report: ``calib_design`` (the simulated design), ``calib_t_vs_crossed``
    (both seed-level rules under no effect at 5 seeds, with the run's seed sd and with 0) and ``calib_power``
    (the book's rule at each effect of :func:`cce_core.stats.calibration_table`, 3 and 5 seeds), ``calib_rules``
    (the table's columns in words)."""
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
        "calib_rules": "; ".join(f"\"{label}\": {what}" for _, label, what in CALIBRATION_RULES),
    }


def calibration_rows(rows: list[dict]) -> list[dict]:
    """:func:`cce_core.stats.calibration_table`'s rows for the report: the case with its seed sd, S, and per rule the
    rate of "lower" (and, under no effect, of "higher") in percent; "–" where a rule does not apply. The seed sd is
    part of the case, not a column of its own, so that the table fits the page's width."""
    out = []
    for r in rows:
        null = r["case"] == "no effect"
        sd = f"seed sd {r['seed_sd']:.4f}".rstrip("0").rstrip(".")  # 0.0030 -> 0.003, 0.0000 -> 0
        row = {"case": f"no effect, {sd}: lower / higher (%)" if null else f"effect {r['case']}, {sd}: lower (%)",
               "seeds": r["n_seeds"]}
        for key, label, _ in CALIBRATION_RULES:
            lo, hi = r.get(f"{key}_lower"), r.get(f"{key}_higher")
            missing = lo is None or lo != lo  # None, or NaN after a pandas round trip
            row[label] = "–" if missing else f"{100 * lo:.1f} / {100 * hi:.1f}" if null else f"{100 * lo:.1f}"
        out.append(row)
    return out


def seed_metrics_of(generated: str | Path) -> list[dict]:
    """The seeds' ``metrics.json`` of a run's ``generated/`` folder: the book's seed first, then ``seed*/``."""
    generated = Path(generated)
    others = sorted(generated.glob("seed*/metrics.json"), key=lambda p: int(p.parent.name[4:]))
    return load_seed_metrics([generated / "metrics.json", *others])
