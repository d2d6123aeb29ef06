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
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

MaskKind = Literal["central", "random_blocks", "random_region"]

#: Pathak's per-channel hole fill in [-1, 1] (``train.lua:L283-285``): 2*117/255-1, 2*104/255-1, 2*123/255-1.
PATHAK_FILL: tuple[float, float, float] = (2 * 117 / 255 - 1, 2 * 104 / 255 - 1, 2 * 123 / 255 - 1)


def _check_size(size: int) -> None:
    if size not in (64, 128):
        raise ValueError(f"mask size must be 64 or 128, got {size!r}")


def _check_batch(batch: int) -> None:
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")


def _fresh_generator() -> torch.Generator:
    """A generator seeded from the OS, for callers that pass none (the global torch RNG is left alone)."""
    g = torch.Generator()
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


def random_blocks(batch: int, size: int = 128, generator: torch.Generator | None = None,
                  max_coverage: float = 0.25, min_coverage: float = 0.10,
                  block_range: tuple[float, float] = (1 / 8, 1 / 4), align: int = 2,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Random blocks: several smaller, possibly overlapping rectangles covering up to ``max_coverage`` (1/4).

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
    _check_size(size)
    _check_batch(batch)
    if not 0 < min_coverage <= max_coverage <= 1:
        raise ValueError(f"need 0 < min_coverage <= max_coverage <= 1, got {min_coverage} and {max_coverage}")
    lo_frac, hi_frac = block_range
    lo_side, hi_side = int(round(size * lo_frac)), int(round(size * hi_frac))
    if not 1 <= lo_side <= hi_side <= size or align < 1:
        raise ValueError(f"bad block_range {block_range} or align {align} for size {size}")
    if lo_side * lo_side > max_coverage * size * size:
        raise ValueError(f"blocks of side >= {lo_side} cannot fit under max_coverage={max_coverage}")
    g = generator if generator is not None else _fresh_generator()
    area, limit = size * size, max_coverage * size * size

    def randint(lo: int, hi: int) -> int:  # uniform on {lo, lo + align, ..., <= hi}
        return lo + align * int(torch.randint(0, (hi - lo) // align + 1, (1,), generator=g))

    masks = torch.zeros(batch, 1, size, size)
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
            else:
                tries += 1
    return masks.to(device) if device is not None else masks


@lru_cache(maxsize=2)
def _noise_pattern(seed: int, res: float, density: float, pattern_size: int) -> torch.Tensor:
    """Pathak's global pattern: uniform noise of side res*pattern_size, bicubic upsampled, thresholded < density."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 1, int(res * pattern_size), int(res * pattern_size), generator=g)
    high = F.interpolate(low, size=(pattern_size, pattern_size), mode="bicubic", align_corners=False)
    return (high[0, 0] < density)


def random_region(batch: int, size: int = 128, generator: torch.Generator | None = None,
                  per_batch: bool = True, pattern_seed: int = 0, res: float = 0.06, density: float = 0.25,
                  pattern_size: int = 10000, coverage: tuple[float, float] = (0.20, 0.30),
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Pathak's random-region masks (``train_random.lua:L273-283, L316-335``, spec 3.2).

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


def make_masks(kind: MaskKind, batch: int, size: int = 128, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, **kwargs) -> torch.Tensor:
    """Draw ``batch`` masks of the given strategy (``"central"``, ``"random_blocks"``, ``"random_region"``)."""
    if kind == "central":
        return central_mask(batch, size, device=device, **kwargs)
    if kind == "random_blocks":
        return random_blocks(batch, size, generator, device=device, **kwargs)
    if kind == "random_region":
        return random_region(batch, size, generator, device=device, **kwargs)
    raise ValueError(f"unknown mask kind {kind!r}; choose 'central', 'random_blocks' or 'random_region'")


def check_mask(mask: torch.Tensor, images: torch.Tensor) -> None:
    """Raise a clear error unless ``mask`` is (B, 1, S, S) with 0/1 values matching ``images`` (B, 3, S, S)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, S, S), got {tuple(images.shape)}")
    want = (images.shape[0], 1, images.shape[2], images.shape[3])
    if tuple(mask.shape) != want:
        raise ValueError(f"mask must have shape {want} to match images {tuple(images.shape)}, got {tuple(mask.shape)}")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must hold only 0 (known) and 1 (missing) values")


def fill_hole(images: torch.Tensor, mask: torch.Tensor, fill: tuple[float, float, float] = PATHAK_FILL) -> torch.Tensor:
    """The CE input: known pixels (1 - M) * P kept, missing pixels set to Pathak's per-channel constants."""
    check_mask(mask, images)
    const = torch.tensor(fill, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    mask = mask.to(images.dtype)
    return images * (1 - mask) + const * mask


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
        if outside.any():
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
