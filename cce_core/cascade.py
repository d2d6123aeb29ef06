"""The cascade context encoder (paper section 4.2, eq. (1) and (2)).

A trained 64x64 CE, frozen, fills the hole of the 128x128 CE's input:

    x_128 = (1 - M) * P + M * up( F64( down((1 - M) * P), down(M) ) )

with M = 1 on the missing pixels. Step by step, as in the paper:
(i) the region of M is dropped; (ii) the image is downscaled (``down``) and inpainted by the 64 CE;
(iii) the 64 CE's result is upscaled (``up``) and replaces the dropped region; (iv) the 128 CE runs on that.

``down`` is leak-free: the mask is max-pooled (a 2x2 cell with any missing pixel is missing at 64) and the image
is average-pooled from (1 - M) * P, so no hidden pixel reaches the 64 CE. ``up`` is a x2 interpolation
(bilinear by default; the paper does not name the filter).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .masks import check_mask, paste
from .models import ContextEncoder, check_images

Upscale = Literal["bilinear", "bicubic", "nearest"]


def downscale(images: torch.Tensor) -> torch.Tensor:
    """The paper's x1/2 downscale for images: a 2x2 box average (exactly what a 128 pixel grid holds at 64)."""
    return F.avg_pool2d(images, 2)


def downscale_mask(mask: torch.Tensor) -> torch.Tensor:
    """x1/2 for masks, leak-free: a 64-pixel is missing if any of its four 128-pixels is missing (max-pool)."""
    return F.max_pool2d(mask, 2)


def upscale(images: torch.Tensor, mode: Upscale = "bilinear") -> torch.Tensor:
    """The paper's x2 upscale of the 64 CE's result (bilinear, align_corners=False, by default)."""
    if mode == "nearest":
        return F.interpolate(images, scale_factor=2, mode="nearest")
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(images, scale_factor=2, mode=mode, align_corners=False)
    raise ValueError(f"upscale mode must be 'bilinear', 'bicubic' or 'nearest', got {mode!r}")


class CascadeContextEncoder(nn.Module):
    """The cascade: a frozen 64x64 CE whose upscaled inpainting fills the hole of the 128x128 CE (eq. (1), (2)).

    ``ce64`` is put in eval mode and its parameters get ``requires_grad=False``; it stays in eval mode when the
    cascade is switched to training (only ``ce128`` trains, as in the paper's second step).
    """

    def __init__(self, ce64: ContextEncoder, ce128: ContextEncoder, upscale: Upscale = "bilinear") -> None:
        super().__init__()
        if ce64.size != 64 or ce128.size != 128:
            raise ValueError(f"need a 64x64 CE and a 128x128 CE, got sizes {ce64.size} and {ce128.size}")
        if upscale not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(f"upscale must be 'bilinear', 'bicubic' or 'nearest', got {upscale!r}")
        self.ce64, self.ce128, self.upscale_mode = ce64, ce128, upscale
        self.ce64.requires_grad_(False)
        self.ce64.eval()

    def train(self, mode: bool = True) -> CascadeContextEncoder:
        super().train(mode)
        self.ce64.eval()  # frozen: BatchNorm keeps its running statistics
        return self

    @property
    def size(self) -> int:
        return 128

    @property
    def output(self) -> str:
        return self.ce128.output

    def coarse(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Steps (i)-(iii): the 64 CE's inpainting of down((1-M) P), upscaled to 128, shape (B, 3, 128, 128)."""
        check_images(images, 128, "images")
        check_mask(mask, images)
        known = images * (1 - mask)  # (i): the hidden pixels are dropped before anything else sees the image
        small, small_mask = downscale(known), downscale_mask(mask)
        with torch.no_grad():
            small_filled = self.ce64.inpaint(small, small_mask)  # (ii)
        return upscale(small_filled, self.upscale_mode)

    def prepare_input(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The 128 CE's input of eq. (1): (1 - M) * P + M * up(F64(down((1 - M) * P))).  (iii)"""
        coarse = self.coarse(images, mask)
        mask = mask.to(images.dtype)
        return images * (1 - mask) + coarse * mask

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The cascade's latent code E(P, M): the 128 CE's bottleneck on the cascade input, shape (B, D)."""
        return self.ce128.encode(self.prepare_input(images, mask))

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(iv): F(x_128), the 128 CE's raw prediction (central block or full image)."""
        return self.ce128(self.prepare_input(images, mask))

    def inpaint(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The cascade's inpainting: every known pixel kept, the hole filled by the 128 CE's prediction."""
        return paste(images, self(images, mask), mask)

