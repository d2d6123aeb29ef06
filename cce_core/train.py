"""Adversarial training of the 64 CE, the 128 CE and the cascade's 128 CE (paper section 4, spec section 7).

Pathak et al.'s recipe, which the paper keeps ("the same parameters and hyper-parameters as in [1]"):
D step then G step each iteration; BCE adversarial loss; L = lambda_rec L_rec + lambda_adv L_adv with
lambda_rec = wtl2 = 0.999 and lambda_adv = 0.001; the 4-px overlap ring weighted 10x; Adam with beta1 = 0.5 and
learning rates 2e-4 (D) and 2e-3 (G); batches of 64 drawn with replacement; the hole filled with Pathak's
constants. For the cascade (``model="cce128"``) the 128 CE's input is eq. (1)'s
(1 - M) P + M up(F64(down((1 - M) P))) with the 64 CE loaded from its checkpoint and frozen.

The 64 CE is trained on the 128 crops downscaled by the cascade's own ``down`` (and masks by ``downscale_mask``),
so it sees at training time exactly what the cascade feeds it.

Run directory: ``config.json`` (the :class:`TrainConfig` and provenance), ``log.jsonl`` (losses every
``log_every`` steps), ``checkpoint.pt`` (written atomically every ``checkpoint_every`` steps and/or every
``checkpoint_seconds`` of wall-clock time, always at a log step, and at the end).

Speed (issue 9): the options under "the fast path" in :class:`TrainConfig` (``fast=True`` turns them all on)
change where and how the work is done, not the model or the loss. On the CPU the fast path does exactly the
plain path's fp32 maths (bitwise, given the same masks); on CUDA it adds bf16 autocast, channels-last, fused Adam
and cuDNN autotuning. Each option can be switched alone, so a regression can be bisected.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .cascade import CascadeContextEncoder, downscale, downscale_mask
from .data import describe_sources, load_images, sample_batch
from .masks import (MASK_GENERATORS, center_box, central_mask, fill_hole, invalid_mask_count, make_masks,
                    unchecked_masks)
from .models import ContextEncoder, Discriminator
from .nsd_loss import batch_penalty, make_nsd_generator
from .provenance import portable_config, provenance, resolve_device

MODELS = ("ce64", "ce128", "cce128")
MASKS = ("central", "random_blocks", "random_region")
CHECKPOINT_FORMAT = "cce-companion-checkpoint/1"
#: The speed options of the fast path; each left at None follows ``TrainConfig.fast``.
FAST_OPTIONS = ("device_rng", "freeze_d", "device_checks", "amp", "channels_last", "fused_adam", "cudnn_benchmark")
#: Config fields that may differ between a run and its resumption.
RESUMABLE = ("steps", "device", "planned_steps", "snapshot_every")


@dataclass
class TrainConfig:
    """Everything that defines a training run; written to ``config.json`` next to its outputs."""

    model: str = "ce128"              # ce64 | ce128 | cce128 (the cascade's 128 CE)
    mask: str = "central"             # central | random_blocks | random_region
    data: list[str] = field(default_factory=lambda: ["embedded"])
    preset: str = "custom"
    steps: int = 1000                 # iterations (batches)
    batch_size: int = 64
    bottleneck: int = 4000            # D, the latent dimension
    width: int = 64                   # nef = ngf = ndf
    variant: str = "R"                # 64 CE widths (spec 6.2): R or W
    overlap: int | None = None        # central mask ring (None: 4 at 128, 2 at 64)
    lr_g: float = 2e-3
    lr_d: float = 2e-4
    beta1: float = 0.5
    wtl2: float = 0.999               # lambda_rec; lambda_adv = 1 - wtl2
    overlap_weight: float = 10.0      # L2 weight of the overlap ring, relative to the hole
    full_known_weight: float = 1.0    # full-image models: weight of known pixels (1: Pathak README, 0: eq. (1))
    flip: bool = True
    upscale: str = "bilinear"         # the cascade's x2 filter
    ce64: str | None = None           # checkpoint of the trained 64 CE (cce128 only)
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    checkpoint_every: int | None = 100  # checkpoint every this many steps (None: by time and at the end only)
    checkpoint_seconds: float | None = None  # and at the first log step after this many seconds since the last
    snapshot_every: int | None = None  # also keep G alone every this many steps in snapshots/ (NSD along training)
    limit: int | None = None          # use only the first `limit` images
    embedded_count: int = 512         # crops in the embedded default data set
    data_on_device: bool = True       # keep the decoded uint8 images on the training device
    max_bad_fraction: float = 0.05    # fail if more than this share of the image files is corrupt or too small
    mask_generator: str = "batched"   # batched | reference: masks.random_blocks or its loop version (same law)
    planned_steps: int | None = None  # set when train(time_limit=...) cut the run: the steps it was asked for
    # --- beyond the paper (issue 13, cce_core.nsd_loss): lambda * NSD_batch added to G's loss. 0: the recipe. ----
    nsd_weight: float = 0.0           # lambda
    nsd_masks: int = 2                # m: extra masks per image and step for NSD_batch (m encoder passes per step)
    # --- the fast path (same model and loss; see the module docstring). None: follow `fast`. ----------------
    fast: bool = False
    device_rng: bool | None = None      # indices, flips and masks drawn on the training device (device generator)
    mask_chunk: int | None = None       # random masks drawn for this many steps at once (None: 32 if fast, else 1)
    freeze_d: bool | None = None        # D's parameters frozen in the G step (its backward skips D's gradients)
    device_checks: bool | None = None   # mask values checked on the device per batch, read at log time
    amp: bool | None = None             # CUDA only: bf16 autocast of the networks (losses in fp32)
    channels_last: bool | None = None   # CUDA only: channels-last memory format
    fused_adam: bool | None = None      # CUDA only: fused Adam
    cudnn_benchmark: bool | None = None  # CUDA only: cuDNN autotuning
    compile: bool = False               # torch.compile G and D.logits (off even with fast: see the benchmark)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {self.mask!r}")
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [str(self.data)]
        self.data = [str(d) for d in self.data]
        if self.mask_generator not in MASK_GENERATORS:
            raise ValueError(f"mask_generator must be one of {MASK_GENERATORS}, got {self.mask_generator!r}")
        for name in FAST_OPTIONS:
            if getattr(self, name) is None:
                setattr(self, name, bool(self.fast))
        if self.mask_chunk is None:
            self.mask_chunk = 32 if self.fast else 1
        if int(self.mask_chunk) < 1:
            raise ValueError(f"mask_chunk must be at least 1, got {self.mask_chunk}")
        for name in ("steps", "batch_size", "log_every") + ("checkpoint_every",) * (self.checkpoint_every is not None):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.checkpoint_every is not None and self.checkpoint_every % self.log_every:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of log_every ({self.log_every})")
        if self.snapshot_every is not None and int(self.snapshot_every) < 1:
            raise ValueError(f"snapshot_every must be at least 1 or None, got {self.snapshot_every}")
        if self.checkpoint_seconds is not None and not self.checkpoint_seconds > 0:
            raise ValueError(f"checkpoint_seconds must be positive or None, got {self.checkpoint_seconds}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm needs a batch)")
        self.nsd_weight, self.nsd_masks = float(self.nsd_weight), int(self.nsd_masks)
        if not (math.isfinite(self.nsd_weight) and self.nsd_weight >= 0):
            raise ValueError(f"nsd_weight must be a finite number >= 0, got {self.nsd_weight}")
        if self.nsd_masks < 2:
            raise ValueError(f"nsd_masks must be an integer >= 2 (NSD compares codes under several masks), got {self.nsd_masks}")
        if self.nsd_weight > 0 and self.mask == "central":
            raise ValueError("nsd_weight > 0 needs varying masks (random_blocks or random_region): the central mask is one mask")
        if self.model == "cce128" and not self.ce64:
            raise ValueError("model 'cce128' (the cascade) needs the trained 64 CE: pass its checkpoint as ce64 (--ce64 CKPT)")

    @property
    def size(self) -> int:
        return 64 if self.model == "ce64" else 128

    @property
    def output(self) -> str:
        return "center" if self.mask == "central" else "full"


#: Named presets. ``smoke``: seconds on a CPU, for tests and nbval; ``cpu``: a meaningful run of minutes on
#: train-mini; ``paper``: the faithful architecture (D = 4000, width 64) for a GPU.
PRESETS: dict[str, dict] = {
    "smoke": dict(steps=20, batch_size=16, bottleneck=64, width=16, log_every=2, checkpoint_every=10,
                  snapshot_every=5),
    "cpu": dict(steps=300, batch_size=32, bottleneck=512, width=32, log_every=10, checkpoint_every=100,
                snapshot_every=60),
    "paper": dict(steps=16000, batch_size=64, bottleneck=4000, width=64, log_every=50, checkpoint_every=None,
                  checkpoint_seconds=60),
}


def make_config(preset: str = "smoke", **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a named preset, with ``overrides`` (None values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = {**PRESETS[preset], "preset": preset, **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**values)


# --- models and checkpoints ---------------------------------------------------------------------------------

def build_models(cfg: TrainConfig) -> tuple[ContextEncoder, Discriminator]:
    """The generator and discriminator of a run, freshly initialised (seeded by the caller)."""
    variant = cfg.variant if cfg.size == 64 else "R"
    g = ContextEncoder(cfg.size, cfg.bottleneck, cfg.output, variant, cfg.width)
    d = Discriminator(cfg.size, cfg.output, variant, cfg.width)
    return g, d


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, model: str | None = None) -> dict:
    """Load a checkpoint safely (``weights_only=True``) and check it is ours, and of ``model`` if given."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise ValueError(f"{path} is not a cce-companion checkpoint (this project's format): unreadable ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a cce-companion checkpoint (format {CHECKPOINT_FORMAT!r})")
    if model is not None and ckpt["config"]["model"] != model:
        raise ValueError(f"{path} holds a {ckpt['config']['model']!r} model (mask {ckpt['config']['mask']!r}), "
                         f"but a {model!r} checkpoint is needed here")
    return ckpt


def _config_from(ckpt: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in known})


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> ContextEncoder | CascadeContextEncoder:
    """The trained generator of a checkpoint in eval mode: a :class:`ContextEncoder`, or for a ``cce128``
    checkpoint the whole :class:`CascadeContextEncoder` (its 64 CE is stored inside the checkpoint)."""
    ckpt = load_checkpoint(path)
    cfg = _config_from(ckpt)
    g, _ = build_models(cfg)
    g.load_state_dict(ckpt["G"])
    if cfg.model == "cce128":
        ce64 = _ce64_from(ckpt["ce64"])
        g = CascadeContextEncoder(ce64, g, upscale=cfg.upscale)
    return g.to(device).eval()


def _ce64_from(ckpt: dict) -> ContextEncoder:
    cfg = _config_from(ckpt)
    g, _ = build_models(cfg)
    g.load_state_dict(ckpt["G"])
    return g


# --- the loss -------------------------------------------------------------------------------------------------

def reconstruction_weights(cfg: TrainConfig, mask: torch.Tensor) -> torch.Tensor:
    """Per-pixel L2 weights W (lambda_rec included) over G's output, spec 7.1.

    Central block: wtl2 on the hole, ``overlap_weight`` * wtl2 on the overlap ring. Full image (random masks):
    wtl2 on missing pixels and ``full_known_weight`` * wtl2 on known ones (Pathak's README: uniform).
    """
    if cfg.output == "center":
        lo, hi = center_box(cfg.size)
        hole = mask[:, :, lo:hi, lo:hi]
        return cfg.wtl2 * (hole + cfg.overlap_weight * (1 - hole))
    return cfg.wtl2 * (mask + cfg.full_known_weight * (1 - mask))


def _target(cfg: TrainConfig, images: torch.Tensor) -> torch.Tensor:
    if cfg.output == "center":
        lo, hi = center_box(cfg.size)
        return images[:, :, lo:hi, lo:hi]
    return images


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def stream_seed(seed: int, stream: int) -> int:
    """The seed of one of a run's extra random streams (a chunk of masks, the NSD loss's masks): the run's seed
    in the high 32 bits, the stream's number in the low ones, so streams never share a seed."""
    return ((seed & 0x7FFFFFFF) << 32) | (stream & 0xFFFFFFFF)


def make_generator(cfg: TrainConfig, device: torch.device) -> torch.Generator:
    """The run's generator (seeded with ``cfg.seed``) of batch indices, flips and masks: on the training device
    with ``device_rng`` (nothing drawn on the host, nothing copied per step), else on the CPU."""
    return torch.Generator(device=device if cfg.device_rng else "cpu").manual_seed(cfg.seed)


class MaskStream:
    """The random masks of steps ``start``, ``start + 1``, ... drawn ``cfg.mask_chunk`` steps at a time.

    One call of the mask generator per chunk instead of one per step: on a GPU each call launches a few hundred
    small kernels, which would cost about as much host time as the networks' step. Chunk c (steps c N to
    c N + N - 1) is drawn on the training device from its own generator, seeded with (``cfg.seed``, c), so a
    resumed run redraws the chunk it stopped in and continues exactly. ``random_region`` keeps one mask per
    batch (Pathak): a chunk holds N masks, each repeated over its batch.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, start: int = 0) -> None:
        if cfg.mask == "central":
            raise ValueError("the central mask is fixed: it needs no mask stream")
        self.cfg, self.device, self.step, self.chunk, self.masks = cfg, device, start, -1, torch.empty(0)

    def _draw(self, chunk: int) -> torch.Tensor:
        cfg, n = self.cfg, self.cfg.mask_chunk
        on = self.device if cfg.mask_generator == "batched" else torch.device("cpu")  # the loop versions: CPU
        g = torch.Generator(device=on).manual_seed(stream_seed(cfg.seed, chunk))
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
    random masks come from ``masks`` if given (``cfg.mask_chunk`` > 1, see :class:`MaskStream`), else from
    ``gen``. Random masks are drawn at 128 (with ``cfg.mask_generator``) and, for the 64 CE, downscaled with
    the cascade's ``downscale_mask``, and images with its ``downscale``: the 64 CE is trained on exactly what
    the cascade will show it.
    """
    x = sample_batch(images, cfg.batch_size, gen, flip=cfg.flip, device=device)
    if cfg.mask == "central":
        m = central_mask(cfg.batch_size, cfg.size, cfg.overlap, device=device)
    else:
        m = masks.next() if masks is not None else \
            make_masks(cfg.mask, cfg.batch_size, 128, gen, mask_generator=cfg.mask_generator).to(device)
        m = downscale_mask(m) if cfg.model == "ce64" else m
    return (downscale(x) if cfg.model == "ce64" else x), m


def make_mask_stream(cfg: TrainConfig, device: torch.device, start: int = 0) -> MaskStream | None:
    """The run's :class:`MaskStream` from step ``start``, or None where masks are drawn per step from the run's
    generator (``mask_chunk`` = 1, or the central mask)."""
    return MaskStream(cfg, device, start) if cfg.mask_chunk > 1 and cfg.mask != "central" else None


def _accelerated(device: torch.device) -> bool:
    """Whether the CUDA-only options (bf16 autocast, channels-last, fused Adam, cuDNN autotuning) apply on
    ``device``. On the CPU they do not, so the fast path does the plain path's fp32 maths there. (A test
    patches this to rehearse those options on the CPU.)"""
    return device.type == "cuda"


def setup_training(cfg: TrainConfig, g: ContextEncoder, d: Discriminator, device: torch.device,
                   extra: torch.nn.Module | None = None) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Move G, D (and ``extra``, e.g. the cascade) to ``device``, apply the CUDA-only options of ``cfg``
    (channels-last, cuDNN autotuning) and return the Adam optimisers of G and D (fused with ``fused_adam``)."""
    cuda = _accelerated(device)
    for module in (g, d) + ((extra,) if extra is not None else ()):
        module.to(device)
        if cuda and cfg.channels_last:
            module.to(memory_format=torch.channels_last)
    if cuda and cfg.cudnn_benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    fused = {"fused": True} if cuda and cfg.fused_adam else {}
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.999), **fused)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999), **fused)
    return opt_g, opt_d


def make_step(cfg: TrainConfig, g: ContextEncoder, d: Discriminator, opt_g: torch.optim.Optimizer,
              opt_d: torch.optim.Optimizer, prepare=fill_hole, nsd_gen: torch.Generator | None = None,
              wrappers: tuple | None = None):
    """One training iteration as a function ``step(images, mask) -> tensor([d, g_adv, g_rec, l2])`` (with a fifth
    entry, ``nsd``, when ``cfg.nsd_weight`` > 0).

    ``images`` and ``mask`` are at the model's resolution; ``prepare`` builds G's input from them
    (:func:`cce_core.masks.fill_hole` for a plain CE, ``CascadeContextEncoder.prepare_input`` for the cascade).
    The losses are returned as a detached device tensor, so the caller decides when to synchronise.

    The fast-path options of ``cfg`` used here: ``freeze_d`` (D's parameters do not require gradients during
    the G step: its backward still flows through D to G, but fills no D gradient, which the plain path fills and
    then discards at the next D step), ``device_checks`` (no host-side mask value checks inside the step, see
    :func:`cce_core.masks.unchecked_masks`), on CUDA ``amp`` (G and D run under bf16 autocast; the losses are
    computed in fp32) and ``channels_last``, and ``compile`` (torch.compile of G and of ``D.logits``, the
    method the step calls).

    Beyond the paper: with ``cfg.nsd_weight`` = lambda > 0, G's loss gains lambda * NSD_batch, the BN-normalised NSD
    of the batch's images under ``cfg.nsd_masks`` extra masks each, drawn from ``nsd_gen``
    (:func:`cce_core.nsd_loss.make_nsd_generator`; see :mod:`cce_core.nsd_loss`). With lambda = 0 nothing is
    drawn or computed: the step is the recipe's, bit for bit.

    ``wrappers``: in a data-parallel run, G and ``D.logits`` wrapped in DistributedDataParallel
    (:func:`cce_core.distributed.wrap`, which explains why): G's forward and the D step's D calls go through
    them, so their gradients are averaged over the processes; the G step calls the unwrapped ``D.logits``.
    """
    if cfg.nsd_weight > 0 and nsd_gen is None:
        raise ValueError("nsd_weight > 0 needs the generator of the extra masks (nsd_gen, see make_nsd_generator)")
    device = next(g.parameters()).device
    cuda = _accelerated(device)
    amp = bool(cfg.amp and cuda)
    memory_format = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
    g_module, d_step_module = wrappers if wrappers is not None else (g, d.logits)
    g_forward = torch.compile(g_module) if cfg.compile else g_module
    d_logits = torch.compile(d.logits) if cfg.compile else d.logits
    d_step_logits = d_logits if wrappers is None else (torch.compile(d_step_module) if cfg.compile else d_step_module)
    checks = unchecked_masks if cfg.device_checks else contextlib.nullcontext
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    def step(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=memory_format)
        ones = torch.ones(len(x), device=x.device)
        with checks(), autocast():
            inp = prepare(x, m)
            real = _target(cfg, x)
            # D step: BCE(D(real), 1) + BCE(D(G(x)), 0), real and fake in separate passes (own BN statistics).
            fake = g_forward(inp)
            logits_real, logits_fake = d_step_logits(real), d_step_logits(fake.detach())
        loss_d = (F.binary_cross_entropy_with_logits(logits_real.float(), ones)
                  + F.binary_cross_entropy_with_logits(logits_fake.float(), torch.zeros_like(ones)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # G step: (1 - wtl2) BCE(D(G(x)), 1) + mean(W (G(x) - x)^2), with D just updated (spec 7.1 (a)).
        if cfg.freeze_d:
            d.requires_grad_(False)
        with autocast():
            logits = d_logits(fake)
        if cfg.freeze_d:
            d.requires_grad_(True)  # the graph is built: D's parameters are not in it
        adv = F.binary_cross_entropy_with_logits(logits.float(), ones)
        sq = (fake.float() - real) ** 2
        rec = (reconstruction_weights(cfg, m) * sq).mean()
        loss_g = (1 - cfg.wtl2) * adv + rec
        losses = [loss_d, adv, rec, sq.mean()]
        if cfg.nsd_weight > 0:  # beyond the paper: lambda * NSD_batch (cce_core.nsd_loss)
            with checks(), autocast():
                penalty = batch_penalty(cfg, g, x, nsd_gen, prepare)
            loss_g = loss_g + cfg.nsd_weight * penalty
            losses.append(penalty)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return torch.stack(losses).detach()
    return step


# --- the loop -------------------------------------------------------------------------------------------------

def train(cfg: TrainConfig, out: str | os.PathLike, resume: bool | str = False, force: bool = False,
          progress: bool = True, stop_after: int | None = None, time_limit: float | None = None,
          global_batch: bool = False) -> Path:
    """Train the model of ``cfg`` into the run directory ``out``; returns the path of ``checkpoint.pt``.

    ``resume`` continues a run from its checkpoint exactly (weights, optimisers, step, random state), with the
    stored configuration; only ``steps`` may be raised. ``resume="auto"`` resumes if ``out`` holds a run of
    the same configuration (a finished one returns at once), starts one if ``out`` holds none, and refuses a
    run of another configuration. ``force`` deletes a previous run in ``out``.
    ``stop_after`` ends the call after that many steps (with a checkpoint), as an interruption would.

    ``time_limit`` (seconds of this call's training loop) ends training after the step during which it ran
    out, and makes the run finished at the samples it saw: the stored configuration gets ``steps`` = the steps
    done and ``planned_steps`` = the steps asked for, and ``config.json`` and the checkpoint say
    ``cut_by_time``. ``resume="auto"`` with the original configuration then returns at once; ``resume=True``
    continues it (to ``planned_steps`` or the ``steps`` asked for, if more).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the N processes train one model with DistributedDataParallel
    (:mod:`cce_core.distributed`): each takes ``batch_size / N`` of the global batch, BatchNorm is synchronised,
    and rank 0 alone writes the run directory (losses averaged over the processes; checkpoints in the
    single-process format). Each process draws its images and masks from its own stream, seeded from
    (``seed``, rank, origin step); a checkpoint stores every process's generator, so a resumption with the same
    N continues exactly; with another N (1 included) the streams restart, seeded from (``seed``, rank, the
    checkpoint's step): reproducible, but not the batches the old N would have drawn. ``global_batch=True``
    makes every process draw the whole global batch from the run's single-process stream and keep its slice:
    the batches of a single-process run, at N times the sampling work (for checking a multi-process run).
    """
    out = Path(out)
    ckpt_path, log_path, cfg_path = out / "checkpoint.pt", out / "log.jsonl", out / "config.json"
    start, ckpt = 0, None
    auto = resume == "auto"
    if auto:
        resume = ckpt_path.exists() and not force
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint in {out}")
        ckpt = load_checkpoint(ckpt_path)
        stored = _config_from(ckpt)
        if cfg.model != stored.model or cfg.mask != stored.mask:
            raise ValueError(f"{out} holds a {stored.model}/{stored.mask} run; cannot resume it as {cfg.model}/{cfg.mask}")
        differ = {k: (v, getattr(cfg, k)) for k, v in asdict(stored).items()
                  if k not in RESUMABLE and getattr(cfg, k) != v}
        if differ and auto:
            raise FileExistsError(f"{out} holds a run with another configuration ({differ}, stored vs asked); "
                                  "use force=True (--force) to overwrite it")
        if differ:
            warnings.warn(f"resuming {out} with its stored configuration; ignoring {differ} (stored vs asked)")
        start = int(ckpt["step"])
        if auto and stored.planned_steps is not None and cfg.steps <= stored.planned_steps:
            return ckpt_path  # cut by a time limit: finished at the samples it saw
        steps = max(stored.steps, cfg.steps)
        cfg = replace(stored, steps=steps, device=cfg.device,
                      planned_steps=stored.planned_steps if steps <= start else None)
        if start >= cfg.steps:  # finished: nothing to do
            return ckpt_path
    elif (ckpt_path.exists() or log_path.exists()) and not (force or auto):  # auto: no checkpoint, nothing to keep
        raise FileExistsError(f"{out} already holds a run; use resume=True (--resume) to continue it "
                              "or force=True (--force) to overwrite it")
    out.mkdir(parents=True, exist_ok=True)

    world = distributed.setup(cfg.device)  # None: a single process (no torchrun)
    main = world is None or world.main
    progress = progress and main
    device = world.device if world is not None else resolve_device(cfg.device)
    local_batch = distributed.per_process_batch(cfg.batch_size, world)
    torch.manual_seed(cfg.seed)
    g, d = build_models(cfg)
    if world is not None:  # G's and D's BatchNorms over the global batch (not the frozen 64 CE's: eval mode)
        distributed.sync_batchnorm(g, world)
        distributed.sync_batchnorm(d, world)
    ce64_ckpt = None
    prepare = fill_hole
    if cfg.model == "cce128":
        ce64_ckpt = ckpt["ce64"] if ckpt is not None else load_checkpoint(cfg.ce64, model="ce64")
        c64 = _config_from(ce64_ckpt)
        if c64.output != cfg.output:
            raise ValueError(f"the 64 CE in {cfg.ce64} predicts the {c64.output!r} region (mask {c64.mask!r}), "
                             f"but the cascade with mask {cfg.mask!r} needs output {cfg.output!r}")
        if c64.mask != cfg.mask:
            warnings.warn(f"the 64 CE was trained with mask {c64.mask!r}, the cascade uses {cfg.mask!r}")
        cascade = CascadeContextEncoder(_ce64_from(ce64_ckpt), g, upscale=cfg.upscale)
        prepare = cascade.prepare_input
    opt_g, opt_d = setup_training(cfg, g, d, device, extra=cascade if cfg.model == "cce128" else None)
    # This process's stream of images and masks (see the docstring): `origin` None is the single-process
    # stream (seeded with cfg.seed, as always); else the streams of N processes started at step `origin`.
    n_proc, rank = (1, 0) if world is None or global_batch else (world.size, world.rank)
    streams = (ckpt.get("streams", {"world_size": 1, "origin": None, "rng": [ckpt["rng"]]})
               if ckpt is not None else {"world_size": n_proc, "origin": None if n_proc == 1 else 0, "rng": None})
    same_streams = streams["world_size"] == n_proc
    origin = streams["origin"] if same_streams else start
    rcfg = cfg if origin is None and n_proc == 1 else \
        replace(cfg, seed=distributed.rank_seed(cfg.seed, rank, origin), batch_size=cfg.batch_size // n_proc)
    gen = make_generator(rcfg, device)
    # the NSD loss's extra masks: their own stream (nsd_loss), per process under torchrun like the batches
    nsd_gen = make_nsd_generator(rcfg, device) if cfg.nsd_weight > 0 else None
    if ckpt is not None:
        g.load_state_dict(ckpt["G"])
        d.load_state_dict(ckpt["D"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        saved_on = ckpt.get("rng_device", "cpu")
        if same_streams and saved_on != gen.device.type:
            raise ValueError(f"{ckpt_path} holds the random state of a {saved_on} generator (device_rng on "
                             f"{saved_on}); resume it on a {saved_on} device to continue it exactly")
        if same_streams:
            gen.set_state(streams["rng"][rank])
        if nsd_gen is not None and n_proc == 1 and "nsd_rng" in ckpt:  # several processes: re-derived (above)
            if ckpt.get("nsd_rng_device", "cpu") != nsd_gen.device.type:
                raise ValueError(f"{ckpt_path} holds the random state of a {ckpt.get('nsd_rng_device', 'cpu')} "
                                 "generator for the NSD masks; resume it on that kind of device to continue it exactly")
            nsd_gen.set_state(ckpt["nsd_rng"])
    wrappers = distributed.wrap(g, d, world) if world is not None else None

    data = load_images(cfg.data, limit=cfg.limit, embedded_count=cfg.embedded_count, seed=cfg.seed,
                       max_bad_fraction=cfg.max_bad_fraction,
                       progress=progress, workers=min(8, os.cpu_count() or 1))
    images = data.images.to(device) if cfg.data_on_device else data.images
    if not main:  # rank 0 alone writes the run directory
        pass
    elif not resume:  # the 64 CE and the data are valid: only now is a previous run (force=True) deleted
        for p in (ckpt_path, log_path, cfg_path):
            p.unlink(missing_ok=True)
        meta = {"config": portable_config(asdict(cfg)),
                "data": {"description": data.description, "images": len(data),
                         "skipped": {k: len(v) for k, v in data.skipped.items()},
                         "sources": describe_sources(cfg.data, cfg.embedded_count, verify=False)},
                "provenance": provenance(device)}
        if world is not None:
            meta["distributed"] = {"world_size": world.size, "backend": world.backend, "global_batch": global_batch}
        cfg_path.write_text(json.dumps(meta, indent=2))
        log_path.write_text("")
    else:  # drop log records written after the checkpoint; config.json gets the configuration resumed
        lines = [ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start]
        log_path.write_text("".join(ln + "\n" for ln in lines))
        if cfg_path.exists():
            meta = json.loads(cfg_path.read_text())
            meta["config"] = portable_config(asdict(cfg))
            meta.pop("cut_by_time", None)
            cfg_path.write_text(json.dumps(meta, indent=2))

    kept_ce64 = {k: ce64_ckpt[k] for k in ("format", "config", "step", "G")} if ce64_ckpt is not None else None

    def model_state(step: int) -> dict:  # what load_model needs: G (and the cascade's 64 CE)
        state = {"format": CHECKPOINT_FORMAT, "config": asdict(cfg), "step": step, "G": g.state_dict()}
        if kept_ce64 is not None:
            state["ce64"] = kept_ce64
        return state

    def save(step: int) -> None:
        states = [gen.get_state()] if world is None else world.gather(gen.get_state())
        if not main:
            return
        state = {**model_state(step), "finished": step >= cfg.steps, "cut_by_time": cfg.planned_steps is not None,
                 "D": d.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                 "rng": states[0], "rng_device": gen.device.type}
        if nsd_gen is not None:
            state.update(nsd_rng=nsd_gen.get_state(), nsd_rng_device=nsd_gen.device.type)
        if origin is not None or n_proc > 1:  # not the single-process stream: the streams of every process
            state["streams"] = {"world_size": n_proc, "origin": origin,
                                "rng": states if n_proc > 1 else states[:1]}
        _atomic_save(state, ckpt_path)

    def snapshot(step: int) -> None:  # G alone: enough for load_model and NSD
        (out / "snapshots").mkdir(exist_ok=True)
        _atomic_save({**model_state(step), "finished": False, "snapshot": True},
                     out / "snapshots" / f"step-{step:07d}.pt")

    g.train()
    d.train()
    step_fn = make_step(cfg, g, d, opt_g, opt_d, prepare, nsd_gen=nsd_gen, wrappers=wrappers)
    masks = make_mask_stream(rcfg, device, start)
    share = slice(None) if world is None or not global_batch else \
        slice(world.rank * local_batch, (world.rank + 1) * local_batch)
    sums = torch.zeros(4 + (nsd_gen is not None), device=device)  # d, g_adv, g_rec, l2 (, nsd) since the last log line
    bad_masks = torch.zeros((), dtype=torch.long, device=device)  # device_checks: invalid mask values seen
    t_start = last = last_save = time.perf_counter()
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, disable=not progress,
               desc=f"{cfg.model}/{cfg.mask}", unit="step")
    step, n_steps = start, 0
    try:
        for step in bar:
            x, m = next_batch(rcfg, images, gen, device, masks)
            x, m = x[share], m[share]
            if cfg.device_checks:
                bad_masks += invalid_mask_count(m)
            sums += step_fn(x, m)
            done, n_steps = step + 1, n_steps + 1
            if main and cfg.snapshot_every is not None and done % cfg.snapshot_every == 0:
                snapshot(done)
            cut = time_limit is not None and done < end and time.perf_counter() - t_start >= time_limit
            if world is not None and time_limit is not None:
                cut = world.agree(cut)  # rank 0's clock decides for all
            if done % cfg.log_every == 0 or done == end or cut:
                if world is not None:  # the losses averaged over the processes; invalid masks of any
                    world.mean_(sums), world.sum_(bad_masks)
                vals = (sums / n_steps).tolist()
                if cfg.device_checks and int(bad_masks):
                    raise ValueError(f"a mask held values other than 0 and 1 between steps {done - n_steps + 1} and "
                                     f"{done}; the last good checkpoint is kept in {ckpt_path}")
                if not all(math.isfinite(v) for v in vals):
                    raise TrainingDiverged(f"a loss became NaN/inf between steps {done - n_steps + 1} and {done} "
                                           f"({dict(zip(('d', 'g_adv', 'g_rec', 'l2', 'nsd'), vals))}); the last good "
                                           f"checkpoint is kept in {ckpt_path}")
                now = time.perf_counter()
                rec_line = {"step": done, "d": vals[0], "g_adv": vals[1], "g_rec": vals[2], "l2": vals[3],
                            "images_per_s": n_steps * cfg.batch_size / max(now - last, 1e-9)}
                if nsd_gen is not None:
                    rec_line["nsd"] = vals[4]  # NSD_batch (BN-normalised), before lambda
                last = now
                if main:
                    with log_path.open("a") as f:
                        f.write(json.dumps(rec_line) + "\n")
                bar.set_postfix(d=f"{vals[0]:.3f}", rec=f"{vals[2]:.4f}")
                sums.zero_()
                n_steps = 0
                if cut:  # the run is finished at the samples it saw
                    cfg = replace(cfg, steps=done, planned_steps=cfg.planned_steps or cfg.steps)
                if cut and main:
                    meta = json.loads(cfg_path.read_text())
                    meta["config"] = portable_config(asdict(cfg))
                    meta["cut_by_time"] = {"steps": done, "planned_steps": cfg.planned_steps, "time_limit_s": time_limit}
                    cfg_path.write_text(json.dumps(meta, indent=2))
                by_time = cfg.checkpoint_seconds is not None and now - last_save >= cfg.checkpoint_seconds
                if world is not None and cfg.checkpoint_seconds is not None:
                    by_time = world.agree(by_time)
                if (done == end or cut or (cfg.checkpoint_every is not None and done % cfg.checkpoint_every == 0)
                        or by_time):
                    # the losses were computed before this step's update, which may still have broken the weights
                    if not all(torch.isfinite(t).all() for net in (g, d) for t in net.state_dict().values()
                               if t.is_floating_point()):
                        raise TrainingDiverged(f"the weights became NaN/inf at step {done} (with finite losses); "
                                               f"the last good checkpoint is kept in {ckpt_path}")
                    save(done)
                    last_save = time.perf_counter()
                if cut:
                    break
    except KeyboardInterrupt:
        warnings.warn(f"interrupted at step {step}; the last checkpoint in {ckpt_path} is kept: continue with --resume")
        raise
    finally:
        bar.close()
        distributed.shutdown(world)
    return ckpt_path


def snapshots(run: str | os.PathLike) -> list[Path]:
    """The snapshots of a run directory (G every ``snapshot_every`` steps), in training order, then its final
    checkpoint if it is later than the last snapshot: the models along one training run."""
    run = Path(run)
    paths = sorted((run / "snapshots").glob("step-*.pt"))
    final = run / "checkpoint.pt"
    if final.exists() and (not paths or int(load_checkpoint(final)["step"]) > int(paths[-1].stem.split("-")[1])):
        paths.append(final)
    return paths


def read_log(run: str | os.PathLike) -> list[dict]:
    """The loss records of a run directory (one dict per ``log_every`` steps)."""
    path = Path(run) / "log.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no training log in {run}")
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln]

