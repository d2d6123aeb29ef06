"""Adversarial training of the 64 CE, the 128 CE and the cascade's 128 CE (paper section 4, spec section 7).

Pathak et al.'s recipe, which the paper keeps ("the same parameters and hyper-parameters as in [1]"):
D step then G step each iteration; BCE adversarial loss; L = lambda_rec L_rec + lambda_adv L_adv with
lambda_rec = wtl2 = 0.999 and lambda_adv = 0.001; the 4-px overlap ring weighted 10x; Adam with beta1 = 0.5 and
learning rates 2e-4 (D) and 2e-3 (G); batches of 64 drawn with replacement; the hole filled with Pathak's
constants. For the cascade (``model="cce128"``) the 128 CE's input is eq. (1)'s
(1 - M) P + M up(F64(down((1 - M) P))) with the 64 CE loaded from its checkpoint and frozen.

The 64 CE is trained on the 128 crops downscaled by the cascade's own ``down`` (and masks by ``downscale_mask``),
so it sees at training time exactly what the cascade feeds it.

Where the parts are: the configuration in :mod:`cce_core.config`, the batches and random streams in
:mod:`cce_core.batches`, the losses in :mod:`cce_core.losses`, the checkpoint format in
:mod:`cce_core.checkpoint`; here :func:`make_step` (one iteration of the recipe) and :func:`train` (the loop).

Run directory: ``config.json`` (the :class:`TrainConfig` and provenance), ``log.jsonl`` (losses every
``log_every`` steps; the bottleneck's weight norm and variance ratio, :func:`log_code_stats`), ``checkpoint.pt``
(written atomically every ``checkpoint_every`` steps and/or every ``checkpoint_seconds`` of wall-clock time, always
at a log step, and at the end).

Speed (issue 9): the options under "the fast path" in :class:`TrainConfig` (``fast=True`` turns them all on)
change where and how the work is done, not the model or the loss. With ``amp`` and ``channels_last`` off, the
fast path on the CPU does exactly the plain path's fp32 maths (bitwise, given the same masks); on CUDA it adds
bf16 autocast, channels-last, fused Adam and cuDNN autotuning, and on a CPU with native bf16 (issue 21,
:func:`cce_core.config.native_bf16_cpu`) bf16 autocast and channels-last, which ``fast=True`` turns on only where
they pay (:func:`cce_core.config.bf16_pays`, recorded in ``config.json``). Each option can be switched alone, so a
regression can be bisected. Global switches of torch (cuDNN autotuning, TF32, threads) are restored when
:func:`train` returns (:func:`global_switches`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .batches import MaskStream, make_generator, make_mask_stream, next_batch
from .cascade import CascadeContextEncoder
from .checkpoint import (
    atomic_save,
    atomic_write_text,
    build_models,
    ce64_from,
    config_from,
    drop_snapshots,
    kept_ce64,
    load_checkpoint,
    model_state,
    read_log,
    save_snapshot,
)
from .config import RESUMABLE, TrainConfig, native_bf16_cpu
from .data import TRAIN_CROPS, describe_sources, load_images
from .losses import batch_penalty, code_stats, make_nsd_generator, reconstruction_target, reconstruction_weights
from .masks import NoiseFill, fill_hole, invalid_mask_count, unchecked_masks
from .models import ContextEncoder, Discriminator
from .provenance import portable_config, provenance, resolve_device


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


# --- one step of the recipe -------------------------------------------------------------------------------------

def _accelerated(device: torch.device) -> bool:
    """Whether the CUDA-only options (fused Adam, cuDNN autotuning, and bf16 autocast and channels-last) apply on
    ``device``. (A test patches this to rehearse those options on the CPU.)"""
    return device.type == "cuda"


def _bf16(device: torch.device) -> bool:
    """Whether bf16 autocast and channels-last (``cfg.amp``, ``cfg.channels_last``) apply on ``device``: on CUDA
    and on a CPU with native bf16; elsewhere they stay off, so the fast path does the plain path's fp32 maths."""
    return _accelerated(device) or (device.type == "cpu" and native_bf16_cpu())


@contextlib.contextmanager
def global_switches() -> Iterator[None]:
    """Inside, torch's process-wide switches may be changed (cuDNN autotuning, cuDNN's and matmul's TF32, float32
    matmul precision, CPU threads); on leaving they are as they were, so a run (or a benchmark arm) leaves none of
    its choices to the next."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32, torch.get_float32_matmul_precision(),
             torch.get_num_threads())
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved[:3]
        torch.set_float32_matmul_precision(saved[3])
        if torch.get_num_threads() != saved[4]:
            torch.set_num_threads(saved[4])


def setup_training(cfg: TrainConfig, g: ContextEncoder, d: Discriminator, device: torch.device,
                   extra: torch.nn.Module | None = None) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Move G, D (and ``extra``, e.g. the cascade) to ``device``, apply the device options of ``cfg``
    (channels-last, cuDNN autotuning: a global switch, see :func:`global_switches`) and return the Adam
    optimisers of G and D (fused with ``fused_adam``)."""
    cuda = _accelerated(device)
    for module in (g, d) + ((extra,) if extra is not None else ()):
        module.to(device)
        if _bf16(device) and cfg.channels_last:
            module.to(memory_format=torch.channels_last)
    if cuda and cfg.cudnn_benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    fused = {"fused": True} if cuda and cfg.fused_adam else {}
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.999), **fused)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999), **fused)
    return opt_g, opt_d


@dataclass
class FastPath:
    """How :func:`make_step` runs the networks: the options of the fast path it uses, resolved once.

    ``freeze_d`` (D's parameters do not require gradients during the G step: its backward still flows through D
    to G, but fills no D gradient, which the plain path fills and then discards at the next D step),
    ``device_checks`` (no host-side mask value checks inside the step, see
    :func:`cce_core.masks.unchecked_masks`), on CUDA and on a CPU with native bf16 ``amp`` (G and D run under
    bf16 autocast; the losses are computed in fp32) and ``channels_last``, and ``compile`` (torch.compile of G and
    of ``D.logits``, the method the step calls). ``wrappers``: in a data-parallel run, G and ``D.logits`` wrapped in
    DistributedDataParallel (:func:`cce_core.distributed.wrap`, which explains why): G's forward and the D step's
    D calls go through them, so their gradients are averaged over the processes; the G step calls the unwrapped
    ``D.logits``.
    """

    memory_format: torch.memory_format
    g_forward: Callable
    d_logits: Callable       # the G step's D
    d_step_logits: Callable  # the D step's D
    checks: Callable
    autocast: Callable

    @classmethod
    def of(cls, cfg: TrainConfig, g: ContextEncoder, d: Discriminator, wrappers: tuple | None = None) -> FastPath:
        device = next(g.parameters()).device
        bf16 = _bf16(device)
        amp = bool(cfg.amp and bf16)
        g_module, d_step_module = wrappers if wrappers is not None else (g, d.logits)
        g_forward = torch.compile(g_module) if cfg.compile else g_module
        d_logits = torch.compile(d.logits) if cfg.compile else d.logits
        d_step_logits = (d_logits if wrappers is None
                         else torch.compile(d_step_module) if cfg.compile else d_step_module)
        return cls(memory_format=torch.channels_last if bf16 and cfg.channels_last else torch.contiguous_format,
                   g_forward=g_forward, d_logits=d_logits, d_step_logits=d_step_logits,
                   checks=unchecked_masks if cfg.device_checks else contextlib.nullcontext,
                   autocast=((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp
                             else contextlib.nullcontext))


def prepare_fn(cfg: TrainConfig, rcfg: TrainConfig, cascade: CascadeContextEncoder | None) -> Callable:
    """How G's input is built from a batch and its masks: the cascade's eq. (1) input, the hole filled with Pathak's
    constants (:func:`cce_core.masks.fill_hole`, the recipe) or with noise (``cfg.fill == "noise"``,
    :class:`cce_core.masks.NoiseFill` of the process's seed ``rcfg.seed``)."""
    if cascade is not None:
        return cascade.prepare_input
    return NoiseFill(rcfg.seed) if cfg.fill == "noise" else fill_hole


def make_step(cfg: TrainConfig, g: ContextEncoder, d: Discriminator, opt_g: torch.optim.Optimizer,
              opt_d: torch.optim.Optimizer, prepare=fill_hole, nsd_gen: torch.Generator | None = None,
              wrappers: tuple | None = None):
    """One training iteration as a function ``step(images, mask) -> tensor([d, g_adv, g_rec, l2])`` (with a fifth
    entry, ``nsd``, when ``cfg.nsd_weight`` > 0).

    ``images`` and ``mask`` are at the model's resolution; ``prepare`` builds G's input from them
    (:func:`cce_core.masks.fill_hole` for a plain CE, ``CascadeContextEncoder.prepare_input`` for the cascade).
    The losses are returned as a detached device tensor, so the caller decides when to synchronise. The fast
    path's options and ``wrappers`` (data-parallel runs): :class:`FastPath`.

    Beyond the paper: with ``cfg.nsd_weight`` = lambda > 0, G's loss gains lambda * NSD_batch, the BN-normalised NSD
    of the batch's images under ``cfg.nsd_masks`` extra masks each, drawn from ``nsd_gen``
    (:func:`cce_core.losses.make_nsd_generator`; see :mod:`cce_core.losses`). With lambda = 0 nothing is
    drawn or computed: the step is the recipe's, bit for bit.
    """
    if cfg.nsd_weight > 0 and nsd_gen is None:
        raise ValueError("nsd_weight > 0 needs the generator of the extra masks (nsd_gen, see make_nsd_generator)")
    fp = FastPath.of(cfg, g, d, wrappers)

    def step(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=fp.memory_format)
        ones = torch.ones(len(x), device=x.device)
        with fp.checks(), fp.autocast():
            inp = prepare(x, m)
            real = reconstruction_target(cfg, x)
            # D step: BCE(D(real), 1) + BCE(D(G(x)), 0), real and fake in separate passes (own BN statistics).
            fake = fp.g_forward(inp)
            logits_real, logits_fake = fp.d_step_logits(real), fp.d_step_logits(fake.detach())
        loss_d = (F.binary_cross_entropy_with_logits(logits_real.float(), ones)
                  + F.binary_cross_entropy_with_logits(logits_fake.float(), torch.zeros_like(ones)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # G step: (1 - wtl2) BCE(D(G(x)), 1) + mean(W (G(x) - x)^2), with D just updated (spec 7.1 (a)).
        if cfg.freeze_d:
            d.requires_grad_(False)
        with fp.autocast():
            logits = fp.d_logits(fake)
        if cfg.freeze_d:
            d.requires_grad_(True)  # the graph is built: D's parameters are not in it
        adv = F.binary_cross_entropy_with_logits(logits.float(), ones)
        sq = (fake.float() - real) ** 2
        rec = (reconstruction_weights(cfg, m) * sq).mean()
        loss_g = (1 - cfg.wtl2) * adv + rec
        losses = [loss_d, adv, rec, sq.mean()]
        if cfg.nsd_weight > 0:  # beyond the paper: lambda * NSD_batch (cce_core.losses)
            with fp.checks(), fp.autocast():
                penalty = batch_penalty(cfg, g, x, nsd_gen, prepare)
            loss_g = loss_g + cfg.nsd_weight * penalty
            losses.append(penalty)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return torch.stack(losses).detach()
    return step


# --- opening a run: new, resumed or finished ----------------------------------------------------------------------

@dataclass(frozen=True)
class RunFiles:
    """The files of a run directory."""

    out: Path

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def log(self) -> Path:
        return self.out / "log.jsonl"

    @property
    def config(self) -> Path:
        return self.out / "config.json"


def open_run(cfg: TrainConfig, files: RunFiles, resume: bool | str,
             force: bool) -> tuple[TrainConfig, dict | None, int] | None:
    """What :func:`train` is asked to do in ``files.out``: the configuration to train, the checkpoint to continue
    (None: a new run) and the first step; None when nothing is left to train. Refuses (see :func:`train`) to
    overwrite or resume a run of another configuration unless told to."""
    start, ckpt = 0, None
    auto = resume == "auto"
    if auto:
        resume = files.checkpoint.exists() and not force
    if not resume:
        if (files.checkpoint.exists() or files.log.exists()) and not (force or auto):  # auto: nothing to keep
            raise FileExistsError(f"{files.out} already holds a run; use resume=True (--resume) to continue it "
                                  "or force=True (--force) to overwrite it")
        return cfg, None, 0
    if not files.checkpoint.exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {files.out}")
    ckpt = load_checkpoint(files.checkpoint)
    stored = config_from(ckpt)
    if cfg.model != stored.model or cfg.mask != stored.mask:
        raise ValueError(f"{files.out} holds a {stored.model}/{stored.mask} run; cannot resume it as "
                         f"{cfg.model}/{cfg.mask}")
    differ = {k: (v, getattr(cfg, k)) for k, v in asdict(stored).items() if k not in RESUMABLE and getattr(cfg, k) != v}
    if differ and auto:
        raise FileExistsError(f"{files.out} holds a run with another configuration ({differ}, stored vs asked); "
                              "use force=True (--force) to overwrite it")
    if differ:
        warnings.warn(f"resuming {files.out} with its stored configuration; ignoring {differ} (stored vs asked)",
                      stacklevel=3)
    start = int(ckpt["step"])
    if auto and stored.planned_steps is not None and cfg.steps <= stored.planned_steps:
        return None  # cut by a time limit: finished at the samples it saw
    steps = max(stored.steps, cfg.steps)
    cfg = replace(stored, steps=steps, device=cfg.device,
                  planned_steps=stored.planned_steps if steps <= start else None)
    if start >= cfg.steps:  # finished: nothing to do
        return None
    return cfg, ckpt, start


# --- the run being trained ----------------------------------------------------------------------------------------

@dataclass
class Run:
    """A run being trained by this process: its configuration, networks, optimisers and random streams.

    Under ``torchrun`` (``world`` not None) each process draws its images and masks from its own stream
    (``rcfg``: the configuration with its seed and share of the batch), seeded from (``seed``, rank, ``origin``
    step); ``origin`` None is the single-process stream (seeded with ``cfg.seed``, as always). A checkpoint stores
    every process's generator, so a resumption with the same number of processes continues exactly; with another
    number the streams restart at the checkpoint's step. ``share`` is the slice of the drawn batch this process
    trains on (all of it, except with ``global_batch``).
    """

    cfg: TrainConfig
    files: RunFiles
    start: int
    resumed: bool
    world: distributed.World | None
    device: torch.device
    g: ContextEncoder
    d: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    prepare: Callable
    rcfg: TrainConfig
    gen: torch.Generator
    nsd_gen: torch.Generator | None
    origin: int | None
    n_proc: int
    share: slice
    ce64: dict | None  # the cascade's 64 CE (its model state), kept in every checkpoint of the cascade
    wrappers: tuple | None = None

    @property
    def main(self) -> bool:
        """Whether this process writes the run directory (rank 0, or the only process)."""
        return self.world is None or self.world.main

    def batch(self, images: torch.Tensor, masks: MaskStream | None) -> tuple[torch.Tensor, torch.Tensor]:
        x, m = next_batch(self.rcfg, images, self.gen, self.device, masks)
        return x[self.share], m[self.share]

    def model_state(self, step: int) -> dict:
        return model_state(self.cfg, self.g, step, self.ce64)

    def snapshot(self, step: int) -> None:  # G alone: enough for load_model and NSD
        if self.main and self.cfg.snapshot_every is not None and step % self.cfg.snapshot_every == 0:
            save_snapshot(self.model_state(step), self.files.out)

    def save(self, step: int) -> None:
        """The checkpoint at ``step`` (every process takes part: rank 0 gathers the random streams and writes);
        first checks the weights, which the last step's update may have broken though its losses were finite."""
        if not all(torch.isfinite(t).all() for net in (self.g, self.d) for t in net.state_dict().values()
                   if t.is_floating_point()):
            raise TrainingDiverged(f"the weights became NaN/inf at step {step} (with finite losses); "
                                   f"the last good checkpoint is kept in {self.files.checkpoint}")
        cfg, gen, nsd_gen = self.cfg, self.gen, self.nsd_gen
        mine = (gen.get_state(), nsd_gen.get_state() if nsd_gen is not None else None)
        states, nsd_states = zip(*([mine] if self.world is None else self.world.gather(mine)))
        if not self.main:
            return
        state = {**self.model_state(step), "finished": step >= cfg.steps, "cut_by_time": cfg.planned_steps is not None,
                 "D": self.d.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                 "rng": states[0], "rng_device": gen.device.type}
        if nsd_gen is not None:
            state.update(nsd_rng=nsd_states[0], nsd_rng_device=nsd_gen.device.type)
        if self.origin is not None or self.n_proc > 1:  # not the single-process stream: the streams of every process
            keep = list(states if self.n_proc > 1 else states[:1])
            state["streams"] = {"world_size": self.n_proc, "origin": self.origin, "rng": keep}
            if nsd_gen is not None:  # the NSD loss's masks, per process too
                state["streams"]["nsd_rng"] = list(nsd_states if self.n_proc > 1 else nsd_states[:1])
        atomic_save(state, self.files.checkpoint)

    def log(self, record: dict) -> None:
        if self.main:
            with self.files.log.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def cut(self, step: int, time_limit: float) -> None:
        """Out of time at ``step``: the run is finished at the samples it saw (``steps`` = ``step``, its
        ``planned_steps`` kept), and ``config.json`` says so."""
        cfg = self.cfg = replace(self.cfg, steps=step, planned_steps=self.cfg.planned_steps or self.cfg.steps)
        if self.main:
            meta = json.loads(self.files.config.read_text())
            meta["config"] = portable_config(asdict(cfg))
            meta["cut_by_time"] = {"steps": step, "planned_steps": cfg.planned_steps, "time_limit_s": time_limit}
            atomic_write_text(self.files.config, json.dumps(meta, indent=2))


def _cascade(cfg: TrainConfig, g: ContextEncoder,
             ckpt: dict | None) -> tuple[dict | None, CascadeContextEncoder | None]:
    """For the cascade (``cce128``): the 64 CE's checkpoint (stored in ``ckpt`` when resuming, else ``cfg.ce64``),
    checked against the run, and the cascade of it and ``g``; (None, None) for a plain CE."""
    if cfg.model != "cce128":
        return None, None
    ce64_ckpt = ckpt["ce64"] if ckpt is not None else load_checkpoint(cfg.ce64, model="ce64")
    c64 = config_from(ce64_ckpt)
    if c64.output != cfg.output:
        raise ValueError(f"the 64 CE in {cfg.ce64} predicts the {c64.output!r} region (mask {c64.mask!r}), "
                         f"but the cascade with mask {cfg.mask!r} needs output {cfg.output!r}")
    if c64.mask != cfg.mask:
        warnings.warn(f"the 64 CE was trained with mask {c64.mask!r}, the cascade uses {cfg.mask!r}", stacklevel=3)
    return ce64_ckpt, CascadeContextEncoder(ce64_from(ce64_ckpt), g, upscale=cfg.upscale)


def start_run(cfg: TrainConfig, files: RunFiles, ckpt: dict | None, start: int, global_batch: bool) -> Run:
    """Set up this process's part of the run: the process group (under torchrun), G and D (seeded with
    ``cfg.seed``; BatchNorm synchronised over the processes), the cascade's frozen 64 CE, the optimisers, the
    random streams (see :class:`Run`), and everything restored from ``ckpt`` when resuming."""
    world = distributed.setup(cfg.device)  # None: a single process (no torchrun)
    device = world.device if world is not None else resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    g, d = build_models(cfg)
    if world is not None:  # G's and D's BatchNorms over the global batch (not the frozen 64 CE's: eval mode)
        g, d = distributed.sync_batchnorm(g, world), distributed.sync_batchnorm(d, world)
    ce64_ckpt, cascade = _cascade(cfg, g, ckpt)
    opt_g, opt_d = setup_training(cfg, g, d, device, extra=cascade)
    n_proc, rank = (1, 0) if world is None or global_batch else (world.size, world.rank)
    streams = (ckpt.get("streams", {"world_size": 1, "origin": None, "rng": [ckpt["rng"]]})
               if ckpt is not None else {"world_size": n_proc, "origin": None if n_proc == 1 else 0, "rng": None})
    same_streams = streams["world_size"] == n_proc
    origin = streams["origin"] if same_streams else start
    rcfg = cfg if origin is None and n_proc == 1 else \
        replace(cfg, seed=distributed.rank_seed(cfg.seed, rank, origin), batch_size=cfg.batch_size // n_proc)
    local_batch = distributed.per_process_batch(cfg.batch_size, world)
    share = slice(None) if world is None or not global_batch else \
        slice(world.rank * local_batch, (world.rank + 1) * local_batch)
    run = Run(cfg, files, start, ckpt is not None, world, device, g, d, opt_g, opt_d,
              prepare_fn(cfg, rcfg, cascade), rcfg, make_generator(rcfg, device),
              make_nsd_generator(rcfg, device) if cfg.nsd_weight > 0 else None,  # the NSD loss's own stream
              origin, n_proc, share, kept_ce64(ce64_ckpt))
    if ckpt is not None:
        _restore(run, ckpt, same_streams, rank)
    run.wrappers = distributed.wrap(g, d, world) if world is not None else None
    return run


def _restore(run: Run, ckpt: dict, same_streams: bool, rank: int) -> None:
    """Weights, optimisers and random streams of a checkpoint (the streams only where they continue, see
    :class:`Run`)."""
    run.g.load_state_dict(ckpt["G"])
    run.d.load_state_dict(ckpt["D"])
    run.opt_g.load_state_dict(ckpt["opt_g"])
    run.opt_d.load_state_dict(ckpt["opt_d"])
    saved_on, path = ckpt.get("rng_device", "cpu"), run.files.checkpoint
    if same_streams and saved_on != run.gen.device.type:
        raise ValueError(f"{path} holds the random state of a {saved_on} generator (device_rng on "
                         f"{saved_on}); resume it on a {saved_on} device to continue it exactly")
    if same_streams:
        run.gen.set_state(ckpt.get("streams", {"rng": [ckpt["rng"]]})["rng"][rank])
    # the NSD loss's masks: each process's own stream where the streams continue (else re-derived at ``origin``)
    nsd_states = ckpt.get("streams", {}).get("nsd_rng", [ckpt.get("nsd_rng")] if run.n_proc == 1 else None)
    if run.nsd_gen is not None and same_streams and nsd_states is not None and nsd_states[rank] is not None:
        if ckpt.get("nsd_rng_device", "cpu") != run.nsd_gen.device.type:
            raise ValueError(f"{path} holds the random state of a {ckpt.get('nsd_rng_device', 'cpu')} "
                             "generator for the NSD masks; resume it on that kind of device to continue it exactly")
        run.nsd_gen.set_state(nsd_states[rank])


def load_data(run: Run, progress: bool, global_batch: bool) -> torch.Tensor:
    """The training images (on the device with ``data_on_device``). Only now, with the 64 CE and the data
    valid, does rank 0 write the run directory: a new run's ``config.json`` and empty log (deleting a previous
    run's files and snapshots, ``force``), or for a resumed one the log and the snapshots cut back to the checkpoint
    and the configuration resumed."""
    cfg, files = run.cfg, run.files
    data = load_images(cfg.data, limit=cfg.limit, embedded_count=cfg.embedded_count, seed=cfg.seed,
                       purpose=TRAIN_CROPS, max_bad_fraction=cfg.max_bad_fraction, progress=progress,
                       workers=min(8, os.cpu_count() or 1))
    images = data.images.to(run.device) if cfg.data_on_device else data.images
    if run.main and not run.resumed:
        for p in (files.checkpoint, files.log, files.config):
            p.unlink(missing_ok=True)
        drop_snapshots(files.out)  # else snapshots() would list the old run's
        meta = {"config": portable_config(asdict(cfg)),
                "data": {"description": data.description, "images": len(data),
                         "skipped": {k: len(v) for k, v in data.skipped.items()},
                         "sources": describe_sources(cfg.data, cfg.embedded_count, verify=False)},
                "provenance": provenance(run.device)}
        if run.world is not None:
            meta["distributed"] = {"world_size": run.world.size, "backend": run.world.backend,
                                   "global_batch": global_batch}
        atomic_write_text(files.config, json.dumps(meta, indent=2))
        files.log.write_text("")
    elif run.main:  # drop log records and snapshots after the checkpoint; config.json gets the configuration resumed
        records = [rec for rec in read_log(files.out) if rec["step"] <= run.start]
        files.log.write_text("".join(json.dumps(rec) + "\n" for rec in records))
        drop_snapshots(files.out, after=run.start)
        if files.config.exists():
            meta = json.loads(files.config.read_text())
            meta["config"] = portable_config(asdict(cfg))
            meta.pop("cut_by_time", None)
            atomic_write_text(files.config, json.dumps(meta, indent=2))
    return images


class LossMeter:
    """The step losses summed on the device since the last log line (no host synchronisation per step), and with
    ``device_checks`` the count of invalid mask values seen."""

    NAMES = ("d", "g_adv", "g_rec", "l2", "nsd")

    def __init__(self, run: Run) -> None:
        self.run, self.steps = run, 0
        self.sums = torch.zeros(4 + (run.nsd_gen is not None), device=run.device)  # d, g_adv, g_rec, l2 (, nsd)
        self.bad_masks = torch.zeros((), dtype=torch.long, device=run.device)

    def check(self, m: torch.Tensor) -> None:
        self.bad_masks += invalid_mask_count(m)

    def add(self, losses: torch.Tensor) -> None:
        self.sums += losses
        self.steps += 1

    def record(self, step: int, since: float) -> tuple[dict, float]:
        """The log line of the steps since the last one (at ``since``, ``time.perf_counter``): losses averaged over
        them and over the processes, and the speed; then reset. Raises on invalid masks or a NaN/inf loss, the
        last good checkpoint kept. Returns the line and the time it was read (after the device's work)."""
        run, n = self.run, self.steps
        if run.world is not None:  # the losses averaged over the processes; invalid masks of any
            run.world.mean_(self.sums), run.world.sum_(self.bad_masks)
        vals = (self.sums / n).tolist()
        if run.cfg.device_checks and int(self.bad_masks):
            raise ValueError(f"a mask held values other than 0 and 1 between steps {step - n + 1} and "
                             f"{step}; the last good checkpoint is kept in {run.files.checkpoint}")
        if not all(math.isfinite(v) for v in vals):
            raise TrainingDiverged(f"a loss became NaN/inf between steps {step - n + 1} and {step} "
                                   f"({dict(zip(self.NAMES, vals))}); the last good "
                                   f"checkpoint is kept in {run.files.checkpoint}")
        now = time.perf_counter()
        rec = {"step": step, "d": vals[0], "g_adv": vals[1], "g_rec": vals[2], "l2": vals[3],
               "images_per_s": n * run.cfg.batch_size / max(now - since, 1e-9)}
        if len(vals) > 4:
            rec["nsd"] = vals[4]  # NSD_batch (BN-normalised), before lambda
        if hasattr(os, "getloadavg"):  # the machine's 1-minute load: whether the speed above was a shared machine's
            rec["load_1m"] = round(os.getloadavg()[0], 2)
        self.sums.zero_()
        self.steps = 0
        return rec, now


def log_code_stats(run: Run, rec: dict, x: torch.Tensor, m: torch.Tensor) -> None:
    """Add to a log line the bottleneck convolution's weight norm (``code_weight_norm``) and the bottleneck
    BatchNorm's running variance over the variance of the step's codes (``code_var_ratio``, mean over dimensions):
    :func:`cce_core.losses.code_stats` of the step's batch ``x``, ``m``, read at log steps only, for every run (with
    and without the NSD loss, so that they can be compared). Draws no random number and changes no state."""
    with torch.no_grad():
        norm, ratio = code_stats(run.g, run.prepare(x, m)).tolist()
    rec["code_weight_norm"], rec["code_var_ratio"] = norm, ratio


def _agreed(run: Run, flag: bool, asked: bool) -> bool:
    """Under torchrun, rank 0's decision for all (a collective: only where the option is on, ``asked``)."""
    return run.world.agree(flag) if run.world is not None and asked else flag


# --- the loop -------------------------------------------------------------------------------------------------

@global_switches()
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
    out (under torchrun: the first log step after, so that the processes agree on it only there), and makes the
    run finished at the samples it saw: the stored configuration gets ``steps`` = the steps done and
    ``planned_steps`` = the steps asked for, and ``config.json`` and the checkpoint say ``cut_by_time``.
    ``resume="auto"`` with the original configuration then returns at once; ``resume=True`` continues it (to
    ``planned_steps`` or the ``steps`` asked for, if more).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the N processes train one model with DistributedDataParallel
    (:mod:`cce_core.distributed`): each takes ``batch_size / N`` of the global batch, BatchNorm is synchronised,
    and rank 0 alone writes the run directory (losses averaged over the processes; checkpoints in the
    single-process format); each process has its own random stream (:class:`Run`). ``global_batch=True`` makes
    every process draw the whole global batch from the run's single-process stream and keep its slice: the
    batches of a single-process run, at N times the sampling work (for checking a multi-process run).

    Long because the loop is the whole schedule of a run in one place, the docstring a third of it: open or
    resume the run (:func:`open_run`, :func:`start_run`, :func:`load_data`), then per step a batch, the step
    (:func:`make_step`), a snapshot, the time limit; at log steps the log line (:class:`LossMeter`), the cut and
    the checkpoint (:meth:`Run.save`); stop.
    """
    files = RunFiles(Path(out))
    opened = open_run(cfg, files, resume, force)
    if opened is None:
        return files.checkpoint
    cfg, ckpt, start = opened
    files.out.mkdir(parents=True, exist_ok=True)
    run = start_run(cfg, files, ckpt, start, global_batch)
    progress = progress and run.main
    images = load_data(run, progress, global_batch)
    run.g.train()
    run.d.train()
    step_fn = make_step(cfg, run.g, run.d, run.opt_g, run.opt_d, run.prepare, nsd_gen=run.nsd_gen,
                        wrappers=run.wrappers)
    masks, meter = make_mask_stream(run.rcfg, run.device, start), LossMeter(run)
    t_start = last = last_save = time.perf_counter()
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, disable=not progress,
               desc=f"{cfg.model}/{cfg.mask}", unit="step")
    step = start
    try:
        for step in bar:
            x, m = run.batch(images, masks)
            if isinstance(run.prepare, NoiseFill):
                run.prepare.at(step)
            if cfg.device_checks:
                meter.check(m)
            meter.add(step_fn(x, m))
            done = step + 1
            run.snapshot(done)
            at_log = done % cfg.log_every == 0 or done == end
            ask = time_limit is not None and (at_log or run.world is None)  # torchrun: at log steps only
            cut = ask and done < end and time.perf_counter() - t_start >= time_limit
            cut = _agreed(run, cut, ask)  # rank 0's clock decides for all (a collective and a host sync)
            if at_log or cut:
                rec, now = meter.record(done, since=last)
                rec["seconds"] = round(now - t_start, 2)  # this call's training loop so far (a resume restarts it)
                log_code_stats(run, rec, x, m)  # after the speed was read: not counted in images_per_s
                last = time.perf_counter()
                run.log(rec)
                bar.set_postfix(d=f"{rec['d']:.3f}", rec=f"{rec['g_rec']:.4f}")
                if cut:
                    run.cut(done, time_limit)
                by_time = cfg.checkpoint_seconds is not None and now - last_save >= cfg.checkpoint_seconds
                by_time = _agreed(run, by_time, cfg.checkpoint_seconds is not None)
                every = cfg.checkpoint_every is not None and done % cfg.checkpoint_every == 0
                if done == end or cut or every or by_time:
                    run.save(done)
                    last_save = time.perf_counter()
                if cut:
                    break
    except KeyboardInterrupt:
        warnings.warn(f"interrupted at step {step}; the last checkpoint in {files.checkpoint} is kept: continue "
                      "with --resume", stacklevel=2)
        raise
    finally:
        bar.close()
        distributed.shutdown(run.world)
    return files.checkpoint
