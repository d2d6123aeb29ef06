"""A run's files on disk: the checkpoint format, its atomic save, loading a trained model, snapshots and the log.

A checkpoint (``checkpoint.pt``, written by :func:`cce_core.train.train`) is a dict with ``format`` =
:data:`CHECKPOINT_FORMAT`, the run's ``config`` (a :class:`cce_core.config.TrainConfig` as a dict), its ``step``,
G's weights (``G``) and, for the cascade, the trained 64 CE it was built on (``ce64``, itself a model state):
that is a *model state*, all :func:`load_model` needs, and all a snapshot (``snapshots/step-NNNNNNN.pt``) holds.
The training checkpoint adds D, both optimisers and the random streams, so a resumed run continues exactly.
Everything is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import torch

from .cascade import CascadeContextEncoder
from .config import TrainConfig
from .models import ContextEncoder, Discriminator

CHECKPOINT_FORMAT = "cce-companion-checkpoint/1"


def build_models(cfg: TrainConfig) -> tuple[ContextEncoder, Discriminator]:
    """The generator and discriminator of a run, freshly initialised (seeded by the caller)."""
    variant = cfg.variant if cfg.size == 64 else "R"
    g = ContextEncoder(cfg.size, cfg.bottleneck, cfg.output, variant, cfg.width)
    d = Discriminator(cfg.size, cfg.output, variant, cfg.width)
    return g, d


def atomic_save(obj: dict, path: Path) -> None:
    """``torch.save`` into a temporary file beside ``path``, then renamed: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then renamed over it
    (``os.replace``): a reader (or a run killed meanwhile) sees the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_cache(cache: str | os.PathLike | None, key: dict, items: str, what: str) -> dict:
    """A measurement cache (JSON) made on ``key``: its contents, or a new one ``{"key": key, items: {}}`` if it does
    not exist; a cache made on another key is refused (ValueError naming ``what`` it was measured on)."""
    path = Path(cache) if cache else None
    done = json.loads(path.read_text()) if path and path.is_file() else {"key": key, items: {}}
    if done["key"] != key:
        raise ValueError(f"the cache {path} was measured on other {what} ({done['key']}); delete it to measure again")
    return done


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
        raise ValueError(f"{path} is not a cce-companion checkpoint (this project's format): unreadable "
                         f"({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a cce-companion checkpoint (format {CHECKPOINT_FORMAT!r})")
    if model is not None and ckpt["config"]["model"] != model:
        raise ValueError(f"{path} holds a {ckpt['config']['model']!r} model (mask {ckpt['config']['mask']!r}), "
                         f"but a {model!r} checkpoint is needed here")
    return ckpt


def config_from(ckpt: dict) -> TrainConfig:
    """The :class:`TrainConfig` stored in a checkpoint (fields this version does not know are dropped)."""
    known = {f.name for f in fields(TrainConfig)}
    stored = {k: v for k, v in ckpt["config"].items() if k in known}
    if stored.get("nsd_weight") and "nsd_norm" not in stored:
        stored["nsd_norm"] = "running"  # NSD-loss runs from before nsd_norm divided by the running variance
    return TrainConfig(**stored)


def ce64_from(ckpt: dict) -> ContextEncoder:
    """The generator of a model state (a 64 CE's checkpoint, or the ``ce64`` kept inside a cascade's)."""
    cfg = config_from(ckpt)
    g, _ = build_models(cfg)
    g.load_state_dict(ckpt["G"])
    return g


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> ContextEncoder | CascadeContextEncoder:
    """The trained generator of a checkpoint in eval mode: a :class:`ContextEncoder`, or for a ``cce128``
    checkpoint the whole :class:`CascadeContextEncoder` (its 64 CE is stored inside the checkpoint)."""
    ckpt = load_checkpoint(path)
    cfg = config_from(ckpt)
    g, _ = build_models(cfg)
    g.load_state_dict(ckpt["G"])
    if cfg.model == "cce128":
        ce64 = ce64_from(ckpt["ce64"])
        g = CascadeContextEncoder(ce64, g, upscale=cfg.upscale)
    return g.to(device).eval()


def model_state(cfg: TrainConfig, g: ContextEncoder, step: int, ce64: dict | None = None) -> dict:
    """What :func:`load_model` needs: the format, ``cfg``, ``step``, G's weights (and the cascade's 64 CE, a
    model state itself: see :func:`kept_ce64`)."""
    state = {"format": CHECKPOINT_FORMAT, "config": asdict(cfg), "step": step, "G": g.state_dict()}
    if ce64 is not None:
        state["ce64"] = ce64
    return state


def kept_ce64(ckpt: dict | None) -> dict | None:
    """The part of a 64 CE's checkpoint a cascade's checkpoint keeps: its model state (no D, no optimisers)."""
    return {k: ckpt[k] for k in ("format", "config", "step", "G")} if ckpt is not None else None


def snapshot_path(out: str | os.PathLike, step: int) -> Path:
    """Where a run keeps its snapshot of ``step``: ``out/snapshots/step-NNNNNNN.pt``."""
    return Path(out) / "snapshots" / f"step-{step:07d}.pt"


def save_snapshot(state: dict, out: Path) -> None:
    """A model state kept along training: :func:`snapshot_path` (NSD along training)."""
    (out / "snapshots").mkdir(exist_ok=True)
    atomic_save({**state, "finished": False, "snapshot": True}, snapshot_path(out, state["step"]))


def snapshots(run: str | os.PathLike) -> list[Path]:
    """The snapshots of a run directory (G every ``snapshot_every`` steps), in training order, then its final
    checkpoint if it is later than the last snapshot: the models along one training run."""
    run = Path(run)
    paths = sorted((run / "snapshots").glob("step-*.pt"))
    final = run / "checkpoint.pt"
    if final.exists() and (not paths or int(load_checkpoint(final)["step"]) > int(paths[-1].stem.split("-")[1])):
        paths.append(final)
    return paths


def drop_snapshots(run: str | os.PathLike, after: int = -1) -> None:
    """Delete the snapshots of a run directory later than step ``after`` (by default all of them): those of a
    previous run overwritten, or those a resumed run will take again."""
    for path in (Path(run) / "snapshots").glob("step-*.pt"):
        if int(path.stem.split("-")[1]) > after:
            path.unlink()


def trained_commit(run: str | os.PathLike) -> str | None:
    """The commit that trained a run (its ``config.json``'s provenance), None where it is not recorded."""
    stored = Path(run) / "config.json"
    return json.loads(stored.read_text()).get("provenance", {}).get("commit") if stored.is_file() else None


def read_log(run: str | os.PathLike) -> list[dict]:
    """The loss records of a run directory (one dict per ``log_every`` steps). A last line cut short (a run
    killed while writing it) is skipped with a warning; an unreadable line before it is a ValueError naming it."""
    path = Path(run) / "log.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no training log in {run}")
    lines = [(i, ln) for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.strip()]
    records = []
    for i, ln in lines:
        try:
            records.append(json.loads(ln))
        except json.JSONDecodeError as e:
            if i != lines[-1][0]:
                raise ValueError(f"{path}: line {i} is not a JSON record ({e})") from None
            warnings.warn(f"{path}: skipping its last line {i}, cut short ({e})", stacklevel=2)
    return records


def run_summary(run: str | os.PathLike) -> dict:
    """One row of the book's table of training runs, from the run's ``config.json`` and ``log.jsonl``.

    Model, mask, seed, the image samples seen (steps x batch) and those planned (a run cut by a time limit saw
    fewer), steps, bottleneck D, width, the training data, the training loop's time (the sum, over log records,
    of the images of the record over its images/s) and the mean images/s, and the last losses: the mean over the
    last three log records of the discriminator's BCE (``d``), the generator's adversarial BCE (``g_adv``) and its
    weighted reconstruction loss (``g_rec``).
    """
    run = Path(run)
    meta = json.loads((run / "config.json").read_text())
    cfg, log = meta["config"], read_log(run)
    if not log:
        raise ValueError(f"the training log of {run} is empty")
    batch, steps = cfg["batch_size"], cfg["steps"]
    spans = [(rec["step"] - prev["step"]) * batch for prev, rec in zip([{"step": 0}] + log, log)]
    seconds = sum(n / rec["images_per_s"] for n, rec in zip(spans, log) if rec.get("images_per_s"))
    tail = log[-3:]
    return {"run": run.name, "model": cfg["model"], "mask": cfg["mask"], "seed": cfg["seed"],
            "samples": steps * batch, "planned samples": (cfg.get("planned_steps") or steps) * batch,
            "steps": steps, "batch": batch, "D": cfg["bottleneck"], "width": cfg["width"],
            "data": meta.get("data", {}).get("description", ""), "train seconds": seconds,
            "images/s": steps * batch / seconds if seconds else float("nan"),
            **{f"last {k}": sum(rec[k] for rec in tail) / len(tail) for k in ("d", "g_adv", "g_rec")}}
