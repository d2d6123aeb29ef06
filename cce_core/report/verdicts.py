"""Verdicts: a claim of the paper against a run's numbers, decided by rule, and the scale tier the run reached.

**Verdicts** (issue 18). The paper's claims are about a training procedure, so every verdict reads the seed level:
per training seed, the image-level paired mean of cascade − CE (its image-level CI kept as a description of those two
networks); across seeds, :func:`cce_core.stats.crossed_interval` where the seeds' per-image values are stored (seeds
and images random; else :func:`cce_core.stats.seed_interval`; ``metrics.json``: ``seeds.across.<measure>``). With
one seed a verdict speaks of "these two trained networks" only. Whether a run can test the paper's claims depends
on what it did (:func:`cce_core.stats.scale_tier`: samples, D, width and distinct training images), not on the
preset's name: a verdict is made only at "paper scale"; below it the text says what was observed, and the page
names the tier once. Value claims (0.79, 0.56) are decided by equivalence (:func:`cce_core.stats.equivalence`) on
the BN-normalised NSD only, the reading whose null model is the paper's N(0, I) (section 3); the ordering claim
(cascade lower) is judged for each reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..stats import (
    MIN_SAMPLES,
    PAPER_BOTTLENECK,
    PAPER_TRAIN_IMAGES,
    PAPER_WIDTH,
    Equivalence,
    agree_in_sign,
    scale_tier,
)

#: The models' names in tables.
MODEL_LABELS = {"ce64": "64 CE", "ce128": "CE", "cce128": "cascade"}


@dataclass(frozen=True)
class RunScale:
    """What a training run did: the fewest image samples any compared model saw, its bottleneck D and width, and
    the fewest distinct training images any of them was trained on (from each run's ``config.json``)."""

    samples_per_model: int
    bottleneck: int
    width: int
    train_images: int

    @property
    def tier(self) -> str:
        """"paper scale", "paper architecture, reduced data" or "reduced scale" (:data:`TIER_RULES`)."""
        return scale_tier(self.samples_per_model, self.bottleneck, self.width, self.train_images)

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
        if self.train_images < PAPER_TRAIN_IMAGES:
            out.append(f"{self.train_images:,} distinct training images (paper {PAPER_TRAIN_IMAGES:,})")
        return out

    @property
    def is_paper_scale(self) -> bool:
        return self.tier == "paper scale"


def scale_note(scale: RunScale) -> str | None:
    """Why a run cannot test the paper's claims (its tier and shortfalls), or None for a paper-scale run."""
    if scale.is_paper_scale:
        return None
    return f"not testable at this scale ({scale.tier}): " + ", ".join(scale.shortfalls)


def tier_line(scale: RunScale) -> str:
    """The run's tier in one sentence, stated once per page: what verdicts it allows, and why."""
    if scale.is_paper_scale:
        return "Tier: paper scale. The verdicts below decide the paper's claims at the seed level."
    return (f"Tier: {scale.tier} ({', '.join(scale.shortfalls)}). Verdicts on the paper's claims are made only at "
            "paper scale; at this tier each line says what was observed, with its seed-level interval.")


def verdict_word(verdict: str) -> str:
    """The verdict of a verdict sentence (:func:`verdict_order`, :func:`verdict_value`) in a reader's words, for a
    table's verdict column: "reproduced", "not reproduced", "inconclusive", "equivalent", "different" or "one seed";
    below paper scale, where no verdict is made, what was observed: "cascade lower", "cascade higher", "no
    difference detected", or for a value "different from the paper's" (what the equivalence test would read)."""
    head, _, rest = verdict.partition(":")
    head, rest = head.strip(), rest.strip()
    if head != "observed":
        return head
    would = re.search(r"would read '([^']+)'", rest)
    if would:
        return {"different": "different from the paper's", "equivalent": "the paper's, within the margin"}.get(
            would.group(1), would.group(1))
    return rest.split(" in ", 1)[0]


def image_level_order(ci: tuple[float, float] | list[float]) -> str:
    """The sign of one seed's paired difference cascade − CE from its image-level 95% CI: a description of these
    two trained networks, not of the method."""
    lo, hi = ci
    return ("cascade lower for these two networks" if hi < 0 else "cascade higher for these two networks" if lo > 0
            else "no difference detected for these two networks")


def _ci_text(ci: tuple[float, float] | list[float], fmt: str) -> str:
    return f"[{format(ci[0], fmt)}, {format(ci[1], fmt)}]"


def _agreeing(a: dict) -> str:
    """How many seeds agree in sign, from a seed-level interval's ``agree`` (:func:`cce_core.stats.seed_interval`)."""
    return f"{a['agree'][0]} of {a['agree'][1]} seeds agree in sign"


def verdict_order(across: dict, per_seed_ci: list[float] | None, scale: RunScale, what: str, good: str,
                  fmt: str = "+.4f") -> str:
    """A cascade − CE comparison decided at the seed level (``across``: :meth:`SeedInterval.as_dict` of the S
    per-seed means, with ``direction``). ``good``: "lower" or "higher", the side the paper's claim (or a better
    inpainting) is on; ``what`` names the measure. One seed: "these two trained networks", with their image-level
    CI ``per_seed_ci``, and no verdict. Paper scale, from the seed-level 95% CI: "reproduced" (on the claim's
    side of 0), "not reproduced" (on the other side: contrary evidence) or "inconclusive" (it covers 0: an
    underpowered run is no evidence either way); below paper scale: "observed", the same numbers without a verdict
    (the page names the tier)."""
    s, mean = across["n_seeds"], across["mean"]
    if across["ci95"] is None:
        ci = f", image-level 95% CI {_ci_text(per_seed_ci, fmt)}" if per_seed_ci is not None else ""
        return (f"one seed: these two trained networks differ by {format(mean, fmt)} in {what} (cascade − CE{ci}); "
                "one seed says nothing about the method")
    side = {"lower": "cascade lower", "higher": "cascade higher"}.get(across["direction"], "no difference detected")
    agree, _ = agree_in_sign(across["per_seed"])
    observed = (f"{side} in {what}: cascade − CE {format(mean, fmt)} over {s} seeds, seed-level 95% CI "
                f"{_ci_text(across['ci95'], fmt)}; {agree} of {s} seeds agree in sign")
    if not scale.is_paper_scale:
        return f"observed: {observed}"
    word = ("reproduced" if across["direction"] == good else "inconclusive"
            if across["direction"] == "no difference detected" else "not reproduced")
    return f"{word}: {observed}"


def verdict_value(ours: dict, eq: Equivalence, paper_mean: float, scale: RunScale, per_seed_ci: list[float] | None,
                  model: str) -> str:
    """Claim: the BN-normalised NSD of ``model`` equals the paper's ``paper_mean``, by equivalence
    (:func:`cce_core.stats.equivalence`, margin :data:`EQUIVALENCE_MARGIN`): "equivalent", "different" or
    "inconclusive" at paper scale; below it, what was observed; with one seed, these two networks only."""
    if ours["ci95"] is None:
        ci = f", image-level 95% CI {_ci_text(per_seed_ci, '.3f')}" if per_seed_ci is not None else ""
        return (f"one seed: this trained {model} has NSD {ours['mean']:.3f}{ci}; without a seed-level standard "
                f"error there is no equivalence test against the paper's {paper_mean}")
    observed = (f"ours {ours['mean']:.3f} over {ours['n_seeds']} seeds (seed-level 95% CI "
                f"{_ci_text(ours['ci95'], '.3f')}); ours − paper's {paper_mean} = {eq.difference:+.3f}, 90% CI "
                f"{_ci_text(eq.ci90, '+.3f')} against the margin ±{eq.margin:.3f}")
    if not scale.is_paper_scale:
        return f"observed: {observed} (the equivalence test would read {eq.verdict!r})"
    return f"{eq.verdict}: {observed}"
