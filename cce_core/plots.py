"""Small plotting helpers shared by the notebooks: tensors in the networks' [-1, 1] range to images, and grids.

matplotlib is imported lazily (inside the functions that draw), so importing ``cce_core.plots`` costs nothing
for code that only converts images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes


def to_numpy_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """One image as an H x W x 3 float array in [0, 1], ready for ``imshow``.

    Accepts a float tensor in [-1, 1] (the networks' range) or a uint8 tensor in [0, 255], of shape (3, H, W)
    (an image) or (1, H, W) / (H, W) (a mask or other single channel, shown in grey). A leading batch
    dimension of size 1 is dropped. Float values outside [-1, 1] are clipped.
    """
    t = torch.as_tensor(image).detach().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (3, H, W), (1, H, W) or (H, W), got {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        x = t.float() / 255
    elif t.is_floating_point():
        x = (t.float().clamp(-1, 1) + 1) / 2
    else:
        raise TypeError(f"expected a float image in [-1, 1] or a uint8 image, got dtype {t.dtype}")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.permute(1, 2, 0).numpy()


def mask_to_image(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 mask (1 = missing) as a float image in [-1, 1] for :func:`show_grid`: missing white, known black."""
    return torch.as_tensor(mask).float() * 2 - 1


def show_grid(images: torch.Tensor | Sequence[torch.Tensor], titles: Sequence[str] | None = None, *,
              ncols: int | None = None, axes: Sequence[Axes] | np.ndarray | None = None,
              size: float = 2.2, fontsize: float = 9) -> np.ndarray:
    """Show images (each as accepted by :func:`to_numpy_image`) side by side, one per axes, without ticks.

    ``images`` is a batch (B, C, H, W) or a list of single images. Either pass ``axes`` (at least one per image;
    extra ones are hidden) or let the function make a figure with ``ncols`` columns (default: all in one row),
    ``size`` inches per image. Returns the axes as a flat array, so a caller can draw on top (e.g. boxes).
    """
    images = list(images)
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    if axes is None:
        import matplotlib.pyplot as plt

        ncols = ncols or len(images)
        nrows = -(-len(images) // ncols)
        _, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3 * (titles is not None)),
                               squeeze=False)
    axes = np.asarray(axes, dtype=object).ravel()
    if len(axes) < len(images):
        raise ValueError(f"got {len(axes)} axes for {len(images)} images")
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(images):
            ax.set_visible(False)
            continue
        ax.imshow(to_numpy_image(images[i]), interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=fontsize)
    return axes


def draw_box(ax: Axes, lo: float, hi: float, *, color: str = "yellow", linestyle: str = "-", label: str | None = None,
             linewidth: float = 1.5) -> None:
    """Outline the square [lo, hi)^2 (pixel indices) on an ``imshow`` axes: the edge lies on the pixel borders."""
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((lo - 0.5, lo - 0.5), hi - lo, hi - lo, fill=False, edgecolor=color,
                           linestyle=linestyle, linewidth=linewidth, label=label))
