"""The reproduction end to end, as the GPU box runs it (on the CPU, smoke preset), and the re-run page's steps."""

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cce_core.reproduce as rp
import cce_core.runs as runs_mod
from cce_core.provenance import uncommitted
from cce_core.reproduce import (
    EVAL_RESERVE_S,
    TRAIN_ORDER,
    ReproductionFailed,
    build_book,
    reproduce,
    stale_pairs,
    write_pack,
)
from cce_core.runs import GAP_CELLS, run_name

REPO = Path(__file__).resolve().parents[1]
RERUN = REPO / "book" / "rerun.md"


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def git_state() -> str:
    """Tracked changes and untracked, not ignored files of the repository (plus the committed book's results)."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                            capture_output=True, text=True).stdout
    return status + tree_digest(REPO / "book" / "generated")


def photo_zip(path: Path, n: int = 8) -> Path:
    """n smooth random 128x128 JPEGs in a stored zip (a stand-in for eval-bsds100.zip)."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            im = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((128, 128), Image.BICUBIC)
            tmp = path.parent / f"{i}.jpg"
            im.save(tmp, quality=90)
            zf.write(tmp, f"ood/{i:03d}.jpg")
            tmp.unlink()
    return path


def test_paired_notebooks_are_up_to_date():
    """CI fails (instead of rewriting them) when a committed notebooks/*.ipynb differs from its .py."""
    pytest.importorskip("jupytext")
    assert stale_pairs() == [], "run: jupytext --to ipynb --update notebooks/<name>.py"


def test_gpu_command_on_the_cpu_with_a_cut_budget(tmp_path):
    """The GPU box's reproduce line with the smoke preset: a budget that cuts the trainings short, an archive,
    the samples actually seen, nothing changed in the repository; then the archive builds a book."""
    before = git_state()
    ood, out, pack = photo_zip(tmp_path / "ood.zip"), tmp_path / "run", tmp_path / "out" / "run.tar.gz"
    budget = EVAL_RESERVE_S["smoke"] + 1  # leaves under a second for six trainings: each one is cut
    r = subprocess.run([sys.executable, "-m", "cce_core", "reproduce", "--preset", "smoke", "--device", "cpu",
                        "--data", "embedded", "--eval-data", "embedded", "--ood-data", str(ood), "--out", str(out),
                        "--no-book", "--fast", "--pack", str(pack), "--time-budget", str(budget), "--allow-dirty"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert git_state() == before  # a reproduction writes only under its --out (and the archive)
    said = r.stdout[:r.stdout.index("[reproduce] training")]  # before the first training: the plan and its tier
    assert "plan: 6 models, 320 image samples each" in said and "if every model finishes: reduced scale" in said
    assert "image samples/s per model" in said

    assert pack.stat().st_size < 16 * 2**20
    with tarfile.open(pack) as tar:
        members = set(tar.getnames())
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert "generated/training.ipynb" in members and not any("/train-" in m for m in members)
    assert {"generated/nsd_eval.ipynb", "generated/figures.ipynb", "generated/metrics.json",
            "generated/run.json", "generated/figures/nsd_distributions.png"} <= members
    assert "generated/error.txt" not in members
    generated = tmp_path / "unpacked" / "generated"
    text = (generated / "run.json").read_text()
    assert str(tmp_path) not in text and str(REPO) not in text  # data named by file name, count and hash
    run = json.loads(text)
    assert run["ood_data"][0] == {"name": "ood.zip", "kind": "zip", "images": 8, "bytes": ood.stat().st_size,
                                  "sha256": hashlib.sha256(ood.read_bytes()).hexdigest()}
    training = run["training"]
    assert set(training) == {run_name(m, k) for k, m in TRAIN_ORDER}
    assert all(0 < t["samples"] <= t["planned_samples"] for t in training.values())
    assert run["time_budget"]["seconds"] == budget and len(run["time_budget"]["training_shares_seconds"]) == 6
    assert any(t["samples"] < t["planned_samples"] for t in training.values()), training
    assert run["fast"] is True
    if uncommitted():  # run with --allow-dirty from a changed library or notebooks: the provenance says so
        assert run["provenance"]["commit"].endswith("-dirty")
    notebook = json.loads((generated / "nsd_eval.ipynb").read_text())
    injected = next(c for c in notebook["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert str(tmp_path) not in "".join(injected["source"])  # notebooks get paths relative to generated/
    train_nb = json.loads((generated / "training.ipynb").read_text())
    assert any("image/png" in o.get("data", {}) for c in train_nb["cells"] for o in c.get("outputs", []))
    figures_nb = json.loads((generated / "figures.ipynb").read_text())  # figures shown once: the saved files
    data = [o.get("data", {}) for c in figures_nb["cells"] for o in c.get("outputs", [])]
    saved = ["fig1_pipeline.jpg", "fig2_latent.png", "fig3_distances.jpg", "fig4_central.jpg", "fig4_random_blocks.jpg"]
    markdown = ["".join(d["text/markdown"]) for d in data if "text/markdown" in d]
    warnings = [m for m in markdown if m.startswith(":::{warning}")]  # the provenance of uncommitted code
    assert len(warnings) == run["provenance"]["commit"].endswith("-dirty")
    assert [m for m in markdown if m not in warnings] == [f"![{Path(n).stem}](figures/{n})" for n in saved]
    assert not any(k.startswith("image/") for d in data for k in d)

    html = build_book(generated, tmp_path / "book")  # what `make adopt` + `make book` do with an archive
    report = (html / "book" / "report.html").read_text()
    assert "smoke" in report and "reduced scale" in report  # the tier, named from the run's record
    figures_page = html / "book" / "generated" / "figures.html"
    shown = re.findall(r'<img[^>]*src="([^"]+)"', figures_page.read_text())
    assert len(shown) == 5 and all((figures_page.parent / src).is_file() for src in shown)


def test_failed_notebook_still_packs_and_exits_nonzero(tmp_path, monkeypatch):
    """A notebook that fails: the archive holds what exists, run.json the error, error.txt the traceback."""
    def fake_run(runs_dir, model, mask, preset, data, seed=0, device="auto", progress=False, time_limit=None,
                 fast=None):
        run = Path(runs_dir) / run_name(model, mask)
        run.mkdir(parents=True, exist_ok=True)
        cfg = {"steps": 3, "planned_steps": 20, "batch_size": 16}
        (run / "config.json").write_text(json.dumps({"config": cfg, "data": {"description": "x"},
                                                     "provenance": {"commit": "c", "date": "d", "device": "cpu"}}))
        return run / "checkpoint.pt"

    def fake_notebook(name, output, parameters, cwd, images=True):
        if name == "nsd_eval":
            raise rp.NotebookFailed("notebook nsd_eval.ipynb failed in cell 7: RuntimeError: boom")
        output.write_text("{}")
        return 0.0

    monkeypatch.setattr(rp, "ensure_run", fake_run)
    monkeypatch.setattr(rp, "execute_notebook", fake_notebook)
    pack = tmp_path / "run.tar.gz"
    with pytest.raises(ReproductionFailed, match="boom.*packed in"):
        reproduce(preset="smoke", out=tmp_path / "out", book=False, allow_dirty=True, time_budget=1000, pack=pack)
    with tarfile.open(pack) as tar:
        names = set(tar.getnames())
        run = json.load(tar.extractfile("generated/run.json"))
    assert {"generated/error.txt", "generated/training.ipynb"} <= names
    assert "generated/figures.ipynb" not in names
    assert "boom" in run["error"] and run["training"]["ce128-central"]["samples"] == 48
    assert run["training"]["ce128-central"]["planned_samples"] == 320


def test_sigterm_still_records_and_packs(tmp_path, monkeypatch):
    """`timeout` (SIGTERM) during the NSD notebook: the trainings' notebooks and run.json are packed."""
    import signal

    def fake_notebook(name, output, parameters, cwd, images=True):
        if name == "nsd_eval":
            os.kill(os.getpid(), signal.SIGTERM)
        output.write_text("{}")
        return 0.0

    monkeypatch.setattr(rp, "ensure_run", lambda runs_dir, model, mask, *a, **k: Path(runs_dir) / "x")
    monkeypatch.setattr(rp, "execute_notebook", fake_notebook)
    pack = tmp_path / "run.tar.gz"
    with pytest.raises(ReproductionFailed, match="SIGTERM"):
        reproduce(preset="smoke", out=tmp_path / "out", book=False, allow_dirty=True, pack=pack)
    with tarfile.open(pack) as tar:
        assert "generated/training.ipynb" in tar.getnames()
        assert json.load(tar.extractfile("generated/run.json"))["status"] == "failed"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_several_seeds_layout(tmp_path, monkeypatch):
    """--seeds 3 5: the first seed's runs in runs/, the second's in runs/seed5; the first seed's notebooks are the
    book's, the second's (training and NSD, not figures) in generated/seed5; every notebook gets its seed and paths
    relative to its folder; the first seed's NSD notebook runs last, given the other seed's metrics.json."""
    calls = []

    def fake_run(runs_dir, model, mask, preset, data, seed=0, device="auto", progress=False, time_limit=None,
                 fast=None):
        run = Path(runs_dir).resolve() / run_name(model, mask)
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps({"config": {"steps": 20, "batch_size": 16, "seed": seed},
                                                     "provenance": {"commit": "c", "date": "d", "device": "cpu"}}))
        return run / "checkpoint.pt"

    def fake_notebook(name, output, parameters, cwd, images=True):
        calls.append((output.relative_to(tmp_path / "out").as_posix(), parameters["seed"], parameters["runs_dir"]))
        assert images == (parameters["seed"] == 3)  # the other seeds' notebooks are not pages: no images
        runs = tmp_path / "out" / "runs"
        assert (cwd / parameters["runs_dir"]).resolve() == (runs if parameters["seed"] == 3 else runs / "seed5")
        output.write_text("{}")
        return 0.0

    monkeypatch.setattr(rp, "ensure_run", fake_run)
    monkeypatch.setattr(rp, "execute_notebook", fake_notebook)
    reproduce(preset="smoke", out=tmp_path / "out", book=False, allow_dirty=True, seeds=[3, 5], gap=True)
    nbs = {c[0]: c[1:] for c in calls}
    assert nbs["generated/nsd_gap.ipynb"] == (3, "../runs")  # the gap page: every seed's models, from the book's
    assert [c[0] for c in calls].index("generated/nsd_gap.ipynb") < [c[0] for c in calls].index(
        "generated/nsd_eval.ipynb")
    assert nbs["generated/training.ipynb"] == (3, "../runs")  # one training page: the book's seed
    assert nbs["generated/nsd_eval.ipynb"] == (3, "../runs") and "generated/figures.ipynb" in nbs
    order = [c[0] for c in calls if c[0].endswith("nsd_eval.ipynb")]
    assert order == ["generated/seed5/nsd_eval.ipynb", "generated/nsd_eval.ipynb"]
    assert nbs["generated/seed5/nsd_eval.ipynb"] == (5, "../../runs/seed5")
    assert "generated/seed5/figures.ipynb" not in nbs and len(calls) == 1 + 2 + 1 + 1
    run = json.loads((tmp_path / "out" / "generated" / "run.json").read_text())
    assert run["seeds"] == [3, 5] and run["seed"] == 3 and set(run["training"]) == {"seed3", "seed5"}
    assert len(run["training"]["seed5"]) == 6 and run["seed_folders"] == {"seed5": "seed5/"}
    assert run["seed_runs"] == {"seed3": "runs", "seed5": "runs/seed5"}
    assert set(run["stage_seconds"]) == {k for k in run["wall_seconds"] if "train-" in k}
    assert len(run["stage_seconds"]) == 12
    assert all(set(v) == {"training"} for v in run["stage_seconds"].values())  # no per-run notebook
    with pytest.raises(ValueError, match="--gap gives each factor"):
        reproduce(preset="smoke", out=tmp_path / "out4", book=False, allow_dirty=True, seeds=[3], gap=True)
    with pytest.raises(ValueError, match="repeats"):
        reproduce(preset="smoke", out=tmp_path / "out2", book=False, allow_dirty=True, seeds=[1, 1])


def test_gap_cells_are_trained_per_seed_and_read_by_the_gap_page(tmp_path, monkeypatch):
    """--gap --gap-cells with 3 seeds: each cell trained for its first GapCell.seeds seeds (width 64 for two), from
    each seed's notebook folder, after the seed's own models; the gap page is told to read them."""
    cells, params = [], {}

    def fake_run(runs_dir, model, mask, *a, **k):
        return Path(runs_dir) / run_name(model, mask) / "checkpoint.pt"

    def fake_cells(runs_dir, names, preset, data, seed=0, device="auto", fast=None):
        cells.extend((seed, c, runs_dir) for c in names)
        return {}

    def fake_notebook(name, output, parameters, cwd, images=True):
        params[name] = parameters
        output.write_text("{}")
        return 0.0

    monkeypatch.setattr(rp, "ensure_run", fake_run)
    monkeypatch.setattr(rp, "ensure_gap_cells", fake_cells)
    monkeypatch.setattr(rp, "execute_notebook", fake_notebook)
    reproduce(preset="smoke", out=tmp_path / "out", book=False, allow_dirty=True, seeds=[3, 5, 7], gap=True,
              gap_cells=True)
    assert cells == [(s, c, rd) for s, rd in ((3, "../runs"), (5, "../../runs/seed5"), (7, "../../runs/seed7"))
                     for c in GAP_CELLS if [3, 5, 7].index(s) < GAP_CELLS[c].seeds]
    assert [c for s, c, _ in cells].count("width64") == 2 and params["nsd_gap"]["cells"] == list(GAP_CELLS)
    run = json.loads((tmp_path / "out" / "generated" / "run.json").read_text())
    assert {"seed7/train-gap-d4000", "train-gap-width64"} <= set(run["wall_seconds"])
    with pytest.raises(ValueError, match="give --gap with it"):
        reproduce(preset="smoke", out=tmp_path / "out2", book=False, allow_dirty=True, seeds=[3, 5], gap_cells=True)


def test_adding_seeds_reuses_the_first_seeds_runs(tmp_path, monkeypatch):
    """A finished single-seed reproduction, then --seeds 0 1 --loss-variants into the same --out: the first seed's
    six runs are asked for with the very same configuration (so train's resume="auto" returns at once) and only
    seed 1's six and the three eq. (1) runs are trained; the other seed's NSD notebook runs before the first's,
    which gets its metrics.json and loss_variants. Training is replaced by a stand-in that refuses a changed
    configuration of an existing run, as train does."""
    from dataclasses import asdict

    out, trained, calls = tmp_path / "out", [], []

    def fake_train(cfg, run, resume=False, progress=True, time_limit=None):
        run = Path(run).resolve()
        stored = run / "config.json"
        if stored.exists():
            assert json.loads(stored.read_text())["config"] == asdict(cfg), f"{run} asked with another configuration"
        else:
            run.mkdir(parents=True)
            stored.write_text(json.dumps({"config": asdict(cfg), "data": {"description": "x"},
                                          "provenance": {"commit": "c", "date": "d", "device": "cpu"}}))
            trained.append(run.relative_to(out).as_posix())
        return run / "checkpoint.pt"

    def fake_notebook(name, output, parameters, cwd, images=True):
        calls.append((output.relative_to(out).as_posix(), parameters))
        output.write_text("{}")
        return 0.0

    monkeypatch.setattr(runs_mod, "train", fake_train)
    monkeypatch.setattr(rp, "execute_notebook", fake_notebook)
    reproduce(preset="smoke", out=out, book=False, allow_dirty=True, seeds=[0])
    assert sorted(trained) == sorted(f"runs/{run_name(m, k)}" for k, m in TRAIN_ORDER)
    trained.clear(), calls.clear()

    reproduce(preset="smoke", out=out, book=False, allow_dirty=True, seeds=[0, 1], loss_variants=True)
    hole = [f"runs/{run_name(m, 'random_blocks', 0.0)}" for m in ("ce64", "ce128", "cce128")]
    assert sorted(trained) == sorted([f"runs/seed1/{run_name(m, k)}" for k, m in TRAIN_ORDER] + hole)
    cfg = json.loads((out / hole[2] / "config.json").read_text())["config"]
    assert cfg["full_known_weight"] == 0.0 and cfg["ce64"].endswith("ce64-random_blocks-hole/checkpoint.pt")
    nsd = [(path, p) for path, p in calls if path.endswith("nsd_eval.ipynb")]
    assert [path for path, _ in nsd] == ["generated/seed1/nsd_eval.ipynb", "generated/nsd_eval.ipynb"]
    assert "other_metrics" not in nsd[0][1] and "loss_variants" not in nsd[0][1]
    assert nsd[1][1]["other_metrics"] == ["seed1/metrics.json"] and nsd[1][1]["loss_variants"] is True
    run = json.loads((out / "generated" / "run.json").read_text())
    assert run["loss_variants"] is True and "ce128-random_blocks-hole" in run["training"]["seed0"]
    with pytest.raises(ValueError, match="--loss-variants.*--time-budget"):
        reproduce(preset="smoke", out=tmp_path / "out3", book=False, allow_dirty=True, loss_variants=True,
                  time_budget=1000)


def test_pack_over_the_limit_writes_nothing(tmp_path, monkeypatch):
    (tmp_path / "generated").mkdir()
    (tmp_path / "generated" / "noise.bin").write_bytes(os.urandom(300_000))
    monkeypatch.setattr(rp, "PACK_LIMIT", 100_000)
    with pytest.raises(ValueError, match="over the 0 MiB limit; nothing was written"):
        write_pack(tmp_path / "generated", tmp_path / "run.tar.gz")
    assert not list(tmp_path.glob("run.tar.gz*"))


def _block(heading: str) -> str:
    """The first ```bash block under a heading of the re-run page."""
    text = RERUN.read_text()
    section = text[text.index(heading):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def gpu_line() -> str:
    """The GPU command as bash reads it: its continuation lines (ending in a backslash) joined into one line."""
    block = _block("% the GPU command").replace("\\\n", "")
    lines = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 1, "the GPU command is one line (continued with backslashes)"
    return lines[0]


def test_gpu_command_fits_the_device_limit():
    line = gpu_line()
    assert len(line) < 2000
    for flag in ("--preset $PRESET", "--device $DEVICE", "--time-budget", "--pack $OUT/", "--no-book",
                 "C=.carry;", "$C/wheels/*.whl", "$C/train-gpu.zip", "PYTHONPATH", "nvidia-smi -L",
                 "train_throughput.py", "tee $OUT/"):
        assert flag in line, flag
    assert "MPLBACKEND" not in line  # a kernel with MPLBACKEND=Agg shows no figures in the executed notebooks


def test_papermill_by_hand_steps_as_written(tmp_path):
    """The re-run page's papermill steps, run as written from the repository root: they write only inside the
    gitignored _build/by-hand and leave the tracked notebooks and the tree as they were."""
    pytest.importorskip("papermill")
    steps = _block("## Papermill, by hand")
    before = git_state()
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    try:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", steps], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert git_state() == before
        assert not (REPO / "out.ipynb").exists()
        executed = list((REPO / "_build" / "by-hand").glob("*.ipynb"))
        assert executed and (REPO / "_build" / "by-hand" / "runs").is_dir()
    finally:
        import shutil
        shutil.rmtree(REPO / "_build" / "by-hand", ignore_errors=True)


def test_plan_says_the_tier_before_training():
    """The log states the planned samples per model and the tier the plan reaches if completed (samples, D, width,
    distinct images); with a time budget, the throughput that finishes the plan and the one below which a
    paper-architecture run drops to reduced scale (issue 19, item 11)."""
    from cce_core.reproduce import Budget, plan_lines

    full = plan_lines("paper", 100_000, 6)
    assert full == ["plan: 6 models, 1,024,000 image samples each (16,000 steps × batch 64), D = 4000, width 64, "
                    "100,000 distinct training images", "if every model finishes: paper scale"]
    assert plan_lines("paper", 9_600, 6)[1] == ("if every model finishes: paper architecture, reduced data "
                                                "(9,600 distinct training images (paper 100,000))")
    budget = Budget(6 * 1000 + 150 + 6 * 30, reserve=150, overhead=30)  # 1000 s of training per model
    timed = plan_lines("paper", 100_000, 6, budget)
    assert "about 1,000 s of training per model" in timed[2] and "needs 1,024 image samples/s" in timed[2]
    assert timed[3].startswith("below 1,000 image samples/s a model sees fewer than 1,000,000 samples")
    assert plan_lines("paper", 100_000, 6, extra=4)[0].startswith("plan: 6 models (and 4 more beside them), 1,024,000")
    smoke = plan_lines("smoke", 512, 6, budget)
    assert smoke[1].startswith("if every model finishes: reduced scale (320 image samples per model")
    assert len(smoke) == 3  # the smoke preset cannot reach paper scale at any speed: no threshold line


def test_notebooks_reexecutes_only_those_named_and_keeps_the_others(tmp_path, monkeypatch):
    """A full call, then --train-only with --nsd-loss (new trainings: the executed notebooks stay), then
    --notebooks nsd_loss: only the NSD-loss chapter runs, every other executed notebook is kept as it was, and
    run.json lists both earlier calls. Bad uses of --notebooks fail before anything is written."""
    from dataclasses import asdict

    out, calls = tmp_path / "out", []

    def fake_train(cfg, run, resume=False, progress=True, time_limit=None):
        run = Path(run).resolve()
        if not (run / "config.json").exists():
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps({"config": asdict(cfg), "data": {"description": "x"},
                                                         "provenance": {"commit": "c", "date": "d", "device": "cpu"}}))
        return run / "checkpoint.pt"

    def fake_notebook(name, output, parameters, cwd, images=True):
        calls.append(output.relative_to(out).as_posix())
        output.write_text(json.dumps({"call": len(calls)}))
        return 0.0

    monkeypatch.setattr(runs_mod, "train", fake_train)
    monkeypatch.setattr(rp, "execute_notebook", fake_notebook)
    with pytest.raises(FileNotFoundError, match="no generated/run.json"):
        reproduce(preset="smoke", out=out, book=False, allow_dirty=True, notebooks=["nsd_loss"], nsd_loss=True)
    assert not out.exists()
    reproduce(preset="smoke", out=out, book=False, allow_dirty=True, seeds=[0, 1])
    first = {p: (out / p).read_text() for p in calls}
    assert set(first) == {"generated/training.ipynb", "generated/seed1/nsd_eval.ipynb", "generated/nsd_eval.ipynb",
                          "generated/figures.ipynb"}
    calls.clear()
    reproduce(preset="smoke", out=out, book=False, allow_dirty=True, seeds=[0, 1], nsd_loss_seeds=[0],
              train_only=True)
    assert calls == [] and all((out / p).read_text() == text for p, text in first.items())
    for bad, match in ((["nsd_loss"], "needs --nsd-loss"), (["scale_ladder"], "needs --ladder"),
                       (["figure"], "choose among"), ([], "choose among")):
        with pytest.raises(ValueError, match=match):
            reproduce(preset="smoke", out=out, book=False, allow_dirty=True, seeds=[0, 1], notebooks=bad)
    reproduce(preset="smoke", out=out, book=False, allow_dirty=True, seeds=[0, 1], nsd_loss_seeds=[0],
              notebooks=["nsd_loss"])
    assert calls == ["generated/nsd_loss.ipynb"]
    assert all((out / p).read_text() == text for p, text in first.items())  # the others as the first call left them
    run = json.loads((out / "generated" / "run.json").read_text())
    assert [c["status"] for c in run["earlier_calls"]] == ["complete", "trained"] and run["status"] == "complete"
    assert list(run["wall_seconds"]) and all(k == "nsd_loss" or "train-" in k for k in run["wall_seconds"])
    assert any("nsd1" in k for k in run["earlier_calls"][1]["wall_seconds"])  # the NSD-loss trainings' call


def test_figure_files_are_read_and_closed(tmp_path):
    """compact_notebook's figures are read into memory: no file of figures/ stays open (a ResourceWarning, and on
    some systems a file that cannot be replaced)."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd")
    (tmp_path / "figures").mkdir()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "figures" / "a.png")
    Image.new("RGB", (8, 6), (40, 50, 60)).save(tmp_path / "figures" / "b.jpg")
    (tmp_path / "figures" / "notes.txt").write_text("not a figure")
    files = rp._figure_files(tmp_path)
    open_files = set()
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            open_files.add(Path(os.readlink(fd)))
    assert not {p.resolve() for p in files} & open_files
    assert sorted(p.name for p in files) == ["a.png", "b.jpg"]
    assert files[tmp_path / "figures" / "a.png"].getpixel((0, 0)) == (10, 20, 30)
    assert files[tmp_path / "figures" / "b.jpg"].size == (8, 6)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_uncommitted_changes_of_the_library_and_notebooks(tmp_path):
    """provenance.uncommitted: the changed, added and untracked files of cce_core/ and notebooks/ (not the rest of
    the tree); None outside a git checkout (a tree unpacked on the GPU box). git_commit marks them -dirty."""
    from cce_core.provenance import git_commit, uncommitted

    repo = tmp_path / "repo"
    for rel in ("cce_core/a.py", "notebooks/b.py", "README.md"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x = 1\n")
    assert uncommitted(repo) is None  # not a git checkout: nothing to compare with
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "c")
    assert uncommitted(repo) == [] and not git_commit(repo).endswith("-dirty")
    (repo / "README.md").write_text("changed\n")
    assert uncommitted(repo) == []  # outside the library and notebooks
    (repo / "cce_core" / "a.py").write_text("x = 2\n")
    (repo / "notebooks" / "new.py").write_text("")
    assert sorted(uncommitted(repo)) == [" M cce_core/a.py", "?? notebooks/new.py"]
    _git(repo, "checkout", "-q", "--", "cce_core/a.py", "README.md")
    assert git_commit(repo).endswith("-dirty")  # an untracked notebook alone: the provenance says so


def test_dirty_tree_is_refused_unless_allowed(tmp_path, monkeypatch, capsys):
    """A reproduction from a library or notebooks that differ from the commit: one line naming --allow-dirty, exit 2,
    nothing written; with allow_dirty it goes on; outside a git checkout (None) it is not refused."""
    from cce_core.__main__ import main
    from cce_core.reproduce import check_inputs

    monkeypatch.setattr(rp, "uncommitted", lambda: [" M cce_core/train.py", "?? notebooks/new.py"])
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "--allow-dirty" in err and "cce_core/train.py" in err
    assert not out.exists()
    args = ("smoke", None, None, None, out, "cpu", 0, False, None, None, None, False, False, False)
    assert check_inputs(*args, allow_dirty=True).out == out.resolve()
    monkeypatch.setattr(rp, "uncommitted", lambda: None)
    assert check_inputs(*args).out == out.resolve()
    assert not out.exists()


def test_dirty_warning_on_the_pages():
    from cce_core.provenance import dirty_warning

    for commit in ("0123abc-dirty", "0123abc-dirty (recorded by make carry)"):
        text = dirty_warning({"commit": commit})
        assert text.startswith(":::{warning}") and text.endswith(":::") and "0123abc-dirty" in text
    for commit in ("0123abc", "unknown", "0123abc (recorded by make carry)"):
        assert dirty_warning({"commit": commit}) is None
    assert dirty_warning({}) is None
