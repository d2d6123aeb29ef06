"""Statistics of the comparisons the book makes: image-level intervals of one trained pair, seed-level intervals,
verdict rules and their calibration.

**Image level** (one pair of trained networks): :func:`bootstrap_ci` is the percentile bootstrap interval of a mean
over the evaluation images (the masks and the trained models are fixed), :func:`paired_comparison` the difference of
two encoders' per-image NSD on the same images and masks, with its interval and a sign-flip permutation p-value,
and :func:`summary` the mean, spread and interval the report quotes for one measure. These describe two trained
networks; they say nothing about the training procedure.

**Seed level** (issue 18).

The paper's claim (section 5: NSD 0.56 ± 0.17 for the cascade against 0.79 ± 0.17 for the plain CE, mean ± sd over
k = 250 images, n = 100 masks) is about a training procedure, so the variation that matters is between training
runs (seeds), not between evaluation images. An image-level interval from one seed describes "these two trained
networks" only: in the committed 3-seed CPU run each seed's 95% CI of the paired cascade − CE NSD difference is
about ±0.003 wide while the difference itself moves between seeds with sd 0.013, and seeds are "significant" in
opposite directions. Every rule here therefore works on the S per-seed values (one number per training seed).

**Why a t-interval over the seed means, not a two-level bootstrap (seeds, then images).** Each per-seed value is
already a mean over 250 images, so image noise is averaged out (sd ≈ 0.022/√250 ≈ 0.0014 against a seed sd of
0.013) and the S values are close to normal draws: the t-interval mean ± t(S − 1)·sd/√S is then exact. A bootstrap
over S = 3–5 seeds has at most S^S resamples (10 distinct multisets for S = 3, 126 for S = 5), spreads them by the
plug-in sd (divisor S, not S − 1) and uses normal-like quantiles where t(2) = 4.30 is needed: in
``tests/test_stats.py`` it covers the true value about 75% of the time for S = 3 and 82% for S = 5 at a nominal 95%
(the t-interval: 95%), under the committed run's seed and image sd.

Verdicts: :func:`seed_direction` (sign, from the seed-level 95% CI), :func:`equivalence` (value claims by two
one-sided tests against a declared margin), :func:`nsd_loss_verdict` (the paper's closing belief) and
:func:`scale_tier` (what the training data allow). :func:`calibration_table` measures the old and new rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from .nsd import NSDResult

#: Section 5: the paper's mean NSD of the plain CE and of the cascade (k = 250 images, n = 100 masks).
PAPER_CE, PAPER_CCE, PAPER_N = 0.79, 0.56, 100
#: Section 5: paired difference of the paper's two means (cascade 0.56 − plain CE 0.79), between-image sd, k.
PAPER_EFFECT, PAPER_SD, PAPER_K = PAPER_CCE - PAPER_CE, 0.17, 250
#: The committed 3-seed CPU run: between-seed sd of the paired mean difference, and the between-image sd of the
#: per-image differences recovered from a 95% half-width of 0.0027 at k = 250: 0.0027·√250/1.96 ≈ 0.022.
RUN_SEED_SD, RUN_IMAGE_SD = 0.013, 0.022
#: A pessimistic seed sd for power at paper scale (the paper reports none): half the paper's between-image sd,
#: 6.5 times the seed sd we measured. A per-seed mean over 250 images should vary between seeds far less than
#: single images vary; at this sd one seed lands more than half the paper's gap (0.115) from the mean 18% of the time.
PESSIMISTIC_SEED_SD = PAPER_SD / 2
#: Equivalence margin for value claims: half the paper's between-image sd (0.17/2 = 0.085, a "medium" shift of
#: d = 0.5 on the paper's own image scale). It is below half the gap between the paper's two values
#: (0.23/2 = 0.115), so no network can be "equivalent" to both 0.79 and 0.56.
EQUIVALENCE_MARGIN = PAPER_SD / 2
#: Scale tiers count data, not only steps: the paper trained on 100,000 ImageNet images (section 5).
MIN_SAMPLES, PAPER_TRAIN_IMAGES, PAPER_BOTTLENECK, PAPER_WIDTH = 1_000_000, 100_000, 4000, 64
TIER_RULES = (
    "paper scale: ≥ 1,000,000 image samples per model, D = 4000, width 64, ≥ 100,000 distinct training images; "
    "paper architecture, reduced data: D = 4000, width 64 and ≥ 1,000,000 samples from fewer distinct images "
    "(many epochs over a small set); reduced scale: anything else."
)
ONE_SEED = "one seed: these two trained networks only"


@dataclass(frozen=True)
class SeedInterval:
    """Mean of one value per training seed, with its seed-level confidence interval (None with one seed)."""

    mean: float
    ci95: tuple[float, float] | None
    sd: float | None  # between-seed sd (ddof 1); None with one seed
    n_seeds: int
    per_seed: tuple[float, ...]
    method: str
    df: int  # S - 1

    def as_dict(self) -> dict:
        """For metrics.json: plain floats, lists and None."""
        d = asdict(self)
        d["ci95"] = list(self.ci95) if self.ci95 is not None else None
        d["per_seed"] = list(self.per_seed)
        return d


def _values(per_seed: Sequence[float], confidence: float) -> np.ndarray:
    x = np.asarray(per_seed, dtype=np.float64).ravel()
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"need one finite value per seed, got {list(x)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return x


def seed_interval(per_seed: Sequence[float], confidence: float = 0.95) -> SeedInterval:
    """The t-interval over per-seed means, mean ± t(S − 1)·sd/√S (see the module docstring for why not a bootstrap).

    ``per_seed``: one value per training seed, e.g. each seed's paired cascade − CE NSD mean over its k images.
    With one seed there is no seed-level spread: ``ci95`` and ``sd`` are None.
    """
    x = _values(per_seed, confidence)
    s, mean = x.size, float(x.mean())
    method = "t-interval over seed means (df = S − 1)"
    if s == 1:
        return SeedInterval(mean, None, None, 1, (mean,), method, 0)
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf((1 + confidence) / 2, s - 1)) * sd / math.sqrt(s)
    return SeedInterval(mean, (mean - half, mean + half), sd, s, tuple(map(float, x)), method, s - 1)


def ratio_interval(per_seed_ratios: Sequence[float], confidence: float = 0.95) -> SeedInterval:
    """The seed-level interval of a ratio (one positive ratio per seed, e.g. a spread with the NSD loss over the
    same seed's spread without it): the t-interval of the log ratios, exponentiated, so the mean is the geometric
    mean and both bounds are positive (a t-interval on the ratios themselves can cross zero)."""
    x = _values(per_seed_ratios, confidence)
    if (x <= 0).any():
        raise ValueError(f"ratios must be positive, got {list(x)}")
    logs = seed_interval(np.log(x), confidence)
    ci = (math.exp(logs.ci95[0]), math.exp(logs.ci95[1])) if logs.ci95 is not None else None
    return SeedInterval(math.exp(logs.mean), ci, logs.sd, logs.n_seeds, tuple(map(float, x)),
                        "t-interval of log ratios over seeds, exponentiated (geometric mean; sd of the logs)", logs.df)


def prediction_interval(per_seed: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Where one more seed's value should fall: mean ± t(S − 1)·sd·√(1 + 1/S); None with one seed.

    This is what a reader who retrains once can expect, which is wider than the interval of the mean.
    """
    x = _values(per_seed, confidence)
    if x.size == 1:
        return None
    half = float(sps.t.ppf((1 + confidence) / 2, x.size - 1)) * x.std(ddof=1) * math.sqrt(1 + 1 / x.size)
    return float(x.mean() - half), float(x.mean() + half)


def seed_direction(interval: SeedInterval) -> str:
    """The sign of a seed-level mean from its 95% CI: "lower", "higher", "no difference detected" or "one seed".

    With one seed only the two trained networks may be described: never "holds", "reproduced" or "significant".
    """
    if interval.ci95 is None:
        return "one seed"
    lo, hi = interval.ci95
    return "lower" if hi < 0 else "higher" if lo > 0 else "no difference detected"


def agree_in_sign(per_seed: Sequence[float]) -> tuple[int, int]:
    """How many seeds share the sign of the mean over seeds, of how many (a description, not a test)."""
    x = np.asarray(per_seed, dtype=np.float64).ravel()
    return int(np.sum(np.sign(x) == np.sign(x.mean()))), int(x.size)


def simulate_rules(effect: float, seed_sd: float, image_sd: float, n_images: int, n_seeds: int, n_sims: int,
                   rng: np.random.Generator) -> dict[str, float | None]:
    """How often each rule says "lower" when seed s has true paired difference effect + u_s, u_s ~ N(0, seed_sd²),
    and its observed mean over ``n_images`` images is that plus N(0, image_sd²/n_images).

    Rates: ``new_lower``/``new_higher`` (the seed-level 95% t-interval below/above 0; never with one seed),
    ``old_one_seed`` (one seed's image-level 95% CI below 0) and ``old_every_seed`` (every seed's image-level CI
    below 0; None with one seed, where the old rule said "nothing to compare").
    """
    se_image = image_sd / math.sqrt(n_images)
    d = effect + rng.normal(0, seed_sd, (n_sims, n_seeds)) + rng.normal(0, se_image, (n_sims, n_seeds))
    image_hi = d + float(sps.norm.ppf(0.975)) * se_image  # each seed's image-level CI upper end
    out: dict[str, float | None] = {"old_one_seed": float(np.mean(image_hi[:, 0] < 0)), "old_every_seed": None,
                                    "new_lower": 0.0, "new_higher": 0.0}
    if n_seeds > 1:
        mean = d.mean(1)
        half = float(sps.t.ppf(0.975, n_seeds - 1)) * d.std(1, ddof=1) / math.sqrt(n_seeds)
        out.update(old_every_seed=float(np.mean((image_hi < 0).all(1))),
                   new_lower=float(np.mean(mean + half < 0)), new_higher=float(np.mean(mean - half > 0)))
    return out


def calibration_table(n_sims: int = 20_000, seed: int = 0) -> list[dict]:
    """The rules' rates of "lower" under no effect (1, 2, 3, 5 seeds; seed and image sd of the committed run) and
    under the paper's effect −0.23 (3 and 5 seeds, measured and pessimistic seed sd), for the book and notes.
    Nominal: 2.5% "lower" (5% either way) under no effect."""
    rng = np.random.default_rng(seed)
    cases = [(0.0, RUN_SEED_SD, s) for s in (1, 2, 3, 5)]
    cases += [(PAPER_EFFECT, sd, s) for sd in (RUN_SEED_SD, PESSIMISTIC_SEED_SD) for s in (3, 5)]
    return [{"effect": e, "seed_sd": sd, "n_seeds": s, "n_sims": n_sims,
             **simulate_rules(e, sd, RUN_IMAGE_SD, PAPER_K, s, n_sims, rng)} for e, sd, s in cases]


@dataclass(frozen=True)
class Equivalence:
    """Our seed-level mean against a value the paper reports, by two one-sided tests (TOST) with ``margin``."""

    difference: float  # ours - paper
    se: float | None
    df: float | None
    ci90: tuple[float, float] | None  # the (1 - 2 alpha) interval of the difference
    margin: float
    verdict: str  # "equivalent", "different" or "inconclusive"
    reason: str | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ci90"] = list(self.ci90) if self.ci90 is not None else None
        return d


def equivalence(ours: SeedInterval, paper_mean: float, paper_sd: float = PAPER_SD, paper_k: int = PAPER_K,
                margin: float = EQUIVALENCE_MARGIN, alpha: float = 0.05) -> Equivalence:
    """Is our value the paper's (section 5: 0.79 plain CE, 0.56 cascade) to within ``margin``?

    "equivalent": the (1 − 2·alpha) interval of ours − paper lies inside ±margin (both one-sided tests reject);
    "different": it lies entirely beyond +margin or −margin; else "inconclusive". A wide interval can therefore
    never pass, unlike the old rule ("the paper's mean lies in our CI"), which rewarded imprecision. The standard
    error combines ours (sd/√S over seeds) and the paper's (sd/√k over images; the paper's own seed variation is
    unknown and left out); df by Welch–Satterthwaite from S − 1 and k − 1.
    """
    diff = ours.mean - paper_mean
    if ours.sd is None:
        return Equivalence(diff, None, None, None, margin, "inconclusive", "one seed: no seed-level standard error")
    v_ours, v_paper = ours.sd ** 2 / ours.n_seeds, paper_sd ** 2 / paper_k
    se = math.sqrt(v_ours + v_paper)
    w = v_ours ** 2 / (ours.n_seeds - 1) + v_paper ** 2 / (paper_k - 1)
    df = (v_ours + v_paper) ** 2 / w if w > 0 else math.inf
    half = float(sps.t.ppf(1 - alpha, df)) * se
    lo, hi = diff - half, diff + half
    verdict = "equivalent" if -margin < lo and hi < margin else "different" if lo > margin or hi < -margin \
        else "inconclusive"
    return Equivalence(diff, se, df, (lo, hi), margin, verdict)


def scale_tier(samples_per_model: int, bottleneck: int, width: int, distinct_images: int) -> str:
    """Which of the :data:`TIER_RULES` a run falls in. 1 M samples drawn from 9,600 images (≈ 107 epochs) is the
    paper's architecture on reduced data, not paper scale: the paper's networks saw 100,000 images (section 5)."""
    if bottleneck != PAPER_BOTTLENECK or width != PAPER_WIDTH or samples_per_model < MIN_SAMPLES:
        return "reduced scale"
    return "paper scale" if distinct_images >= PAPER_TRAIN_IMAGES else "paper architecture, reduced data"


def nsd_loss_verdict(nsd: SeedInterval, quality: dict[str, tuple[SeedInterval, bool]]) -> str:
    """The paper's closing belief (section 5): an NSD training loss lowers NSD and so improves inpainting.

    ``nsd``: seed-level NSD(with loss) − NSD(without); ``quality``: per measure, the seed-level paired difference
    and whether higher is better (l1: False; psnr, ssim: True). "supported" needs NSD lower AND at least one
    quality measure better with none worse; "not supported" if NSD is higher or any measure is worse; otherwise
    "no difference detected in NSD", or "NSD lower, but no difference detected in inpainting quality".
    """
    if not quality:
        raise ValueError("nsd_loss_verdict needs at least one quality measure")
    if nsd.n_seeds == 1 or any(q.n_seeds == 1 for q, _ in quality.values()):
        return ONE_SEED
    side = {name: seed_direction(q) for name, (q, _) in quality.items()}
    good = {name: "higher" if up else "lower" for name, (_, up) in quality.items()}
    better = [n for n in quality if side[n] == good[n]]
    worse = [n for n in quality if side[n] not in (good[n], "no difference detected")]
    direction = seed_direction(nsd)
    if worse:
        return "not supported: worse in " + ", ".join(worse)
    if direction == "higher":
        return "not supported: NSD higher"
    if direction != "lower":
        return "no difference detected in NSD"
    if not better:
        return "NSD lower, but no difference detected in inpainting quality"
    return "supported: NSD lower; better in " + ", ".join(better)


if __name__ == "__main__":
    print(f"{'effect':>7} {'seed sd':>7} {'S':>2} {'new lower':>9} {'new either':>10} {'old 1 seed':>10} "
          f"{'old every':>9}")
    for r in calibration_table():
        every = "–" if r["old_every_seed"] is None else f"{r['old_every_seed']:.4f}"
        print(f"{r['effect']:>7.2f} {r['seed_sd']:>7.3f} {r['n_seeds']:>2} {r['new_lower']:>9.4f} "
              f"{r['new_lower'] + r['new_higher']:>10.4f} {r['old_one_seed']:>10.4f} {every:>9}")


# --- image level: one trained pair -----------------------------------------------------------------------------

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
