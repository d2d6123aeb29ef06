"""The whole reproduction, in dependency order: train the six models, measure NSD, draw the figures, build the book.

Each step is one of the book's notebooks (``notebooks/*.py``, jupytext percent format) executed by papermill
with its parameters; the executed copies go to ``OUT/generated/`` together with the figures and ``metrics.json``,
the training runs (checkpoints, logs) to ``OUT/runs/``, and the HTML book built from them to
``OUT/book/_build/html``. Nothing is written inside the repository: the book committed under ``book/generated/``
changes only when someone copies a run there on purpose (``make adopt RUN=OUT``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .provenance import REPO, provenance, resolve_device
from .train import PRESETS, make_config, train

NOTEBOOKS = REPO / "notebooks"
TRAIN_ORDER = [(mask, model) for mask in ("random_blocks", "central") for model in ("ce64", "ce128", "cce128")]
#: NSD sample sizes per preset: the paper's k = 250 images and n = 100 masks, fewer for the smoke run.
EVAL_SIZES = {"smoke": dict(k=8, n=10), "cpu": dict(k=250, n=100), "paper": dict(k=250, n=100)}


def run_name(model: str, mask: str) -> str:
    """The run directory (and generated notebook) name of a model trained with a mask strategy."""
    return f"{model}-{mask}"


def ensure_run(runs_dir: str | Path, model: str, mask: str, preset: str, data: list[str], seed: int = 0,
               device: str = "auto", progress: bool = False) -> Path:
    """Train (or resume, or reuse) one model's run in ``runs_dir/<model>-<mask>``; returns its checkpoint.

    For the cascade (``cce128``) the 64 CE of the same mask strategy is ensured first. Notebooks call this so
    that each one runs on its own (nbval, a reader opening it alone) with the same runs a full reproduction
    makes; in a reproduction the runs already exist and are reused.
    """
    ce64 = ensure_run(runs_dir, "ce64", mask, preset, data, seed, device, progress) if model == "cce128" else None
    cfg = make_config(preset, model=model, mask=mask, data=list(data), seed=seed, device=device,
                      ce64=str(ce64) if ce64 else None)
    return train(cfg, Path(runs_dir) / run_name(model, mask), resume="auto", progress=progress)


def execute_notebook(name: str, output: Path, parameters: dict, cwd: Path) -> float:
    """Execute ``notebooks/<name>.py`` with papermill into ``output``; returns the wall time in seconds."""
    import jupytext
    import papermill

    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{name}.ipynb"
        jupytext.write(nb, src)
        t = time.perf_counter()
        papermill.execute_notebook(str(src), str(output), parameters=parameters, cwd=str(cwd),
                                   kernel_name="python3", progress_bar=False, log_output=False)
    return time.perf_counter() - t


def reproduce(preset: str = "smoke", data: list[str] | None = None, eval_data: list[str] | None = None,
              ood_data: list[str] | None = None, out: str | Path = "_build/smoke", device: str = "auto",
              seed: int = 0, book: bool = True, force: bool = False) -> Path:
    """Run every notebook of the reproduction with papermill into ``out``; build the book there if ``book``.

    Returns the folder of executed notebooks (``out/generated``). Training runs already complete in
    ``out/runs`` are reused (``force`` retrains them); interrupted ones are resumed.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    data = [str(Path(d).resolve()) if d != "embedded" else d for d in (data or ["embedded"])]
    if eval_data is None:
        if data != ["embedded"]:
            raise ValueError("--eval-data is required when training on your own data (NSD needs held-out images)")
        eval_data = ["embedded"]
    eval_data = [str(Path(d).resolve()) if d != "embedded" else d for d in eval_data]
    ood_data = [str(Path(d).resolve()) for d in ood_data] if ood_data else None
    out = Path(out).resolve()
    runs, generated = out / "runs", out / "generated"
    if force:
        shutil.rmtree(runs, ignore_errors=True)
    if generated.exists():
        shutil.rmtree(generated)
    (generated / "figures").mkdir(parents=True)
    common = dict(preset=preset, seed=seed, device=device, runs_dir="../runs")
    started = time.perf_counter()
    timings = {}
    for mask, model in TRAIN_ORDER:
        name = run_name(model, mask)
        print(f"[reproduce] training {name} ({preset})", flush=True)
        timings[f"train-{name}"] = execute_notebook("train", generated / f"train-{name}.ipynb",
                                                    dict(common, model=model, mask=mask, data=data, eval_data=eval_data),
                                                    generated)
    sizes = EVAL_SIZES[preset]
    print(f"[reproduce] NSD on k={sizes['k']} images x n={sizes['n']} masks", flush=True)
    timings["nsd_eval"] = execute_notebook("nsd_eval", generated / "nsd_eval.ipynb",
                                           dict(common, data=data, eval_data=eval_data, ood_data=ood_data,
                                                fig_dir="figures", metrics_path="metrics.json", **sizes), generated)
    print("[reproduce] figures", flush=True)
    timings["figures"] = execute_notebook("figures", generated / "figures.ipynb",
                                          dict(common, data=data, eval_data=eval_data, fig_dir="figures", k=sizes["k"]),
                                          generated)
    trained = {}  # a run reused from an earlier call was trained at another commit and time: record both
    for mask, model in TRAIN_ORDER:
        meta = json.loads((runs / run_name(model, mask) / "config.json").read_text())
        trained[run_name(model, mask)] = {"samples": meta["config"]["steps"] * meta["config"]["batch_size"],
                                          "commit": meta["provenance"]["commit"], "date": meta["provenance"]["date"],
                                          "device": meta["provenance"]["device"]}
    record = {"preset": preset, "data": data, "eval_data": eval_data, "ood_data": ood_data, "seed": seed,
              "eval_sizes": sizes, "provenance": provenance(resolve_device(device)), "training": trained,
              "wall_seconds": {k: round(v, 1) for k, v in timings.items()},
              "total_wall_seconds": round(time.perf_counter() - started, 1)}
    (generated / "run.json").write_text(json.dumps(record, indent=2))
    print(f"[reproduce] executed notebooks in {generated} ({record['total_wall_seconds']:.0f} s)", flush=True)
    if book:
        html = build_book(generated, out / "book")
        print(f"[reproduce] book: {html / 'index.html'}", flush=True)
    return generated


def build_book(generated: str | Path, dest: str | Path) -> Path:
    """Build the book in ``dest`` from the repository's pages with ``generated`` as its results; returns the HTML dir."""
    generated, dest = Path(generated), Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / f, dest / f)
    shutil.copytree(REPO / "book", dest / "book", ignore=shutil.ignore_patterns("generated"))
    shutil.copytree(generated, dest / "book" / "generated")
    (dest / "notebooks").mkdir()
    for py in NOTEBOOKS.glob("*.py"):
        shutil.copy(py, dest / "notebooks" / py.name)
    exe = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(exe if exe.exists() else "jupyter-book"), "build", str(dest), "-W", "--keep-going"], check=True)
    return dest / "_build" / "html"
