"""The runs of a reproduction: their names, and each one trained, resumed or reused where it already exists.

A run lives in ``runs_dir/<name>`` (:func:`run_name`): the model and mask strategy, and a suffix for a training
that differs from the recipe (eq. (1)'s loss weighting, the NSD loss, a cascade of the fair scale ladder,
:func:`fair_run_name`). The notebooks and :func:`cce_core.reproduce.reproduce` ask for runs through
:func:`ensure_run`, so a notebook run alone trains what it needs and a reproduction's notebooks reuse what it
trained.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .config import make_config
from .evaluate import snapshot_at
from .train import train


def run_name(model: str, mask: str, full_known_weight: float = 1.0, nsd_weight: float = 0.0) -> str:
    """The run directory (and generated notebook) name of a model trained with a mask strategy; a random-block
    model trained with eq. (1)'s weighting (``full_known_weight`` 0: missing pixels only) gets ``-hole``, any
    other known-pixel weight than the default 1 ``-known<w>``; one trained with the NSD loss (beyond the paper,
    :mod:`cce_core.losses`) ``-nsd<lambda>``."""
    suffix = "" if full_known_weight == 1 else "-hole" if full_known_weight == 0 else f"-known{full_known_weight:g}"
    return f"{model}-{mask}{suffix}" + (f"-nsd{nsd_weight:g}" if nsd_weight else "")


def ensure_run(runs_dir: str | Path, model: str, mask: str, preset: str, data: list[str], seed: int = 0,
               device: str = "auto", progress: bool = False, time_limit: float | None = None,
               fast: bool | None = None, full_known_weight: float = 1.0, nsd_weight: float = 0.0,
               nsd_masks: int = 2) -> Path:
    """Train (or resume, or reuse) one model's run in ``runs_dir/<model>-<mask>``; returns its checkpoint.

    For the cascade (``cce128``) the 64 CE of the same mask strategy (and loss weighting) is ensured first.
    Notebooks call this so that each one runs on its own (nbval, a reader opening it alone) with the same runs a
    full reproduction makes; in a reproduction the runs already exist and are reused. ``time_limit`` (seconds)
    stops this model's training early with its checkpoint (``train``'s option); the run then counts as finished.
    ``full_known_weight``: :class:`cce_core.config.TrainConfig`'s weight of the known pixels in the reconstruction
    loss of full-image (random-mask) models, 1 (Pathak's code, the default) or 0 (the paper's eq. (1)); another
    value than 1 goes to its own run directory (:func:`run_name`) and is refused for the central mask, whose
    models predict the hole only. ``nsd_weight`` > 0 adds the NSD loss with ``nsd_masks`` masks per image (beyond
    the paper; the cascade's 64 CE is trained without it) in its own run directory.
    """
    if full_known_weight != 1 and mask == "central":
        raise ValueError("full_known_weight applies to full-image (random-mask) models only, not to the central mask")
    run = Path(runs_dir) / run_name(model, mask, full_known_weight, nsd_weight)
    if fast is None:  # a notebook reusing a run: take the fast-path switch the run was trained with
        stored = run / "config.json"
        fast = bool(json.loads(stored.read_text())["config"].get("fast", False)) if stored.exists() else False
    ce64 = (ensure_run(runs_dir, "ce64", mask, preset, data, seed, device, progress, fast=fast,
                       full_known_weight=full_known_weight) if model == "cce128" else None)
    cfg = make_config(preset, model=model, mask=mask, data=list(data), seed=seed, device=device,
                      ce64=str(ce64) if ce64 else None, fast=fast, full_known_weight=float(full_known_weight),
                      nsd_weight=float(nsd_weight), nsd_masks=nsd_masks if nsd_weight else None)
    return train(cfg, run, resume="auto", progress=progress, time_limit=time_limit)


#: The NSD loss's weights that ``reproduce --nsd-loss`` trains beside lambda = 0. ``benchmarks/nsd_loss_sweep.py``
#: (preset cpu, train-mini, seed 0, the 128 CE) measured lambda = 10: NSD 15x lower in both readings, the in-hole
#: PSNR 0.5 dB lower, the codes' spread between images not smaller; lambda = 1 (10x weaker) was not measured at that
#: preset (at smoke size it lowers NSD as much as 10). The models: the 128 CE and the cascade, random blocks.
NSD_LOSS_WEIGHTS = (0.0, 1.0, 10.0)
NSD_LOSS_MODELS = ("ce128", "cce128")


def ensure_nsd_runs(runs_dir: str | os.PathLike, lambdas: Sequence[float], preset: str, data: list[str],
                    seed: int = 0, device: str = "auto", nsd_masks: int = 2, progress: bool = False,
                    model: str = "ce128", fast: bool | None = None, cwd: str | os.PathLike = ".") -> dict[float, Path]:
    """Train (or resume, or reuse) ``model`` (the 128 CE or the cascade) with random blocks for each NSD weight;
    returns {lambda: checkpoint}.

    Every run has the same seed, data, preset and therefore the same batches and main masks. lambda = 0 is the
    recipe without the penalty, i.e. the reproduction's own ``<model>-random_blocks`` run (reused if it exists);
    lambda > 0 trains ``runs_dir/<model>-random_blocks-nsd<lambda>`` with ``nsd_masks`` extra masks per image
    (:func:`ensure_run`, which names and reuses every run of a reproduction; the cascade's 64 CE is the seed's own).
    ``cwd``: the folder the runs are asked for from (``runs_dir`` is relative to it, and so are the data and the
    64 CE's paths stored in a run's configuration: a reproduction trains each seed from that seed's notebook
    folder); ``data`` and the checkpoints returned are relative to the current folder.
    """
    if model not in NSD_LOSS_MODELS:
        raise ValueError(f"the NSD-loss runs are of {NSD_LOSS_MODELS}, got {model!r}")
    out, seen_from = {}, [d if d == "embedded" else os.path.relpath(d, cwd) for d in data]
    for lam in map(float, lambdas):
        if lam < 0:
            raise ValueError(f"NSD weights must be >= 0, got {lam}")
        with contextlib.chdir(cwd):
            ckpt = ensure_run(runs_dir, model, "random_blocks", preset, seen_from, seed=seed, device=device,
                              progress=progress, nsd_weight=lam, nsd_masks=nsd_masks, fast=fast)
        out[lam] = Path(cwd) / ckpt
    return out


def fair_run_name(mask: str, steps: int) -> str:
    """The run directory of a cascade of the fair scale ladder: its 128 stage trained ``steps`` steps on its 64 CE's
    snapshot at ``steps`` (:func:`ensure_fair_cascades`)."""
    return f"{run_name('cce128', mask)}-fair{steps}"


def ensure_fair_cascades(runs_dir: str | os.PathLike, steps: Sequence[int], preset: str, data: list[str],
                         seed: int = 0, device: str = "auto", fast: bool | None = None, progress: bool = False,
                         cwd: str | os.PathLike = ".", mask: str = "random_blocks") -> dict[int, Path]:
    """The cascades of the fair scale ladder (issue 29): for each ladder step ``st``, a cascade whose 64 CE has
    seen ``st`` steps (the seed's own 64 CE run, its snapshot at ``st``) and whose 128 stage is trained ``st`` steps
    on top of it, in ``runs_dir/<cce128-mask>-fair<st>`` (trained, resumed or reused). At the preset's full length
    this is the seed's own cascade (:func:`ensure_run`). Same seed, so the same batches and masks as that cascade's
    first ``st`` steps. Returns {step: run directory}, relative to the current folder; ``cwd`` as in
    :func:`ensure_nsd_runs` (the folder the runs are asked for from)."""
    full = make_config(preset).steps
    seen_from = [d if d == "embedded" else os.path.relpath(d, cwd) for d in data]
    out = {}
    with contextlib.chdir(cwd):
        final64 = ensure_run(runs_dir, "ce64", mask, preset, seen_from, seed, device, progress, fast=fast)
        if fast is None:  # as the seed's 64 CE was trained
            fast = bool(json.loads((final64.parent / "config.json").read_text())["config"].get("fast", False))
        for st in steps:
            if st == full:
                run = ensure_run(runs_dir, "cce128", mask, preset, seen_from, seed, device, progress, fast=fast).parent
            else:
                run = Path(runs_dir) / fair_run_name(mask, st)
                cfg = make_config(preset, model="cce128", mask=mask, data=list(seen_from), seed=seed, device=device,
                                  ce64=str(snapshot_at(final64.parent, st)), fast=fast, steps=st)
                train(cfg, run, resume="auto", progress=progress)
            out[st] = Path(cwd) / run
    return out
