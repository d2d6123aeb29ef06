"""The whole reproduction, in dependency order: train the six models, show them, measure NSD, draw the figures, build
the book.

Each step is one of the book's notebooks executed by papermill with its parameters: the committed
``notebooks/*.ipynb``, read with nbformat alone (no jupytext needed, so it runs on a bare GPU box; CI checks that
each is up to date with its ``.py``, the source of truth). The executed copies go to ``OUT/generated/`` together
with the figures, ``metrics.json`` and ``run.json``; the training runs (checkpoints, logs) to ``OUT/runs/``; the
HTML book built from them to ``OUT/book/_build/html``. Nothing is written inside the repository: the book's
committed results under ``book/generated/`` change only when someone copies a run there (``make adopt RUN=OUT``).

``time_budget`` bounds the whole call: each training stops at its share of the budget (what is left after a
reserve for the NSD and figures notebooks, split over the models still to train), and ``run.json`` records the
samples each model actually saw. ``pack`` writes ``OUT/generated`` as one ``.tar.gz``, also after a failure.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import atomic_write_text
from .config import PRESETS, TrainConfig, ladder_steps
from .data import describe_sources
from .plots import compact_image, is_photographic, jpeg_bytes, palette_png, same_figure
from .provenance import REPO, SOURCES, provenance, resolve_device, uncommitted
from .report import RunScale
from .runs import (
    GAP_CELLS,
    NSD_LOSS_MODELS,
    NSD_LOSS_WEIGHTS,
    cells_of_seed,
    ensure_extended,
    ensure_fair_cascades,
    ensure_gap_cells,
    ensure_nsd_runs,
    ensure_run,
    extended_run_name,
    fair_run_name,
    run_name,
)
from .stats import MIN_SAMPLES

NOTEBOOKS = REPO / "notebooks"
#: The notebooks a reproduction executes, in order (``nsd_eval`` once per seed); ``--notebooks`` picks among them.
NOTEBOOK_NAMES = ("training", "scale_ladder", "nsd_gap", "nsd_eval", "figures", "nsd_loss")
TRAIN_ORDER = [(mask, model) for mask in ("random_blocks", "central") for model in ("ce64", "ce128", "cce128")]
#: NSD sample sizes per preset: the paper's k = 250 images and n = 100 masks, fewer for the smoke run.
EVAL_SIZES = {"smoke": dict(k=8, n=10), "cpu": dict(k=250, n=100), "study": dict(k=250, n=100),
              "paper": dict(k=250, n=100)}
#: The scale ladder's masks per image (``--ladder``): every ladder point of every seed on the headline's k images
#: and the first LADDER_N of each seed's evaluation masks (all points on one set; the largest point also on all n, the
#: headline ladder's by the NSD page, the fair ladder's extra point by the ladder page itself: its n_final).
LADDER_N = 25
#: The NSD-gap page (``--gap``): masks per image of every reading, and training images its chance line's BatchNorm
#: is fitted on (its images: the headline's k).
GAP_N, GAP_CALIB = {"smoke": 6, "cpu": 25, "study": 25, "paper": 25}, {"smoke": 32, "cpu": 256, "study": 256,
                                                                        "paper": 256}
#: The scale ladder's points, a factor 2 apart (:func:`cce_core.config.ladder_steps`).
LADDER_POINTS = 4
#: Seconds kept back from ``time_budget`` for the NSD and figures notebooks (kernel starts included). smoke and
#: cpu: measured on a 2-core CPU (about 25 s and 300 s), with a margin; paper: an estimate for one H100/H200
#: (k x n = 25,000 codes per model, 10,000 more out of distribution), not yet measured.
EVAL_RESERVE_S = {"smoke": 40.0, "cpu": 420.0, "study": 420.0, "paper": 150.0}
#: First guess of each model's time outside its training loop (loading data, building the model, its training
#: notebook); after the first model the measured value is used.
MODEL_OVERHEAD_S = {"smoke": 10.0, "cpu": 20.0, "study": 20.0, "paper": 30.0}
#: No training gets less than this, even when the budget is spent (a model needs at least one step).
MIN_SHARE_S = 0.2
#: Each seed after the first adds its NSD notebook: this share of the evaluation reserve, for the budget.
EXTRA_SEED_EVAL = 0.6
#: Largest archive ``pack`` writes: what one file back from the GPU box may weigh.
PACK_LIMIT = 16 * 2**20
#: Written into OUT by the first call: the folder is this command's, so are its runs/, generated/ and book/.
MARKER = ".cce-reproduce"
OWNED = ("runs", "generated", "book", MARKER)


class Terminated(RuntimeError):
    """SIGTERM arrived (e.g. from ``timeout``): raised in the main thread so what exists is recorded and packed."""


def _terminated(signum, frame):
    raise Terminated("stopped by SIGTERM (a time limit outside this command?)")


class ReproductionFailed(RuntimeError):
    """A step of the reproduction failed after it started; what exists was recorded (and packed)."""

# --- the notebooks --------------------------------------------------------------------------------------------

def _cells(nb) -> list[tuple[str, str, list]]:
    return [(c.cell_type, c.source.strip(), sorted(c.get("metadata", {}).get("tags", []))) for c in nb.cells]


def stale_pairs() -> list[str]:
    """The notebooks whose committed ``.ipynb`` differs from its ``.py`` (cell types, sources or tags), by the
    ``.py`` converted with jupytext in memory; nothing is written. Empty when jupytext is not installed."""
    try:
        import jupytext
        import nbformat
    except ImportError:
        return []
    stale = []
    for py in sorted(NOTEBOOKS.glob("*.py")):
        ipynb = py.with_suffix(".ipynb")
        if not ipynb.exists() or _cells(jupytext.read(py)) != _cells(nbformat.read(ipynb, as_version=4)):
            stale.append(py.name)
    return stale


class NotebookFailed(RuntimeError):
    """A notebook raised; its executed copy, with the error, is kept."""


def execute_notebook(name: str, output: Path, parameters: dict, cwd: Path, images: bool = True) -> float:
    """Execute ``notebooks/<name>.ipynb`` (stored outputs dropped) with papermill into ``output``; returns the wall
    time in seconds. A failing cell raises :class:`NotebookFailed` with a one-line message. The executed copy is
    made portable and small (:func:`compact_notebook`; ``images=False``: without its images)."""
    import nbformat
    import papermill

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    output.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{name}.ipynb"
        nbformat.write(nb, src)
        try:
            papermill.execute_notebook(str(src), str(output), parameters=parameters, cwd=str(cwd),
                                       kernel_name="python3", progress_bar=False, log_output=False)
        except papermill.PapermillExecutionError as e:
            raise NotebookFailed(f"notebook {output.name} failed in cell {e.exec_count}: {e.ename}: "
                                 f"{str(e.evalue).splitlines()[0] if e.evalue else ''}") from None
        finally:
            if output.exists():
                portable_notebook(output, name)
                compact_notebook(output, images)
    return time.perf_counter() - t


def portable_notebook(path: Path, name: str) -> None:
    """Papermill records the input and output paths of this machine in the notebook's metadata: keep the names."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    meta.update(input_path=f"notebooks/{name}.ipynb", output_path=path.name)
    nbformat.write(nb, path)


#: The image types of notebook outputs that :func:`compact_notebook` re-encodes or drops.
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")


def _figure_files(folder: Path) -> dict[Path, Image.Image]:
    """The figures in ``folder/figures`` (.jpg, .png), each read into memory and its file closed."""
    files = {}
    for f in sorted((folder / "figures").glob("*")):
        if f.suffix in (".jpg", ".png"):
            with Image.open(f) as im:
                files[f] = im.copy()  # loaded: usable after the file is closed
    return files


def saved_in(source: str, files: list[Path]) -> list[Path]:
    """The files a cell's source may have saved: those whose name matches one of its string literals, whatever the
    extension (.png or .jpg: :func:`compact_figures` turns PNG photographs into JPEGs), an f-string's ``{...}``
    matching anything (``f"fig4_{mk}.png"`` matches ``fig4_central.jpg``)."""
    patterns = [re.compile(".+".join(map(re.escape, re.split(r"\{[^}]*\}", text))))
                for text in re.findall(r"[\"']([^\"'\n]+?)(?:\.png|\.jpg)?[\"']", source)]
    return [f for f in files if any(p.fullmatch(f.stem) for p in patterns)]


def _compact_output(output: dict, figures: dict[Path, Image.Image], folder: Path, images: bool) -> dict | None:
    """One output of :func:`compact_notebook` (``figures``: the files its cell saved): None to drop it."""
    data = output.get("data", {})
    key = next((k for k in IMAGE_MIMES if k in data), None)
    if key is None:
        return output
    if not images:
        for k in IMAGE_MIMES:
            data.pop(k, None)
        return output if set(data) - {"text/plain"} else None  # "<Figure size ...>" alone is dropped too
    if key == "image/svg+xml":
        return output
    raw = base64.b64decode(data[key])
    picture = Image.open(io.BytesIO(raw))
    found = [(d, f) for f, im in figures.items() if (d := same_figure(picture, im)) is not None]
    output.get("metadata", {}).pop(key, None)
    del data[key]
    if found:  # the book shows the file; the notebook points to it instead of a second copy
        file = min(found)[1]
        data["text/markdown"] = f"![{file.stem}]({file.relative_to(folder).as_posix()})"
    else:
        mime, new = compact_image(raw)
        data[mime] = base64.b64encode(new).decode()
    return output


def compact_notebook(path: Path, images: bool = True) -> int:
    """Keep an executed notebook small (the book's results are committed and travel to the GPU box): a figure its
    cell also saved in ``figures/`` beside the notebook (named in the cell, :func:`saved_in`, and the same picture,
    :func:`cce_core.plots.same_figure`) becomes a Markdown image pointing to that file (the book renders it, one
    copy); any other image is re-encoded by :func:`cce_core.plots.compact_image` (photographs as JPEG, plots
    as palette PNG). ``images=False`` (the other seeds' notebooks, not pages of the book): images dropped, text,
    tables and glued values kept. Papermill's injected parameters cell is tagged ``remove-cell``. Idempotent.
    Returns the bytes saved."""
    import nbformat

    before = path.stat().st_size
    nb = nbformat.read(path, as_version=4)
    files = _figure_files(path.parent)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:  # papermill's: paths of the machine that ran
            tags.append("remove-cell")  # it, not the page's story (run.json and the execution page keep them)
        if cell.cell_type == "code":
            figures = {f: files[f] for f in saved_in(cell.source, list(files))}
            outputs = [_compact_output(o, figures, path.parent, images) for o in cell.outputs]
            cell.outputs = [o for o in outputs if o is not None]
    nbformat.write(nb, path)
    return before - path.stat().st_size


def compact_figures(folder: Path) -> int:
    """The figure files in ``folder/figures`` made small as :func:`cce_core.plots.save_figure` writes them: a PNG of
    photographs becomes a ``.jpg`` of the same name, a plot a palette PNG. Returns the bytes saved."""
    saved = 0
    for f in sorted((folder / "figures").glob("*.png")):
        raw = f.read_bytes()
        with Image.open(f) as im:
            if im.mode == "P":  # a palette PNG already
                continue
            new, target = (jpeg_bytes(im), f.with_suffix(".jpg")) if is_photographic(im) else (palette_png(im), f)
        if target != f or len(new) < len(raw):
            target.write_bytes(new)
            if target != f:
                f.unlink()
            saved += len(raw) - len(new)
    return saved


def compact_generated(generated: str | Path) -> int:
    """A reproduction's ``generated/`` made small in place, nothing re-run (``python -m cce_core compact``, run by
    ``make adopt``): :func:`compact_figures`, then :func:`compact_notebook` for every notebook, without images in
    the other seeds' folders (``run.json``'s ``seed_folders``). Returns the bytes saved."""
    generated = Path(generated)
    if not (generated / "run.json").is_file():
        raise FileNotFoundError(f"{generated} has no run.json: not the generated/ folder of a reproduction")
    seeds = {generated / d for d in json.loads((generated / "run.json").read_text()).get("seed_folders", {}).values()}
    saved = 0
    for folder in [generated, *sorted(seeds)]:
        saved += compact_figures(folder)
    for nb in sorted(generated.rglob("*.ipynb")):
        saved += compact_notebook(nb, images=nb.parent not in seeds)
    return saved


# --- checks before anything starts ----------------------------------------------------------------------------

def check_out(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that is a file, or a folder holding files this command did not write (unless
    ``force``; even then its own folder names must be free). Nothing it did not write is ever deleted."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if not out.is_dir() or (out / MARKER).exists():
        return
    present = sorted(p.name for p in out.iterdir())
    if present and not force:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise ValueError(f"--out {out} already holds files this command did not write ({shown}): choose a new or "
                         "empty folder, or pass --force to write beside them (they are left alone)")
    clash = [n for n in OWNED if n in present]
    if clash:
        raise ValueError(f"--out {out} holds {', '.join(clash)} that this command did not write; it will not "
                         "replace them, even with --force: choose another folder")


def check_pack(pack: Path, out: Path) -> None:
    if not pack.name.endswith(".tar.gz"):
        raise ValueError(f"--pack {pack}: the archive's name must end in .tar.gz")
    if pack.is_dir():
        raise ValueError(f"--pack {pack} is a folder; give the archive's file name")
    if pack.resolve().is_relative_to((out / "generated").resolve()):
        raise ValueError(f"--pack {pack} lies inside the folder it packs ({out / 'generated'})")


def _check_sources(preset: str, data: list[str], eval_data: list[str], ood_data: list[str] | None) -> dict:
    """Each source described (name, image count, SHA-256): a missing or corrupt one fails here, before any
    kernel starts or anything is written."""
    k = EVAL_SIZES[preset]["k"]
    return {"data": describe_sources(data, embedded_count=TrainConfig.embedded_count),
            "eval_data": describe_sources(eval_data, embedded_count=k),
            "ood_data": describe_sources(ood_data, embedded_count=k) if ood_data else None}


class Budget:
    """Shares of ``seconds`` for the trainings, keeping ``reserve`` for the evaluation notebooks.

    Before each model: (time left - reserve - overhead x models left) / models left, where the overhead (the
    model's time outside its training loop) is measured on the models already done.
    """

    def __init__(self, seconds: float, reserve: float, overhead: float):
        self.seconds, self.reserve, self.overhead = seconds, reserve, overhead
        self.start = time.perf_counter()
        self.shares: dict[str, float] = {}

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def share(self, name: str, models_left: int) -> float:
        s = max(MIN_SHARE_S, (self.left() - self.reserve - self.overhead * models_left) / models_left)
        self.shares[name] = round(s, 2)
        return s

    def measured(self, wall: float, train_wall: float, share: float) -> None:
        self.overhead = max(0.0, wall - min(train_wall, share))


def plan_lines(preset: str, train_images: int, models: int, budget: Budget | None = None,
               extra: int = 0) -> list[str]:
    """What the run will reach, said before any training (issue 19, item 11): the samples each model is planned
    to see, the tier the run is at if every model finishes (:class:`cce_core.report.RunScale`: samples, D, width,
    distinct training images), and with a time ``budget`` the throughput each model needs to finish within its
    share, below which the trainings stop early and the run stays below that tier's samples. ``extra``: the models
    trained beside the reproduction's own (``--loss-variants``, ``--nsd-loss``; outside any time budget)."""
    p = PRESETS[preset]
    planned = p["steps"] * p["batch_size"]
    scale = RunScale(planned, p["bottleneck"], p["width"], train_images)
    also = f" (and {extra} more beside them)" if extra else ""
    lines = [f"plan: {models} models{also}, {planned:,} image samples each ({p['steps']:,} steps × batch "
             f"{p['batch_size']}), D = {p['bottleneck']}, width {p['width']}, "
             f"{train_images:,} distinct training images",
             f"if every model finishes: {scale.tier}" + (f" ({', '.join(scale.shortfalls)})" if scale.shortfalls
                                                           else "")]
    if budget is not None:
        share = max(MIN_SHARE_S, (budget.seconds - budget.reserve - budget.overhead * models) / models)
        lines.append(f"time budget {budget.seconds:,.0f} s: about {share:,.0f} s of training per model; finishing "
                     f"the plan needs {planned / share:,.0f} image samples/s per model or more (compare the first "
                     "model's images/s in its log); slower, each model stops at its share with fewer samples")
        if planned >= MIN_SAMPLES:
            lines.append(f"below {MIN_SAMPLES / share:,.0f} image samples/s a model sees fewer than {MIN_SAMPLES:,} "
                         "samples and the run is at reduced scale, not paper scale")
    return lines


def seed_models(plan: Plan, s: int) -> list[tuple[str, str]]:
    """The (mask, model) pairs trained for seed ``s``: :data:`TRAIN_ORDER`, the central-mask ones for the first seed
    only with ``central_once``."""
    return [(mask, model) for mask, model in TRAIN_ORDER
            if mask != "central" or not plan.central_once or s == plan.seed]


def n_trained(plan: Plan) -> int:
    """How many of the reproduction's own models are trained (all seeds)."""
    return sum(len(seed_models(plan, s)) for s in plan.seeds)


def _train_seconds(run: Path) -> float | None:
    """The seconds of a run's training loop, from its log (the last line's ``seconds``; None for a log without
    them); a run resumed after an interruption counts from its resumption."""
    log = run / "log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return json.loads(lines[-1]).get("seconds") if lines else None


def announce(plan: Plan) -> None:
    """Print what the run will reach (:func:`plan_lines`) before any training."""
    train_images = sum(int(src["images"]) for src in plan.sources["data"])
    extra = (3 if plan.loss_variants else 0) + len(NSD_LOSS_MODELS) * (len(NSD_LOSS_WEIGHTS) - 1) * len(
        plan.nsd_loss_seeds)
    for line in plan_lines(plan.preset, train_images, n_trained(plan), plan.budget, extra=extra):
        print(f"[reproduce] {line}", flush=True)


def _training_record(runs: Path) -> dict:
    """What each finished run saw, from its config.json: samples done and planned, where and when."""
    trained = {}
    names = [run_name(model, mask) for mask, model in TRAIN_ORDER]
    extra = sorted(p.parent.name for pattern in ("*-hole/config.json", "*-nsd*/config.json",  # --loss-variants,
                                                 "*-fair*/config.json",  # the NSD-loss chapter, the fair ladder,
                                                 "*-x[0-9]*/config.json",  # the ladder's continued CEs
                                                 *(f"*-{c}/config.json" for c in GAP_CELLS))  # the NSD-gap cells
                   for p in runs.glob(pattern))
    for name in names + extra:
        path = runs / name / "config.json"
        if not path.exists():
            continue
        meta = json.loads(path.read_text())
        cfg = meta["config"]
        planned = cfg.get("planned_steps") or cfg["steps"]
        trained[name] = {
            "samples": cfg["steps"] * cfg["batch_size"], "planned_samples": planned * cfg["batch_size"],
            "steps": cfg["steps"], "planned_steps": planned, "batch_size": cfg["batch_size"],
            "data": meta.get("data", {}).get("description"),
            "commit": meta["provenance"]["commit"], "date": meta["provenance"]["date"],
            "device": meta["provenance"]["device"], "train_seconds": _train_seconds(runs / name)}
    return trained


def write_pack(generated: Path, pack: Path) -> int:
    """``generated`` as one .tar.gz at ``pack`` (members under ``generated/``); returns its size in bytes.
    Over :data:`PACK_LIMIT`, ValueError and no archive."""
    pack.parent.mkdir(parents=True, exist_ok=True)
    tmp = pack.with_name(pack.name + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(generated, arcname="generated")
    size = tmp.stat().st_size
    if size > PACK_LIMIT:
        tmp.unlink()
        raise ValueError(f"--pack: the archive of {generated} would be {size / 2**20:.1f} MiB, over the "
                         f"{PACK_LIMIT / 2**20:.0f} MiB limit; nothing was written")
    tmp.replace(pack)
    return size


# --- the reproduction -----------------------------------------------------------------------------------------

def reproduce(preset: str = "smoke", data: list[str] | None = None, eval_data: list[str] | None = None,
              ood_data: list[str] | None = None, out: str | Path = "_build/smoke", device: str = "auto",
              seed: int = 0, book: bool = True, force: bool = False, time_budget: float | None = None,
              pack: str | Path | None = None, seeds: list[int] | None = None, fast: bool = False,
              nsd_loss: bool = False, loss_variants: bool = False, central_once: bool = False, ladder: bool = False,
              train_only: bool = False, nsd_loss_seeds: list[int] | None = None,
              notebooks: list[str] | None = None, allow_dirty: bool = False, fair_ladder: bool = False,
              gap: bool = False, gap_cells: bool = False, extend_ladder: bool = False) -> Path:
    """Run every notebook of the reproduction with papermill into ``out``; build the book there if ``book``.

    Returns the folder of executed notebooks (``out/generated``). Training runs already complete in
    ``out/runs`` are reused (``force`` retrains them); interrupted ones are resumed. ``time_budget`` (seconds)
    bounds the call (see the module docstring); ``pack`` names a ``.tar.gz`` of ``out/generated`` to write.
    ``fast``: :class:`cce_core.config.TrainConfig`'s fast path (same model and loss), recorded in each config.json.
    ``nsd_loss`` also trains, for every seed (or ``nsd_loss_seeds``), the 128 CE and the cascade with the NSD loss
    at :data:`cce_core.runs.NSD_LOSS_WEIGHTS` > 0 (not covered by ``time_budget``) for "Beyond the paper".
    ``loss_variants`` also trains the three random-block models with the paper's eq. (1) weighting (known-pixel
    weight 0, :class:`cce_core.config.TrainConfig` ``full_known_weight``) into ``out/runs/<model>-random_blocks-hole``
    (first seed only; not covered by ``time_budget``), and the NSD notebook compares them with the default ones.
    ``seeds`` (several): the six models are trained once per seed; the first seed's runs are ``out/runs`` itself
    (so seeds added to a finished single-seed reproduction reuse its runs), each other seed's ``out/runs/seed<k>``.
    The first seed's notebooks are the book's (``out/generated``), each other seed gets its NSD notebooks (with its
    ``metrics.json``) in ``out/generated/seed<k>``; the other seeds' NSD notebooks run first,
    the first seed's last, given their ``metrics.json`` (``other_metrics``) to compare the seeds (see
    :func:`cce_core.report.seeds_report`); ``run.json`` lists the seeds and each one's training.
    ``central_once``: central-mask models for the first seed only. ``ladder`` (2+ seeds, a preset with
    :func:`cce_core.config.ladder_steps`): ``notebooks/scale_ladder`` adds ``scale_ladder`` to ``metrics.json``;
    ``fair_ladder`` (implies ``ladder``) also trains, per seed and ladder point, a cascade whose both stages have seen
    that point's samples (:func:`cce_core.runs.ensure_fair_cascades`) and adds the fair ladder beside it;
    ``extend_ladder`` (with ``fair_ladder``) gives the fair ladder one more point at twice the preset's length: each
    seed's 128 CE and 64 CE continued there in runs of their own (:func:`cce_core.runs.ensure_extended`; the
    headline's runs stay as they are) and a cascade trained that long on the latter (not covered by ``time_budget``).
    ``gap`` (2+ seeds): ``notebooks/nsd_gap`` reads every seed's CE and cascade in each evaluation-side way
    (:mod:`cce_core.gap`) into ``gap.json``, the page "Why our NSD is far below the paper's"; ``gap_cells`` (with
    ``gap``) also trains that page's training-side cells (:data:`cce_core.runs.GAP_CELLS`, each for its first
    seeds; not covered by ``time_budget``) and the page compares each with the seed's own models.
    ``train_only``: stop after the trainings (``run.json`` status "trained"; executed notebooks are kept); the same
    call without it reuses them. ``notebooks`` (of :data:`NOTEBOOK_NAMES`): execute only these, keep the others.
    All inputs are checked first (one-line ValueError / FileNotFoundError; uncommitted code unless ``allow_dirty``);
    a failing step afterwards raises :class:`ReproductionFailed` once what exists is in ``run.json`` and packed.
    The stages: :func:`check_inputs`, :func:`prepare_out`, :func:`train_models`, :func:`run_evaluation`, the book.
    Long because it documents every option of a reproduction in one place (the command line's help points here).
    """
    plan = check_inputs(preset, data, eval_data, ood_data, out, device, seed, force, time_budget, pack, seeds, fast,
                        nsd_loss, loss_variants, central_once, ladder or fair_ladder, train_only, nsd_loss_seeds,
                        notebooks, allow_dirty, fair_ladder, gap, gap_cells, extend_ladder)
    prepare_out(plan)
    announce(plan)
    recorder = Recorder(plan)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None  # `timeout`: record first
    try:
        train_models(plan, recorder)  # every training first: the evaluation's reserve is spent last
        if not train_only:
            run_evaluation(plan, recorder)
    except Exception as e:  # noqa: BLE001 - recorded, packed, then raised as one line
        recorder.error = e
        (plan.generated / "error.txt").write_text(traceback.format_exc())
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    rec = recorder.record("failed" if recorder.error is not None else "trained" if train_only else "complete")
    if recorder.error is not None:
        raise ReproductionFailed(f"{rec['error']} (what exists is in {plan.generated}, the traceback in error.txt"
                                 + (f"; packed in {plan.pack})" if plan.pack else ")"))
    print(f"[reproduce] {'trained the models' if train_only else 'executed notebooks'}; run.json in {plan.generated} "
          f"({rec['total_wall_seconds']:.0f} s)", flush=True)
    if book and not train_only:
        html = build_book(plan.generated, plan.out / "book")
        print(f"[reproduce] book: {html / 'index.html'}", flush=True)
    return plan.generated


@dataclass
class Plan:
    """A reproduction's inputs, checked and resolved (absolute paths), and the folders it writes."""

    preset: str
    seeds: list[int]
    data: list[str]
    eval_data: list[str]
    ood_data: list[str] | None
    out: Path
    device: str
    force: bool
    pack: Path | None
    fast: bool
    nsd_loss: bool
    loss_variants: bool
    sources: dict
    budget: Budget | None
    central_once: bool = False
    ladder: bool = False
    train_only: bool = False
    nsd_loss_seeds: list[int] = field(default_factory=list)  # the seeds of the NSD-loss chapter (empty: no nsd_loss)
    notebooks: list[str] | None = None  # execute only these (None: all); the others stay as an earlier call left them
    fair_ladder: bool = False  # the ladder also with a cascade per point whose both stages saw the point's samples
    gap: bool = False  # the NSD-gap page: every seed's models read in each evaluation-side way
    gap_cells: bool = False  # and its training-side cells (cce_core.runs.GAP_CELLS) trained and read
    extend_ladder: bool = False  # the fair ladder one point further: the CEs continued to twice the preset's length
    earlier: list[dict] = field(default_factory=list)  # the calls before this one in the same ``out`` (run.json)

    @property
    def seed(self) -> int:
        """The first seed: its runs and notebooks are the book's."""
        return self.seeds[0]

    @property
    def extended_steps(self) -> int:
        """The step of the fair ladder's extra point (``extend_ladder``): twice the preset's length."""
        return 2 * PRESETS[self.preset]["steps"]

    @property
    def multi(self) -> bool:
        return len(self.seeds) > 1

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def generated(self) -> Path:
        return self.out / "generated"

    def executes(self, name: str) -> bool:
        """Whether this call executes notebook ``name`` (every one unless ``notebooks`` names some)."""
        return self.notebooks is None or name in self.notebooks

    @property
    def keeps_notebooks(self) -> bool:
        """A call that executes fewer than all notebooks keeps those an earlier call executed."""
        return self.train_only or self.notebooks is not None

    def folder(self, s: int) -> Path:
        """Where seed ``s``'s notebooks run and are written: ``generated``, ``generated/seed<s>`` after the first."""
        return self.generated if s == self.seed else self.generated / f"seed{s}"

    def run_dir(self, s: int) -> Path:
        """Seed ``s``'s training runs: ``runs`` for the first, ``runs/seed<s>`` for the others."""
        return self.runs if s == self.seed else self.runs / f"seed{s}"

    def tag(self, s: int) -> str:
        return "" if s == self.seed else f"seed{s}/"

    def seed_places(self, seeds: list[int], nb_dir: Path) -> dict[str, list]:
        """The parameters of a notebook in ``nb_dir`` that reads several seeds' runs: ``seeds``, the folder each was
        trained from (``seed_folders``, relative to ``nb_dir``) and its runs folder (``runs_dirs``, relative to
        that seed folder)."""
        return dict(seeds=list(seeds), seed_folders=[os.path.relpath(self.folder(o), nb_dir) for o in seeds],
                    runs_dirs=[self.common(o)["runs_dir"] for o in seeds])

    def rel(self, paths: list[str] | None, folder: Path) -> list[str] | None:
        """Data paths relative to a notebook's folder: no machine path in the notebooks."""
        return [p if p == "embedded" else os.path.relpath(p, folder) for p in paths] if paths else None

    def common(self, s: int) -> dict:
        """The parameters every notebook of seed ``s`` gets."""
        return dict(preset=self.preset, seed=s, device=self.device,
                    runs_dir=os.path.relpath(self.run_dir(s), self.folder(s)))

    def data_params(self, s: int) -> dict:
        """The training and evaluation data, relative to seed ``s``'s notebooks."""
        return dict(data=self.rel(self.data, self.folder(s)), eval_data=self.rel(self.eval_data, self.folder(s)))


def _resolved(paths: list[str]) -> list[str]:
    return [str(Path(d).resolve()) if d != "embedded" else d for d in paths]


def check_inputs(preset: str, data: list[str] | None, eval_data: list[str] | None, ood_data: list[str] | None,
                 out: str | Path, device: str, seed: int, force: bool, time_budget: float | None,
                 pack: str | Path | None, seeds: list[int] | None, fast: bool, nsd_loss: bool,
                 loss_variants: bool, central_once: bool = False, ladder: bool = False,
                 train_only: bool = False, nsd_loss_seeds: list[int] | None = None,
                 notebooks: list[str] | None = None, allow_dirty: bool = False, fair_ladder: bool = False,
                 gap: bool = False, gap_cells: bool = False, extend_ladder: bool = False) -> Plan:
    """Every input of :func:`reproduce` checked (one-line ValueError / FileNotFoundError) before anything is
    written: preset, seeds, device, data sources, ``out`` and ``pack``, the budget, papermill, the notebooks,
    and last the code (:func:`_check_code`)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    seeds = _check_seeds(list(seeds) if seeds else [seed], nsd_loss_seeds)
    resolve_device(device)
    data = _resolved(data or ["embedded"])
    if eval_data is None:
        if data != ["embedded"]:
            raise ValueError("--eval-data is required when training on your own data (NSD needs held-out images)")
        eval_data = ["embedded"]
    eval_data, ood_data = _resolved(eval_data), _resolved(ood_data) if ood_data else None
    out = Path(out).resolve()
    check_out(out, force)
    pack = Path(pack).resolve() if pack else None
    if pack:
        check_pack(pack, out)
    if nsd_loss_seeds:  # a subset of the seeds for the NSD-loss chapter (implies nsd_loss)
        nsd_loss = True
        if len(set(nsd_loss_seeds)) != len(nsd_loss_seeds) or not set(nsd_loss_seeds) <= set(seeds):
            raise ValueError(f"--nsd-loss-seeds {list(nsd_loss_seeds)} must be distinct seeds among --seeds {seeds}")
    if notebooks is not None:
        _check_notebooks(notebooks, out, train_only, force, nsd_loss, ladder, gap)  # nsd_loss set above
    if nsd_loss and time_budget is not None:
        raise ValueError("--nsd-loss trains four more models per seed that --time-budget does not budget yet: use "
                         "one or the other")
    if extend_ladder and not fair_ladder:
        raise ValueError("--extend-ladder continues the fair ladder: give --ladder --fair-ladder with it")
    if gap_cells and not gap:
        raise ValueError("--gap-cells trains the training-side cells of the NSD-gap page: give --gap with it")
    if gap_cells and time_budget is not None:
        raise ValueError("--gap-cells trains models that --time-budget does not budget: use one or the other")
    if loss_variants and time_budget is not None:
        raise ValueError("--loss-variants trains three more models that --time-budget does not budget yet: use one or "
                         "the other")
    _check_seed_studies(preset, seeds, time_budget, ladder, fair_ladder, gap)
    reserve = EVAL_RESERVE_S[preset] * (1 + EXTRA_SEED_EVAL * (len(seeds) - 1))
    if time_budget is not None and time_budget <= reserve:
        raise ValueError(f"--time-budget {time_budget:g} s leaves nothing for training: the NSD and figures "
                         f"notebooks of preset {preset!r} alone are estimated at {reserve:g} s")
    _check_papermill()
    stale = stale_pairs()
    if stale:
        raise ValueError(f"notebooks/*.ipynb out of date with their .py ({', '.join(stale)}): run make sync")
    sources = _check_sources(preset, data, eval_data, ood_data)
    _check_code(allow_dirty)
    budget = Budget(time_budget, reserve, MODEL_OVERHEAD_S[preset]) if time_budget else None
    return Plan(preset, seeds, data, eval_data, ood_data, out, device, force, pack, fast, nsd_loss, loss_variants,
                sources, budget, central_once, ladder, train_only,
                [s for s in seeds if s in (nsd_loss_seeds or seeds)] if nsd_loss else [],
                list(dict.fromkeys(notebooks)) if notebooks is not None else None, fair_ladder=fair_ladder, gap=gap,
                gap_cells=gap_cells, extend_ladder=extend_ladder)


def _check_seed_studies(preset: str, seeds: list[int], time_budget: float | None, ladder: bool, fair_ladder: bool,
                        gap: bool) -> None:
    """The options that compare seeds (``--ladder``, ``--fair-ladder``, ``--gap``): 2 or more seeds, full-length
    trainings with snapshots a factor 2 apart for a ladder."""
    if gap and len(seeds) < 2:
        raise ValueError("--gap gives each factor a seed-level interval: give --seeds with 2 or more seeds")
    if fair_ladder and not ladder:
        raise ValueError("the fair ladder is a scale ladder: give --ladder with --fair-ladder")
    if ladder:
        if len(seeds) < 2:
            raise ValueError("--ladder compares seeds at each training length: give --seeds with 2 or more seeds")
        if time_budget is not None:
            raise ValueError("--ladder needs every training at its full length (its snapshots a factor 2 apart), "
                             "which --time-budget cuts: use one or the other")
        ladder_steps(PRESETS[preset]["steps"], PRESETS[preset].get("snapshot_every"), LADDER_POINTS)  # or ValueError


def _check_notebooks(notebooks: list[str], out: Path, train_only: bool, force: bool, nsd_loss: bool,
                     ladder: bool, gap: bool = False) -> None:
    """``--notebooks``: known names, an earlier call's ``run.json`` in ``out``, and the options their models need."""
    unknown = sorted(set(notebooks) - set(NOTEBOOK_NAMES))
    if unknown or not notebooks:
        raise ValueError(f"--notebooks {' '.join(notebooks)}: choose among {', '.join(NOTEBOOK_NAMES)}")
    if train_only:
        raise ValueError("--notebooks executes notebooks and --train-only none: use one or the other")
    if force:
        raise ValueError("--notebooks keeps an earlier call's notebooks and --force retrains its runs: use one "
                         "or the other")
    if not (out / "generated" / "run.json").is_file():
        raise FileNotFoundError(f"--notebooks re-executes notebooks of an earlier call, but {out} has no "
                                "generated/run.json: run the whole reproduction there first")
    if "nsd_loss" in notebooks and not nsd_loss:
        raise ValueError("--notebooks nsd_loss needs --nsd-loss or --nsd-loss-seeds (its models)")
    if "scale_ladder" in notebooks and not ladder:
        raise ValueError("--notebooks scale_ladder needs --ladder")
    if "nsd_gap" in notebooks and not gap:
        raise ValueError("--notebooks nsd_gap needs --gap")


def _check_seeds(seeds: list[int], nsd_loss_seeds: list[int] | None) -> list[int]:
    """The seeds, checked: distinct and not negative (the random streams derive from them)."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds repeats a seed: {seeds}")
    negative = [s for s in [*seeds, *(nsd_loss_seeds or [])] if s < 0]
    if negative:
        raise ValueError(f"seeds must be 0 or more, got {negative[0]}")
    return seeds


def _check_code(allow_dirty: bool) -> None:
    """The library and notebooks are the commit's (:func:`cce_core.provenance.uncommitted`), unless
    ``allow_dirty``; a tree outside a git checkout (the GPU box's, its commit in ``.carry/COMMIT``) passes."""
    changes = uncommitted()
    if changes and not allow_dirty:
        shown = ", ".join(c[3:] for c in changes[:3]) + (", ..." if len(changes) > 3 else "")
        raise ValueError(f"{' and '.join(f'{s}/' for s in SOURCES)} differ from the commit ({len(changes)} "
                         f"uncommitted: {shown}): commit them, or pass --allow-dirty (the provenance then says "
                         "-dirty)")


def _check_papermill() -> None:
    """Papermill and nbformat are importable (imported here only to check: the notebooks' functions import them
    where they run, so that the library works without them)."""
    try:
        import nbformat  # noqa: F401
        import papermill  # noqa: F401
    except ImportError as e:
        raise ValueError(f"reproduce executes the notebooks with papermill, which is not installed ({e}); "
                         "pip install papermill ipykernel (or the wheels in .carry/wheels)") from None


def prepare_out(plan: Plan) -> None:
    """The inputs are valid: from here on, only this command's folders inside ``out`` are written (and deleted)."""
    plan.out.mkdir(parents=True, exist_ok=True)
    (plan.out / MARKER).write_text("written by python -m cce_core reproduce: runs/, generated/ and book/ are its own\n")
    if plan.force:
        shutil.rmtree(plan.runs, ignore_errors=True)
    elif (plan.generated / "run.json").is_file():  # an earlier call (e.g. --train-only): its record is kept
        before = json.loads((plan.generated / "run.json").read_text())
        plan.earlier = [*before.get("earlier_calls", []),
                        {key: before.get(key) for key in ("status", "total_wall_seconds", "wall_seconds")}
                        | {"commit": before.get("provenance", {}).get("commit"),
                           "date": before.get("provenance", {}).get("date")}]
    if not plan.keeps_notebooks:  # a full call replaces every executed notebook
        shutil.rmtree(plan.generated, ignore_errors=True)
    (plan.generated / "figures").mkdir(parents=True, exist_ok=True)
    if plan.pack:
        plan.pack.unlink(missing_ok=True)  # an archive from an earlier call must not pass for this one's


class Recorder:
    """``run.json`` as things stand (and with ``pack`` the archive, so a run killed later still left one): the
    inputs, provenance, what each training saw, the wall time of each step, the status and any error."""

    def __init__(self, plan: Plan) -> None:
        self.plan, self.started = plan, time.perf_counter()
        self.timings: dict[str, float] = {}
        self.stages: dict[str, dict[str, float]] = {}  # a training step's parts: its training, its notebook
        self.error: BaseException | None = None

    def record(self, status: str) -> dict:
        p = self.plan
        training = ({f"seed{s}": _training_record(p.run_dir(s)) for s in p.seeds} if p.multi
                    else _training_record(p.runs))
        rec = {"preset": p.preset, "fast": p.fast, "seed": p.seed, "seeds": p.seeds, "loss_variants": p.loss_variants,
               "eval_sizes": EVAL_SIZES[p.preset], **p.sources, "central_once": p.central_once,
               **({"ladder": {"steps": ladder_steps(PRESETS[p.preset]["steps"], PRESETS[p.preset]["snapshot_every"],
                                                    LADDER_POINTS),
                              "k": EVAL_SIZES[p.preset]["k"], "n": LADDER_N, "fair": p.fair_ladder}} if p.ladder
                  else {}),
               "provenance": provenance(resolve_device(p.device)), "training": training,
               "wall_seconds": {k: round(v, 1) for k, v in self.timings.items()},
               "stage_seconds": {k: {part: round(v, 1) for part, v in parts.items()}
                                 for k, parts in self.stages.items()},
               "total_wall_seconds": round(time.perf_counter() - self.started, 1), "status": status,
               "earlier_calls": p.earlier}
        if p.multi:
            rec["seed_folders"] = {f"seed{s}": f"seed{s}/" for s in p.seeds[1:]}  # the first seed's are here
            rec["seed_runs"] = {f"seed{s}": os.path.relpath(p.run_dir(s), p.out) for s in p.seeds}
        if p.budget:
            rec["time_budget"] = {"seconds": p.budget.seconds, "eval_reserve_seconds": p.budget.reserve,
                                  "training_shares_seconds": p.budget.shares}
        if self.error is not None:
            rec["error"] = f"{type(self.error).__name__}: {self.error}"
        atomic_write_text(p.generated / "run.json", json.dumps(rec, indent=2))
        if p.pack:
            size = write_pack(p.generated, p.pack)
            print(f"[reproduce] packed {p.generated} in {p.pack} ({size / 2**20:.2f} MiB)", flush=True)
        return rec

    def packed(self, status: str) -> None:
        """With ``pack``: record (and pack) at this point of the run."""
        if self.plan.pack:
            self.record(status)


def train_models(plan: Plan, recorder: Recorder) -> None:
    """Every seed's models (:func:`seed_models`, in :data:`TRAIN_ORDER`; each with its share of the budget), trained
    from the library (the "Training" notebook reads them afterwards, :func:`run_evaluation`); then, with
    ``loss_variants``, the first seed's random-block models under eq. (1)'s weighting."""
    n_models, done, budget = n_trained(plan), 0, plan.budget
    for s in plan.seeds:
        nb_dir, tag, common, dp = plan.folder(s), plan.tag(s), plan.common(s), plan.data_params(s)
        nb_dir.mkdir(parents=True, exist_ok=True)
        for mask, model in seed_models(plan, s):
            name = run_name(model, mask)
            share = budget.share(tag + name, n_models - done) if budget else None
            print(f"[reproduce] training {tag}{name} ({plan.preset}"
                  + (f", at most {share:.1f} s)" if share is not None else ")"), flush=True)
            t = time.perf_counter()
            with contextlib.chdir(nb_dir):  # the very configuration the notebook's ensure_run will ask for
                ensure_run(common["runs_dir"], model, mask, plan.preset, dp["data"], seed=s, device=plan.device,
                           time_limit=share, fast=plan.fast)
            train_wall = time.perf_counter() - t
            _free_device_memory()
            recorder.timings[f"{tag}train-{name}"] = train_wall
            recorder.stages[f"{tag}train-{name}"] = {"training": train_wall}  # no notebook: the Training page
            done += 1
            if budget:
                budget.measured(recorder.timings[f"{tag}train-{name}"], train_wall, share)
            recorder.packed(f"running: {tag}{name} done")
        if plan.fair_ladder:  # a cascade per ladder point with both stages trained that long (issue 29)
            _train_fair_cascades(plan, recorder, s)
        if plan.gap_cells:  # the NSD-gap page's training-side factors (issue 28)
            _train_gap_cells(plan, recorder, s)
        if plan.loss_variants and s == plan.seed:  # eq. (1)'s weighting, beside the book's random-block models
            for model in ("ce64", "ce128", "cce128"):
                name = run_name(model, "random_blocks", 0.0)
                _timed_training(recorder, nb_dir, f"train-{name}", f"{name} ({plan.preset}; eq. (1): missing pixels "
                                "only)", ensure_run, common["runs_dir"], model, "random_blocks", plan.preset,
                                dp["data"], seed=s, device=plan.device, fast=plan.fast, full_known_weight=0.0)
            recorder.packed("running: loss variants done")
        if s in plan.nsd_loss_seeds:  # beyond the paper: the 128 CE and the cascade with the NSD loss
            for model in NSD_LOSS_MODELS:
                for lam in NSD_LOSS_WEIGHTS[1:]:
                    name = run_name(model, "random_blocks", nsd_weight=lam)
                    _timed_training(recorder, nb_dir, f"{tag}train-{name}",
                                    f"{tag}{name} ({plan.preset}; NSD loss λ = {lam:g})", ensure_nsd_runs,
                                    common["runs_dir"], [lam], plan.preset, dp["data"], seed=s, device=plan.device,
                                    model=model, fast=plan.fast)
            recorder.packed(f"running: {tag}NSD-loss runs done")


def _timed_training(recorder: Recorder, nb_dir: Path, key: str, what: str, ensure: Callable, *args, **kwargs) -> None:
    """One training beside a seed's own models: announced (``what``), ``ensure(*args, **kwargs)`` run from the seed's
    notebook folder (so its configuration is the one its notebook will ask for), its wall time recorded under ``key``
    as a training stage (it has no notebook of its own), then the device's cached memory freed."""
    print(f"[reproduce] training {what}", flush=True)
    t = time.perf_counter()
    with contextlib.chdir(nb_dir):
        ensure(*args, **kwargs)
    recorder.timings[key] = time.perf_counter() - t
    recorder.stages[key] = {"training": recorder.timings[key]}
    _free_device_memory()


def _train_fair_cascades(plan: Plan, recorder: Recorder, s: int) -> None:
    """Seed ``s``'s cascades of the fair ladder (:func:`cce_core.runs.ensure_fair_cascades`), one per ladder point
    before the last (the last is the seed's own cascade), each timed as its own training step."""
    nb_dir, tag, dp = plan.folder(s), plan.tag(s), plan.data_params(s)
    steps = ladder_steps(PRESETS[plan.preset]["steps"], PRESETS[plan.preset]["snapshot_every"], LADDER_POINTS)
    runs_dir = plan.common(s)["runs_dir"]
    if plan.extend_ladder:  # one point further: the seed's 128 CE continued there, and (below) its 64 CE and cascade
        far = plan.extended_steps
        _timed_training(recorder, nb_dir, f"{tag}train-ce128-x{far}",
                        f"{tag}{extended_run_name('ce128', 'random_blocks', far)} ({plan.preset}; the seed's 128 CE "
                        f"continued to step {far})", ensure_extended, runs_dir, "ce128", "random_blocks", plan.preset,
                        dp["data"], far, seed=s, device=plan.device, fast=plan.fast)
    for st in steps[:-1] + ([plan.extended_steps] if plan.extend_ladder else []):  # the last: the seed's own
        name = fair_run_name("random_blocks", st)
        _timed_training(recorder, nb_dir, f"{tag}train-{name}", f"{tag}{name} ({plan.preset}; fair ladder: 64 CE at "
                        f"step {st})", ensure_fair_cascades, runs_dir, [st], plan.preset, dp["data"], seed=s,
                        device=plan.device, fast=plan.fast)
    recorder.packed(f"running: {tag}fair-ladder cascades done")


def _train_gap_cells(plan: Plan, recorder: Recorder, s: int) -> None:
    """Seed ``s``'s training-side cells of the NSD-gap page (:func:`cce_core.runs.ensure_gap_cells`): each cell for
    its first :attr:`cce_core.runs.GapCell.seeds` seeds, each timed as its own training step."""
    nb_dir, tag, dp = plan.folder(s), plan.tag(s), plan.data_params(s)
    for cell in cells_of_seed(plan.seeds, s):
        _timed_training(recorder, nb_dir, f"{tag}train-gap-{cell}", f"{tag}NSD-gap cell {cell} ({plan.preset}; "
                        f"{GAP_CELLS[cell].label})", ensure_gap_cells, plan.common(s)["runs_dir"], [cell], plan.preset,
                        dp["data"], seed=s, device=plan.device, fast=plan.fast)
    recorder.packed(f"running: {tag}NSD-gap cells done")


def _run_gap(plan: Plan, recorder: Recorder, nb_dir: Path, params: dict) -> None:
    """The NSD-gap page (``notebooks/nsd_gap``): every seed's CE and cascade in each evaluation-side reading."""
    print("[reproduce] why our NSD is far below the paper's: every reading of every seed's models", flush=True)
    recorder.timings["nsd_gap"] = execute_notebook(
        "nsd_gap", nb_dir / "nsd_gap.ipynb",
        dict(params, fig_dir="figures", k=EVAL_SIZES[plan.preset]["k"], n=GAP_N[plan.preset],
             calib_images=GAP_CALIB[plan.preset], gap_path="gap.json", cells=list(GAP_CELLS) if plan.gap_cells else [],
             **plan.seed_places(plan.seeds, nb_dir)),
        nb_dir)
    recorder.packed("running: NSD-gap page done")


def run_evaluation(plan: Plan, recorder: Recorder) -> None:
    """The first seed's "Training" page (its six runs in one table, loss curves and inpaintings), each seed's NSD
    notebook (the other seeds' first, the first seed's last: it compares the seeds; with ``ladder`` the scale ladder
    just before it), then the first seed's figures and, with ``nsd_loss``, the NSD-loss chapter; with
    ``plan.notebooks`` only those named."""
    sizes, timings = EVAL_SIZES[plan.preset], recorder.timings
    if plan.executes("training"):
        print("[reproduce] the training page", flush=True)
        timings["training"] = execute_notebook("training", plan.generated / "training.ipynb",
                                               dict(plan.common(plan.seed), **plan.data_params(plan.seed)),
                                               plan.generated)
        recorder.packed("running: training page done")
    for s in plan.seeds[1:] + plan.seeds[:1]:
        nb_dir, tag, common, dp = plan.folder(s), plan.tag(s), plan.common(s), plan.data_params(s)
        extra = (dict(other_metrics=[f"seed{o}/metrics.json" for o in plan.seeds[1:]],
                      loss_variants=plan.loss_variants) if s == plan.seed else {})
        extra["central"] = ("central", "ce64") in seed_models(plan, s)
        if s == plan.seed and plan.gap:  # first: the ladder and the NSD page draw its chance line
            if plan.executes("nsd_gap"):
                _run_gap(plan, recorder, nb_dir, dict(common, **dp))
            extra["gap_path"] = "gap.json"
        if s == plan.seed and plan.ladder:  # before the book's NSD notebook, which adds it to metrics.json
            if plan.executes("scale_ladder"):
                print("[reproduce] the scale ladder", flush=True)
                timings["scale_ladder"] = execute_notebook(
                    "scale_ladder", nb_dir / "scale_ladder.ipynb",
                    dict(common, **dp, fig_dir="figures", k=sizes["k"], n=LADDER_N, n_final=sizes["n"],
                         points=LADDER_POINTS,
                         ladder_path="ladder.json", fair=plan.fair_ladder, gap_path=extra.get("gap_path"),
                         extend=plan.extended_steps if plan.extend_ladder else None,
                         **plan.seed_places(plan.seeds, nb_dir)),
                    nb_dir)
                recorder.packed("running: scale ladder done")
            extra["ladder_path"] = "ladder.json"
        if plan.executes("nsd_eval"):
            print(f"[reproduce] {tag}NSD on k={sizes['k']} images x n={sizes['n']} masks", flush=True)
            timings[f"{tag}nsd_eval"] = execute_notebook(
                "nsd_eval", nb_dir / "nsd_eval.ipynb",
                dict(common, **dp, ood_data=plan.rel(plan.ood_data, nb_dir), fig_dir="figures",
                     metrics_path="metrics.json", **sizes, **extra), nb_dir, images=s == plan.seed)
            recorder.packed(f"running: {tag}nsd_eval done")
        if s != plan.seed:
            continue
        if plan.executes("figures"):
            print("[reproduce] figures", flush=True)  # the book's figures: the first seed's models
            timings["figures"] = execute_notebook("figures", nb_dir / "figures.ipynb",
                                                  dict(common, **dp, fig_dir="figures", k=sizes["k"]), nb_dir)
            if plan.multi:
                recorder.packed("running: figures done")
        if plan.nsd_loss and plan.executes("nsd_loss"):
            print("[reproduce] beyond the paper: NSD as a training loss", flush=True)
            timings["nsd_loss"] = execute_notebook("nsd_loss", nb_dir / "nsd_loss.ipynb",
                                                   dict(common, **dp, fig_dir="figures", **sizes,
                                                        **plan.seed_places(plan.nsd_loss_seeds, nb_dir),
                                                        lambdas=list(NSD_LOSS_WEIGHTS)), nb_dir)


def _free_device_memory() -> None:
    """Hand the training's cached GPU memory back before a notebook's kernel needs it."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


#: Parts of ``_toc.yml`` that exist only when the run made their notebook (``reproduce --nsd-loss``, ``--ladder``).
OPTIONAL_PARTS = {"Beyond the paper": "nsd_loss.ipynb", "The CPU study": "scale_ladder.ipynb",
                  "The NSD gap": "nsd_gap.ipynb"}


def toc_for(generated: str | Path) -> str:
    """The repository's ``_toc.yml`` without the optional parts whose notebook ``generated`` lacks."""
    import yaml
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    toc["parts"] = [part for part in toc["parts"] if part.get("caption") not in OPTIONAL_PARTS
                    or (Path(generated) / OPTIONAL_PARTS[part["caption"]]).exists()]
    return yaml.safe_dump(toc, sort_keys=False)


def build_book(generated: str | Path, dest: str | Path) -> Path:
    """Build the book in ``dest`` from the repository's pages with ``generated`` as its results; returns the HTML
    folder."""
    generated, dest = Path(generated), Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy(REPO / "_config.yml", dest / "_config.yml")
    (dest / "_toc.yml").write_text(toc_for(generated))
    shutil.copytree(REPO / "book", dest / "book", ignore=shutil.ignore_patterns("generated"))
    shutil.copytree(generated, dest / "book" / "generated")
    (dest / "notebooks").mkdir()
    for py in NOTEBOOKS.glob("*.py"):
        shutil.copy(py, dest / "notebooks" / py.name)
    exe = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(exe if exe.exists() else "jupyter-book"), "build", str(dest), "-W", "--keep-going"], check=True)
    return dest / "_build" / "html"
