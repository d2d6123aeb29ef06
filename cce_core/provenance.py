"""Where a number came from: code version, software, hardware and time, recorded next to every run."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path

import torch

from .data import source_names

REPO = Path(__file__).resolve().parents[1]


#: Written by ``make carry``: the commit of a copy of the tree that travels without its ``.git`` (the GPU box).
CARRIED_COMMIT = REPO / ".carry" / "COMMIT"


def git_commit() -> str:
    """The commit of the working tree (with ``-dirty`` if it has uncommitted changes). Without git or ``.git``:
    the commit ``make carry`` recorded in ``.carry/COMMIT`` (marked as such), else ``"unknown"``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        if sha.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    if CARRIED_COMMIT.is_file():
        return CARRIED_COMMIT.read_text().strip() + " (recorded by make carry)"
    return "unknown"


def device_name(device: torch.device | str) -> str:
    """A human-readable name of the device: the GPU's name, or the CPU with its thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for a ``--device`` value. ``"auto"`` picks CUDA when present, else the CPU; a device asked
    for by name must exist: ValueError (one line, naming the value) for an unknown name or a missing GPU."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU "
                             "(use --device auto to fall back to the CPU)")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r} asked for, but there are only {count} CUDA GPU(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} asked for, but MPS is not available")
    return dev


def provenance(device: torch.device | str = "cpu") -> dict:
    """A record of the code, software and hardware of a run, for the book's provenance boxes."""
    return {
        "commit": git_commit(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
    }


def portable_config(config: dict) -> dict:
    """A training configuration as ``config.json`` should store it: data sources by file name and the 64 CE by
    its run folder and file name, instead of this machine's paths (the checkpoint keeps the paths it resumes
    from). Pair it with :func:`cce_core.data.describe_sources` for the sources' image counts and SHA-256."""
    out = dict(config)
    out["data"] = source_names(config["data"])
    if config.get("ce64"):
        p = Path(config["ce64"])
        out["ce64"] = f"{p.parent.name}/{p.name}"
    return out
