"""The training-side factors of the NSD-gap page (issue 28): the per-batch mask law, the noise fill in training, and
the cells' runs (:func:`cce_core.runs.ensure_gap_cells`)."""

import os

import pytest
import torch
from test_train import assert_same

from cce_core.batches import make_generator, make_mask_stream, next_batch
from cce_core.checkpoint import load_checkpoint
from cce_core.config import make_config
from cce_core.masks import PATHAK_FILL, NoiseFill, fill_hole, random_blocks
from cce_core.runs import GAP_CELLS, ensure_gap_cells, gap_cell_name, gap_cell_steps
from cce_core.train import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _cfg(folder: str, **kw):
    return make_config("smoke", model="ce128", mask="random_blocks", data=[folder], device="cpu", **kw)


@pytest.mark.parametrize("mask_chunk", [1, 4])
def test_batch_mask_law_gives_the_first_mask_to_the_whole_batch(mask_chunk):
    images = torch.randint(0, 256, (12, 3, 128, 128), dtype=torch.uint8)
    batches = {}
    for law in ("image", "batch"):
        c = _cfg("embedded", mask_law=law, mask_chunk=mask_chunk)
        gen, stream = make_generator(c, torch.device("cpu")), make_mask_stream(c, torch.device("cpu"))
        batches[law] = [next_batch(c, images, gen, torch.device("cpu"), stream) for _ in range(3)]
    for (xi, mi), (xb, mb) in zip(batches["image"], batches["batch"]):
        assert torch.equal(xi, xb)  # the same images and flips: the law changes the masks only
        assert torch.equal(mb, mi[:1].expand_as(mi))  # the per-image law's first mask, for every image
        assert not torch.equal(mi, mi[:1].expand_as(mi))  # which the per-image law does not repeat


def test_the_new_options_are_checked():
    with pytest.raises(ValueError, match="mask_law must be one of"):
        _cfg("embedded", mask_law="pixel")
    with pytest.raises(ValueError, match="applies to random_blocks"):
        make_config("smoke", mask="central", mask_law="batch")
    with pytest.raises(ValueError, match="fill must be one of"):
        _cfg("embedded", fill="grey")
    with pytest.raises(ValueError, match="plain CEs"):
        make_config("smoke", model="cce128", mask="random_blocks", ce64="x.pt", fill="noise")


def test_noise_fill_is_uniform_per_step_and_keeps_the_known_pixels():
    x = torch.rand(4, 3, 128, 128) * 2 - 1
    m = random_blocks(4, generator=torch.Generator().manual_seed(0))
    fill = NoiseFill(seed=3)
    a, again, other = fill.at(5)(x, m), fill.at(5)(x, m), fill.at(6)(x, m)
    assert torch.equal(a * (1 - m), x * (1 - m))
    assert torch.equal(a, again) and not torch.equal(a, other)
    hole = a[m.expand_as(a) > 0]
    assert hole.min() >= -1 and hole.max() <= 1 and abs(hole.mean()) < 0.05 and abs(hole.var() - 1 / 3) < 0.02
    assert not torch.equal(a, fill_hole(x, m))
    assert torch.equal(fill_hole(x, m) * m, torch.tensor(PATHAK_FILL).view(1, 3, 1, 1) * m)
    with pytest.raises(ValueError):
        fill(x, m[:, :, :64])


def test_noise_fill_training_resumes_exactly_and_differs_from_pathaks(tmp_path, folder):
    c = _cfg(folder, fill="noise", steps=4, log_every=1, checkpoint_every=2, batch_size=4)
    whole = load_checkpoint(train(c, tmp_path / "whole", progress=False))
    train(c, tmp_path / "part", progress=False, stop_after=2)
    resumed = load_checkpoint(train(c, tmp_path / "part", progress=False, resume=True))
    assert_same(whole["G"], resumed["G"], "G")
    assert whole["config"]["fill"] == "noise"
    pathak = load_checkpoint(train(_cfg(folder, steps=4, log_every=1, checkpoint_every=2, batch_size=4),
                                   tmp_path / "pathak", progress=False))
    assert not torch.equal(whole["G"]["encoder.0.weight"], pathak["G"]["encoder.0.weight"])


def test_gap_cells_train_once_and_pair_with_the_seeds_own_models(tmp_path, folder):
    data = [os.path.relpath(folder, tmp_path)]
    cells = ensure_gap_cells("runs", ["d4000", "fillnoise"], "smoke", [folder], seed=1, device="cpu", cwd=tmp_path)
    st = gap_cell_steps("smoke")
    assert st == make_config("smoke").steps // 2 and set(cells) == {"d4000", "fillnoise"}
    assert set(cells["d4000"]) == set(GAP_CELLS["d4000"].models) and set(cells["fillnoise"]) == {"ce128"}
    for cell, by_model in cells.items():
        for model, (arm, ref) in by_model.items():
            a, r = load_checkpoint(arm), load_checkpoint(ref)
            assert arm.parent == tmp_path / "runs" / gap_cell_name(model, "random_blocks", cell)
            assert a["step"] == r["step"] == st and a["config"]["seed"] == r["config"]["seed"] == 1
            assert a["config"]["data"] == r["config"]["data"] == data
            for key, value in GAP_CELLS[cell].overrides.items():
                assert a["config"][key] == value and r["config"][key] != value
    cascade = load_checkpoint(cells["d4000"]["cce128"][0])
    assert cascade["ce64"]["config"]["bottleneck"] == 4000 and cascade["ce64"]["step"] == st
    assert cells["d4000"]["cce128"][1].parent.name.endswith(f"-fair{st}")  # both stages of the reference at st
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("checkpoint.pt")}
    again = ensure_gap_cells("runs", ["d4000", "fillnoise"], "smoke", [folder], seed=1, device="cpu", cwd=tmp_path)
    assert again == cells and stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("checkpoint.pt")}
    with pytest.raises(ValueError, match="unknown NSD-gap cells"):
        ensure_gap_cells("runs", ["d8000"], "smoke", [folder], cwd=tmp_path)
