"""The reconstruction-loss weighting of the random-block models: uniform against eq. (1)'s missing-pixels-only
weighting (the NSD page's loss-weighting section)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluate import QUALITY, READING_LABELS, READINGS, ModelNSD
from ..stats import (
    bootstrap_ci,
    paired_comparison,
)
from .seeds import _FORMAT, SEED_MEASURES
from .verdicts import MODEL_LABELS, image_level_order

# --- the reconstruction-loss weighting of the random-block models (issue 11 §2) ----------------------------------

#: What the loss-weighting comparison says when the run trained one weighting only.
ONE_WEIGHTING = ("one weighting only: this run trained the random-block models with the default uniform weighting "
                 "(reproduce --loss-variants adds eq. (1)'s, missing pixels only)")


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
        parts.append(f"{MODEL_LABELS.get(m, m)}: BN-normalised NSD {n['default']:.4f} → {n['hole']:.4f} "
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
        row = {"model": MODEL_LABELS.get(m, m)}
        for r, v in e["nsd"].items():
            row[f"NSD {READING_LABELS[r]}"] = (f"{v['default']:.4f} → {v['hole']:.4f} ({v['mean']:+.4f} "
                                               f"[{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}])")
        for q, v in e["quality"].items():
            f = _FORMAT.get(q, "+.4f")
            row[SEED_MEASURES[q]] = (f"{v['default']:{f.lstrip('+')}} → {v['hole']:{f.lstrip('+')}} "
                                         f"({v['mean']:{f}} [{v['ci95'][0]:{f}}, {v['ci95'][1]:{f}}])")
        rows.append(row)
    return rows
