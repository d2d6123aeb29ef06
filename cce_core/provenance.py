"""Where a number came from: code version, software, hardware and time, recorded next to every run."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch

from .data import source_names

REPO = Path(__file__).resolve().parents[1]


#: Written by ``make carry``: the commit of a copy of the tree that travels without its ``.git`` (the GPU box).
CARRIED_COMMIT = REPO / ".carry" / "COMMIT"


#: The parts of the tree that make a reproduction's numbers: the library and the notebooks.
SOURCES = ("cce_core", "notebooks")


def uncommitted(repo: Path = REPO) -> list[str] | None:
    """The uncommitted changes of the library and notebooks (:data:`SOURCES`) in ``repo``: ``git status
    --porcelain`` lines (modified, added, deleted and untracked files; empty when clean). None outside a git
    checkout or without git (e.g. a tree unpacked on the GPU box, whose commit ``.carry/COMMIT`` records)."""
    try:
        r = subprocess.run(["git", "status", "--porcelain", "--", *SOURCES], cwd=repo, capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.splitlines() if r.returncode == 0 else None


def git_commit(repo: Path = REPO) -> str:
    """The commit of the working tree in ``repo`` (with ``-dirty`` if it has uncommitted changes to tracked files,
    or untracked files in the library or notebooks, :func:`uncommitted`). Without git or ``.git``: the commit
    ``make carry`` recorded in ``.carry/COMMIT`` (marked as such), else ``"unknown"``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if sha.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return sha.stdout.strip() + ("-dirty" if dirty or uncommitted(repo) else "")
    except (OSError, subprocess.SubprocessError):
        pass
    if CARRIED_COMMIT.is_file():
        return CARRIED_COMMIT.read_text().strip() + " (recorded by make carry)"
    return "unknown"


def code_sha256(root: Path = Path(__file__).parent) -> str:
    """SHA-256 of the library's code: each ``.py`` file of ``cce_core`` and its subpackages (``report/``), its path
    and contents, in path order. It names the code that measured a result even where the commit does not
    (uncommitted changes, no ``.git``)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks of 1 MiB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``/proc/cpuinfo``'s first ``model name``, e.g. "AMD EPYC"), else the machine type."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    name = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "")
    return name or platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """A human-readable name of the device: the GPU's name, or the CPU's model with PyTorch's kernel level for it
    (AVX2, AVX512, ...) and the thread count, e.g. "CPU (AMD EPYC, AVX2, 2 threads)": timings on one CPU model are
    not comparable with another's."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({cpu_model()}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"


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


def measured_by(device: torch.device | str = "cpu") -> dict:
    """What measures a result now, for the caches that keep measurements: the commit, the SHA-256 of the library's
    code (``tree``, :func:`code_sha256`), the date, the device and torch."""
    prov = provenance(device)
    return {"commit": prov["commit"], "tree": code_sha256(), "date": prov["date"], "device": prov["device"],
            "torch": prov["torch"]}


def dirty_warning(prov: dict) -> str | None:
    """A MyST warning admonition (Markdown, one sentence) for a page stamped with provenance ``prov`` whose commit
    is ``-dirty`` (made from uncommitted code, see :func:`git_commit`); None for a clean or unknown commit."""
    commit = str(prov.get("commit") or "")
    if not commit.split(" ")[0].endswith("-dirty"):
        return None
    return (f":::{{warning}}\nThese results were made from uncommitted code (commit {commit}): the commit alone "
            "does not reproduce them.\n:::")


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
