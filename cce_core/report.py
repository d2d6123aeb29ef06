"""Verdicts of the reproduction report: each claim of the paper against our numbers, decided by rule, not by hand.

Whether a run can test the paper's claims depends on what it did, not on the preset's name: a run is at
**paper scale** when every model saw at least :data:`MIN_SAMPLES` image samples with the paper's architecture
(D = 4000, width 64). Below that every verdict says "not testable at this scale" and what was observed.
The value claims (0.79, 0.56) are judged on the BN-normalised NSD only, the reading whose null model is the
paper's N(0, I) (section 3); the ordering claim (cascade lower) is judged for each reading.
"""

from __future__ import annotations

from dataclasses import dataclass

from .nsd import NSDResult, PairedComparison, bootstrap_ci

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


def verdict_nsd_training(nsd_cmp: PairedComparison, quality_diffs: dict[str, tuple[float, float]], scale: RunScale,
                         weight: float) -> str:
    """The paper's belief (last paragraph): training with an NSD loss gives a lower NSD and so better inpainting.

    ``nsd_cmp``: paired BN-normalised NSD of the model trained with NSD weight ``weight`` minus the model trained
    without (same images and masks); ``quality_diffs``: per quality measure, the 95% CI of the paired difference
    (with-penalty minus without) of in-hole ``l1`` (lower is better), ``psnr`` and ``ssim`` (higher is better).
    Rule: supported when the NSD difference's 95% CI lies below 0 AND no quality measure is significantly worse
    (its CI entirely on the worse side); "better" inpainting is named where a CI lies entirely on the better side.
    """
    higher_better = {"l1": False, "psnr": True, "ssim": True}
    missing = set(higher_better) - set(quality_diffs)
    if missing:
        raise ValueError(f"quality_diffs lacks {sorted(missing)}")
    lo, hi = nsd_cmp.ci
    lower = hi < 0
    worse, better = [], []
    for name, up in higher_better.items():
        qlo, qhi = quality_diffs[name]
        if (qhi < 0) if up else (qlo > 0):
            worse.append(name)
        elif (qlo > 0) if up else (qhi < 0):
            better.append(name)
    nsd_text = (f"BN-normalised NSD(λ = {weight:g}) − NSD(λ = 0) = {nsd_cmp.mean:+.3g}, 95% CI [{lo:+.3g}, {hi:+.3g}]"
                f" ({'lower' if lower else 'higher' if lo > 0 else 'not significantly different'})")
    names = {"l1": "in-hole L1", "psnr": "PSNR", "ssim": "SSIM"}
    q_text = ("inpainting significantly worse in " + ", ".join(names[n] for n in worse) if worse else
              "inpainting not worse" + (", significantly better in " + ", ".join(names[n] for n in better)
                                        if better else " (no significant difference)"))
    if lower and not worse:
        observed = f"supported: {nsd_text}; {q_text}"
    else:
        observed = f"not supported: {nsd_text}; {q_text}"
    note = scale_note(scale)
    return f"{note}; observed here: {observed}" if note else observed


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
