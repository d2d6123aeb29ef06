"""Where a training run's randomness comes from: its batches of images and masks, and the seeds of its streams.

A run draws its batch indices, flips and (with ``mask_chunk`` = 1) masks from one generator (:func:`make_generator`);
with ``mask_chunk`` > 1 the random masks come in chunks from a :class:`MaskStream`. Every stream (the batches, each
chunk of masks, the NSD loss's masks) is seeded with :func:`cce_core.seeding.derive_seed` of the run's seed, its
purpose and its index, so no stream meets another, nor the evaluation's masks. The 64 CE is trained on the 128 crops
and masks downscaled by the cascade's own ``down``.
"""

from __future__ import annotations

import torch

from .cascade import downscale, downscale_mask
from .config import TrainConfig
from .data import sample_batch
from .masks import central_mask, make_masks
from .seeding import derive_seed

#: The purposes of a run's streams (:func:`cce_core.seeding.derive_seed`).
BATCH_STREAM, MASK_CHUNK_STREAM = "batches", "mask chunk"


def make_generator(cfg: TrainConfig, device: torch.device) -> torch.Generator:
    """The run's generator (seeded with ``derive_seed(cfg.seed, "batches")``) of batch indices, flips and masks: on
    the training device with ``device_rng`` (nothing drawn on the host, nothing copied per step), else on the CPU."""
    return torch.Generator(device=device if cfg.device_rng else "cpu").manual_seed(derive_seed(cfg.seed, BATCH_STREAM))


class MaskStream:
    """The random masks of steps ``start``, ``start + 1``, ... drawn ``cfg.mask_chunk`` steps at a time.

    One call of the mask generator per chunk instead of one per step: on a GPU each call launches a few hundred
    small kernels, which would cost about as much host time as the networks' step. Chunk c (steps c N to
    c N + N - 1) is drawn on the training device from its own generator, seeded with
    ``derive_seed(cfg.seed, "mask chunk", c)``, so a resumed run redraws the chunk it stopped in and continues
    exactly. ``random_region`` keeps one mask per batch (Pathak): a chunk holds N masks, each repeated over its batch.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, start: int = 0) -> None:
        if cfg.mask == "central":
            raise ValueError("the central mask is fixed: it needs no mask stream")
        self.cfg, self.device, self.step, self.chunk, self.masks = cfg, device, start, -1, torch.empty(0)

    def _draw(self, chunk: int) -> torch.Tensor:
        cfg, n = self.cfg, self.cfg.mask_chunk
        on = self.device if cfg.mask_generator == "batched" else torch.device("cpu")  # the loop versions: CPU
        g = torch.Generator(device=on).manual_seed(derive_seed(cfg.seed, MASK_CHUNK_STREAM, chunk))
        if cfg.mask == "random_region":
            m = make_masks(cfg.mask, n, 128, g, mask_generator=cfg.mask_generator, per_batch=False)
            m = m[:, None].expand(n, cfg.batch_size, 1, 128, 128)
        else:
            m = make_masks(cfg.mask, n * cfg.batch_size, 128, g, mask_generator=cfg.mask_generator)
            m = m.view(n, cfg.batch_size, 1, 128, 128)
        return m.to(self.device)

    def next(self) -> torch.Tensor:
        """The (batch, 1, 128, 128) masks of the next step."""
        chunk, i = divmod(self.step, self.cfg.mask_chunk)
        if chunk != self.chunk:
            self.chunk, self.masks = chunk, self._draw(chunk)
        self.step += 1
        return self.masks[i]


def next_batch(cfg: TrainConfig, images: torch.Tensor, gen: torch.Generator, device: torch.device,
               masks: MaskStream | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch (images in [-1, 1], masks) at the model's resolution, drawn from ``gen``.

    Indices, flips and masks are drawn on ``gen``'s device (see :func:`make_generator`) and end on ``device``;
    random masks come from ``masks`` if given (see :func:`make_mask_stream`), else from ``gen``, which must then
    be a CPU generator for the loop mask generator (``"reference"``: it draws on the CPU). Random masks are drawn
    at 128 (with ``cfg.mask_generator``) and, for the 64 CE, downscaled with the cascade's ``downscale_mask``,
    and images with its ``downscale``: the 64 CE is trained on exactly what the cascade will show it. Random blocks
    under ``cfg.mask_law == "batch"`` (Pathak's rule) are drawn as under the per-image law and the batch's first
    mask is given to all its images: the same draws, so the same images and flips as the per-image run of the seed.
    """
    x = sample_batch(images, cfg.batch_size, gen, flip=cfg.flip, device=device)
    if cfg.mask == "central":
        m = central_mask(cfg.batch_size, cfg.size, cfg.overlap, device=device)
    else:
        if masks is None and cfg.mask_generator == "reference" and gen.device.type != "cpu":
            raise ValueError(f"the loop mask generator draws on the CPU, not from a {gen.device.type} generator: "
                             "pass a MaskStream (make_mask_stream) for device_rng runs")
        m = masks.next() if masks is not None else \
            make_masks(cfg.mask, cfg.batch_size, 128, gen, mask_generator=cfg.mask_generator).to(device)
        if cfg.mask_law == "batch":  # Pathak's rule: the batch's first mask for all its images (same draws)
            m = m[:1].expand_as(m).contiguous()
        m = downscale_mask(m) if cfg.model == "ce64" else m
    return (downscale(x) if cfg.model == "ce64" else x), m


def make_mask_stream(cfg: TrainConfig, device: torch.device, start: int = 0) -> MaskStream | None:
    """The run's :class:`MaskStream` from step ``start``, or None where masks are drawn per step from the run's
    generator (``mask_chunk`` = 1, or the central mask). With ``device_rng`` and the loop mask generator
    (``"reference"``, which draws on the CPU) the run's generator lives on the device, so the masks come from a
    stream of CPU generators even with ``mask_chunk`` = 1, as :class:`MaskStream` draws them."""
    if cfg.mask == "central":
        return None
    loop_on_device = cfg.device_rng and cfg.mask_generator == "reference"
    return MaskStream(cfg, device, start) if cfg.mask_chunk > 1 or loop_on_device else None
