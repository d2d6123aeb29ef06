"""Defects of the training runs and the scale ladder: ``--force`` leaves none of the old run's snapshots, the
ladder's cache follows the checkpoints and the code and keeps full precision, a truncated last log line, atomic
JSON writes, and each seed's own evaluation images."""

import hashlib
import inspect
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import cce_core.train as train_mod
from cce_core import checkpoint, evaluate, provenance
from cce_core.__main__ import main
from cce_core.checkpoint import read_log, snapshot_path, snapshots
from cce_core.config import make_config
from cce_core.data import EVAL_CROPS, load_images
from cce_core.evaluate import eval_masks, ladder_seed
from cce_core.reproduce import Recorder
from cce_core.train import train

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TINY = dict(batch_size=4, width=8, bottleneck=16, log_every=1, checkpoint_every=2, snapshot_every=5, device="cpu")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(folder: str, steps: int):
    return make_config("smoke", model="ce128", mask="random_blocks", data=[folder], steps=steps, **TINY)


@pytest.fixture(scope="module")
def run10(tmp_path_factory, folder) -> Path:
    """A tiny 10-step run of the 128 CE with snapshots at steps 5 and 10 (tests copy it before changing it)."""
    out = tmp_path_factory.mktemp("run10") / "run"
    train(tiny(folder, 10), out, progress=False)
    return out


# --- 1. --force and the old run's snapshots ------------------------------------------------------------------------

def test_force_removes_the_old_runs_snapshots(tmp_path, folder):
    out = tmp_path / "run"
    args = ["train", "--model", "ce128", "--data", folder, "--out", str(out), "--batch-size", "4", "--width", "8",
            "--bottleneck", "16", "--device", "cpu", "--quiet"]
    main(args + ["--steps", "10"])  # the smoke preset keeps a snapshot every 5 steps
    assert [p.name for p in snapshots(out)] == ["step-0000005.pt", "step-0000010.pt"]
    main(args + ["--steps", "4", "--force"])
    assert snapshots(out) == [out / "checkpoint.pt"]
    assert not (out / "snapshots").exists() or not any((out / "snapshots").iterdir())


def test_resume_drops_snapshots_later_than_its_checkpoint(run10, tmp_path, folder):
    run = tmp_path / "run"
    shutil.copytree(run10, run)
    shutil.copyfile(snapshot_path(run, 10), snapshot_path(run, 15))  # killed after a snapshot, before a checkpoint
    train(tiny(folder, 12), run, resume=True, progress=False)
    assert [p.name for p in snapshots(run)] == ["step-0000005.pt", "step-0000010.pt", "checkpoint.pt"]


# --- 2. and 3. the ladder's cache -------------------------------------------------------------------------------

def _ladder(run: Path, cache: Path) -> dict:
    images = torch.randint(0, 256, (3, 3, 128, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    masks = eval_masks("random_blocks", 3, seed=0)
    return ladder_seed({"a": run}, [5, 10], images, masks, masks[:1], cache=cache)


def _values(point: dict) -> dict:
    return {k: v for k, v in point.items() if k != "measured"}


def test_ladder_cache_follows_the_checkpoints_and_the_code(run10, tmp_path, monkeypatch):
    run, cache = tmp_path / "run", tmp_path / "ladder.json"
    shutil.copytree(run10, run)
    first = _ladder(run, cache)
    loaded, real = [], evaluate.load_model
    monkeypatch.setattr(evaluate, "load_model", lambda path, device="cpu": loaded.append(Path(path).name)
                        or real(path, device))
    assert _ladder(run, cache) == first and loaded == []  # nothing changed: all from the cache
    shutil.copyfile(snapshot_path(run, 10), snapshot_path(run, 5))  # step 5's snapshot replaced by another model
    second = _ladder(run, cache)
    assert loaded == ["step-0000005.pt"]  # measured again; step 10 from the cache
    assert second["10"] == first["10"]
    assert _values(second["5"]["a"]) != _values(first["5"]["a"])
    assert all(second["5"]["a"][x] == pytest.approx(first["10"]["a"][x]) for x in _values(first["10"]["a"]))
    measured = second["5"]["a"]["measured"]
    assert measured["checkpoint_sha256"] == hashlib.sha256(snapshot_path(run, 5).read_bytes()).hexdigest()
    assert measured["tree"] == provenance.code_sha256() and measured["commit"]
    loaded.clear()
    monkeypatch.setattr(provenance, "code_sha256", lambda: "another tree")  # the measuring code changed
    _ladder(run, cache)
    assert sorted(loaded) == ["step-0000005.pt", "step-0000010.pt"]


def test_ladder_keeps_tiny_values_through_its_cache(run10, tmp_path, monkeypatch):
    small = np.array([3e-8, 5.2e-7, 4e-9])
    reading = SimpleNamespace(per_image=small)
    monkeypatch.setattr(evaluate, "model_nsd", lambda *a, **kw: SimpleNamespace(
        raw=reading, standardized=reading, normalized=reading))
    monkeypatch.setattr(evaluate, "model_quality", lambda *a, **kw: {name: small for name in evaluate.QUALITY})
    cache = tmp_path / "ladder.json"
    first = _ladder(run10, cache)
    monkeypatch.setattr(evaluate, "load_model", lambda *a, **kw: pytest.fail("a cached point was measured again"))
    again = _ladder(run10, cache)
    for points in (first, again):
        assert points["5"]["a"]["nsd_raw"] == small.tolist() and points["10"]["a"]["psnr"] == small.tolist()


# --- 5. a truncated log line, atomic JSON writes ------------------------------------------------------------------

def test_resume_skips_a_truncated_last_log_line(tmp_path, folder):
    out = tmp_path / "run"
    train(tiny(folder, 4), out, progress=False)
    log = out / "log.jsonl"
    log.write_text(log.read_text() + '{"step": 5, "d": 0.6')  # killed while writing step 5's line
    with pytest.warns(UserWarning, match="log.jsonl"):
        assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4]
    with pytest.warns(UserWarning, match="log.jsonl"):
        train(tiny(folder, 6), out, resume=True, progress=False)
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4, 5, 6]


def test_a_corrupt_log_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl.* line 2"):
        read_log(tmp_path)


def test_atomic_write_text_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")
    checkpoint.atomic_write_text(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}' and list(tmp_path.iterdir()) == [path]
    checkpoint.atomic_write_text(tmp_path / "new.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "new.json"]


def test_config_json_and_run_json_are_written_atomically(tmp_path, folder, monkeypatch):
    written, real = [], train_mod.atomic_write_text
    monkeypatch.setattr(train_mod, "atomic_write_text", lambda path, text: written.append(path.name)
                        or real(path, text))
    train(tiny(folder, 2), tmp_path / "run", progress=False)
    assert written == ["config.json"]
    assert "atomic_write_text(" in inspect.getsource(Recorder.record)


# --- 8. the evaluation images of each seed ------------------------------------------------------------------------

def test_eval_images_are_each_seeds_crops_or_one_stored_set(tmp_path, folder):
    a, b = evaluate.eval_images(["embedded"], 3, 0), evaluate.eval_images(["embedded"], 3, 1)
    assert len(a) == len(b) == 3 and not torch.equal(a.images, b.images)
    same = load_images(["embedded"], limit=3, embedded_count=3, seed=0, purpose=EVAL_CROPS, progress=False)
    assert torch.equal(a.images, same.images)  # what the NSD page has always loaded
    z = tmp_path / "eval.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(Path(folder).iterdir()):
            zf.write(p, p.name)
    first, second = (evaluate.eval_images([str(z)], 5, s) for s in (0, 1))
    assert len(first) == 5 and first.names == second.names and torch.equal(first.images, second.images)


def test_both_notebooks_take_each_seeds_images_from_eval_images():
    ladder = (NOTEBOOKS / "scale_ladder.py").read_text()
    assert "eval_images(eval_data, k, s)" in ladder and "load_images" not in ladder
    assert "eval_sets[s].images" in ladder  # each seed measured on its own images
    nsd = (NOTEBOOKS / "nsd_eval.py").read_text()
    body = nsd.split("def eval_set(source):", 1)[1].split("\n\n\n", 1)[0]
    assert "eval_images(source, k, seed)" in body


def test_code_hash_covers_the_subpackages(tmp_path):
    """The library tree's hash (the caches' key) changes with a file of ``cce_core/report/`` as with a module."""
    lib = tmp_path / "cce_core"
    shutil.copytree(Path(provenance.__file__).parent, lib, ignore=shutil.ignore_patterns("__pycache__"))
    before = provenance.code_sha256(lib)
    assert before == provenance.code_sha256()
    (lib / "report" / "seeds.py").write_text((lib / "report" / "seeds.py").read_text() + "# edited\n")
    assert provenance.code_sha256(lib) != before


def test_device_name_names_the_cpu_model():
    """A timing's record names the CPU model and PyTorch's kernel level (the machines of these runs differ)."""
    assert provenance.cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t: avx2\n") == "AMD EPYC 9B14"
    assert provenance.cpu_model("processor\t: 0\n")  # no model name: the machine type, never empty
    name = provenance.device_name("cpu")
    assert name.startswith(f"CPU ({provenance.cpu_model()}, ") and torch.backends.cpu.get_cpu_capability() in name
