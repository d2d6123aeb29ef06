"""Why the paper's NSD is 12-19x ours: the evaluation-side factors, measured on trained checkpoints.

Our headline NSD (section 3's estimator on the bottleneck convolution's output, divided by its BatchNorm's
sqrt(running_var + eps), BN in eval mode, the training's random blocks, Pathak's fill) is about 0.04; the paper
reports 0.79 +- 0.17 (CE) and 0.56 +- 0.17 (cascade), section 5. This module measures, at no training cost, how
far each choice the paper leaves open moves that number:

* :class:`Variant`: one way to read NSD off an encoder; ``Variant()`` is the book's. Its fields are the factors:
  which tensor is the code, the BatchNorm mode, the evaluation masks, the hole fill, the estimator's Zbar and its
  (n - 1)/n factor, and the encoder itself (trained, or the chance line). :func:`variant_nsd` measures one.
* The **chance line** (:func:`chance_model`): an untrained encoder of the same architecture whose BatchNorm
  statistics alone are fitted to training-style inputs; what NSD says of an encoder that learnt nothing.
* :func:`measure_checkpoint`: named variants of one checkpoint, cached per checkpoint and code hash.
* :func:`factor_effect`: a factor's effect over training seeds as a ratio, and the share of the gap
  log(paper / ours) it explains; :func:`spread`: NSD's spread over images (the paper's sd/mean).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .cascade import CascadeContextEncoder, downscale, downscale_mask, upscale
from .checkpoint import atomic_write_text, load_model, open_cache
from .evaluate import EVAL_MASK_STREAM, Encoder, ModelNSD, at_model_scale, code_scale, eval_masks
from .masks import fill_hole, make_masks, paste
from .models import ContextEncoder
from .nsd import NSDResult, StreamingNSD
from .provenance import file_sha256, measured_by
from .seeding import derive_seed
from .stats import PAPER_CCE, PAPER_CE, PAPER_SD, SeedInterval, ratio_interval

#: The paper's spread of NSD over images relative to its mean (section 5): 0.17/0.79 (CE) and 0.17/0.56 (cascade).
PAPER_SPREAD = {"ce128": PAPER_SD / PAPER_CE, "cce128": PAPER_SD / PAPER_CCE}
#: The batch of a training step (the paper's 64): the chance line's BN fit and the "images" BN mode use it.
TRAIN_BATCH = 64
#: "Larger blocks": block sides from 1/4 to 1/2 of the image (32 to 64 px at 128) instead of 1/8 to 1/4, under
#: the same coverage law (10% to 25%, "up to 1/4 of the image", section 4.3): fewer, bigger holes.
LARGE_BLOCKS = (1 / 4, 1 / 2)
#: The purposes of the random streams of this module (:func:`cce_core.seeding.derive_seed`).
NOISE_STREAM, CHANCE_STREAM = "gap noise fill", "gap chance init"

CHOICES = {
    "code": ("conv", "bn", "act"),
    "bn_mode": ("eval", "masks", "images"),
    "masks": ("blocks", "region", "large"),
    "fill": ("pathak", "zero", "noise"),
    "zbar": ("image", "all"),
}


@dataclass(frozen=True)
class Variant:
    """One way to read NSD off an encoder (section 3); the defaults are the book's.

    * ``code``: the tensor taken as E(P, M): ``"conv"``, the bottleneck convolution's output (ours); ``"bn"``,
      after its BatchNorm; ``"act"``, after BN + LeakyReLU (the output of Pathak's ``netE``).
    * ``bn_mode``: ``"eval"`` (running statistics, ours); ``"masks"``: train mode, the batch is the n masked
      copies of one image; ``"images"``: train mode, the batch is :data:`TRAIN_BATCH` images under one mask.
    * ``masks``: ``"blocks"``, the random blocks of training (:func:`cce_core.evaluate.eval_masks`, ours);
      ``"region"``, Pathak's random region; ``"large"``, random blocks of sides :data:`LARGE_BLOCKS`.
    * ``fill``: the hole's content at evaluation: ``"pathak"`` (his constants, as in training), ``"zero"``
      (mid-grey), ``"noise"`` (uniform in [-1, 1], one draw per mask, shared by the images). For the cascade
      it fills the 64 CE's input (the 128 CE's hole holds the 64 CE's inpainting).
    * ``zbar``: ``"image"``, Zbar_j over image j's n codes (section 3's definition); ``"all"``, one Zbar over
      all k n codes (a plausible slip: it adds the image's spread to the mask's).
    * ``unbiased``: multiply by n/(n - 1) (drops the estimator's (n - 1)/n factor).
    * ``chance_seed``: None, the trained encoder; an int, the chance line (:func:`chance_model`) of that seed.
    """

    code: str = "conv"
    bn_mode: str = "eval"
    masks: str = "blocks"
    fill: str = "pathak"
    zbar: str = "image"
    unbiased: bool = False
    chance_seed: int | None = None

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


#: The book's reading, and each factor changed alone.
OURS = Variant()
VARIANTS = {
    "ours": OURS,
    "code_bn": Variant(code="bn"), "code_act": Variant(code="act"),
    "bn_masks": Variant(bn_mode="masks"), "bn_images": Variant(bn_mode="images"),
    "masks_region": Variant(masks="region"), "masks_large": Variant(masks="large"),
    "fill_zero": Variant(fill="zero"), "fill_noise": Variant(fill="noise"),
    "zbar_all": Variant(zbar="all"), "unbiased": Variant(unbiased=True),
    "chance": Variant(chance_seed=0),
}


def _ce(model: Encoder) -> ContextEncoder:
    """The CE whose bottleneck gives the code: the model itself, or the cascade's 128 CE."""
    return model.ce128 if isinstance(model, CascadeContextEncoder) else model


# --- the chance line ------------------------------------------------------------------------------------------

@torch.no_grad()
def fit_bn(model: Encoder, images: torch.Tensor, masks: torch.Tensor, batch_size: int = TRAIN_BATCH) -> Encoder:
    """Refit the BatchNorm running statistics of ``model`` (of the cascade's 128 CE only: its 64 CE keeps its own)
    on ``images`` with one training-style mask each (``masks``, (N, 1, 128, 128)), in place; no weight changes.

    The statistics are reset, then forward passes in train mode without gradients on full batches of
    ``batch_size`` (a remainder is dropped) fold the batches' statistics in with ``momentum=None``, the
    cumulative average (each batch weighs the same); the hole is filled as in training. Returns the model in
    eval mode, momentum restored."""
    if len(images) != len(masks) or len(images) < 2:
        raise ValueError(f"need one mask per image and at least 2 images, got {len(images)} and {len(masks)}")
    bns = [m for m in _ce(model).modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    b = min(batch_size, len(images))
    for i in range(0, len(images) - b + 1, b):
        x, m = at_model_scale(model, images[i:i + b], masks[i:i + b])
        if isinstance(model, CascadeContextEncoder):
            model(x, m)
        else:
            model(fill_hole(x, m))
    for bn, mom in zip(bns, momenta):
        bn.momentum = mom
    return model.eval()


def chance_model(model: Encoder, images: torch.Tensor, masks: torch.Tensor, seed: int = 0,
                 batch_size: int = TRAIN_BATCH) -> Encoder:
    """The chance line of ``model``: a fresh CE of the same architecture (size, D, output, variant, width),
    initialised by the library's own init (Pathak's, :func:`cce_core.models.init_weights`) from
    ``derive_seed(seed, "gap chance init")``, with its BatchNorm statistics fitted by :func:`fit_bn` on
    ``images`` and training-style ``masks``. Its NSD (section 3) is what an encoder that learnt nothing scores.

    For the cascade, only the 128 stage is fresh: it sits on the cascade input of a copy of the *trained* 64 CE
    (the input the trained 128 CE saw), so the line measures what training the 128 CE did. ``model`` is left
    unchanged; the global random state too."""
    ce = _ce(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, CHANCE_STREAM))
        fresh = ContextEncoder(ce.size, ce.bottleneck, ce.output, ce.variant, ce.width)
    fresh = fresh.to(next(ce.parameters()).device)
    if isinstance(model, CascadeContextEncoder):
        fresh = CascadeContextEncoder(copy.deepcopy(model.ce64), fresh, model.upscale_mode)
    return fit_bn(fresh, images, masks, batch_size)


# --- the evaluation-side variants ----------------------------------------------------------------------------

def variant_masks(kind: str, n: int, seed: int = 0) -> torch.Tensor:
    """The n evaluation masks (n, 1, 128, 128) of a :class:`Variant`'s ``masks``, all from the evaluation stream
    of ``seed``: ``"blocks"`` and ``"region"`` are :func:`cce_core.evaluate.eval_masks`'s (the book's)."""
    if kind == "blocks":
        return eval_masks("random_blocks", n, seed)
    if kind == "region":
        return eval_masks("random_region", n, seed)
    if kind == "large":
        if n < 2:
            raise ValueError(f"NSD needs at least n=2 masks, got {n}")
        g = torch.Generator().manual_seed(derive_seed(seed, EVAL_MASK_STREAM))
        return make_masks("random_blocks", n, 128, g, block_range=LARGE_BLOCKS)
    raise ValueError(f"masks must be one of {CHOICES['masks']}, got {kind!r}")


def _fills(model: Encoder, fill: str, n: int, seed: int) -> torch.Tensor | None:
    """Per mask, what fills the hole: None for Pathak's constants (the model's own path), else (n, 3, s, s) with
    s = 1 (zero) or the side of the filled input (noise: 64 for a 64 CE and the cascade's 64 stage, else 128)."""
    if fill == "pathak":
        return None
    if fill == "zero":
        return torch.zeros(n, 3, 1, 1)
    side = 64 if isinstance(model, CascadeContextEncoder) or model.size == 64 else 128
    g = torch.Generator().manual_seed(derive_seed(seed, NOISE_STREAM))
    return torch.rand(n, 3, side, side, generator=g) * 2 - 1


def _input(model: Encoder, x: torch.Tensor, m: torch.Tensor, fill: torch.Tensor | None) -> torch.Tensor:
    """The input of the CE whose bottleneck is the code: eq. (1) for the cascade, with its 64 CE's hole filled
    by ``fill`` (None: Pathak's constants, the model's own path), else the image with its hole filled."""
    if isinstance(model, CascadeContextEncoder):
        if fill is None:
            return model.prepare_input(x, m)
        small, small_mask = downscale(x * (1 - m)), downscale_mask(m)
        pred = model.ce64(small * (1 - small_mask) + fill.to(x) * small_mask)
        return x * (1 - m) + upscale(paste(small, pred, small_mask), model.upscale_mode) * m
    return fill_hole(x, m) if fill is None else x * (1 - m) + fill.to(x) * m


def _code(model: Encoder, x: torch.Tensor, m: torch.Tensor, fill: torch.Tensor | None, code: str) -> torch.Tensor:
    """The codes (B, D) of images ``x`` under masks ``m``: the bottleneck convolution's output, or after BN (+ act)."""
    ce = _ce(model)
    z = ce.bottleneck_conv(ce.encoder(_input(model, x, m, fill)))
    if code == "bn":
        z = ce.bottleneck_bn(z)
    elif code == "act":
        z = ce.bottleneck_act(z)
    return z.flatten(1).float().cpu()


@torch.no_grad()
def _fold(model: Encoder, images: torch.Tensor, masks: torch.Tensor, fills: torch.Tensor | None, v: Variant,
          batch_size: int) -> StreamingNSD:
    """Every image's codes under every mask, folded into NSD moments, in the batches the variant's BN mode asks:
    ``"eval"``, an image's masks in chunks of ``batch_size`` (as :func:`cce_core.evaluate.encode_all`);
    ``"masks"``, all n masks of an image at once; ``"images"``, one mask on about TRAIN_BATCH images at once."""
    k, n = len(images), len(masks)
    acc = StreamingNSD(k, _ce(model).bottleneck)
    if v.bn_mode == "images":
        for i in range(n):
            for idx in torch.arange(k).tensor_split(math.ceil(k / TRAIN_BATCH)):  # no batch of 1
                x, m = at_model_scale(model, images[idx], masks[i:i + 1].expand(len(idx), -1, -1, -1))
                z = _code(model, x, m, None if fills is None else fills[i:i + 1], v.code)
                acc.update(z[:, None], index=idx)
        return acc
    chunk = n if v.bn_mode == "masks" else batch_size
    for j in range(k):
        for idx in torch.arange(n).split(chunk):
            x, m = at_model_scale(model, images[j:j + 1], masks[idx])
            z = _code(model, x.expand(len(idx), -1, -1, -1), m, None if fills is None else fills[idx], v.code)
            acc.update(z[None], index=[j])
    return acc


def _around_grand_mean(acc: StreamingNSD) -> StreamingNSD:
    """The moments of the same codes taken around one Zbar over all k n codes instead of each image's own:
    sum_i ||z_ji - Zbar||^2 = sum_i ||z_ji - Zbar_j||^2 + n ||Zbar_j - Zbar||^2."""
    out = StreamingNSD(acc.k, acc.dims)
    grand = acc.mean.mean(0)  # every image has n codes
    out.count, out.mean = acc.count.clone(), grand.expand_as(acc.mean).clone()
    out.m2 = acc.m2 + acc.count[:, None] * (acc.mean - grand) ** 2
    return out


def variant_nsd(model: Encoder, images: torch.Tensor, variant: Variant = OURS, n: int = 100, seed: int = 0,
                batch_size: int = 100, calibration: tuple[torch.Tensor, torch.Tensor] | None = None) -> ModelNSD:
    """NSD (section 3's estimator) of ``model`` on ``images`` (k, 3, 128, 128), read as ``variant`` says, in the
    three readings of :class:`cce_core.evaluate.ModelNSD`, with the n masks of :func:`variant_masks` (``n``,
    ``seed``). ``Variant()`` gives exactly :func:`cce_core.evaluate.model_nsd` on ``eval_masks(...)``.

    The BN-normalised reading divides the ``"conv"`` code by the bottleneck BN's sqrt(running_var + eps) (the
    book's) and the ``"bn"`` and ``"act"`` codes by |gamma|, the BN's weight (undoing its affine scale, so that
    ``"bn"`` in eval mode reads as ``"conv"``). A chance-line variant needs ``calibration`` = (images, masks) for
    :func:`chance_model`. Train-mode BN runs on a copy: ``model``'s statistics are never updated."""
    if variant.chance_seed is not None:
        if calibration is None:
            raise ValueError("a chance-line variant needs calibration=(training images, training masks)")
        model = chance_model(model, *calibration, seed=variant.chance_seed)
    masks = variant_masks(variant.masks, n, seed)
    fills = _fills(model, variant.fill, n, seed)
    work = model.eval() if variant.bn_mode == "eval" else copy.deepcopy(model).train()
    acc = _fold(work, images, masks, fills, variant, batch_size)
    if variant.zbar == "all":
        acc = _around_grand_mean(acc)
    scale = code_scale(model) if variant.code == "conv" else _ce(model).bottleneck_bn.weight.detach().abs().cpu()
    u = variant.unbiased
    return ModelNSD(acc.result(unbiased=u), acc.result(standardize=True, unbiased=u),
                    acc.result(scale=scale, unbiased=u))


# --- the cache ---------------------------------------------------------------------------------------------------

def _digest(*tensors: torch.Tensor) -> str:
    """The first 16 hex digits of the SHA-256 of tensors' bytes."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def measure_checkpoint(checkpoint: str | os.PathLike, variants: dict[str, Variant], images: torch.Tensor,
                       n: int = 100, seed: int = 0, cache: str | os.PathLike | None = None,
                       device: str | torch.device = "cpu",
                       calibration: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, dict]:
    """NSD of one checkpoint under each named variant (:func:`variant_nsd`), per image in the three readings:
    ``{name: {"normalized": [k floats], "raw": [...], "standardized": [...], "variant": {...}, "measured":
    {...}}}``; ``measured`` names the commit, the library code's SHA-256 (``tree``), date, device, torch and
    the checkpoint's SHA-256.

    ``cache`` (a JSON file, one per checkpoint): variants already measured are read from it and each new one is
    written as soon as it is done (atomically), so an interrupted run resumes; a variant whose checkpoint file,
    code, definition or calibration data changed is measured again; a cache made on other images, n or seed is
    refused. Values are stored at full precision (JSON floats round-trip exactly)."""
    key = {"k": int(images.shape[0]), "n": n, "seed": seed, "images": _digest(images)}
    cache = Path(cache) if cache else None
    done = open_cache(cache, key, "variants", "images, n or seed")
    measured = {**measured_by(device), "checkpoint": f"{Path(checkpoint).parent.name}/{Path(checkpoint).name}",
                "checkpoint_sha256": file_sha256(checkpoint)}
    cal = _digest(*calibration) if calibration is not None else None

    def current(name: str) -> bool:
        was, v = done["variants"].get(name), variants[name]
        if was is None:
            return False
        same_inputs = was["variant"] == asdict(v) and was["calibration"] == (cal if v.chance_seed is not None else None)
        return same_inputs and all(was["measured"][x] == measured[x] for x in ("tree", "checkpoint_sha256"))

    todo = [name for name in variants if not current(name)]
    model = load_model(checkpoint, device) if todo else None
    for name in tqdm(todo, desc="gap", unit="variant", disable=not todo):
        v = variants[name]
        res = variant_nsd(model, images, v, n, seed, calibration=calibration)
        done["variants"][name] = {
            **{r.name: getattr(res, r.name).per_image.astype(float).tolist() for r in fields(ModelNSD)},
            "variant": asdict(v), "calibration": cal if v.chance_seed is not None else None, "measured": measured}
        if cache:
            atomic_write_text(cache, json.dumps(done))
    return {name: done["variants"][name] for name in variants}


# --- a factor's effect, and the spread over images -------------------------------------------------------------

@dataclass(frozen=True)
class FactorEffect:
    """A factor's effect on NSD over training seeds: ``ratio``, the geometric mean over seeds of arm / reference
    with its seed-level interval (:func:`cce_core.stats.ratio_interval`); ``gap``, log(paper / ours); ``share``,
    log(ratio) / gap, the part of the gap the factor explains, and ``share_ci``, its interval (None, one seed)."""

    ratio: SeedInterval
    gap: float
    share: float
    share_ci: tuple[float, float] | None


def factor_effect(arm: list[float] | np.ndarray, reference: list[float] | np.ndarray, paper: float = PAPER_CE,
                  ours: float | None = None, confidence: float = 0.95) -> FactorEffect:
    """The effect of one factor: per training seed, the NSD (section 3) of an arm (the factor changed) and of its
    reference arm, paired by seed. The ratio's interval is the t-interval over seeds of log(arm / reference),
    exponentiated; the share of the gap log(paper / ours) explained is log(ratio) / log(paper / ours), with the
    same interval mapped through it. ``ours`` defaults to the reference's geometric mean over seeds; the gap is
    held fixed, so the share's interval carries the ratio's uncertainty only."""
    a, r = np.asarray(arm, dtype=np.float64).ravel(), np.asarray(reference, dtype=np.float64).ravel()
    if a.shape != r.shape or a.size == 0 or not ((a > 0).all() and (r > 0).all()):
        raise ValueError(f"need positive values of the arm and its reference for the same seeds, got {a} and {r}")
    ours = float(np.exp(np.log(r).mean())) if ours is None else ours
    gap = math.log(paper / ours)
    if gap == 0:
        raise ValueError("paper and ours are equal: there is no gap to explain")
    ratio = ratio_interval(a / r, confidence)
    ci = None if ratio.ci95 is None else tuple(sorted(math.log(x) / gap for x in ratio.ci95))
    return FactorEffect(ratio, gap, math.log(ratio.mean) / gap, ci)


def spread(values: NSDResult | np.ndarray | list[float]) -> tuple[float, float]:
    """NSD's spread over the k images of a measurement: the sd (ddof 1, as the paper's "mean +- std", section 5)
    and sd / mean; compare the latter with :data:`PAPER_SPREAD` (0.22 for the CE, 0.30 for the cascade)."""
    x = np.asarray(values.per_image if isinstance(values, NSDResult) else values, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError(f"need at least 2 per-image values, got {x.size}")
    sd = float(x.std(ddof=1))
    return sd, sd / float(x.mean())


# --- the page: every factor against the book's reading, and the search for the paper's procedure -------------------

#: The paper's NSD per model (section 5).
PAPER_NSD = {"ce128": PAPER_CE, "cce128": PAPER_CCE}
#: The variants' names on the page, by :data:`VARIANTS` key.
VARIANT_LABELS = {
    "ours": "the book's reading", "code_bn": "code after BatchNorm", "code_act": "code after BN + LeakyReLU",
    "bn_masks": "BN in train mode, batch = one image's masks", "bn_images": "BN in train mode, batch = images",
    "masks_region": "Pathak's random-region masks", "masks_large": "larger blocks", "fill_zero": "hole filled with 0",
    "fill_noise": "hole filled with noise", "zbar_all": "Z̄ over all codes (not per image)",
    "unbiased": "without the (n − 1)/n factor", "chance": "chance line (untrained, BN fitted)"}


#: The readings' short names, for figure axes and the cells' tables (each reading is introduced by its long name).
VARIANT_SHORT = {
    "ours": "book's reading", "code_bn": "after BN", "code_act": "after BN + LeakyReLU",
    "bn_masks": "BN train, batch = masks", "bn_images": "BN train, batch = images", "masks_region": "region masks",
    "masks_large": "larger blocks", "fill_zero": "hole 0", "fill_noise": "hole noise", "zbar_all": "Z̄ over all codes",
    "unbiased": "no (n − 1)/n", "chance": "chance line"}


def variant_label(name: str, short: bool = False) -> str:
    """A reading's name on the page: :data:`VARIANT_LABELS` (``short``: :data:`VARIANT_SHORT`), a combination's
    parts joined by " + "."""
    names = VARIANT_SHORT if short else VARIANT_LABELS
    return " + ".join(names.get(part, part) for part in name.split("+"))


def combined_variants(search: list[dict], top: int = 3) -> dict[str, Variant]:
    """The pairs of the ``top`` single evaluation choices closest to the paper (:func:`paper_search`; the chance
    line excluded) that change different fields of :class:`Variant`, each as one reading named ``"a+b"``: the
    search for the paper's procedure measures combinations instead of multiplying single effects."""
    singles = [r["key"] for r in search if r["key"] in VARIANTS and r["key"] not in ("ours", "chance")][:top]
    changed = {k: {f.name: getattr(VARIANTS[k], f.name) for f in fields(Variant)
                   if getattr(VARIANTS[k], f.name) != getattr(OURS, f.name)} for k in singles}
    return {f"{a}+{b}": Variant(**{**changed[a], **changed[b]}) for i, a in enumerate(singles) for b in singles[i + 1:]
            if not set(changed[a]) & set(changed[b])}


def seed_variants(seed: int) -> dict[str, Variant]:
    """:data:`VARIANTS` for one training seed: its chance line drawn from that seed (one untrained encoder per
    training seed, as the study's seeds are)."""
    return {name: (Variant(chance_seed=seed) if name == "chance" else v) for name, v in VARIANTS.items()}


def variant_means(measured: dict[int, dict[str, dict[str, dict]]], reading: str = "normalized"
                  ) -> dict[str, dict[str, list[float]]]:
    """From ``{seed: {model: measure_checkpoint(...)}}``, each variant's NSD (mean over the images, ``reading``)
    per model, one value per seed in seed order: ``{model: {variant: [S floats]}}``."""
    seeds = sorted(measured)
    models = list(measured[seeds[0]])
    return {m: {name: [float(np.mean(measured[s][m][name][reading])) for s in seeds]
                for name in measured[seeds[0]][m]} for m in models}


def gap_rows(measured: dict[int, dict[str, dict[str, dict]]], reading: str = "normalized") -> list[dict]:
    """The page's factor table: per model and variant, NSD (geometric mean over seeds), its ratio to the book's
    reading with the seed-level 95% interval (:func:`factor_effect`), the share of the gap log(paper / ours) it
    explains with its interval, and the spread over images (sd / mean, mean over seeds) against the paper's."""
    means = variant_means(measured, reading)
    rows = []
    for m, by in means.items():
        for name, values in by.items():
            sd_over_mean = np.mean([spread(measured[s][m][name][reading])[1] for s in sorted(measured)])
            row = {"model": m, "variant": variant_label(name), "key": name,
                   "NSD": float(np.exp(np.mean(np.log(values)))), "sd/mean over images": float(sd_over_mean),
                   "paper sd/mean": PAPER_SPREAD[m]}
            if name != "ours":
                e = factor_effect(values, by["ours"], paper=PAPER_NSD[m])
                row |= {"ratio": e.ratio.mean, "ratio ci95": e.ratio.ci95, "share of gap": e.share,
                        "share ci95": e.share_ci}
            rows.append(row)
    return rows


def paper_search(rows: list[dict]) -> list[dict]:
    """The search for the paper's procedure among the measured readings: per variant, whether the CE's NSD lies
    within the paper's 0.79 ± 0.17 and the cascade's within 0.56 ± 0.17 with the cascade below the CE, and how far
    each is from the paper's value in log (|log(ours / paper)|, 0 = equal), closest first."""
    by = {(r["model"], r["key"]): r for r in rows}
    out = []
    for name in dict.fromkeys(r["key"] for r in rows):
        ce, cce = by.get(("ce128", name)), by.get(("cce128", name))
        if ce is None or cce is None:
            continue
        within = {m: abs(r["NSD"] - PAPER_NSD[m]) <= PAPER_SD for m, r in (("ce128", ce), ("cce128", cce))}
        dist = max(abs(math.log(r["NSD"] / PAPER_NSD[m])) for m, r in (("ce128", ce), ("cce128", cce)))
        out.append({"variant": variant_label(name), "key": name, "CE": ce["NSD"], "cascade": cce["NSD"],
                    "both within the paper's ± sd": within["ce128"] and within["cce128"],
                    "cascade below CE": cce["NSD"] < ce["NSD"], "log distance": dist})
    return sorted(out, key=lambda r: r["log distance"])


def gap_answer(search: list[dict], rows: list[dict]) -> str:
    """The page's answer in one or two sentences (for the landing page): the book's reading against the paper's,
    whether any measured reading reaches the paper's values, the closest, and where the chance line sits."""
    by = {(r["model"], r["key"]): r for r in rows}
    ours = {m: by[(m, "ours")]["NSD"] for m in PAPER_NSD if (m, "ours") in by}
    trained = [r for r in search if r["key"] != "chance"]  # readings of the trained networks
    hit = [r for r in trained if r["both within the paper's ± sd"] and r["cascade below CE"]]
    best = trained[0]
    chance = {m: by[(m, "chance")]["NSD"] for m in PAPER_NSD if (m, "chance") in by}
    text = (f"Read as the book reads it, NSD is {ours.get('ce128', float('nan')):.3f} (CE) and "
            f"{ours.get('cce128', float('nan')):.3f} (cascade) against the paper's {PAPER_CE} and {PAPER_CCE}. ")
    if hit:
        text += (f"Reading it with {hit[0]['variant']} gives {hit[0]['CE']:.2f} and {hit[0]['cascade']:.2f}, inside "
                 f"the paper's ± {PAPER_SD} with the cascade lower.")
    else:
        text += ("No evaluation reading measured here (each choice alone, the closest in pairs) reaches both of the "
                 f"paper's values with the cascade lower; the closest, {best['variant']}, gives {best['CE']:.3f} and "
                 f"{best['cascade']:.3f}.")
    if chance:
        text += (f" An untrained encoder (the chance line) scores {chance.get('ce128', float('nan')):.3f} and "
                 f"{chance.get('cce128', float('nan')):.3f}.")
    return text


def chance_levels(measured: dict[int, dict[str, dict[str, dict]]]) -> dict[str, dict[str, float]]:
    """The chance line per model and reading (geometric mean over seeds of each seed's untrained encoder), for the
    other pages' NSD figures: ``{model: {"normalized": ..., "raw": ..., "standardized": ...}}``."""
    first = measured[sorted(measured)[0]]
    return {m: {reading: float(np.exp(np.mean(np.log(variant_means(measured, reading)[m]["chance"]))))
                for reading in ("normalized", "raw", "standardized")} for m in first}


# --- the training-side cells (cce_core.runs.GAP_CELLS): each arm against the seed's own model at the same step ----

def cell_variants(search: list[dict], cell: str, top: int = 2) -> dict[str, Variant]:
    """The readings a training-side cell is measured in: the book's, the ``top`` evaluation readings that came
    closest to the paper on the seeds' own models (:func:`paper_search`; the chance line excluded), so that a
    combination of a training factor and an evaluation choice is measured, not multiplied; and for the cell
    trained with a noise fill, the noise fill at evaluation too (as it was trained)."""
    names = ["ours"] + [r["key"] for r in search if r["key"] not in ("ours", "chance")][:top]
    if cell == "fillnoise":
        names.append("fill_noise")
    combined = combined_variants(search, top=max(top, 3))
    return {name: VARIANTS[name] if name in VARIANTS else combined[name] for name in dict.fromkeys(names)}


def cell_rows(cells: dict[int, dict[str, dict[str, dict[str, dict]]]], ours: dict[str, float], labels: dict[str, str],
              reading: str = "normalized") -> list[dict]:
    """The training-side factor table. ``cells``: ``{seed: {cell: {model: {"arm": measure_checkpoint(...),
    "reference": measure_checkpoint(...)}}}}`` (a cell present for some seeds only uses those). Per cell, model
    and reading: NSD of the arm and of the reference (geometric means over seeds), the arm / reference ratio with
    its seed-level 95% interval and its share of the gap log(paper / ``ours[model]``) (:func:`factor_effect`;
    ``ours``: the book's NSD of that model), and the same ratio for the spread over images (sd / mean)."""
    rows = []
    for cell in dict.fromkeys(c for by in cells.values() for c in by):
        seeds = [s for s in sorted(cells) if cell in cells[s]]
        for m, first in cells[seeds[0]][cell].items():
            for name in first["arm"]:
                arms, refs = ([cells[s][cell][m][x][name][reading] for s in seeds] for x in ("arm", "reference"))
                rows.append({"cell": cell, "factor": labels.get(cell, cell), "model": m, "key": name,
                             "reading": variant_label(name, short=True), "seeds": len(seeds),
                             **_arm_against_reference(arms, refs, m, ours[m])})
    return rows


def _geomean(x: list[float]) -> float:
    return float(np.exp(np.mean(np.log(x))))


def _arm_against_reference(arms: list[list[float]], refs: list[list[float]], model: str, ours: float) -> dict:
    """One row of :func:`cell_rows` from each seed's per-image NSD of the arm and of its reference."""
    arm, ref = [float(np.mean(a)) for a in arms], [float(np.mean(r)) for r in refs]
    e = factor_effect(arm, ref, paper=PAPER_NSD[model], ours=ours)
    sr = ratio_interval([spread(a)[1] / spread(r)[1] for a, r in zip(arms, refs)])
    return {"NSD": _geomean(arm), "reference NSD": _geomean(ref), "ratio": e.ratio.mean, "ratio ci95": e.ratio.ci95,
            "share of gap": e.share, "share ci95": e.share_ci,
            "sd/mean": float(np.mean([spread(a)[1] for a in arms])), "spread ratio": sr.mean,
            "spread ratio ci95": sr.ci95}


def cell_search(rows: list[dict]) -> list[dict]:
    """The search for the paper's procedure among the trained cells: per cell and reading, whether each model it
    trained lands within the paper's value ± 0.17 (and, with both, the cascade below the CE), and the larger
    distance from the paper's value in log; closest first."""
    by: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        by.setdefault((r["cell"], r["key"]), {"factor": r["factor"], "reading": r["reading"]})[r["model"]] = r["NSD"]
    out = []
    for (cell, key), v in by.items():
        models = [m for m in PAPER_NSD if m in v]
        out.append({"cell": cell, "key": key, "factor": v["factor"], "reading": v["reading"],
                    "CE": v.get("ce128"), "cascade": v.get("cce128"),
                    "within the paper's ± sd": all(abs(v[m] - PAPER_NSD[m]) <= PAPER_SD for m in models),
                    "cascade below CE": v["cce128"] < v["ce128"] if len(models) == 2 else None,
                    "log distance": max(abs(math.log(v[m] / PAPER_NSD[m])) for m in models)})
    return sorted(out, key=lambda r: r["log distance"])


def cells_answer(rows: list[dict], search: list[dict]) -> str:
    """One or two sentences on the training-side cells for the landing page: the factor that moves the CE's NSD
    most in the book's reading (its ratio and interval), and whether any trained cell, in any reading measured,
    lands within the paper's values (with the cascade lower where both were trained)."""
    own = [r for r in rows if r["key"] == "ours" and r["model"] == "ce128"]
    if not own:
        return ""
    big = max(own, key=lambda r: abs(math.log(r["ratio"])))
    ci = "" if big["ratio ci95"] is None else f" (95% CI {big['ratio ci95'][0]:.2f}–{big['ratio ci95'][1]:.2f})"
    text = (f"Of the training-side factors, {big['factor']} moves the CE's NSD most: ×{big['ratio']:.2f}{ci} over "
            f"{big['seeds']} seeds.")
    hit = [r for r in search if r["within the paper's ± sd"] and r["cascade below CE"] is not False]
    if hit:
        h = hit[0]
        text += (f" Trained with {h['factor']} and read with {h['reading']}, the networks land within the paper's "
                 f"values ({', '.join(f'{k} {h[k]:.2f}' for k in ('CE', 'cascade') if h[k] is not None)}).")
    else:
        text += " No trained cell, in any reading measured, lands within the paper's values."
    return text
