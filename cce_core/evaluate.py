"""NSD of trained models (paper section 5): k images x n masks through an encoder, streamed over masks.

The same n masks are used for every image and for every model compared, so two models can be compared pairwise
(:func:`cce_core.nsd.paired_comparison`). A 64 CE is evaluated on the images and masks downscaled by the
cascade's ``down``, i.e. on what it sees inside the cascade.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from .cascade import CascadeContextEncoder, downscale, downscale_mask
from .data import to_float
from .masks import MaskKind, fill_hole, make_masks
from .models import ContextEncoder
from .nsd import NSDResult, StreamingNSD

Encoder = ContextEncoder | CascadeContextEncoder


def eval_masks(kind: MaskKind, n: int, seed: int = 0, size: int = 128) -> torch.Tensor:
    """The n evaluation masks (n, 1, size, size), drawn once from ``seed`` and shared by all images and models."""
    if n < 2:
        raise ValueError(f"NSD needs at least n=2 masks, got {n}")
    if kind == "central":
        raise ValueError("the central mask is a single mask: NSD needs varying masks (random_blocks or random_region)")
    return make_masks(kind, n, size, torch.Generator().manual_seed(seed), **({"per_batch": False} if kind == "random_region" else {}))


def _is_small(model: Encoder) -> bool:
    return isinstance(model, ContextEncoder) and model.size == 64


def at_model_scale(model: Encoder, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8 or [-1, 1] float) and masks on the model's device, at its resolution: a 64 CE gets both
    downscaled by the cascade's ``down``, i.e. what it sees inside the cascade."""
    return _images_at_scale(model, images), _masks_at_scale(model, masks)


def _images_at_scale(model: Encoder, images: torch.Tensor) -> torch.Tensor:
    x = images.to(next(model.parameters()).device)
    x = to_float(x) if x.dtype == torch.uint8 else x
    return downscale(x) if _is_small(model) else x


def _masks_at_scale(model: Encoder, masks: torch.Tensor) -> torch.Tensor:
    m = masks.to(next(model.parameters()).device)
    return downscale_mask(m) if _is_small(model) else m


@torch.no_grad()
def encode_all(model: Encoder, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 100,
               progress: bool = True) -> StreamingNSD:
    """Stream E(P_j, M_i) for every image j (uint8 or [-1, 1] float, (k, 3, 128, 128)) and mask i into NSD moments.

    Memory is O(k D): codes are folded into a :class:`StreamingNSD` batch by batch, never stored all at once.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (k, 3, 128, 128), got {tuple(images.shape)}")
    if masks.ndim != 4 or masks.shape[0] < 2:
        raise ValueError(f"need at least 2 masks of shape (n, 1, 128, 128), got {tuple(masks.shape)}")
    model.eval()
    dims = (model.ce128 if isinstance(model, CascadeContextEncoder) else model).bottleneck
    acc = StreamingNSD(images.shape[0], dims)
    masks = _masks_at_scale(model, masks)  # once: the same n masks for every image
    for j in tqdm(range(images.shape[0]), disable=not progress, desc="NSD codes", unit="image"):
        x = _images_at_scale(model, images[j:j + 1])
        for i in range(0, masks.shape[0], batch_size):
            m = masks[i:i + batch_size]
            acc.update(model.encode(x.expand(len(m), -1, -1, -1), m)[None].float().cpu(), index=[j])
    return acc


def code_scale(model: Encoder) -> torch.Tensor:
    """The fixed per-dimension scale of the BN-normalised NSD: sqrt(running_var + eps) of the bottleneck
    BatchNorm of the model, for the cascade of its 128 CE (whose bottleneck gives the cascade's code)."""
    ce = model.ce128 if isinstance(model, CascadeContextEncoder) else model
    return ce.code_scale().cpu()


#: The three NSD readings, the headline one first.
READINGS = ("normalized", "raw", "standardized")
#: How the book names them.
READING_LABELS = {"normalized": "BN-normalised", "raw": "raw", "standardized": "eval-standardised"}


@dataclass
class ModelNSD:
    """NSD of one model in three readings (see :mod:`cce_core.nsd`).

    ``normalized``: codes divided by the bottleneck BatchNorm's sqrt(running_var + eps), the network's own map to
    N(0, I) (the headline); ``raw``: the formula on the convolution's output as is; ``standardized``: each
    dimension divided by its spread over the evaluation codes (depends on the evaluation set).
    """

    raw: NSDResult
    standardized: NSDResult
    normalized: NSDResult


def model_nsd(model: Encoder, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 100,
              progress: bool = True) -> ModelNSD:
    """NSD (section 3's estimator) of a model's codes over all images and masks, in the three readings."""
    acc = encode_all(model, images, masks, batch_size, progress)
    return ModelNSD(acc.result(), acc.result(standardize=True), acc.result(scale=code_scale(model)))


@torch.no_grad()
def inpaint(model: Encoder, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Inpaintings in [-1, 1] of uint8 or float images (B, 3, 128, 128) with one mask per image (a 64 CE's at 64)."""
    model.eval()
    outs = [model.inpaint(*at_model_scale(model, images[i:i + batch_size], masks[i:i + batch_size])).cpu()
            for i in range(0, len(images), batch_size)]
    return torch.cat(outs)


@torch.no_grad()
def codes(model: Encoder, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """E(P, M_i) of one image (3, 128, 128) under each of the n masks, shape (n, D) (for Fig. 2 and 3)."""
    model.eval()
    x, m = at_model_scale(model, image[None], masks)
    return model.encode(x.expand(len(m), -1, -1, -1), m).cpu()


def hole_mse(inpainted: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error over the missing pixels only, in the [-1, 1] scale, shape (B,)."""
    images = to_float(images) if images.dtype == torch.uint8 else images
    sq = ((inpainted - images) ** 2 * masks).flatten(1).sum(1)
    return sq / (3 * masks.flatten(1).sum(1)).clamp(min=1)


@torch.no_grad()
def cascade_stages(cce: CascadeContextEncoder, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage of the cascade (section 4.2, steps (i)-(iv)) for one image and mask, as [-1, 1] images (Fig. 1)."""
    cce.eval()
    x, m = at_model_scale(cce, image[None], mask[None] if mask.ndim == 3 else mask)
    small, small_mask = downscale(x * (1 - m)), downscale_mask(m)
    stages = {
        "image P": x,
        "(i) hole dropped": fill_hole(x, m),
        "(ii) downscaled, 64 CE input": fill_hole(small, small_mask),
        "(ii) 64 CE inpainting": cce.ce64.inpaint(small, small_mask),
        "(iii) upscaled into the hole": cce.prepare_input(x, m),
        "(iv) 128 CE output": cce.inpaint(x, m),
    }
    return {k: v[0].cpu() for k, v in stages.items()}


def project_2d(points: torch.Tensor) -> torch.Tensor:
    """Principal-component projection of (N, D) points to (N, 2), after per-dimension standardisation (Fig. 2)."""
    x = points.double()
    x = (x - x.mean(0)) / x.std(0).clamp(min=1e-12)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:2].T).float()
