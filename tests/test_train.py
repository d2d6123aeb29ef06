"""Tests of training (cce_core.train), the command line (cce_core.__main__) and model NSD (cce_core.evaluate).

Every run is a tiny CPU configuration (width 8, bottleneck 16, batches of 4, a few steps) on a folder of
synthetic 128x128 images, so the whole file takes seconds.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import picture, write_pictures

import cce_core.train as train_mod
from cce_core.__main__ import main
from cce_core.cascade import CascadeContextEncoder, downscale, downscale_mask
from cce_core.checkpoint import load_checkpoint, load_model, read_log, snapshots
from cce_core.config import make_config
from cce_core.data import to_float
from cce_core.evaluate import eval_masks, model_nsd
from cce_core.masks import make_masks
from cce_core.models import ContextEncoder
from cce_core.nsd import nsd
from cce_core.train import TrainingDiverged, train

TINY = dict(steps=4, batch_size=4, width=8, bottleneck=16, log_every=1, checkpoint_every=2, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def cfg(model: str, mask: str, folder: str, **kw):
    return make_config("smoke", model=model, mask=mask, data=[folder], **{**TINY, **kw})


@pytest.fixture(scope="module")
def ce64_runs(tmp_path_factory, folder) -> dict[str, Path]:
    """A trained (4 steps) 64 CE per mask kind: {mask: run directory}."""
    root = tmp_path_factory.mktemp("ce64")
    return {mask: train(cfg("ce64", mask, folder), root / mask, progress=False).parent
            for mask in ("central", "random_blocks")}


def assert_same(a, b, where: str = "") -> None:
    """Recursive equality of checkpoint contents; tensors must be bitwise equal (torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def check_run(run: Path, model: str, mask: str, steps: int, log_every: int = 1) -> dict:
    """The three files of a finished run are there and consistent; returns the checkpoint."""
    for name in ("config.json", "log.jsonl", "checkpoint.pt"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["model"] == model and meta["config"]["mask"] == mask and meta["config"]["steps"] == steps
    assert meta["data"]["images"] > 0 and "commit" in meta["provenance"]
    log = read_log(run)
    assert [r["step"] for r in log] == list(range(log_every, steps + 1, log_every))
    assert all(np.isfinite(r[k]) for r in log for k in ("d", "g_adv", "g_rec", "l2"))
    assert all(r["load_1m"] >= 0 for r in log)  # the machine's load beside the speed: was it shared?
    ckpt = load_checkpoint(run / "checkpoint.pt", model=model)
    assert ckpt["step"] == steps and ckpt["finished"]
    assert all_finite(ckpt["G"]) and all_finite(ckpt["D"])
    return ckpt


def assert_eval(model: torch.nn.Module) -> None:
    assert not model.training and not any(m.training for m in model.modules())


# --- 1. the smoke path: ce64, ce128, cce128 -------------------------------------------------------------------

@pytest.mark.parametrize("mask", ["central", "random_blocks"])
def test_smoke_trains_all_three_models(tmp_path, folder, ce64_runs, mask):
    ce64_run = ce64_runs[mask]
    ce64_ckpt = check_run(ce64_run, "ce64", mask, 4)
    g64 = load_model(ce64_run)
    assert type(g64) is ContextEncoder and g64.size == 64 and g64.output == ("center" if mask == "central" else "full")
    assert_eval(g64)

    ce128 = train(cfg("ce128", mask, folder), tmp_path / "ce128", progress=False)
    assert ce128 == tmp_path / "ce128" / "checkpoint.pt"
    check_run(tmp_path / "ce128", "ce128", mask, 4)
    g128 = load_model(ce128)
    assert type(g128) is ContextEncoder and g128.size == 128
    assert_eval(g128)

    # cce128 with log_every=2: two records for four steps
    cce = train(cfg("cce128", mask, folder, ce64=str(ce64_run / "checkpoint.pt"), log_every=2), tmp_path / "cce",
                progress=False)
    ckpt = check_run(tmp_path / "cce", "cce128", mask, 4, log_every=2)
    assert_same(ckpt["ce64"]["G"], ce64_ckpt["G"])
    model = load_model(cce)
    assert isinstance(model, CascadeContextEncoder)
    assert_eval(model)
    assert_same(model.ce64.state_dict(), ce64_ckpt["G"])
    assert_same(model.ce128.state_dict(), ckpt["G"])
    assert all(not p.requires_grad for p in model.ce64.parameters())

    x = to_float(torch.from_numpy(np.array(picture(99))).permute(2, 0, 1)[None].repeat(2, 1, 1, 1))
    m = make_masks(mask, 2, 128, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.inpaint(x, m)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(out * (1 - m), x * (1 - m))  # known pixels kept


# --- 2. resume exactness --------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, log_every, stop", [("ce128", 1, 3), ("cce128", 2, 2)])
def test_resume_is_exact(tmp_path, folder, ce64_runs, model, log_every, stop):
    extra = {"ce64": str(ce64_runs["random_blocks"])} if model == "cce128" else {}
    c = cfg(model, "random_blocks", folder, steps=6, log_every=log_every, checkpoint_every=2, **extra)
    whole = train(c, tmp_path / "whole", progress=False)

    part = train(c, tmp_path / "part", progress=False, stop_after=stop)
    interrupted = load_checkpoint(part)
    assert interrupted["step"] == stop and not interrupted["finished"]
    assert read_log(tmp_path / "part")[-1]["step"] == stop
    resumed = train(c, tmp_path / "part", progress=False, resume=True)

    a, b = load_checkpoint(whole), load_checkpoint(resumed)
    assert a["step"] == b["step"] == 6 and a["finished"] and b["finished"]
    for key in ("G", "D", "opt_g", "opt_d", "rng"):
        assert_same(a[key], b[key], key)
    if model == "cce128":
        assert_same(a["ce64"], b["ce64"], "ce64")
    log_a, log_b = read_log(tmp_path / "whole"), read_log(tmp_path / "part")
    assert [r["step"] for r in log_a] == [r["step"] for r in log_b] == list(range(log_every, 7, log_every))
    for key in ("d", "g_adv", "g_rec", "l2"):
        assert [r[key] for r in log_a] == [r[key] for r in log_b], key

    # resuming a finished run does nothing
    train(c, tmp_path / "part", progress=False, resume=True)
    assert_same(load_checkpoint(resumed)["G"], b["G"])
    assert len(read_log(tmp_path / "part")) == len(log_b)


# --- 3. a folder with a corrupt file and a grayscale image ----------------------------------------------------

def test_folder_with_bad_files(tmp_path):
    d = tmp_path / "mixed"
    write_pictures(d, 19)
    picture(100, "L").save(d / "gray.png")  # grayscale: converted to RGB, used
    (d / "broken.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    # 1 bad file of 21: under the 5% that load_images tolerates by default
    with pytest.warns(UserWarning, match="broken.jpg"):
        train(cfg("ce128", "central", str(d), steps=2), tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["data"]["images"] == 20 and meta["data"]["skipped"] == {"corrupt": 1, "too_small": 0}
    check_run(tmp_path / "run", "ce128", "central", 2)

    # too many bad files: a clear error before anything is trained
    for i in range(2):
        (d / f"broken{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="max_bad_fraction"):
        train(cfg("ce128", "central", str(d), steps=2), tmp_path / "run2", progress=False)
    assert not (tmp_path / "run2" / "checkpoint.pt").exists()


# --- 4. bad input ---------------------------------------------------------------------------------------------

def test_cascade_needs_a_matching_ce64(tmp_path, folder, ce64_runs):
    with pytest.raises(ValueError, match="--ce64"):
        cfg("cce128", "random_blocks", folder)
    ce128 = train(cfg("ce128", "random_blocks", folder, steps=1, checkpoint_every=1), tmp_path / "ce128",
                  progress=False)
    with pytest.raises(ValueError, match=r"'ce128'.*'ce64'"):
        train(cfg("cce128", "random_blocks", folder, ce64=str(ce128)), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="output"):  # a central 64 CE predicts only the centre
        train(cfg("cce128", "random_blocks", folder, ce64=str(ce64_runs["central"])), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="output"):
        train(cfg("cce128", "central", folder, ce64=str(ce64_runs["random_blocks"])), tmp_path / "c", progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        train(cfg("cce128", "central", folder, ce64=str(tmp_path / "nope.pt")), tmp_path / "d", progress=False)
    for out in "abcd":
        assert not (tmp_path / out / "checkpoint.pt").exists()


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    plain = tmp_path / "plain.pt"
    torch.save({"a": 1}, plain)
    for path in (junk, plain):
        with pytest.raises(ValueError, match="not a (readable|cce-companion) checkpoint"):
            load_checkpoint(path)
        with pytest.raises(ValueError, match="not a (readable|cce-companion) checkpoint"):
            load_model(path)
    with pytest.raises(ValueError, match="not a cce-companion checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_existing_run_force_and_resume(tmp_path, folder):
    out = tmp_path / "run"
    c = cfg("ce128", "random_blocks", folder, steps=2)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(c, out, resume=True, progress=False)
    train(c, out, progress=False)
    first = load_checkpoint(out)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(c, out, progress=False)
    with pytest.raises(ValueError, match="cannot resume"):
        train(cfg("ce128", "central", folder, steps=2), out, resume=True, progress=False)

    # force with inputs that turn out to be bad: the previous run is not deleted
    with pytest.raises(FileNotFoundError):
        train(cfg("cce128", "random_blocks", folder, ce64=str(tmp_path / "missing")), out, force=True, progress=False)
    with pytest.raises(FileNotFoundError):
        train(cfg("ce128", "random_blocks", str(tmp_path / "no-images")), out, force=True, progress=False)
    assert_same(load_checkpoint(out)["G"], first["G"])
    assert len(read_log(out)) == 2 and (out / "config.json").exists()

    # force overwrites: a new configuration, a fresh log
    train(cfg("ce128", "random_blocks", folder, steps=3, seed=1), out, force=True, progress=False)
    ckpt = check_run(out, "ce128", "random_blocks", 3)
    assert ckpt["config"]["seed"] == 1
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 1
    assert not all(torch.equal(ckpt["G"][k], first["G"][k]) for k in first["G"])


def test_config_validation(folder):
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("huge", model="ce128")
    with pytest.raises(ValueError, match="model must be one of"):
        make_config("smoke", model="ce256")
    with pytest.raises(ValueError, match="mask must be one of"):
        make_config("smoke", model="ce128", mask="stripes")
    with pytest.raises(ValueError, match="multiple of log_every"):
        cfg("ce128", "central", folder, log_every=2, checkpoint_every=3)
    with pytest.raises(ValueError, match="batch_size"):
        cfg("ce128", "central", folder, batch_size=1)
    with pytest.raises(ValueError, match="steps"):
        cfg("ce128", "central", folder, steps=0)


# --- 5. divergence --------------------------------------------------------------------------------------------

def test_nan_loss_keeps_last_good_checkpoint(tmp_path, folder, monkeypatch):
    real = train_mod.reconstruction_weights
    calls = []

    def poisoned(c, mask):  # called once per step: NaN from step 3 on, after the checkpoint at step 2
        calls.append(1)
        w = real(c, mask)
        return w if len(calls) <= 2 else torch.full_like(w, float("nan"))

    monkeypatch.setattr(train_mod, "reconstruction_weights", poisoned)
    out = tmp_path / "run"
    c = cfg("ce128", "random_blocks", folder, steps=6)
    with pytest.raises(TrainingDiverged, match="NaN") as e:
        train(c, out, progress=False)
    assert "checkpoint" in str(e.value) and str(out / "checkpoint.pt") in str(e.value)
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 2 and not ckpt["finished"]
    assert all_finite(ckpt["G"]) and all_finite(ckpt["D"])
    assert torch.isfinite(load_model(out)(torch.zeros(1, 3, 128, 128))).all()
    assert [r["step"] for r in read_log(out)] == [1, 2]

    monkeypatch.undo()  # the cause is gone: the run resumes from the good checkpoint
    train(c, out, resume=True, progress=False)
    check_run(out, "ce128", "random_blocks", 6)


def test_nan_weights_with_finite_loss_are_not_checkpointed(tmp_path, folder, monkeypatch):
    """A step whose loss is finite can still leave NaN weights (e.g. an overflowing gradient); the checkpoint
    written after that step must not be the broken one."""
    real = train_mod.make_step

    def breaking(c, g, *args, **kwargs):
        step, calls = real(c, g, *args, **kwargs), []

        def wrapped(x, m):
            losses = step(x, m)
            calls.append(1)
            if len(calls) == 4:  # after the update of step 4, a checkpoint step
                with torch.no_grad():
                    next(g.parameters()).fill_(float("nan"))
            return losses
        return wrapped

    monkeypatch.setattr(train_mod, "make_step", breaking)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="checkpoint"):
        train(cfg("ce128", "central", folder, steps=6), out, progress=False)
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 2 and all_finite(ckpt["G"]) and all_finite(ckpt["D"])


# --- 6. determinism -------------------------------------------------------------------------------------------

def test_same_seed_same_weights(tmp_path, folder):
    def run(name: str, seed: int) -> dict:
        return load_checkpoint(train(cfg("ce128", "random_blocks", folder, steps=2, seed=seed), tmp_path / name,
                                     progress=False))
    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    for key in ("G", "D", "opt_g", "opt_d"):
        assert_same(a[key], b[key], key)
    assert not all(torch.equal(a["G"][k], c["G"][k]) for k in a["G"])
    assert not all(torch.equal(a["D"][k], c["D"][k]) for k in a["D"])


# --- 7. the command line --------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [([], "train"), (["train"], "--ce64"), (["nsd"], "--masks")])
def test_cli_help(capsys, argv, expected):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--help"])
    assert e.value.code == 0
    assert expected in capsys.readouterr().out


def test_cli_train_then_nsd(tmp_path, folder, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", "ce128", "--mask", "random_blocks", "--preset", "smoke", "--steps", "2",
            "--batch-size", "4", "--width", "8", "--bottleneck", "16", "--data", folder, "--out", str(run),
            "--device", "cpu", "--quiet"]
    main(args)
    assert f"checkpoint: {run / 'checkpoint.pt'}" in capsys.readouterr().out
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 2 and ckpt["config"]["width"] == 8 and ckpt["config"]["bottleneck"] == 16

    with pytest.raises(SystemExit) as e:  # the run exists: a clean error, exit status 2
        main(args)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err

    out = tmp_path / "nsd" / "ce128.json"
    main(["nsd", "--checkpoint", str(run), "--images", "3", "--masks", "4", "--data", folder, "--out", str(out),
          "--device", "cpu", "--quiet"])
    printed = capsys.readouterr().out
    assert "raw:" in printed and "standardised:" in printed
    res = json.loads(out.read_text())
    assert res["k"] == 3 and res["n"] == 4 and res["mask"] == "random_blocks"
    for kind in ("raw", "standardized"):
        per_image = res[kind]["per_image"]
        assert len(per_image) == 3 and all(np.isfinite(per_image))
        assert res[kind]["mean"] == pytest.approx(np.mean(per_image), rel=1e-6)


def test_cli_nsd_missing_checkpoint(tmp_path, folder, capsys):
    with pytest.raises(SystemExit) as e:
        main(["nsd", "--checkpoint", str(tmp_path / "missing.pt"), "--data", folder, "--device", "cpu", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "missing.pt" in err


# --- 8. model NSD ---------------------------------------------------------------------------------------------

def _manual_codes(model, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """E(P_j, M_i) stacked into (k, n, D), one image at a time."""
    small = isinstance(model, ContextEncoder) and model.size == 64
    if small:
        masks = downscale_mask(masks)
    out = []
    with torch.no_grad():
        for img in to_float(images):
            img = downscale(img[None]) if small else img[None]
            out.append(model.encode(img.expand(len(masks), -1, -1, -1), masks))
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["ce128", "ce64", "cascade"])
def test_model_nsd_matches_stacked_codes(kind):
    torch.manual_seed(0)
    ce128 = ContextEncoder(128, bottleneck=16, output="full", width=8)
    ce64 = ContextEncoder(64, bottleneck=16, output="full", width=8)
    model = {"ce128": ce128, "ce64": ce64, "cascade": CascadeContextEncoder(ce64, ce128)}[kind].eval()
    images = torch.stack([torch.from_numpy(np.array(picture(i))).permute(2, 0, 1) for i in range(3)])
    masks = eval_masks("random_blocks", 5, seed=0)

    res = model_nsd(model, images, masks, batch_size=2, progress=False)  # 3 batches of masks per image
    codes = _manual_codes(model, images, masks)
    assert codes.shape == (3, 5, 16)
    for streamed, direct in ((res.raw, nsd(codes)), (res.standardized, nsd(codes, standardize=True))):
        assert streamed.k == 3 and streamed.n == 5 and streamed.dims == direct.dims
        np.testing.assert_allclose(streamed.per_image, direct.per_image, rtol=1e-9, atol=1e-12)


def test_snapshots_keep_g_along_training(tmp_path, folder):
    """snapshot_every keeps G every k steps (NSD along training, issue 11 §3): each snapshot loads as a model whose
    weights are the run's at that step, and the last one is the final checkpoint's."""
    cfg = make_config("smoke", model="ce128", mask="random_blocks", data=[str(folder)], steps=6, log_every=2,
                      checkpoint_every=6, snapshot_every=2, device="cpu")
    train(cfg, tmp_path / "run", progress=False)
    paths = snapshots(tmp_path / "run")
    assert [p.name for p in paths] == ["step-0000002.pt", "step-0000004.pt", "step-0000006.pt"]
    assert [load_checkpoint(p)["step"] for p in paths] == [2, 4, 6]
    first, last = (load_model(p).state_dict() for p in (paths[0], paths[-1]))
    final = load_model(tmp_path / "run").state_dict()
    assert all(torch.equal(last[k], final[k]) for k in final)
    assert not all(torch.equal(first[k], final[k]) for k in final)  # G moved between the snapshots
    with pytest.raises(ValueError, match="snapshot_every"):
        make_config("smoke", snapshot_every=0)


def test_run_summary_reads_config_and_log(tmp_path):
    """The Training page's row of a run: samples seen and planned, the loop's time from the log's images/s, and the
    mean of the last three records of each loss."""
    import json

    from cce_core.checkpoint import run_summary

    run = tmp_path / "ce128-central"
    run.mkdir()
    cfg = {"model": "ce128", "mask": "central", "seed": 0, "steps": 4, "batch_size": 8, "planned_steps": 10,
           "bottleneck": 64, "width": 16}
    (run / "config.json").write_text(json.dumps({"config": cfg, "data": {"description": "x (3 images)"}}))
    log = [{"step": s, "d": d, "g_adv": a, "g_rec": r, "images_per_s": 16.0}
           for s, d, a, r in [(1, 1.0, 1.0, 1.0), (2, 0.5, 2.0, 0.5), (3, 0.2, 4.0, 0.4), (4, 0.2, 6.0, 0.3)]]
    (run / "log.jsonl").write_text("\n".join(map(json.dumps, log)) + "\n")
    row = run_summary(run)
    assert (row["samples"], row["planned samples"], row["D"]) == (32, 80, 64)
    assert row["train seconds"] == pytest.approx(2.0) and row["images/s"] == pytest.approx(16.0)
    assert row["last d"] == pytest.approx(0.3) and row["last g_adv"] == pytest.approx(4.0)
    (run / "log.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty"):
        run_summary(run)
