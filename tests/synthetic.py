"""Synthetic 128x128 pictures for the tests (no data set needed)."""

from pathlib import Path

import numpy as np
from PIL import Image


def picture(seed: int, mode: str = "RGB") -> Image.Image:
    """A 128x128 picture: a colour gradient plus noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 128)
    base = rng.uniform(0, 255, 3) * ramp[:, None, None] + rng.uniform(0, 255, 3) * ramp[None, :, None]
    pixels = np.clip(base / 2 + rng.normal(0, 30, (128, 128, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def write_pictures(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        picture(i).save(folder / (f"{i:03d}.jpg" if i % 2 else f"{i:03d}.png"), **({"quality": 90} if i % 2 else {}))
