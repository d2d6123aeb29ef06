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
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
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
    this is the seed's own cascade (:func:`ensure_run`); past it, the 64 CE is the seed's own continued that far
    (:func:`ensure_extended`). Same seed, so the same batches and masks as that cascade's
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
            else:  # past the preset's length: the 64 CE continued that far (ensure_extended)
                ce64 = snapshot_at(final64.parent, st) if st < full else \
                    ensure_extended(runs_dir, "ce64", mask, preset, seen_from, st, seed, device, fast, progress)
                run = Path(runs_dir) / fair_run_name(mask, st)
                cfg = make_config(preset, model="cce128", mask=mask, data=list(seen_from), seed=seed, device=device,
                                  ce64=str(ce64), fast=fast, steps=st)
                train(cfg, run, resume="auto", progress=progress)
            out[st] = Path(cwd) / run
    return out


@dataclass(frozen=True)
class GapCell:
    """A training-side factor of the NSD-gap page (issue 28): its label, the :class:`cce_core.config.TrainConfig`
    changes of its arm, the models it trains (a cascade with its own 64 CE, trained with the same changes) and
    how many of a study's seeds (the first ones) train it."""

    label: str
    overrides: dict
    models: tuple[str, ...]
    seeds: int


#: The training-side cells of the NSD-gap page: each arm trained for :func:`gap_cell_steps` steps (9,600 samples
#: at the study preset) and compared, seed by seed, with the seed's own model at the same step (the 128 CE's
#: snapshot; for the cascade, the fair ladder's cascade at that step, whose both stages saw as many samples).
#: Planned from the study's throughput on a 2-core CPU (a 128 CE at about 40 samples/s): about 105 minutes.
GAP_CELLS = {
    "d4000": GapCell("bottleneck D = 4000 (the paper's)", {"bottleneck": 4000}, ("ce128", "cce128"), 3),
    "batchmask": GapCell("one training mask per batch (Pathak's rule)", {"mask_law": "batch"}, ("ce128", "cce128"), 3),
    "width64": GapCell("width 64 and D = 4000 (the paper's architecture)", {"width": 64, "bottleneck": 4000},
                       ("ce128",), 2),
    "fillnoise": GapCell("hole filled with noise in training", {"fill": "noise"}, ("ce128",), 3),
}


#: ``{cell: {model: (arm checkpoint, reference checkpoint)}}`` (:func:`ensure_gap_cells`).
CellRuns = dict[str, dict[str, tuple[Path, Path]]]


def gap_cell_steps(preset: str) -> int:
    """The training length of the NSD-gap page's cells: half the preset's (9,600 samples at the study preset), a
    point of the scale ladder, where every seed's own models have a snapshot to be compared with."""
    return make_config(preset).steps // 2


def cells_of_seed(seeds: Sequence[int], seed: int) -> list[str]:
    """The NSD-gap cells (:data:`GAP_CELLS`) that ``seed`` trains in a study of ``seeds``: those whose
    :attr:`GapCell.seeds` reach its place among them."""
    return [c for c, cell in GAP_CELLS.items() if list(seeds).index(seed) < cell.seeds]


def gap_cell_name(model: str, mask: str, cell: str) -> str:
    """The run directory of ``model`` in a training-side cell of the NSD-gap page (:data:`GAP_CELLS`)."""
    return f"{run_name(model, mask)}-{cell}"


def ensure_gap_cells(runs_dir: str | os.PathLike, cells: Sequence[str], preset: str, data: list[str], seed: int = 0,
                     device: str = "auto", fast: bool | None = None, progress: bool = False,
                     cwd: str | os.PathLike = ".", mask: str = "random_blocks") -> CellRuns:
    """Train (or resume, or reuse) seed ``seed``'s training-side cells of the NSD-gap page (:data:`GAP_CELLS`) in
    ``runs_dir/<model>-<mask>-<cell>``; returns ``{cell: {model: (arm checkpoint, reference checkpoint)}}``.

    Every arm has :func:`gap_cell_steps` steps and the seed's batches and masks (a cell's change keeps the run's
    random streams: the same images, flips and mask draws). Its reference is the seed's own model after as many
    steps: the 128 CE's snapshot, or for the cascade the fair ladder's cascade (:func:`ensure_fair_cascades`,
    trained here if missing). ``cwd`` and the paths returned as in :func:`ensure_fair_cascades`."""
    unknown = [c for c in cells if c not in GAP_CELLS]
    if unknown:
        raise ValueError(f"unknown NSD-gap cells {unknown}; choose among {sorted(GAP_CELLS)}")
    st, seen_from, out = gap_cell_steps(preset), [d if d == "embedded" else os.path.relpath(d, cwd) for d in data], {}
    with contextlib.chdir(cwd):
        own = ensure_run(runs_dir, "ce128", mask, preset, seen_from, seed, device, progress, fast=fast).parent
        if fast is None:  # as the seed's own models were trained
            fast = bool(json.loads((own / "config.json").read_text())["config"].get("fast", False))

        def arm(model: str, cell: str, ce64: Path | None = None) -> Path:
            cfg = make_config(preset, model=model, mask=mask, data=list(seen_from), seed=seed, device=device,
                              fast=fast, steps=st, ce64=str(ce64) if ce64 else None, **GAP_CELLS[cell].overrides)
            cfg.snapshot_every = None  # the cell's end is all it is measured at
            return train(cfg, Path(runs_dir) / gap_cell_name(model, mask, cell), resume="auto", progress=progress)

        for cell in cells:
            out[cell] = {}
            for model in GAP_CELLS[cell].models:
                if model == "cce128":
                    ckpt = arm("cce128", cell, ce64=arm("ce64", cell))
                    fair = ensure_fair_cascades(runs_dir, [st], preset, seen_from, seed, device, fast)[st]
                    ref = fair / "checkpoint.pt"
                else:
                    ckpt = arm(model, cell)
                    ref = snapshot_at(ensure_run(runs_dir, model, mask, preset, seen_from, seed, device, progress,
                                                 fast=fast).parent, st)
                out[cell][model] = (Path(cwd) / ckpt, Path(cwd) / ref)
    return out


def extended_run_name(model: str, mask: str, steps: int) -> str:
    """The run directory of a seed's model continued to ``steps`` steps (:func:`ensure_extended`)."""
    return f"{run_name(model, mask)}-x{steps}"


def ensure_extended(runs_dir: str | os.PathLike, model: str, mask: str, preset: str, data: list[str], steps: int,
                    seed: int = 0, device: str = "auto", fast: bool | None = None, progress: bool = False,
                    cwd: str | os.PathLike = ".") -> Path:
    """The seed's own ``model`` (the 64 or 128 CE) continued past the preset's length to ``steps`` steps, in
    ``runs_dir/<model>-<mask>-x<steps>`` (issue 29: the ladder twice as far); returns its checkpoint.

    The seed's run is trained (or reused) first; its final checkpoint, configuration and log are copied to the new
    folder, which is then resumed to ``steps``: a resumption continues the run's random streams exactly, so this is
    the run a ``steps``-step training of the same seed would have made, and the seed's own run (the book's headline
    model) stays as it is. Snapshots continue every ``snapshot_every`` steps after the copy. ``cwd`` and the path
    returned as in :func:`ensure_fair_cascades`."""
    full = make_config(preset).steps
    if steps <= full:
        raise ValueError(f"an extension goes past the preset's {full} steps, got {steps}")
    if model not in ("ce64", "ce128"):
        raise ValueError(f"extensions are of the plain CEs (ce64, ce128), got {model!r}: the ladder's cascades "
                         "are trained per point (ensure_fair_cascades)")
    seen_from = [d if d == "embedded" else os.path.relpath(d, cwd) for d in data]
    with contextlib.chdir(cwd):
        own = ensure_run(runs_dir, model, mask, preset, seen_from, seed, device, progress, fast=fast).parent
        run = Path(runs_dir) / extended_run_name(model, mask, steps)
        if run.exists() and not (run / "checkpoint.pt").exists():
            raise FileExistsError(f"{run} exists without a checkpoint: not an extension this function made; "
                                  "remove it")
        if not run.exists():
            tmp = run.with_name(run.name + ".copying")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for name in ("checkpoint.pt", "config.json", "log.jsonl"):
                shutil.copy2(own / name, tmp / name)
            tmp.rename(run)  # whole or not at all
        stored = json.loads((run / "config.json").read_text())["config"]
        cfg = make_config(preset, model=model, mask=mask, data=list(seen_from), seed=seed, device=device,
                          fast=stored.get("fast", False), steps=steps)
        return Path(cwd) / train(cfg, run, resume="auto", progress=progress)
