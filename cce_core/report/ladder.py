"""The scale ladder (the CPU study page): the seed-level cascade − CE comparison at each training length."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluate import READINGS
from ..stats import (
    bootstrap_ci,
)
from .seeds import _FORMAT, SEED_MEASURES, _across
from .verdicts import RunScale, _agreeing, _ci_text, verdict_order

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


def ladder_curves(ladder: list[dict], models: tuple[str, ...] = ("ce128", "cce128")) -> dict[str, list[dict]]:
    """Each model along a scale ladder (:func:`scale_ladder`) as :func:`curve_summary` reads it: per point its step,
    samples and the mean over the seeds of BN-normalised NSD and of PSNR, the CPU study page's own values."""
    return {m: [{"step": e["step"], "samples": e["samples"],
                 **{x: float(e["models"][m][x]["mean"]) for x in ("nsd_normalized", "psnr")}} for e in ladder]
            for m in models}


def ladder_rows(ladder: list[dict], measures: tuple[str, ...] = ("nsd_normalized", "nsd_standardized", "psnr"),
                ) -> list[dict]:
    """The ladder's table: one row per training length, one column per measure: the seed-level mean cascade − CE
    with its 95% CI, then the seeds agreeing in sign and the seed-level direction."""
    rows = []
    for e in ladder:
        row: dict[str, Any] = {"samples per model": f"{e['samples']:,}", "seeds": e["n_seeds"]}
        for x in measures:
            a, f = e["paired"][x], _FORMAT.get(x, "+.4f")
            row[f"Δ {SEED_MEASURES[x]} [95% CI]"] = (f"{format(a['mean'], f)} {_ci_text(a['ci95'], f)}; "
                                                     f"{a['agree'][0]} of {a['agree'][1]} agree, {a['direction']}")
        rows.append(row)
    return rows


def ladder_summary(ladder: list[dict], measure: str = "nsd_normalized", measured: str = "") -> str:
    """The ladder in one sentence for the landing page: the seed-level cascade − CE at the shortest and the longest
    training, how the seeds agree there, and the prediction interval for one more seed at the longest. ``measured``
    names what every point was measured on (e.g. "250 images with 25 masks per image"): where the headline measures
    the longest point's models with more masks, the two numbers differ and the sentence says why."""
    first, last = ladder[0], ladder[-1]
    f = _FORMAT.get(measure, "+.4f")

    def at(e: dict) -> str:
        a = e["paired"][measure]
        return (f"{format(a['mean'], f)} {_ci_text(a['ci95'], f)} at {e['samples']:,} samples "
                f"({_agreeing(a)}: {a['direction']})")

    pred = last["paired"][measure]["prediction95"]
    on = f", each point on {measured}" if measured else ""
    return (f"Along training, cascade − CE in {SEED_MEASURES[measure]} (mean over {last['n_seeds']} seeds, seed-level "
            f"95% CI{on}): {at(first)}; {at(last)}. One more seed trained for {last['samples']:,} samples should "
            f"land in {_ci_text(pred, f)} (95% prediction interval).")


def fair_ladder_summary(head: list[dict], fair: list[dict], measures: tuple[str, ...] = ("nsd_normalized", "psnr"),
                        ) -> str:
    """The two ladders in words (issue 29): at the first point the cascade − CE difference with the cascade's 64
    CE fully trained (``head``) and with each stage trained as long as the point (``fair``), per measure with its
    seed-level 95% CI and the seeds agreeing; the fair ladder at every point; and the prediction interval for one
    more seed at the last point (where both ladders hold the same models)."""
    def at(e: dict, x: str) -> str:
        a, f = e["paired"][x], _FORMAT.get(x, "+.4f")
        return f"{format(a['mean'], f)} {_ci_text(a['ci95'], f)} ({_agreeing(a)})"

    first, last = fair[0], fair[-1]
    parts = []
    for x in measures:
        f = _FORMAT.get(x, "+.4f")
        trend = "; ".join(f"{e['samples']:,}: {format(e['paired'][x]['mean'], f)}" for e in fair)
        parts.append(f"In {SEED_MEASURES[x]}, cascade − CE at {first['samples']:,} samples is {at(first, x)} with "
                     f"each stage trained {first['samples']:,} samples, against {at(head[0], x)} with the cascade's "
                     f"64 CE trained the whole run; along the fair ladder: {trend}. One more seed at "
                     f"{last['samples']:,} samples: {_ci_text(last['paired'][x]['prediction95'], f)} (95% prediction "
                     f"interval).")
    return " ".join(parts)


def point_summary(entry: dict, masks: int, measures: tuple[str, ...] = ("nsd_normalized", "psnr")) -> str:
    """One ladder point in words: cascade − CE per measure with its seed-level 95% CI, the seeds agreeing in sign
    and the one-more-seed prediction interval, and the masks per image it was measured with (issue 29: the fair
    ladder's last point again on all the NSD page's masks)."""
    def one(x: str) -> str:
        a, f = entry["paired"][x], _FORMAT.get(x, "+.4f")
        return (f"{SEED_MEASURES[x]} {format(a['mean'], f)} {_ci_text(a['ci95'], f)} ({_agreeing(a)}: "
                f"{a['direction']}; one more seed: {_ci_text(a['prediction95'], f)})")

    return (f"At {entry['samples']:,} samples, cascade − CE: " + "; ".join(one(x) for x in measures)
            + f" (each seed's images and first {masks} evaluation masks).")
