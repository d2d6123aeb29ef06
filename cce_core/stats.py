"""Statistics of the comparisons the book makes: bootstrap intervals, paired comparisons, summaries.

Everything here resamples *images* (the evaluation images are the sample; the masks and the trained model are
fixed): :func:`bootstrap_ci` is the percentile bootstrap interval of a mean, :func:`paired_comparison` the
difference of two encoders' per-image NSD on the same images and masks, with its interval and a sign-flip
permutation p-value, and :func:`summary` the mean, spread and interval the report quotes for one measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .nsd import NSDResult


def bootstrap_ci(values: np.ndarray, level: float = 0.95, n_boot: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (resampling images with replacement)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < 2:
        raise ValueError(f"need at least 2 values for a bootstrap interval, got {values.size}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedComparison:
    """NSD of encoder b minus encoder a on the same images and masks."""

    diff: np.ndarray  # per-image NSD_b - NSD_a
    ci: tuple[float, float]
    p_value: float  # two-sided sign-flip permutation test of mean(diff) = 0
    level: float
    fraction_lower: float = field(default=float("nan"))  # share of images where b has the lower NSD

    @property
    def mean(self) -> float:
        return float(self.diff.mean())

    def __str__(self) -> str:
        lo, hi = self.ci
        return (f"mean difference {self.mean:+.3f}, {100 * self.level:.0f}% CI [{lo:+.3f}, {hi:+.3f}], "
                f"p = {self.p_value:.2g}, lower on {100 * self.fraction_lower:.0f}% of images")


def paired_comparison(a: NSDResult, b: NSDResult, level: float = 0.95, n_boot: int = 10000,
                      seed: int = 0) -> PairedComparison:
    """Compare two encoders evaluated on the same k images with the same n masks: per-image b - a.

    Gives the bootstrap confidence interval of the mean difference and a two-sided paired sign-flip
    permutation p-value (``n_boot`` random sign flips, add-one smoothed).
    """
    if a.k != b.k or a.n != b.n:
        raise ValueError(f"paired comparison needs the same images and masks: got k={a.k}, n={a.n} vs k={b.k}, n={b.n}")
    if a.reading != b.reading or a.unbiased != b.unbiased:
        raise ValueError(f"both results must be the same reading: got {a.reading} and {b.reading}"
                         f"{' (unbiased differs)' if a.unbiased != b.unbiased else ''}")
    diff = b.per_image - a.per_image
    ci = bootstrap_ci(diff, level=level, n_boot=n_boot, seed=seed)
    rng = np.random.default_rng(seed + 1)
    signs = rng.choice([-1.0, 1.0], size=(n_boot, diff.size))
    observed = abs(diff.mean())
    p = (1 + np.sum(np.abs((signs * diff).mean(1)) >= observed - 1e-15)) / (n_boot + 1)
    return PairedComparison(diff, ci, float(p), level, float(np.mean(diff < 0)))


def summary(values: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Mean, std over images and the 95% bootstrap CI of the mean."""
    lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "ci95": [lo, hi]}
