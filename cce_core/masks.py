"""Region masks (paper section 4.3) and Pathak's hole filling.

A mask is a float tensor of shape (B, 1, S, S) with **1 on the missing pixels** (the paper's M) and 0 on the
known ones. Every random mask is drawn from an explicit ``torch.Generator``, so a seed fixes it.

Three strategies:

* :func:`central_mask`: "the central square patch in the image". As in Pathak's code (spec 3.1) the hole is the
  central block shrunk by an overlap ring: at 128 the hole is [36, 92)^2 inside the predicted block [32, 96)^2;
  at 64 the overlap is halved, hole [18, 46)^2 inside [16, 48)^2, which is exactly the 128 hole downscaled.
* :func:`random_blocks`: "a number of smaller possibly overlapping masks, covering up to 1/4 of the image".
  The paper gives no sizes or counts; the distribution chosen here is documented on the function.
* :func:`random_region`: Pathak's thresholded bicubic noise pattern (``train_random.lua``, spec 3.2).

The random generators are batched: a whole batch is drawn at once with tensor ops on the generator's device (a
GPU generator makes GPU masks with no host synchronisation). Their loop versions, :func:`random_blocks_reference`
and :func:`random_region_reference`, draw the same distributions (tested) and stay selectable
(``make_masks(..., mask_generator="reference")``); a seed gives other masks from the two.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

from .seeding import derive_seed

MaskKind = Literal["central", "random_blocks", "random_region"]

#: Pathak's per-channel hole fill in [-1, 1] (``train.lua:L283-285``): 2*117/255-1, 2*104/255-1, 2*123/255-1.
PATHAK_FILL: tuple[float, float, float] = (2 * 117 / 255 - 1, 2 * 104 / 255 - 1, 2 * 123 / 255 - 1)


def _check_size(size: int) -> None:
    if size not in (64, 128):
        raise ValueError(f"mask size must be 64 or 128, got {size!r}")


def _check_batch(batch: int) -> None:
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")


def _fresh_generator(device: torch.device | str | None = None) -> torch.Generator:
    """A generator on ``device`` (default CPU) seeded from the OS, for callers that pass none (the global torch
    RNG is left alone)."""
    g = torch.Generator(device=device if device is not None else "cpu")
    g.seed()
    return g


def center_box(size: int) -> tuple[int, int]:
    """The central block [size/4, 3 size/4) that a ``output="center"`` CE predicts and its D judges."""
    _check_size(size)
    return size // 4, 3 * size // 4


def default_overlap(size: int) -> int:
    """Pathak's README overlap (``overlapPred=4``) at 128, scaled to 2 at 64 (spec 6.3)."""
    _check_size(size)
    return size // 32


def central_mask(batch: int = 1, size: int = 128, overlap: int | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """The central-region mask: 1 on [size/4 + overlap, 3 size/4 - overlap)^2, shape (batch, 1, size, size)."""
    _check_size(size)
    _check_batch(batch)
    overlap = default_overlap(size) if overlap is None else overlap
    lo, hi = center_box(size)
    if not isinstance(overlap, int) or not 0 <= overlap < (hi - lo) // 2:
        raise ValueError(f"overlap must be an integer in [0, {(hi - lo) // 2}), got {overlap!r}")
    m = torch.zeros(batch, 1, size, size, device=device)
    m[:, :, lo + overlap:hi - overlap, lo + overlap:hi - overlap] = 1
    return m


def _block_sides(size: int, block_range: tuple[float, float], align: int, min_coverage: float,
                 max_coverage: float) -> tuple[int, int]:
    """Check the parameters of the random-blocks generators; the smallest and largest block side in pixels."""
    _check_size(size)
    if not 0 < min_coverage <= max_coverage <= 1:
        raise ValueError(f"need 0 < min_coverage <= max_coverage <= 1, got {min_coverage} and {max_coverage}")
    lo_frac, hi_frac = block_range
    lo_side, hi_side = int(round(size * lo_frac)), int(round(size * hi_frac))
    if not 1 <= lo_side <= hi_side <= size or align < 1:
        raise ValueError(f"bad block_range {block_range} or align {align} for size {size}")
    if lo_side * lo_side > max_coverage * size * size:
        raise ValueError(f"blocks of side >= {lo_side} cannot fit under max_coverage={max_coverage}")
    return lo_side, hi_side


def random_blocks(batch: int, size: int = 128, generator: torch.Generator | None = None,
                  max_coverage: float = 0.25, min_coverage: float = 0.10,
                  block_range: tuple[float, float] = (1 / 8, 1 / 4), align: int = 2,
                  device: torch.device | str | None = None, max_blocks: int = 16,
                  max_rejections: int = 50, return_blocks: bool = False) -> torch.Tensor:
    """Random blocks: several smaller, possibly overlapping rectangles covering up to ``max_coverage`` (1/4).

    The paper (section 4.3) fixes only "covering up to 1/4 of the image". Our choice, per image:

    1. draw a target coverage c ~ U(min_coverage, max_coverage) (10% to 25% by default);
    2. repeatedly draw a rectangle with each side uniform in [size/8, size/4] (16 to 32 px at 128) and its
       top-left corner uniform over the positions where it fits, all multiples of ``align``;
    3. add it unless the union would cover more than ``max_coverage`` (then draw another, at most
       ``max_rejections`` = 50 times); stop as soon as the union covers at least c.

    So the coverage never exceeds ``max_coverage`` and is usually between c and c + one block; a typical 128
    mask has 3 to 8 blocks. ``align=2`` keeps every block on even pixels, so the cascade's 2x downscale of the
    mask is exact (no partially hidden 2x2 cells).

    This is the batched generator (what training and :func:`make_masks` use): every draw for the whole batch is
    made at once on the generator's device, with no Python loop over images or blocks and no host
    synchronisation. Each image gets K = ``max_blocks`` + ``max_rejections`` candidate rectangles up front; a
    loop of ``max_blocks`` rounds then accepts, in every image at once, the first remaining candidate whose
    union with the blocks so far stays under the limit. The rejected candidates in between count against the
    50 rejections. The union's area under every candidate is kept up to date from a 2D prefix sum of the cells
    each accepted block adds (work on the ``align`` grid, 64 x 64 at 128). On a GPU all ``max_blocks`` rounds
    run (no host synchronisation); on the CPU, where nothing waits, the loop ends once every mask is done (the
    same result). About 3 ms for 64 masks at 128 on one CPU thread (``benchmarks/mask_speed.py``).
    This is the sequential rule of :func:`random_blocks_reference` applied to a pre-drawn stream of candidates,
    with one difference: an image stops after ``max_blocks`` (16) accepted blocks even if it is still under
    its target (the loop version needed more than 16 in none of 3,000 masks; 16 in one). The random numbers are
    drawn in another order, so a seed gives other masks than the reference, from the same distribution.
    The result is on ``device`` (default: the generator's device); with ``return_blocks`` it comes with the
    number of blocks of each mask, shape (B,).

    Long because the docstring states the law of the masks and the batched algorithm in full (half the lines);
    the code is one vectorised pass whose steps share their tensors.
    """
    _check_batch(batch)
    lo_side, hi_side = _block_sides(size, block_range, align, min_coverage, max_coverage)
    g = generator if generator is not None else _fresh_generator(device)
    dev = g.device
    cell = align if lo_side % align == 0 and size % align == 0 else 1  # every block edge lies on this grid
    B, G, K, w_max = batch, size // cell, max_blocks + max_rejections, hi_side // cell + 1
    limit = max_coverage * size * size / cell ** 2  # in cells

    u = torch.rand(B, 4 * K + 1, generator=g, device=dev)
    target = (min_coverage + (max_coverage - min_coverage) * u[:, 0]) * size * size / cell ** 2

    # uniform on {lo, lo + align, ..., <= hi}
    def pick(v: torch.Tensor, lo: int, hi: int | torch.Tensor) -> torch.Tensor:
        n = (hi - lo) // align + 1  # an int, or a tensor for positions (they depend on the side)
        k = (v * n).long()
        return lo + align * torch.where(k < n, k, n - 1)

    h, w = pick(u[:, 1:K + 1], lo_side, hi_side), pick(u[:, K + 1:2 * K + 1], lo_side, hi_side)
    y, x = pick(u[:, 2 * K + 1:3 * K + 1], 0, size - h), pick(u[:, 3 * K + 1:], 0, size - w)
    y, x, h, w = y // cell, x // cell, h // cell, w // cell  # candidates (B, K), in cells
    rect_area = (h * w).float()
    W = G + w_max  # the union, padded so that a w_max x w_max window at any block corner stays inside
    off = torch.arange(w_max, device=dev)
    window = (off[:, None] * W + off[None, :]).flatten()
    geometry = torch.stack([y * W + x, y, x, h, w], 2)  # per candidate: first cell of its window, y, x, h, w
    # the four corners of every candidate, as indices into a block's (w_max + 1)^2 prefix sum (set per round)
    cy, cx = torch.cat([y + h, y, y + h, y], 1), torch.cat([x + w, x + w, x, x], 1)  # (B, 4K)
    quarter = torch.arange(4 * K, device=dev) // K  # no host-to-device copy (it would wait for the GPU)
    corner_sign = 1.0 - 2.0 * ((quarter == 1) | (quarter == 2)).float()  # + - - +

    union = torch.zeros(B, W * W, device=dev)
    covered = torch.zeros(B, K, device=dev)  # union cells under each candidate
    area = torch.zeros(B, device=dev)
    nxt = torch.zeros(B, dtype=torch.long, device=dev)  # next candidate to consider
    rejected = torch.zeros(B, dtype=torch.long, device=dev)
    going = torch.ones(B, dtype=torch.bool, device=dev)  # still under its target, budget left
    blocks = torch.zeros(B, dtype=torch.long, device=dev)
    order = torch.arange(K, device=dev)
    prefix = torch.zeros(B, w_max + 1, w_max + 1, device=dev)
    for _ in range(max_blocks):
        fits = (area[:, None] + rect_area - covered <= limit) & (order >= nxt[:, None])
        j = torch.where(fits, order, K).amin(1)  # first candidate from nxt on that fits
        rejected = rejected + j - nxt
        take = going & (j < K) & (rejected < max_rejections)
        j = j.clamp(max=K - 1)
        nxt = j + 1
        base, ya, xa, ha, wa = geometry.gather(1, j[:, None, None].expand(B, 1, 5))[:, 0].split(1, 1)  # (B, 1)
        cells = base + window  # the accepted block's window in the union, (B, w_max^2)
        old = union.gather(1, cells)
        inside = ((off < ha) & take[:, None]).float()[:, :, None] * (off < wa).float()[:, None, :]
        added = inside.view(B, -1) * (1 - old)  # the block's cells not yet in the union
        prefix[:, 1:, 1:] = added.view(B, w_max, w_max).cumsum(1).cumsum(2)
        at = (cy - ya).clamp(0, w_max) * (w_max + 1) + (cx - xa).clamp(0, w_max)
        covered = covered + (prefix.view(B, -1).gather(1, at) * corner_sign).view(B, 4, K).sum(1)
        union.scatter_(1, cells, old + added)
        area = area + added.sum(1)
        blocks = blocks + take
        going = take & (area < target)
        if dev.type == "cpu" and not going.any():  # on the CPU nothing waits: stop once every mask is done
            break
    m = union.view(B, W, W)[:, None, :G, :G]
    if cell > 1:
        m = F.interpolate(m, scale_factor=cell, mode="nearest")
    m = m.to(device) if device is not None else m
    return (m, blocks.to(m.device)) if return_blocks else m


def random_blocks_reference(batch: int, size: int = 128, generator: torch.Generator | None = None,
                  max_coverage: float = 0.25, min_coverage: float = 0.10,
                  block_range: tuple[float, float] = (1 / 8, 1 / 4), align: int = 2,
                  device: torch.device | str | None = None, return_blocks: bool = False) -> torch.Tensor:
    """The loop version of :func:`random_blocks` (one image, one rectangle at a time on the CPU), kept as the
    reference its batched replacement is tested against and selectable as ``mask_generator="reference"``.

    The paper (section 4.3) fixes only "covering up to 1/4 of the image". Our choice, per image:

    1. draw a target coverage c ~ U(min_coverage, max_coverage) (10% to 25% by default);
    2. repeatedly draw a rectangle with each side uniform in [size/8, size/4] (16 to 32 px at 128) and its
       top-left corner uniform over the positions where it fits, all multiples of ``align``;
    3. add it unless the union would cover more than ``max_coverage`` (then draw another, at most 50 times);
       stop as soon as the union covers at least c.

    So the coverage never exceeds ``max_coverage`` and is usually between c and c + one block; a typical 128
    mask has 3 to 8 blocks. ``align=2`` keeps every block on even pixels, so the cascade's 2x downscale of the
    mask is exact (no partially hidden 2x2 cells).
    """
    _check_batch(batch)
    lo_side, hi_side = _block_sides(size, block_range, align, min_coverage, max_coverage)
    g = generator if generator is not None else _fresh_generator()
    area, limit = size * size, max_coverage * size * size

    def randint(lo: int, hi: int) -> int:  # uniform on {lo, lo + align, ..., <= hi}
        return lo + align * int(torch.randint(0, (hi - lo) // align + 1, (1,), generator=g))

    masks, blocks = torch.zeros(batch, 1, size, size), torch.zeros(batch, dtype=torch.long)
    for b in range(batch):
        target = (min_coverage + (max_coverage - min_coverage) * float(torch.rand(1, generator=g))) * area
        m, tries = masks[b, 0], 0
        while float(m.sum()) < target and tries < 50:
            h, w = randint(lo_side, hi_side), randint(lo_side, hi_side)
            y, x = randint(0, size - h), randint(0, size - w)
            trial = m.clone()
            trial[y:y + h, x:x + w] = 1
            if float(trial.sum()) <= limit:
                m.copy_(trial)
                blocks[b] += 1
            else:
                tries += 1
    masks = masks.to(device) if device is not None else masks
    return (masks, blocks.to(masks.device)) if return_blocks else masks


@lru_cache(maxsize=2)
def _noise_pattern(seed: int, res: float, density: float, pattern_size: int) -> torch.Tensor:
    """Pathak's global pattern: uniform noise of side res*pattern_size, bicubic upsampled, thresholded < density."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 1, int(res * pattern_size), int(res * pattern_size), generator=g)
    high = F.interpolate(low, size=(pattern_size, pattern_size), mode="bicubic", align_corners=False)
    return (high[0, 0] < density)


def _pattern_on(seed: int, res: float, density: float, pattern_size: int, device: torch.device) -> torch.Tensor:
    """:func:`_noise_pattern` on ``device``, kept there (one copy per device)."""
    return _pattern_cache(seed, res, density, pattern_size, str(device))


@lru_cache(maxsize=2)
def _pattern_cache(seed: int, res: float, density: float, pattern_size: int, device: str) -> torch.Tensor:
    return _noise_pattern(seed, res, density, pattern_size).to(device)


def random_region(batch: int, size: int = 128, generator: torch.Generator | None = None,
                  per_batch: bool = True, pattern_seed: int = 0, res: float = 0.06, density: float = 0.25,
                  pattern_size: int = 10000, coverage: tuple[float, float] = (0.20, 0.30),
                  device: torch.device | str | None = None, candidates: int = 64) -> torch.Tensor:
    """Pathak's random-region masks (``train_random.lua:L273-283, L316-335``, spec 3.2).

    A global pattern (``pattern_size``^2, thresholded bicubic noise of resolution ``res``) is built once per
    ``pattern_seed``; each mask is a size^2 crop of it whose masked area is strictly inside ``coverage``
    (20% to 30%). ``per_batch=True`` (faithful) repeats one mask for the whole batch. A smaller
    ``pattern_size`` keeps the blob scale (one noise cell is 1/res pixels) and saves memory in tests.

    Batched: ``candidates`` crop positions per mask are drawn at once on the generator's device (the pattern is
    kept there) and the first one inside ``coverage`` is used, which is the reference's rule (draw until one
    fits), so the distribution is the same: uniform over the fitting positions. About 29% of positions fit at
    the default settings, so 64 candidates all miss with probability ~3e-10; on the CPU that raises
    RuntimeError, on a GPU it is not checked (no host synchronisation) and the last candidate is used.
    """
    _check_size(size)
    _check_batch(batch)
    if pattern_size <= size or res * pattern_size < 2:
        raise ValueError(f"pattern_size={pattern_size} is too small for size {size} and res {res}")
    g = generator if generator is not None else _fresh_generator(device)
    dev = g.device
    pattern = _pattern_on(pattern_seed, res, density, pattern_size, dev)
    ar = torch.arange(size, device=dev)
    n = 1 if per_batch else batch
    chosen = []
    for first in range(0, n, 16):  # at most 16 masks' candidates (16 x 64 crops) in memory at once
        m = min(16, n - first)
        pos = torch.randint(0, pattern_size - size, (m, candidates, 2), generator=g, device=dev)
        rows = (pos[..., 0, None] + ar)[..., :, None]  # (m, K, size, 1)
        cols = (pos[..., 1, None] + ar)[..., None, :]  # (m, K, 1, size)
        crops = pattern[rows, cols]  # (m, K, size, size)
        frac = crops.flatten(2).sum(2) / size ** 2
        fits = (frac > coverage[0]) & (frac < coverage[1])
        if dev.type == "cpu" and not fits.any(1).all():
            raise RuntimeError(f"no crop of the noise pattern has coverage in {coverage}; check res/density")
        k = torch.where(fits, torch.arange(candidates, device=dev), candidates).amin(1).clamp(max=candidates - 1)
        chosen.append(crops[torch.arange(m, device=dev), k])
    out = torch.cat(chosen).float()[:, None]
    if per_batch:
        out = out.expand(batch, 1, size, size).contiguous()
    return out.to(device) if device is not None else out


def random_region_reference(batch: int, size: int = 128, generator: torch.Generator | None = None,
                  per_batch: bool = True, pattern_seed: int = 0, res: float = 0.06, density: float = 0.25,
                  pattern_size: int = 10000, coverage: tuple[float, float] = (0.20, 0.30),
                  device: torch.device | str | None = None) -> torch.Tensor:
    """The loop version of :func:`random_region` (one candidate crop at a time), kept as its reference.

    A global pattern (``pattern_size``^2, thresholded bicubic noise of resolution ``res``) is built once per
    ``pattern_seed``; each mask is a size^2 crop of it whose masked area is strictly inside ``coverage``
    (20% to 30%). ``per_batch=True`` (faithful) repeats one mask for the whole batch. A smaller
    ``pattern_size`` keeps the blob scale (one noise cell is 1/res pixels) and saves memory in tests.
    """
    _check_size(size)
    _check_batch(batch)
    if pattern_size <= size or res * pattern_size < 2:
        raise ValueError(f"pattern_size={pattern_size} is too small for size {size} and res {res}")
    pattern = _noise_pattern(pattern_seed, res, density, pattern_size)
    g = generator if generator is not None else _fresh_generator()
    out = torch.zeros(batch, 1, size, size)
    for b in range(1 if per_batch else batch):
        for _ in range(10000):
            y, x = (int(v) for v in torch.randint(0, pattern_size - size, (2,), generator=g))
            crop = pattern[y:y + size, x:x + size]
            frac = float(crop.float().mean())
            if coverage[0] < frac < coverage[1]:
                out[b, 0] = crop.float()
                break
        else:
            raise RuntimeError(f"no crop of the noise pattern has coverage in {coverage}; check res/density")
    if per_batch:
        out[1:] = out[:1]
    return out.to(device) if device is not None else out


MASK_GENERATORS = ("batched", "reference")


def make_masks(kind: MaskKind, batch: int, size: int = 128, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, mask_generator: str = "batched",
               **kwargs) -> torch.Tensor:
    """Draw ``batch`` masks of the given strategy (``"central"``, ``"random_blocks"``, ``"random_region"``).

    ``mask_generator="batched"`` (default) uses the batched generators (:func:`random_blocks`,
    :func:`random_region`), ``"reference"`` their loop versions (:func:`random_blocks_reference`,
    :func:`random_region_reference`): the same distributions, other masks for a seed.
    """
    if mask_generator not in MASK_GENERATORS:
        raise ValueError(f"mask_generator must be one of {MASK_GENERATORS}, got {mask_generator!r}")
    ref = mask_generator == "reference"
    if kind == "central":
        return central_mask(batch, size, device=device, **kwargs)
    if kind == "random_blocks":
        return (random_blocks_reference if ref else random_blocks)(batch, size, generator, device=device, **kwargs)
    if kind == "random_region":
        return (random_region_reference if ref else random_region)(batch, size, generator, device=device, **kwargs)
    raise ValueError(f"unknown mask kind {kind!r}; choose 'central', 'random_blocks' or 'random_region'")


_CHECK_VALUES = True  # see unchecked_masks


@contextmanager
def unchecked_masks() -> Iterator[None]:
    """Inside this block :func:`check_mask` checks shapes only, and :func:`paste` skips its "hole outside the
    central block" check: the value checks read a device tensor on the host, which stalls a GPU every step. The
    fast training path runs its step in this block and checks each batch's masks on the device instead
    (:func:`invalid_mask_count`, read at log time)."""
    global _CHECK_VALUES
    before, _CHECK_VALUES = _CHECK_VALUES, False
    try:
        yield
    finally:
        _CHECK_VALUES = before


def invalid_mask_count(mask: torch.Tensor) -> torch.Tensor:
    """The number of values of ``mask`` other than 0 and 1, as a device tensor (no host synchronisation)."""
    return ((mask != 0) & (mask != 1)).sum()


def check_mask(mask: torch.Tensor, images: torch.Tensor) -> None:
    """Raise a clear error unless ``mask`` is (B, 1, S, S) with 0/1 values matching ``images`` (B, 3, S, S)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, S, S), got {tuple(images.shape)}")
    want = (images.shape[0], 1, images.shape[2], images.shape[3])
    if tuple(mask.shape) != want:
        raise ValueError(f"mask must have shape {want} to match images {tuple(images.shape)}, got {tuple(mask.shape)}")
    if _CHECK_VALUES and not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must hold only 0 (known) and 1 (missing) values")


@lru_cache(maxsize=8)
def _fill_constant(fill: tuple[float, float, float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The (1, 3, 1, 1) fill tensor, made once per dtype and device (not copied to the device every call); made
    outside inference mode, so that it can be used everywhere."""
    with torch.inference_mode(False):
        return torch.tensor(fill, dtype=dtype, device=device).view(1, 3, 1, 1)


def fill_hole(images: torch.Tensor, mask: torch.Tensor, fill: tuple[float, float, float] = PATHAK_FILL) -> torch.Tensor:
    """The CE input: known pixels (1 - M) * P kept, missing pixels set to Pathak's per-channel constants."""
    check_mask(mask, images)
    const = _fill_constant(tuple(fill), images.dtype, images.device)
    mask = mask.to(images.dtype)
    return images * (1 - mask) + const * mask


#: The purpose of :class:`NoiseFill`'s streams (:func:`cce_core.seeding.derive_seed`).
FILL_NOISE_STREAM = "fill noise"


class NoiseFill:
    """The CE input with the hole filled by uniform noise in [-1, 1] (per pixel and channel) instead of Pathak's
    constants: a training-side factor of NSD (issue 28), beyond the paper and Pathak's code.

    The noise of training step t comes from a generator on the images' device seeded with
    ``derive_seed(seed, "fill noise", t)``: a resumed run fills its holes exactly as an unbroken one, and the
    batches and masks of the run are those of the same seed with Pathak's fill (the noise has its own stream).
    The training loop sets the step with :meth:`at` before each step; calls within a step see the same noise.
    """

    def __init__(self, seed: int) -> None:
        self.seed, self.step = int(seed), 0

    def at(self, step: int) -> NoiseFill:
        self.step = int(step)
        return self

    def __call__(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        check_mask(mask, images)
        g = torch.Generator(device=images.device).manual_seed(derive_seed(self.seed, FILL_NOISE_STREAM, self.step))
        noise = torch.rand(images.shape, generator=g, device=images.device).to(images.dtype) * 2 - 1
        mask = mask.to(images.dtype)
        return images * (1 - mask) + noise * mask


def paste(images: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(1 - M) * P + M * prediction, where a central-block prediction is placed at :func:`center_box` first.

    A central-block prediction can only fill holes inside the central block; a mask reaching outside it is an
    error (use an ``output="full"`` model for random masks).
    """
    check_mask(mask, images)
    size = images.shape[-1]
    if prediction.shape[-1] == size:
        canvas = prediction
    elif prediction.shape[-1] == size // 2:
        lo, hi = center_box(size)
        outside = mask.clone()
        outside[..., lo:hi, lo:hi] = 0
        if _CHECK_VALUES and outside.any():
            raise ValueError("this model predicts only the central block, but the mask has missing pixels outside "
                             f"[{lo}, {hi})^2; use a model with output='full' for random masks")
        canvas = images.clone()
        canvas[..., lo:hi, lo:hi] = prediction
    else:
        raise ValueError(f"prediction of side {prediction.shape[-1]} does not fit images of side {size}")
    mask = mask.to(images.dtype)
    return images * (1 - mask) + canvas * mask


def coverage(mask: torch.Tensor) -> torch.Tensor:
    """Fraction of missing pixels of each mask, shape (B,)."""
    return mask.flatten(1).float().mean(1)
