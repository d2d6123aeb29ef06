"""What a training costs in arithmetic: FLOPs per training sample of each model, and the training compute behind a
model at a point of the scale ladder (the CPU study page's compute axis).

The FLOPs are counted, not estimated: one iteration of the recipe (:func:`cce_core.train.make_step`: D step and G
step, forward and backward) at a configuration's sizes runs once on the CPU under PyTorch's
:class:`torch.utils.flop_counter.FlopCounterMode`, which counts the convolutions and matrix products (a
multiply-add is 2 FLOPs; elementwise work, BatchNorm and the optimiser are not counted, a few percent at most).
The cascade's iteration includes the forward pass of its frozen 64 CE (eq. (1)'s coarse fill), so a cascade whose
64 CE was trained for ``s64`` samples and whose 128 stage for ``s`` costs ``s64 · F(ce64) + s · F(cce128)``.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from .batches import make_generator, make_mask_stream, next_batch
from .cascade import CascadeContextEncoder
from .checkpoint import build_models
from .config import TrainConfig, make_config
from .masks import fill_hole
from .models import ContextEncoder
from .train import make_step, setup_training

MODELS = ("ce64", "ce128", "cce128")


def untrained(cfg: TrainConfig, device: torch.device) -> tuple:
    """``cfg``'s G and D freshly initialised (seed 0), G's input preparation (for the cascade, eq. (1) on an
    untrained 64 CE) and the optimisers, set up on ``device`` (:func:`cce_core.train.setup_training`): one training
    iteration's parts without a run, to count or to test it. Returns ``(g, d, prepare, opt_g, opt_d)``."""
    torch.manual_seed(0)
    g, d = build_models(cfg)
    prepare, cascade = fill_hole, None
    if cfg.model == "cce128":
        cascade = CascadeContextEncoder(ContextEncoder(64, cfg.bottleneck, cfg.output, cfg.variant, cfg.width), g)
        prepare = cascade.prepare_input
    opt_g, opt_d = setup_training(cfg, g, d, device, extra=cascade)
    return g, d, prepare, opt_g, opt_d


def training_gflop(cfg: TrainConfig) -> float:
    """GFLOP per image of one training iteration of ``cfg``'s model (D step + G step, forward and backward;
    for the cascade with its 64 CE's forward), counted on the CPU in fp32 with freshly initialised networks."""
    cfg = replace(cfg, device="cpu", amp=False, channels_last=False, compile=False, batch_size=2)
    device = torch.device("cpu")
    g, d, prepare, opt_g, opt_d = untrained(cfg, device)
    step = make_step(cfg, g, d, opt_g, opt_d, prepare)
    images = torch.randint(0, 256, (8, 3, 128, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x, m = next_batch(cfg, images, make_generator(cfg, device), device, make_mask_stream(cfg, device))
    with FlopCounterMode(display=False) as counter:
        step(x, m)
    return counter.get_total_flops() / cfg.batch_size / 1e9


def gflop_per_sample(preset: str, mask: str = "random_blocks", **sizes) -> dict[str, float]:
    """:func:`training_gflop` of the 64 CE, the 128 CE and the cascade's 128 stage at a preset's sizes (batch,
    width, D; ``sizes`` overrides them)."""
    return {m: training_gflop(make_config(preset, model=m, mask=mask, ce64="(counted)" if m == "cce128" else None,
                                          **sizes)) for m in MODELS}


def ladder_compute(samples: list[int], gflop: dict[str, float], ce64_samples: int | None = None) -> dict[str, list]:
    """Training compute (TFLOP) behind each model at each ladder point of ``samples``: the 128 CE (``s · F(ce128)``)
    and the cascade, its 128 stage trained ``s`` samples on a 64 CE trained ``ce64_samples`` (the whole run's, as in
    the ladder of fully trained 64 CEs) or, with None, ``s`` samples too (the fair ladder)."""
    def cascade(s: int) -> float:
        return (ce64_samples if ce64_samples is not None else s) * gflop["ce64"] + s * gflop["cce128"]

    return {"ce128": [s * gflop["ce128"] / 1e3 for s in samples], "cce128": [cascade(s) / 1e3 for s in samples]}
