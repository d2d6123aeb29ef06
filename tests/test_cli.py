"""The command line as a user meets it: bad input gives one line on stderr and exit status 2, before any work,
and nothing is lost or left behind (CPU, seconds)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cce_core.data
from cce_core.__main__ import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def fails(capsys, *argv: str) -> str:
    """Run the CLI in-process; assert exit status 2 and a single-line message; return it."""
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def corrupt_zip(tmp_path: Path) -> Path:
    path = tmp_path / "photos.zip"
    path.write_bytes(b"PK\x03\x04" + bytes(300))
    return path


def test_unknown_device_is_one_line_exit_2_as_a_process(tmp_path: Path):
    """The real process: no traceback, exit 2, and no run folder made."""
    r = subprocess.run([sys.executable, "-m", "cce_core", "train", "--model", "ce64", "--device", "banana",
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error: unknown device 'banana': use auto, cpu, cuda or cuda:N"
    assert not (tmp_path / "run").exists()


def test_unknown_device_nsd_and_reproduce(capsys, tmp_path: Path):
    assert "'banana'" in fails(capsys, "nsd", "--checkpoint", str(tmp_path), "--data", "embedded", "--device", "banana")
    assert "'banana'" in fails(capsys, "reproduce", "--out", str(tmp_path / "out"), "--device", "banana")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_explicit_cuda_without_gpu_is_an_error(capsys, tmp_path: Path):
    for argv in (["train", "--model", "ce64", "--out", str(tmp_path / "run")],
                 ["nsd", "--checkpoint", str(tmp_path), "--data", "embedded"],
                 ["reproduce", "--out", str(tmp_path / "out")]):
        assert "no CUDA GPU" in fails(capsys, *argv, "--device", "cuda")
    assert list(tmp_path.iterdir()) == []


def test_failed_train_leaves_no_run_folder(capsys, tmp_path: Path):
    err = fails(capsys, "train", "--model", "ce64", "--data", str(tmp_path / "missing.zip"),
                "--out", str(tmp_path / "run"), "--quiet")
    assert "missing.zip" in err and not (tmp_path / "run").exists()


def test_nsd_out_folder_is_refused_before_any_work(capsys, tmp_path: Path):
    # the checkpoint does not exist either: naming --out proves the output was checked first
    err = fails(capsys, "nsd", "--checkpoint", str(tmp_path / "nope"), "--data", "embedded", "--out", str(tmp_path))
    assert "--out" in err and "folder" in err


def test_nsd_bad_counts_name_the_option(capsys, tmp_path: Path):
    assert "--images" in fails(capsys, "nsd", "--checkpoint", str(tmp_path), "--data", "embedded", "--images", "0")
    assert "--masks" in fails(capsys, "nsd", "--checkpoint", str(tmp_path), "--data", "embedded", "--masks", "-3")


def test_garbage_checkpoint_is_not_ours(capsys, tmp_path: Path):
    (tmp_path / "checkpoint.pt").write_bytes(b"this is not a checkpoint" * 50)
    err = fails(capsys, "nsd", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--data", "embedded", "--quiet")
    assert "not a cce-companion checkpoint (this project's format)" in err and "weights_only" not in err


def test_corrupt_zip_is_named(capsys, tmp_path: Path, corrupt_zip: Path):
    err = fails(capsys, "train", "--model", "ce64", "--data", str(corrupt_zip), "--out", str(tmp_path / "run"),
                "--quiet")
    assert "corrupt zip" in err and not (tmp_path / "run").exists()


def test_reproduce_validates_inputs_before_writing(capsys, tmp_path: Path, corrupt_zip: Path):
    out = tmp_path / "out"
    err = fails(capsys, "reproduce", "--data", "/nonexistent/train.zip", "--eval-data", "embedded", "--out", str(out))
    assert "/nonexistent/train.zip" in err
    err = fails(capsys, "reproduce", "--data", str(corrupt_zip), "--eval-data", "embedded", "--out", str(out))
    assert "corrupt zip" in err
    err = fails(capsys, "reproduce", "--eval-data", str(corrupt_zip), "--out", str(out))
    assert "corrupt zip" in err
    assert not out.exists()
    assert "file, not a folder" in fails(capsys, "reproduce", "--out", str(corrupt_zip))
    assert corrupt_zip.read_bytes().startswith(b"PK\x03\x04")
    assert ".tar.gz" in fails(capsys, "reproduce", "--out", str(out), "--pack", str(tmp_path / "run.zip"))
    assert "--time-budget" in fails(capsys, "reproduce", "--out", str(out), "--time-budget", "-5")
    assert "--seeds" in fails(capsys, "reproduce", "--out", str(out), "--seed", "1", "--seeds", "1", "2")
    assert not out.exists()


def test_reproduce_never_touches_files_it_did_not_write(capsys, tmp_path: Path):
    out = tmp_path / "mine"
    (out / "generated").mkdir(parents=True)
    (out / "notes.txt").write_text("precious")
    (out / "generated" / "thesis.ipynb").write_text("{}")
    before = snapshot(out)
    assert "did not write" in fails(capsys, "reproduce", "--out", str(out))
    # --force allows other files beside it, but not replacing a folder it did not make
    assert "will not replace" in fails(capsys, "reproduce", "--out", str(out), "--force")
    assert snapshot(out) == before


def test_help_texts(capsys):
    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name, sub in subs.items():
        text = sub.format_help()
        assert "(default: None)" not in text, name
        assert "default: False" not in text, name
        for action in sub._actions:
            helptext = (action.help % {"default": action.default} if action.help and "%(" in action.help
                        else action.help or "")
            shown = sub._get_formatter()._get_help_string(action) if action.help else ""
            assert shown.count("default:") <= 1 and shown.count("(0.") == 0, (name, action.dest, shown)
            if action.required:
                assert "default" not in shown, (name, action.dest)
            if action.default is None and action.help:
                assert "%(default)" not in shown, (name, action.dest)
            assert "override" not in helptext, (name, action.dest)
    assert "(default: 0.05)" in subs["train"].format_help()
    assert "(default: 250)" in subs["nsd"].format_help()


def test_nsd_on_embedded_uses_held_out_crops_and_names_images(tmp_path: Path, monkeypatch, capsys):
    run = tmp_path / "run"
    main(["train", "--model", "ce128", "--mask", "random_blocks", "--preset", "smoke", "--steps", "2",
          "--out", str(run), "--quiet", "--device", "cpu"])
    seen = []
    real = cce_core.data.load_images

    def spy(sources, **kw):
        seen.append(kw)
        return real(sources, **kw)

    monkeypatch.setattr(cce_core.data, "load_images", spy)
    out = tmp_path / "nsd.json"
    main(["nsd", "--checkpoint", str(run), "--data", "embedded", "--images", "3", "--masks", "4", "--seed", "5",
          "--out", str(out), "--quiet", "--device", "cpu"])
    assert seen == [dict(limit=3, embedded_count=3, seed=5, purpose="evaluation crops", max_bad_fraction=0.05,
                         progress=False)]
    record = json.loads(out.read_text())
    train_cfg = json.loads((run / "config.json").read_text())["config"]
    assert train_cfg["seed"] == 0 and record["seed"] == 5  # evaluation crops: their own stream, not the training crops
    assert record["checkpoint"] == "run/checkpoint.pt" and str(tmp_path) not in out.read_text()
    assert record["data"] == [{"name": "embedded", "kind": "embedded", "images": 3,
                               "what": record["data"][0]["what"]}]
    names = record["images"]  # per_image[i] is the value of images[i]
    assert len(names) == 3 and names[0].startswith("embedded:") and len(set(names)) == 3
    assert len(record["raw"]["per_image"]) == len(record["standardized"]["per_image"]) == 3


def test_bad_fraction_error_names_a_real_option(tmp_path: Path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"garbage")
    from PIL import Image
    Image.new("RGB", (128, 128)).save(tmp_path / "imgs" / "b.png")
    err = fails(capsys, "nsd", "--checkpoint", str(tmp_path / "nope"), "--data", str(tmp_path / "imgs"), "--quiet")
    assert "checkpoint not found" in err  # the checkpoint is read before the images
    with pytest.raises(ValueError, match="--max-bad-fraction") as e:
        cce_core.data.load_images(tmp_path / "imgs", progress=False)
    options = {a for s in build_parser()._actions[1].choices.values() for a in s._option_string_actions}
    assert "--max-bad-fraction" in options
    assert str(e.value).count("\n") == 0


def test_reproduce_refuses_ladder_with_time_budget(capsys, tmp_path: Path, monkeypatch):
    """--ladder needs every training at its full length (its snapshots a factor 2 apart), which --time-budget cuts:
    refused at the start, not after the trainings (in config.ladder_steps)."""
    import cce_core.reproduce as rp

    def reached(plan):
        raise AssertionError("the reproduction started")

    monkeypatch.setattr(rp, "prepare_out", reached)
    out = tmp_path / "out"
    err = fails(capsys, "reproduce", "--preset", "study", "--seeds", "0", "1", "--ladder", "--time-budget", "5000",
                "--out", str(out))
    assert "--ladder" in err and "--time-budget" in err
    assert not out.exists()


def test_negative_seeds_are_refused_at_the_start(capsys, tmp_path: Path):
    """A negative seed: one line naming the option, exit 2, nothing written, an earlier reproduction's folder left
    as it was (a full call would have deleted its generated/)."""
    from cce_core.reproduce import MARKER, check_inputs

    out = tmp_path / "out"
    (out / "generated").mkdir(parents=True)
    (out / MARKER).write_text("written by python -m cce_core reproduce\n")
    (out / "generated" / "run.json").write_text('{"status": "complete"}')
    before = snapshot(out)
    assert "--seed" in fails(capsys, "reproduce", "--seed", "-1", "--out", str(out), "--device", "cpu")
    assert "--seeds" in fails(capsys, "reproduce", "--seeds", "0", "-1", "--out", str(out), "--device", "cpu")
    assert snapshot(out) == before
    assert "--seed" in fails(capsys, "train", "--model", "ce64", "--seed", "-1", "--out", str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    assert "--seed" in fails(capsys, "nsd", "--checkpoint", str(tmp_path / "nope"), "--data", "embedded",
                             "--seed", "-1")
    with pytest.raises(ValueError, match="seed"):  # the library refuses it too, before writing
        check_inputs("smoke", None, None, None, tmp_path / "lib", "cpu", -1, False, None, None, None, False, False,
                     False)
    assert not (tmp_path / "lib").exists()


def test_every_preset_of_config_is_a_choice():
    from cce_core.config import PRESETS

    parser = build_parser()
    subs = parser._actions[1].choices
    for name in ("train", "reproduce"):
        preset = next(a for a in subs[name]._actions if a.dest == "preset")
        assert list(preset.choices) == list(PRESETS), name
    a = parser.parse_args(["train", "--model", "ce64", "--preset", "study", "--out", "x"])
    assert a.preset == "study"


def test_help_says_what_the_options_do():
    """The help texts say what the code does: the embedded evaluation crops come from their own derived stream
    (not seed + 1000), and --fast on a CPU keeps fp32 (config.FAST_PICKS_CPU_BF16 is off)."""
    from cce_core.config import FAST_PICKS_CPU_BF16

    subs = build_parser()._actions[1].choices
    helps = {(name, a.dest): a.help or "" for name, sub in subs.items() for a in sub._actions}
    assert "seed + 1000" not in helps[("nsd", "data")]
    assert "'evaluation crops'" in helps[("nsd", "data")]
    assert not FAST_PICKS_CPU_BF16
    for name in ("train", "reproduce"):
        text = helps[(name, "fast")]
        assert "native bf16 bf16 autocast" not in text, name
        assert "on a CPU fp32" in text and "cuDNN autotuning" in text and "FAST_PICKS_CPU_BF16" in text, name


def test_nsd_needs_two_masks_before_loading_the_model(capsys, tmp_path: Path):
    # the checkpoint does not exist: naming --masks proves the count was checked first
    err = fails(capsys, "nsd", "--checkpoint", str(tmp_path / "nope"), "--data", "embedded", "--masks", "1")
    assert "--masks" in err and "at least 2" in err
