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
``log_every`` steps), ``checkpoint.pt`` (written atomically every ``checkpoint_every`` steps and at the end).
"""

from __future__ import annotations

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

from .cascade import CascadeContextEncoder, downscale, downscale_mask
from .data import load_images, sample_batch
from .masks import center_box, central_mask, fill_hole, make_masks
from .models import ContextEncoder, Discriminator
from .provenance import provenance, resolve_device

MODELS = ("ce64", "ce128", "cce128")
MASKS = ("central", "random_blocks", "random_region")
CHECKPOINT_FORMAT = "cce-companion-checkpoint/1"


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
    checkpoint_every: int = 100
    limit: int | None = None          # use only the first `limit` images
    embedded_count: int = 512         # crops in the embedded default data set
    data_on_device: bool = True       # keep the decoded uint8 images on the training device
    max_bad_fraction: float = 0.05    # fail if more than this share of the image files is corrupt or too small

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {self.mask!r}")
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [str(self.data)]
        self.data = [str(d) for d in self.data]
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.checkpoint_every % self.log_every:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of log_every ({self.log_every})")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm needs a batch)")
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
    "smoke": dict(steps=20, batch_size=16, bottleneck=64, width=16, log_every=2, checkpoint_every=10),
    "cpu": dict(steps=300, batch_size=32, bottleneck=512, width=32, log_every=10, checkpoint_every=100),
    "paper": dict(steps=16000, batch_size=64, bottleneck=4000, width=64, log_every=50, checkpoint_every=1000),
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


def next_batch(cfg: TrainConfig, images: torch.Tensor, gen: torch.Generator,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch (images in [-1, 1], masks) at the model's resolution, drawn from ``gen``.

    Random masks are drawn at 128 and, for the 64 CE, downscaled with the cascade's ``downscale_mask``, and
    images with its ``downscale``: the 64 CE is trained on exactly what the cascade will show it.
    """
    x = sample_batch(images, cfg.batch_size, gen, flip=cfg.flip, device=device)
    if cfg.mask == "central":
        m = central_mask(cfg.batch_size, cfg.size, cfg.overlap, device=device)
    else:
        m = make_masks(cfg.mask, cfg.batch_size, 128, gen).to(device)
        m = downscale_mask(m) if cfg.model == "ce64" else m
    return (downscale(x) if cfg.model == "ce64" else x), m


def make_step(cfg: TrainConfig, g: ContextEncoder, d: Discriminator, opt_g: torch.optim.Optimizer,
              opt_d: torch.optim.Optimizer, prepare=fill_hole):
    """One training iteration as a function ``step(images, mask) -> tensor([d, g_adv, g_rec, l2])``.

    ``images`` and ``mask`` are at the model's resolution; ``prepare`` builds G's input from them
    (:func:`cce_core.masks.fill_hole` for a plain CE, ``CascadeContextEncoder.prepare_input`` for the cascade).
    The losses are returned as a detached device tensor, so the caller decides when to synchronise.
    """
    def step(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(len(x), device=x.device)
        inp = prepare(x, m)
        real = _target(cfg, x)
        # D step: BCE(D(real), 1) + BCE(D(G(x)), 0), real and fake in separate passes (own BN statistics).
        fake = g(inp)
        loss_d = (F.binary_cross_entropy_with_logits(d.logits(real), ones)
                  + F.binary_cross_entropy_with_logits(d.logits(fake.detach()), torch.zeros_like(ones)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # G step: (1 - wtl2) BCE(D(G(x)), 1) + mean(W (G(x) - x)^2), with D just updated (spec 7.1 (a)).
        adv = F.binary_cross_entropy_with_logits(d.logits(fake), ones)
        sq = (fake - real) ** 2
        rec = (reconstruction_weights(cfg, m) * sq).mean()
        loss_g = (1 - cfg.wtl2) * adv + rec
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return torch.stack([loss_d, adv, rec, sq.mean()]).detach()
    return step


# --- the loop -------------------------------------------------------------------------------------------------

def train(cfg: TrainConfig, out: str | os.PathLike, resume: bool | str = False, force: bool = False,
          progress: bool = True, stop_after: int | None = None) -> Path:
    """Train the model of ``cfg`` into the run directory ``out``; returns the path of ``checkpoint.pt``.

    ``resume`` continues a run from its checkpoint exactly (weights, optimisers, step, random state), with the
    stored configuration; only ``steps`` may be raised. ``resume="auto"`` resumes if ``out`` holds a run of
    the same configuration (a finished one returns at once), starts one if ``out`` holds none, and refuses a
    run of another configuration. ``force`` deletes a previous run in ``out``.
    ``stop_after`` ends the call after that many steps (with a checkpoint), as an interruption would.
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
                  if k not in ("steps", "device") and getattr(cfg, k) != v}
        if differ and auto:
            raise FileExistsError(f"{out} holds a run with another configuration ({differ}, stored vs asked); "
                                  "use force=True (--force) to overwrite it")
        if differ:
            warnings.warn(f"resuming {out} with its stored configuration; ignoring {differ} (stored vs asked)")
        cfg = replace(stored, steps=max(stored.steps, cfg.steps), device=cfg.device)
        start = int(ckpt["step"])
        if start >= cfg.steps:  # finished: nothing to do
            return ckpt_path
    elif (ckpt_path.exists() or log_path.exists()) and not (force or auto):  # auto: no checkpoint, nothing to keep
        raise FileExistsError(f"{out} already holds a run; use resume=True (--resume) to continue it "
                              "or force=True (--force) to overwrite it")
    out.mkdir(parents=True, exist_ok=True)

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    g, d = build_models(cfg)
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
        cascade = CascadeContextEncoder(_ce64_from(ce64_ckpt), g, upscale=cfg.upscale).to(device)
        prepare = cascade.prepare_input
    g.to(device)
    d.to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999))
    gen = torch.Generator().manual_seed(cfg.seed)
    if ckpt is not None:
        g.load_state_dict(ckpt["G"])
        d.load_state_dict(ckpt["D"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        gen.set_state(ckpt["rng"])

    data = load_images(cfg.data, limit=cfg.limit, embedded_count=cfg.embedded_count, seed=cfg.seed,
                       max_bad_fraction=cfg.max_bad_fraction,
                       progress=progress, workers=min(8, os.cpu_count() or 1))
    images = data.images.to(device) if cfg.data_on_device else data.images
    if not resume:  # the 64 CE and the data are valid: only now is a previous run (force=True) deleted
        for p in (ckpt_path, log_path, cfg_path):
            p.unlink(missing_ok=True)
        meta = {"config": asdict(cfg), "data": {"description": data.description, "images": len(data),
                "skipped": {k: len(v) for k, v in data.skipped.items()}}, "provenance": provenance(device)}
        cfg_path.write_text(json.dumps(meta, indent=2))
        log_path.write_text("")
    else:  # drop log records written after the checkpoint
        lines = [ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start]
        log_path.write_text("".join(ln + "\n" for ln in lines))

    def save(step: int) -> None:
        state = {"format": CHECKPOINT_FORMAT, "config": asdict(cfg), "step": step, "finished": step >= cfg.steps,
                 "G": g.state_dict(), "D": d.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                 "rng": gen.get_state()}
        if ce64_ckpt is not None:
            state["ce64"] = {k: ce64_ckpt[k] for k in ("format", "config", "step", "G")}
        _atomic_save(state, ckpt_path)

    g.train()
    d.train()
    step_fn = make_step(cfg, g, d, opt_g, opt_d, prepare)
    sums = torch.zeros(4, device=device)  # d, g_adv, g_rec, l2 since the last log line
    last = time.perf_counter()
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, disable=not progress,
               desc=f"{cfg.model}/{cfg.mask}", unit="step")
    step, n_steps = start, 0
    try:
        for step in bar:
            sums += step_fn(*next_batch(cfg, images, gen, device))
            done, n_steps = step + 1, n_steps + 1
            if done % cfg.log_every == 0 or done == end:
                vals = (sums / n_steps).tolist()
                if not all(math.isfinite(v) for v in vals):
                    raise TrainingDiverged(f"a loss became NaN/inf between steps {done - n_steps + 1} and {done} "
                                           f"({dict(zip(('d', 'g_adv', 'g_rec', 'l2'), vals))}); the last good "
                                           f"checkpoint is kept in {ckpt_path}")
                now = time.perf_counter()
                rec_line = {"step": done, "d": vals[0], "g_adv": vals[1], "g_rec": vals[2], "l2": vals[3],
                            "images_per_s": n_steps * cfg.batch_size / max(now - last, 1e-9)}
                last = now
                with log_path.open("a") as f:
                    f.write(json.dumps(rec_line) + "\n")
                bar.set_postfix(d=f"{vals[0]:.3f}", rec=f"{vals[2]:.4f}")
                sums.zero_()
                n_steps = 0
                if done % cfg.checkpoint_every == 0 or done == end:
                    # the losses were computed before this step's update, which may still have broken the weights
                    if not all(torch.isfinite(t).all() for m in (g, d) for t in m.state_dict().values()
                               if t.is_floating_point()):
                        raise TrainingDiverged(f"the weights became NaN/inf at step {done} (with finite losses); "
                                               f"the last good checkpoint is kept in {ckpt_path}")
                    save(done)
    except KeyboardInterrupt:
        warnings.warn(f"interrupted at step {step}; the last checkpoint in {ckpt_path} is kept "
                      f"(every {cfg.checkpoint_every} steps): continue with --resume")
        raise
    finally:
        bar.close()
    return ckpt_path


def read_log(run: str | os.PathLike) -> list[dict]:
    """The loss records of a run directory (one dict per ``log_every`` steps)."""
    path = Path(run) / "log.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no training log in {run}")
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln]

