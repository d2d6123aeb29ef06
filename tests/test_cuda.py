"""The fast path on CUDA (issue 17): a few steps of each model in bf16 and channels-last, the batched masks on the
device, a checkpoint saved and loaded, a time-limited run, the cascade trained on its 64 CE, the NSD-loss step in
bf16, and the evaluation (NSD, in-hole quality) on the GPU against the CPU's. Skipped where CUDA does not exist
(except :func:`test_checks_on_the_cpu`, which rehearses the device-generic checks on the CPU in seconds); under
30 s on one GPU. The GPU command of book/rerun.md runs this file first, so that a CUDA fault shows in seconds, not
after the benchmark."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cce_core.train as train_mod
from cce_core.batches import MaskStream, make_generator, make_mask_stream, next_batch
from cce_core.cascade import CascadeContextEncoder
from cce_core.checkpoint import build_models, load_checkpoint, load_model, read_log
from cce_core.compute import untrained
from cce_core.config import make_config
from cce_core.evaluate import eval_masks, model_nsd, model_quality
from cce_core.losses import make_nsd_generator
from cce_core.masks import fill_hole, make_masks

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CUDA = torch.device("cuda")
SMALL = dict(mask="random_blocks", batch_size=8, width=16, bottleneck=64, device="cuda", fast=True, log_every=1,
             checkpoint_every=2)


@needs_cuda
@pytest.mark.parametrize("model", ["ce64", "ce128", "cce128"])
def test_fast_steps_in_bf16_and_channels_last(model):
    """Three fast-path steps: finite losses, G's convolutions really run in bf16, weights in channels-last, and
    the batch (images, batched masks) drawn on the device."""
    cfg = make_config("smoke", model=model, ce64="(test)" if model == "cce128" else None, **SMALL)
    assert cfg.amp and cfg.channels_last and cfg.device_rng and cfg.fused_adam
    g, d, prepare, opt_g, opt_d = untrained(cfg, CUDA)
    conv = next(m for m in g.modules() if isinstance(m, torch.nn.Conv2d))
    dtypes = []
    conv.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    step = train_mod.make_step(cfg, g, d, opt_g, opt_d, prepare)
    images = torch.randint(0, 256, (32, 3, 128, 128), dtype=torch.uint8, device=CUDA)
    gen, masks = make_generator(cfg, CUDA), make_mask_stream(cfg, CUDA)
    for _ in range(3):
        x, m = next_batch(cfg, images, gen, CUDA, masks)
        assert x.device.type == m.device.type == "cuda" and x.shape[-1] == cfg.size == m.shape[-1]
        losses = step(x, m)
        assert torch.isfinite(losses).all(), losses
    assert dtypes and set(dtypes) == {torch.bfloat16}


@needs_cuda
def test_batched_masks_on_the_device():
    gen = torch.Generator(device=CUDA).manual_seed(0)
    for kind in ("random_blocks", "random_region"):
        m = make_masks(kind, 16, 128, gen)
        assert m.device.type == "cuda" and set(m.unique().tolist()) <= {0.0, 1.0} and m.sum() > 0
    cfg = make_config("smoke", **{**SMALL, "mask_chunk": 4})
    stream = MaskStream(cfg, CUDA)
    assert all(stream.next().device.type == "cuda" for _ in range(5))


@needs_cuda
def test_train_save_load_and_time_limit(tmp_path, folder):
    """A 2-step fast run saves a checkpoint (the device generator's state) that loads onto the GPU and inpaints
    finitely; a run cut by a time limit finishes at the samples it saw; the loop mask generator works with
    device_rng; torch's global switches are as before."""
    before = torch.backends.cudnn.benchmark
    out = tmp_path / "ce128"
    train_mod.train(make_config("smoke", model="ce128", data=[folder], steps=2, **SMALL), out, progress=False)
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 2 and ckpt["rng_device"] == "cuda" and ckpt["opt_g"]["param_groups"][0]["fused"]
    g = load_model(out, device=CUDA)
    x, m = torch.zeros(2, 3, 128, 128, device=CUDA), make_masks("random_blocks", 2, 128, device=CUDA)
    with torch.no_grad():
        assert torch.isfinite(g(fill_hole(x, m))).all()
    cut = tmp_path / "cut"
    train_mod.train(make_config("smoke", model="ce64", data=[folder], steps=1000, **SMALL), cut, progress=False,
                    time_limit=0)
    meta = json.loads((cut / "config.json").read_text())
    assert 1 <= meta["cut_by_time"]["steps"] < 1000 and read_log(cut)[-1]["step"] == meta["cut_by_time"]["steps"]
    ref = tmp_path / "reference-masks"
    train_mod.train(make_config("smoke", model="ce64", data=[folder], steps=2, mask_generator="reference",
                                mask_chunk=1, **SMALL), ref, progress=False)
    assert load_checkpoint(ref)["step"] == 2
    assert torch.backends.cudnn.benchmark == before


# --- checks written for any device: run on CUDA below, rehearsed on the CPU by test_checks_on_the_cpu -----------

def check_cascade_training(device: torch.device, tmp_path: Path, folder: str) -> None:
    """A 64 CE, then the cascade's 128 CE on it, 2 fast-path steps each on ``device``: the cascade's checkpoint
    keeps its 64 CE and loads onto the device as a cascade (the 64 CE frozen) that inpaints finitely, keeping
    every known pixel."""
    kw = dict(SMALL, device=str(device), data=[folder], steps=2)
    ce64 = train_mod.train(make_config("smoke", model="ce64", **kw), tmp_path / "ce64", progress=False)
    path = train_mod.train(make_config("smoke", model="cce128", ce64=str(ce64), **kw), tmp_path / "cce128",
                           progress=False)
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 2 and ckpt["ce64"] is not None and ckpt["rng_device"] == device.type
    model = load_model(path, device=device)
    assert isinstance(model, CascadeContextEncoder) and next(model.parameters()).device.type == device.type
    assert not any(p.requires_grad for p in model.ce64.parameters())
    x = torch.rand(2, 3, 128, 128, device=device) * 2 - 1
    m = make_masks("random_blocks", 2, 128, device=device)
    with torch.no_grad():
        out = model.inpaint(x, m)
    assert torch.isfinite(out).all() and torch.equal(out * (1 - m), x * (1 - m))


def check_nsd_loss_step(device: torch.device, model: str, nsd_norm: str) -> None:
    """Two fast-path steps with the NSD loss (lambda 0.5): five finite losses, NSD_batch in [0, 1] for the
    scale-free norm, and G's bottleneck in bf16 (on CUDA; fp32 on a CPU) in the main pass and the penalty's."""
    cfg = make_config("smoke", model=model, ce64="(test)" if model == "cce128" else None, nsd_weight=0.5,
                      nsd_norm=nsd_norm, **dict(SMALL, device=str(device)))
    bf16 = device.type == "cuda"
    assert cfg.amp == bf16 and cfg.device_rng
    g, d, prepare, opt_g, opt_d = untrained(cfg, device)
    dtypes = []
    g.bottleneck_conv.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    nsd_gen = make_nsd_generator(cfg, device)
    assert nsd_gen.device.type == device.type
    step = train_mod.make_step(cfg, g, d, opt_g, opt_d, prepare, nsd_gen=nsd_gen)
    images = torch.randint(0, 256, (16, 3, 128, 128), dtype=torch.uint8, device=device)
    gen, masks = make_generator(cfg, device), make_mask_stream(cfg, device)
    before = g.bottleneck_conv.weight.detach().clone()
    for _ in range(2):
        losses = step(*next_batch(cfg, images, gen, device, masks))
        assert losses.shape == (5,) and torch.isfinite(losses).all(), losses
    assert 0 <= float(losses[4]) and (nsd_norm != "batch" or float(losses[4]) <= 1 + 1e-3), losses
    assert len(dtypes) == 4 and set(dtypes) == {torch.bfloat16 if bf16 else torch.float32}  # 2 passes per step
    assert not torch.equal(before, g.bottleneck_conv.weight)


def check_nsd_loss_run(device: torch.device, tmp_path: Path, folder: str) -> None:
    """A 2-step run with the NSD loss: its log has the NSD term, its checkpoint the NSD masks' stream of
    ``device``."""
    cfg = make_config("smoke", model="ce128", data=[folder], steps=2, nsd_weight=0.5, **dict(SMALL, device=str(device)))
    path = train_mod.train(cfg, tmp_path / "nsd-loss", progress=False)
    assert np.isfinite(read_log(path.parent)[-1]["nsd"])
    assert load_checkpoint(path)["nsd_rng_device"] == device.type


def check_evaluation(device: torch.device) -> None:
    """NSD (three readings) and in-hole quality of an untrained 64 CE, 128 CE and cascade on ``device``: finite,
    one value per image, and the CPU's numbers (within the GPU's TF32 convolutions' error)."""
    torch.manual_seed(0)
    tiny = dict(mask="random_blocks", width=16, bottleneck=64, batch_size=8, device="cpu")
    ce64 = build_models(make_config("smoke", model="ce64", **tiny))[0].eval()
    ce128 = build_models(make_config("smoke", model="ce128", **tiny))[0].eval()
    models = {"ce64": ce64, "ce128": ce128,
              "cce128": CascadeContextEncoder(copy.deepcopy(ce64), copy.deepcopy(ce128)).eval()}
    images = torch.randint(0, 256, (3, 3, 128, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    masks = eval_masks("random_blocks", 4, seed=0)
    for name, cpu_model in models.items():
        model = copy.deepcopy(cpu_model).to(device)
        nsd, ref = (model_nsd(m, images, masks, batch_size=2, progress=False) for m in (model, cpu_model))
        for reading in ("raw", "standardized", "normalized"):
            got, want = getattr(nsd, reading), getattr(ref, reading)
            assert got.k == 3 and got.n == 4 and np.isfinite(got.per_image).all(), (name, reading)
            assert np.allclose(got.per_image, want.per_image, rtol=0.05, atol=0), (name, reading)  # raw: ~1e-8
        quality, ref_q = (model_quality(m, images, masks[:2], batch_size=2) for m in (model, cpu_model))
        for measure, values in quality.items():
            assert values.shape == (3,) and np.isfinite(values).all(), (name, measure)
            assert np.allclose(values, ref_q[measure], rtol=0.01, atol=0.01), (name, measure)


@needs_cuda
def test_cascade_trains_on_cuda(tmp_path, folder):
    check_cascade_training(CUDA, tmp_path, folder)


@needs_cuda
@pytest.mark.parametrize("model, nsd_norm", [("ce128", "batch"), ("cce128", "running")])
def test_nsd_loss_step_in_bf16(model, nsd_norm):
    check_nsd_loss_step(CUDA, model, nsd_norm)


@needs_cuda
def test_nsd_loss_run_on_cuda(tmp_path, folder):
    check_nsd_loss_run(CUDA, tmp_path, folder)


@needs_cuda
def test_evaluation_on_cuda_matches_the_cpu():
    check_evaluation(CUDA)


def test_checks_on_the_cpu(tmp_path, folder, one_thread):
    """The checks above on the CPU (fp32; bf16 is CUDA's), so that an error in them shows without a GPU."""
    cpu = torch.device("cpu")
    check_cascade_training(cpu, tmp_path, folder)
    check_nsd_loss_step(cpu, "ce128", "batch")
    check_nsd_loss_step(cpu, "cce128", "running")
    check_nsd_loss_run(cpu, tmp_path, folder)
    check_evaluation(cpu)
