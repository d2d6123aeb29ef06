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
from .masks import MaskKind, make_masks
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


@torch.no_grad()
def encode_all(model: Encoder, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 100,
               progress: bool = True, device: torch.device | str | None = None) -> StreamingNSD:
    """Stream E(P_j, M_i) for every image j (uint8 or [-1, 1] float, (k, 3, 128, 128)) and mask i into NSD moments.

    Memory is O(k D): codes are folded into a :class:`StreamingNSD` batch by batch, never stored all at once.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (k, 3, 128, 128), got {tuple(images.shape)}")
    if masks.ndim != 4 or masks.shape[0] < 2:
        raise ValueError(f"need at least 2 masks of shape (n, 1, 128, 128), got {tuple(masks.shape)}")
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    small = isinstance(model, ContextEncoder) and model.size == 64
    dims = (model.ce128 if isinstance(model, CascadeContextEncoder) else model).bottleneck
    k, n = images.shape[0], masks.shape[0]
    acc = StreamingNSD(k, dims)
    masks = masks.to(device)
    if small:
        masks = downscale_mask(masks)
    for j in tqdm(range(k), disable=not progress, desc="NSD codes", unit="image"):
        img = images[j:j + 1].to(device)
        img = to_float(img) if img.dtype == torch.uint8 else img
        if small:
            img = downscale(img)
        for i in range(0, n, batch_size):
            mb = masks[i:i + batch_size]
            codes = model.encode(img.expand(len(mb), -1, -1, -1), mb)
            acc.update(codes[None].float().cpu(), index=[j])
    return acc


@dataclass
class ModelNSD:
    """NSD of one model, raw and standardised (see :mod:`cce_core.nsd`)."""

    raw: NSDResult
    standardized: NSDResult


def model_nsd(model: Encoder, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 100,
              progress: bool = True) -> ModelNSD:
    """NSD (section 3's estimator) of a model's codes over all images and masks, raw and standardised."""
    acc = encode_all(model, images, masks, batch_size, progress)
    return ModelNSD(acc.result(standardize=False), acc.result(standardize=True))


@torch.no_grad()
def inpaint(model: Encoder, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Inpaintings (B, 3, 128, 128) in [-1, 1] of uint8 or float images with one mask per image."""
    model.eval()
    device = next(model.parameters()).device
    outs = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        x = to_float(x) if x.dtype == torch.uint8 else x
        m = masks[i:i + batch_size].to(device)
        if isinstance(model, ContextEncoder) and model.size == 64:
            x, m = downscale(x), downscale_mask(m)
        outs.append(model.inpaint(x, m).cpu())
    return torch.cat(outs)



@torch.no_grad()
def codes(model: Encoder, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """E(P, M_i) of one image (3, 128, 128) under each of the n masks, shape (n, D) (for Fig. 2 and 3)."""
    model.eval()
    device = next(model.parameters()).device
    x = image[None].to(device)
    x = to_float(x) if x.dtype == torch.uint8 else x
    m = masks.to(device)
    if isinstance(model, ContextEncoder) and model.size == 64:
        x, m = downscale(x), downscale_mask(m)
    return model.encode(x.expand(len(m), -1, -1, -1), m).cpu()


def hole_mse(inpainted: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error over the missing pixels only, in the [-1, 1] scale, shape (B,)."""
    images = to_float(images) if images.dtype == torch.uint8 else images
    sq = ((inpainted - images) ** 2 * masks).flatten(1).sum(1)
    return sq / (3 * masks.flatten(1).sum(1)).clamp(min=1)


@torch.no_grad()
def cascade_stages(cce: CascadeContextEncoder, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage of the cascade (section 4.2, steps (i)-(iv)) for one image and mask, as [-1, 1] images (Fig. 1)."""
    from .masks import fill_hole
    cce.eval()
    device = next(cce.parameters()).device
    x = image[None].to(device)
    x = to_float(x) if x.dtype == torch.uint8 else x
    m = mask[None].to(device) if mask.ndim == 3 else mask.to(device)
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
