"""Statistics of the comparisons the book makes: image-level intervals of one trained pair, seed-level intervals,
verdict rules and their calibration.

**Image level** (one pair of trained networks): :func:`bootstrap_ci` is the percentile bootstrap interval of a mean
over the evaluation images (the masks and the trained models are fixed), :func:`paired_comparison` the difference of
two encoders' per-image NSD on the same images and masks, with its interval and a sign-flip permutation p-value,
and :func:`summary` the mean, spread and interval the report quotes for one measure. These describe two trained
networks; they say nothing about the training procedure.

**Seed level, with the images random too** (issues 18, 27). The paper's claim (section 5: NSD 0.56 ± 0.17 for the
cascade against 0.79 ± 0.17 for the plain CE, k = 250 images, n = 100 masks) is about a training procedure on images
like the evaluation images, so two things vary that a reader does not control: the training run (seed) and the
images. Every seed is measured on the **same** k images, so the per-image paired differences d[s, j] (seed s, image
j) form a two-way crossed design,

    d[s, j] = mu + a_s + b_j + e_sj,   a_s ~ N(0, sd_seed²), b_j ~ N(0, sd_image²), e_sj ~ N(0, sd_residual²),

and the quantity of interest is mu. The grand mean splits into the seeds' part and the images' part: its
variance is V_seed + V_image, V_seed = (sd_seed² + sd_residual²/k)/S (what the S per-seed means show, S − 1 df) and
V_image = sd_image²/k (what the k image means show beyond the residual, k − 1 df), estimated by the ANOVA mean
squares as MS_seed/(S·k) and (MS_image − MS_residual)/(S·k). :func:`crossed_interval` is the grand mean ±
√(t²(S − 1)·V_seed + t²(k − 1)·V_image): each part with its own degrees of freedom. The t-interval over the S
per-seed means (:func:`seed_interval`) sees V_seed only: the image effect b_j is common to all seeds and cancels from
their spread, so it covers the effect on *these* k images, and as sd_seed shrinks toward 0 its false-positive rate
grows without bound.

Why this interval, not Satterthwaite's df and not a mixed model: the design is balanced and complete (every seed
measures every image), so the mean squares give both parts in closed form, with no iterative fit that can fail to
converge with S = 3 seeds (``statsmodels``' MixedLM) and no new dependency. The usual single-t interval with
Satterthwaite's df was tried first: on simulated studies of the CPU study's own design it says "lower" under no
effect in 3.8% of studies per side at 3 seeds and 6% at 2 (nominal 2.5%), because the seeds' part, with 2 df,
dominates and the approximation is liberal there. Giving each part its own quantile is exact when either part is
0 and conservative in between (1.3–2.5% per side in the same simulations). :func:`calibration_table` measures
all three intervals on the run's own design (its own components, S and k), and is what the book quotes.

Where only one value per seed exists (a scalar per run, e.g. a spread), :func:`seed_interval` is the interval, with
S − 1 degrees of freedom. Verdicts: :func:`seed_direction` (sign, from the 95% CI), :func:`equivalence` (value
claims by two one-sided tests against a declared margin), :func:`nsd_loss_verdict` (the paper's closing belief,
Holm-corrected over its three quality measures) and :func:`scale_tier` (what the training data allow).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq

from .nsd import NSDResult

#: Section 5: the paper's mean NSD of the plain CE and of the cascade (k = 250 images, n = 100 masks).
PAPER_CE, PAPER_CCE, PAPER_N = 0.79, 0.56, 100
#: Section 5: paired difference of the paper's two means (cascade 0.56 − plain CE 0.79), between-image sd, k.
PAPER_EFFECT, PAPER_SD, PAPER_K = PAPER_CCE - PAPER_CE, 0.17, 250
#: The paper's effect relative to its CE: (0.56 − 0.79)/0.79 ≈ −29%; on our scale, this fraction of our CE's NSD.
PAPER_RELATIVE_EFFECT = PAPER_EFFECT / PAPER_CE
#: Effects (NSD, cascade − CE) at which power is stated: sizes that can occur at our NSD levels (≈ 0.04).
POWER_EFFECTS = (-0.005, -0.01, -0.02)
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
SEED_T = "t-interval over seed means (df = S − 1)"
CROSSED = "seeds and images random: two-way crossed ANOVA, each part with its own t quantile"


@dataclass(frozen=True)
class SeedInterval:
    """Mean of a comparison over training seeds, with its 95% confidence interval (None with one seed).

    ``per_seed``: each seed's value (its mean over the images); ``sd``: their spread (ddof 1); ``se``: the standard
    error of ``mean``; ``df``: the t degrees of freedom whose quantile times ``se`` gives the interval's half-width
    (S − 1 for :func:`seed_interval`, an effective value for :func:`crossed_interval`); ``n_images``: k where the
    images are random too, else None; ``p_value``: of "mean = 0", the level at which the interval touches 0."""

    mean: float
    ci95: tuple[float, float] | None
    sd: float | None  # between-seed sd of the per-seed values (ddof 1); None with one seed
    n_seeds: int
    per_seed: tuple[float, ...]
    method: str
    df: float  # S − 1 for the seed t-interval, Satterthwaite's for the crossed one
    se: float | None = None
    n_images: int | None = None
    p_value: float | None = None  # two-sided, of "mean = 0", by the same construction as the interval

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
    """The t-interval over per-seed values, mean ± t(S − 1)·sd/√S: for a value that exists once per seed.

    For per-image comparisons on images shared by the seeds use :func:`crossed_interval`: this interval treats the
    images as fixed. With one seed there is no seed-level spread: ``ci95`` and ``sd`` are None."""
    x = _values(per_seed, confidence)
    s, mean = x.size, float(x.mean())
    if s == 1:
        return SeedInterval(mean, None, None, 1, (mean,), SEED_T, 0)
    sd = float(x.std(ddof=1))
    se = sd / math.sqrt(s)
    half = float(sps.t.ppf((1 + confidence) / 2, s - 1)) * se
    p = float(2 * sps.t.sf(abs(mean) / se, s - 1)) if se > 0 else float(mean == 0)
    return SeedInterval(mean, (mean - half, mean + half), sd, s, tuple(map(float, x)), SEED_T, s - 1, se, None, p)


@dataclass(frozen=True)
class VarianceComponents:
    """The crossed design's components (module docstring): sd between seeds, between images, and what is left
    (seed × image and the masks), estimated from the ANOVA mean squares (negative estimates set to 0)."""

    seed_sd: float
    image_sd: float
    residual_sd: float
    n_seeds: int
    n_images: int

    def as_dict(self) -> dict:
        return asdict(self)


def _mean_squares(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MS_seed, MS_image and MS_residual of the last two axes of ``d`` (..., S, k), one per leading index."""
    s, k = d.shape[-2:]
    grand = d.mean((-2, -1), keepdims=True)
    seed_means, image_means = d.mean(-1, keepdims=True), d.mean(-2, keepdims=True)
    ss_seed = k * ((seed_means - grand) ** 2).sum((-2, -1))
    ss_image = s * ((image_means - grand) ** 2).sum((-2, -1))
    ss_res = ((d - seed_means - image_means + grand) ** 2).sum((-2, -1))
    return ss_seed / (s - 1), ss_image / (k - 1), ss_res / ((s - 1) * (k - 1))


def _satterthwaite(ms_seed: np.ndarray, ms_image: np.ndarray, ms_res: np.ndarray, s: int,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """The single-t alternative, kept to be measured (:func:`calibration_table`): standard error of the grand mean,
    √((MS_seed + MS_image − MS_res)/(S·k)), and Satterthwaite's df (the combination floored at MS_res)."""
    df_seed, df_image, df_res = s - 1, k - 1, (s - 1) * (k - 1)
    combo = ms_seed + ms_image - ms_res
    floored = combo <= ms_res
    combo = np.where(floored, ms_res, combo)
    denom = ms_seed ** 2 / df_seed + ms_image ** 2 / df_image + ms_res ** 2 / df_res
    df = np.where(floored, df_res, combo ** 2 / np.where(denom > 0, denom, 1.0))
    return np.sqrt(combo / (s * k)), df


def _parts(ms_seed: np.ndarray, ms_image: np.ndarray, ms_res: np.ndarray, s: int,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """V_seed = MS_seed/(S·k) and V_image = max(0, MS_image − MS_res)/(S·k) (module docstring)."""
    return ms_seed / (s * k), np.maximum(0.0, ms_image - ms_res) / (s * k)


def _half(v_seed: np.ndarray, v_image: np.ndarray, s: int, k: int, alpha: float | np.ndarray) -> np.ndarray:
    """The crossed interval's half-width at two-sided level 1 − alpha: √(t²(S − 1)·V_seed + t²(k − 1)·V_image)."""
    q = 1 - np.asarray(alpha) / 2
    return np.sqrt(sps.t.ppf(q, s - 1) ** 2 * v_seed + sps.t.ppf(q, k - 1) ** 2 * v_image)


def _crossed_p(mean: np.ndarray, v_seed: np.ndarray, v_image: np.ndarray, s: int, k: int) -> np.ndarray:
    """Two-sided p-value of the crossed interval: the alpha at which its half-width equals |mean| (bisection on
    log alpha, floored at 1e-12)."""
    target = np.abs(mean)
    lo, hi = np.full(target.shape, math.log(1e-12)), np.zeros(target.shape)
    for _ in range(60):
        mid = (lo + hi) / 2
        inside = _half(v_seed, v_image, s, k, np.exp(mid)) >= target  # the interval still covers 0
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return np.where(_half(v_seed, v_image, s, k, 1e-12) >= target, np.exp(hi), 1e-12)


def _per_image(per_image: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    d = np.asarray(per_image, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 2 or not np.isfinite(d).all():
        raise ValueError(f"need a finite (seeds, images) array with at least 2 images, got shape {d.shape}")
    return d


def variance_components(per_image: np.ndarray | Sequence[Sequence[float]]) -> VarianceComponents:
    """The variance components of a (seeds, images) array of paired differences (module docstring)."""
    d = _per_image(per_image)
    s, k = d.shape
    if s < 2:
        raise ValueError("variance components need at least 2 seeds")
    ms_seed, ms_image, ms_res = (float(x) for x in _mean_squares(d))
    return VarianceComponents(math.sqrt(max(0.0, (ms_seed - ms_res) / k)), math.sqrt(max(0.0, (ms_image - ms_res) / s)),
                              math.sqrt(ms_res), s, k)


def crossed_interval(per_image: np.ndarray | Sequence[Sequence[float]], confidence: float = 0.95) -> SeedInterval:
    """The interval of a paired difference measured by S seeds on the same k images, with both seeds and images
    random (module docstring): grand mean ± √(t²(S − 1)·V_seed + t²(k − 1)·V_image).

    ``per_image``: (S, k), seed s's per-image difference on image j. ``per_seed`` of the result holds each seed's
    mean over the images (for tables, the sign count and the prediction interval). With one seed: no interval."""
    d = _per_image(per_image)
    _values(d.ravel(), confidence)
    s, k = d.shape
    per_seed = tuple(map(float, d.mean(1)))
    mean = float(d.mean())
    if s == 1:
        return SeedInterval(mean, None, None, 1, per_seed, CROSSED, 0, None, k)
    v_seed, v_image = (float(x) for x in _parts(*_mean_squares(d), s, k))
    se, half = math.sqrt(v_seed + v_image), float(_half(v_seed, v_image, s, k, 1 - confidence))
    df = math.inf if half <= sps.norm.ppf((1 + confidence) / 2) * se else \
        float(brentq(lambda f: sps.t.ppf((1 + confidence) / 2, f) * se - half, 0.5, 1e9))
    p = float(_crossed_p(np.array(mean), np.array(v_seed), np.array(v_image), s, k))
    return SeedInterval(mean, (mean - half, mean + half), float(np.std(per_seed, ddof=1)), s, per_seed, CROSSED,
                        df, se, k, p)


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
                        "t-interval of log ratios over seeds, exponentiated (geometric mean; sd of the logs)", logs.df,
                        logs.se)


def prediction_interval(per_seed: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Where one more seed's value (on the same images) should fall: mean ± t(S − 1)·sd·√(1 + 1/S); None with
    one seed. This is what a reader who retrains once can expect, which is wider than the interval of the mean."""
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


# --- calibration: the rules on simulated studies of the run's own design ------------------------------------------

def _simulated_studies(effect: float, comps: VarianceComponents, n_seeds: int, n_sims: int,
                       rng: np.random.Generator) -> np.ndarray:
    """``n_sims`` studies of the crossed design: (n_sims, S, k) paired differences with mean ``effect``."""
    s, k = n_seeds, comps.n_images
    return (effect + rng.normal(0, comps.seed_sd, (n_sims, s, 1)) + rng.normal(0, comps.image_sd, (n_sims, 1, k))
            + rng.normal(0, comps.residual_sd, (n_sims, s, k)))


def _rule_sides(d: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per simulated study (first axis of ``d``, (m, S, k)): whether each rule's 95% interval lies below / above 0.

    ``t``: the t-interval over seed means; ``crossed``: :func:`crossed_interval`; ``satterthwaite``: the single-t
    interval with Satterthwaite's df; ``image_one_seed``: the first seed's image-level interval (normal, images
    fixed); ``image_every_seed``: every seed's image-level interval."""
    m, s, k = d.shape
    seed_means = d.mean(2)
    grand = seed_means.mean(1)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    image_half = float(sps.norm.ppf(0.975)) * d.std(2, ddof=1) / math.sqrt(k)
    below, above = seed_means + image_half < 0, seed_means - image_half > 0
    out["image_one_seed"] = below[:, 0], above[:, 0]
    if s == 1:
        return out
    out["image_every_seed"] = below.all(1), above.all(1)
    half = float(sps.t.ppf(0.975, s - 1)) * seed_means.std(1, ddof=1) / math.sqrt(s)
    out["t"] = grand + half < 0, grand - half > 0
    ms = _mean_squares(d)
    half = _half(*_parts(*ms, s, k), s, k, 0.05)
    out["crossed"] = grand + half < 0, grand - half > 0
    se, df = _satterthwaite(*ms, s, k)
    half = sps.t.ppf(0.975, df) * se
    out["satterthwaite"] = grand + half < 0, grand - half > 0
    return out


def simulate_design(effect: float, comps: VarianceComponents, n_seeds: int, n_sims: int, rng: np.random.Generator,
                    chunk: int = 1000) -> dict[str, float | None]:
    """How often each rule says "lower" and "higher" in ``n_sims`` simulated studies of the crossed design with
    true mean ``effect`` (components ``comps``, S = ``n_seeds``, k = ``comps.n_images``): ``<rule>_lower`` and
    ``<rule>_higher`` for the rules of :func:`_rule_sides` (the seed-level ones None with one seed)."""
    counts: dict[str, list[int]] = {}
    for start in range(0, n_sims, chunk):
        d = _simulated_studies(effect, comps, n_seeds, min(chunk, n_sims - start), rng)
        for rule, (lo, hi) in _rule_sides(d).items():
            c = counts.setdefault(rule, [0, 0])
            c[0], c[1] = c[0] + int(lo.sum()), c[1] + int(hi.sum())
    out: dict[str, float | None] = {f"{r}_{side}": None for r in ("t", "crossed", "satterthwaite", "image_every_seed")
                                    for side in ("lower", "higher")}
    for rule, (lo, hi) in counts.items():
        out[f"{rule}_lower"], out[f"{rule}_higher"] = lo / n_sims, hi / n_sims
    return out


def calibration_table(comps: VarianceComponents, reference_nsd: float, n_sims: int = 20_000,
                      seed: int = 0) -> list[dict]:
    """The rules on simulated studies of the run's own design (its components ``comps``, its k): under no effect
    at 1, 2, 3 and 5 seeds with the run's seed sd and at 3 and 5 seeds with a seed sd of 0 (rates of "lower" and
    "higher", nominal 2.5% each), and the power ("lower") at :data:`POWER_EFFECTS` and at the paper's relative
    effect (:data:`PAPER_RELATIVE_EFFECT` × ``reference_nsd``, the CE's NSD) with 3 and 5 seeds."""
    rng = np.random.default_rng(seed)
    no_seed = VarianceComponents(0.0, comps.image_sd, comps.residual_sd, comps.n_seeds, comps.n_images)
    cases = [("no effect", 0.0, comps, s) for s in (1, 2, 3, 5)] + [("no effect", 0.0, no_seed, s) for s in (3, 5)]
    effects = [(f"{e:+g}", e) for e in POWER_EFFECTS]
    effects.append((f"paper's {100 * PAPER_RELATIVE_EFFECT:.0f}% of the CE's NSD",
                    PAPER_RELATIVE_EFFECT * reference_nsd))
    cases += [(label, e, comps, s) for label, e in effects for s in (3, 5)]
    return [{"case": label, "effect": e, "seed_sd_of": "the run" if c is comps else "zero", "seed_sd": c.seed_sd,
             "image_sd": c.image_sd, "residual_sd": c.residual_sd, "n_seeds": s, "n_images": c.n_images,
             "n_sims": n_sims, **simulate_design(e, c, s, n_sims, rng)} for label, e, c, s in cases]


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
    error combines ours (the interval's own ``se`` and ``df``: seeds, and images where they are random too) and the
    paper's (sd/√k over images; the paper's own seed variation is unknown and left out); df by Welch–Satterthwaite.
    """
    diff = ours.mean - paper_mean
    if ours.se is None or ours.ci95 is None:
        return Equivalence(diff, None, None, None, margin, "inconclusive", "one seed: no seed-level standard error")
    v_ours, v_paper = ours.se ** 2, paper_sd ** 2 / paper_k
    se = math.sqrt(v_ours + v_paper)
    w = v_ours ** 2 / ours.df + v_paper ** 2 / (paper_k - 1)
    df = (v_ours + v_paper) ** 2 / w if w > 0 else math.inf
    half = float(sps.t.ppf(1 - alpha, df)) * se
    lo, hi = diff - half, diff + half
    verdict = "equivalent" if -margin < lo and hi < margin else "different" if lo > margin or hi < -margin \
        else "inconclusive"
    return Equivalence(diff, se, df, (lo, hi), margin, verdict)


def seed_equivalence(per_seed: Sequence[float], margin: float, alpha: float = 0.05) -> Equivalence:
    """Is a per-seed paired difference (e.g. a model trained in bf16 minus the same seed's fp32 model, issue 32)
    zero to within ``margin``, over training seeds? Two one-sided t-tests (TOST) at ``alpha``: "equivalent" when
    the (1 − 2·alpha) t-interval over the seeds (S − 1 degrees of freedom) lies inside ±margin, "different" when it
    lies entirely beyond one of them, else "inconclusive" (one seed: always inconclusive)."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    x = _values(per_seed, 1 - 2 * alpha)
    if x.size < 2:
        return Equivalence(float(x.mean()), None, None, None, margin, "inconclusive", "one seed: no interval")
    iv = seed_interval(x, 1 - 2 * alpha)
    lo, hi = iv.ci95  # here the (1 - 2 alpha) interval: seed_interval's confidence
    verdict = "equivalent" if -margin < lo and hi < margin else "different" if lo > margin or hi < -margin \
        else "inconclusive"
    return Equivalence(iv.mean, iv.se, iv.df, (lo, hi), margin, verdict)


def scale_tier(samples_per_model: int, bottleneck: int, width: int, distinct_images: int) -> str:
    """Which of the :data:`TIER_RULES` a run falls in. 1 M samples drawn from 9,600 images (≈ 107 epochs) is the
    paper's architecture on reduced data, not paper scale: the paper's networks saw 100,000 images (section 5)."""
    if bottleneck != PAPER_BOTTLENECK or width != PAPER_WIDTH or samples_per_model < MIN_SAMPLES:
        return "reduced scale"
    return "paper scale" if distinct_images >= PAPER_TRAIN_IMAGES else "paper architecture, reduced data"


# --- the NSD-loss verdict: three quality measures, Holm-corrected --------------------------------------------------

def holm_reject(p_values: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Holm's step-down rule over the last axis of ``p_values`` (m tests): which null hypotheses are rejected at
    family-wise error ``alpha``. Sorted p-values p(1) ≤ … ≤ p(m) are rejected while p(i) ≤ alpha/(m − i + 1)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ok = np.take_along_axis(p, order, -1) <= alpha / (m - np.arange(m))
    rejected_sorted = np.cumprod(ok, axis=-1).astype(bool)
    out = np.empty_like(rejected_sorted)
    np.put_along_axis(out, order, rejected_sorted, -1)
    return out


def _quality_sides(quality: dict[str, tuple[SeedInterval, bool]], alpha: float) -> dict[str, str]:
    """Per quality measure: "better", "worse" or "no difference detected", Holm-corrected over the measures."""
    names = list(quality)
    rejected = holm_reject(np.array([quality[q][0].p_value for q in names]), alpha)
    out = {}
    for q, rej in zip(names, rejected):
        iv, higher_is_better = quality[q]
        out[q] = "no difference detected" if not rej else "better" if (iv.mean > 0) == higher_is_better else "worse"
    return out


def nsd_loss_verdict(nsd: SeedInterval, quality: dict[str, tuple[SeedInterval, bool]], alpha: float = 0.05) -> str:
    """The paper's closing belief (section 5): an NSD training loss lowers NSD and so improves inpainting.

    ``nsd``: seed-level NSD(with loss) − NSD(without); ``quality``: per measure, the seed-level paired difference
    and whether higher is better (l1: False; psnr, ssim: True). The quality measures are one family: a measure is
    better or worse only where Holm's rule (:func:`holm_reject`, two-sided p-values of the intervals) rejects at
    family-wise ``alpha``, so that "supported" and "not supported" each keep about alpha/2 under no quality effect
    (:func:`nsd_loss_calibration`). "supported" needs NSD lower AND at least one quality measure better with none
    worse; "not supported" if NSD is higher or any measure is worse; otherwise "no difference detected in NSD", or
    "NSD lower, but no difference detected in inpainting quality".
    """
    if not quality:
        raise ValueError("nsd_loss_verdict needs at least one quality measure")
    if nsd.n_seeds == 1 or any(q.n_seeds == 1 for q, _ in quality.values()):
        return ONE_SEED
    side = _quality_sides(quality, alpha)
    better = [n for n in quality if side[n] == "better"]
    worse = [n for n in quality if side[n] == "worse"]
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


def nsd_loss_calibration(comps: VarianceComponents, n_seeds: int = 3, n_measures: int = 3, n_sims: int = 20_000,
                         seed: int = 0, chunk: int = 1000) -> dict[str, float]:
    """How often :func:`nsd_loss_verdict`'s quality part says "better" (→ "supported", NSD being lower) or "worse"
    (→ "not supported") when the NSD loss changes no quality measure: ``n_measures`` independent measures, each
    a simulated study of the crossed design ``comps`` with mean 0 and the crossed interval, with Holm's correction
    (``holm_*``) and without it (``uncorrected_*``, each measure at 5%). Nominal: 2.5% each."""
    rng = np.random.default_rng(seed)
    hits = {"holm_supported": 0, "holm_not_supported": 0, "uncorrected_supported": 0, "uncorrected_not_supported": 0}
    s, k = n_seeds, comps.n_images
    for start in range(0, n_sims, chunk):
        m = min(chunk, n_sims - start)
        d = _simulated_studies(0.0, comps, s, m * n_measures, rng).reshape(m, n_measures, s, k)
        mean = d.mean((-2, -1))
        p = _crossed_p(mean, *_parts(*_mean_squares(d), s, k), s, k)
        for name, rejected in (("holm", holm_reject(p)), ("uncorrected", p <= 0.05)):
            better, worse = (rejected & (mean > 0)).any(-1), (rejected & (mean < 0)).any(-1)  # "higher is better"
            hits[f"{name}_supported"] += int((better & ~worse).sum())
            hits[f"{name}_not_supported"] += int(worse.sum())
    return {key: v / n_sims for key, v in hits.items()} | {"n_seeds": s, "n_measures": n_measures, "n_sims": n_sims,
                                                           "n_images": k}


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
