"""Verdicts of the reproduction report: each claim of the paper against our numbers, decided by rule, not by hand."""

from __future__ import annotations

from .nsd import NSDResult, PairedComparison, bootstrap_ci

#: The paper's headline numbers (section 5): NSD mean +- std over k = 250 images and n = 100 masks.
PAPER = {"ce": (0.79, 0.17), "cce": (0.56, 0.17), "k": 250, "n": 100, "train_images": 100_000}
#: Image samples per model in Pathak's recipe (500 epochs of Paris StreetView, spec 7.2); the paper is silent.
PATHAK_SAMPLES = 7_500_000


def scale_note(preset: str, samples: int) -> str | None:
    """Why a run cannot test the paper's claims, or None for a paper-scale run."""
    if preset == "paper":
        return None
    return (f"not testable at this scale: preset '{preset}' trains each model on {samples:,} image samples "
            f"with a reduced architecture (the paper's recipe: about {PATHAK_SAMPLES / 1e6:.1f} M samples, D = 4000)")


def verdict_lower(cmp: PairedComparison, preset: str, samples: int) -> str:
    """Claim: the cascade has a lower NSD than the plain CE (paired difference cce - ce < 0)."""
    lo, hi = cmp.ci
    if hi < 0:
        observed = "cascade lower, significantly"
    elif lo > 0:
        observed = "cascade higher, significantly"
    else:
        observed = "no significant difference"
    note = scale_note(preset, samples)
    if note:
        return f"{note}; observed here: {observed}"
    return "reproduced" if hi < 0 else f"not reproduced ({observed})"


def verdict_value(result: NSDResult, paper_mean: float, preset: str, samples: int, seed: int = 0) -> str:
    """Claim: NSD equals the paper's value; consistent if the paper's mean lies in our 95% bootstrap interval."""
    lo, hi = bootstrap_ci(result.per_image, seed=seed)
    inside = lo <= paper_mean <= hi
    observed = (f"ours {result.mean:.2f} ± {result.std:.2f}, 95% CI of the mean [{lo:.2f}, {hi:.2f}] "
                f"{'contains' if inside else 'excludes'} {paper_mean}")
    note = scale_note(preset, samples)
    if note:
        return f"{note}; {observed}"
    return ("reproduced" if inside else "not reproduced") + f" ({observed})"
