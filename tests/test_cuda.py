"""The fast path on CUDA (issue 17): a few steps of each model in bf16 and channels-last, the batched masks on the
device, a checkpoint saved and loaded, a time-limited run. Skipped where CUDA does not exist; under 30 s on one
GPU. The GPU command of book/rerun.md runs this file first, so that a CUDA fault shows in seconds, not after the
benchmark."""

import json

import pytest
import torch

import cce_core.train as train_mod
from cce_core.batches import MaskStream, make_generator, make_mask_stream, next_batch
from cce_core.cascade import CascadeContextEncoder
from cce_core.checkpoint import build_models, load_checkpoint, load_model, read_log
from cce_core.config import make_config
from cce_core.masks import fill_hole, make_masks
from cce_core.models import ContextEncoder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CUDA = torch.device("cuda")
SMALL = dict(mask="random_blocks", batch_size=8, width=16, bottleneck=64, device="cuda", fast=True, log_every=1,
             checkpoint_every=2)


@pytest.mark.parametrize("model", ["ce64", "ce128", "cce128"])
def test_fast_steps_in_bf16_and_channels_last(model):
    """Three fast-path steps: finite losses, G's convolutions really run in bf16, weights in channels-last, and
    the batch (images, batched masks) drawn on the device."""
    cfg = make_config("smoke", model=model, ce64="(test)" if model == "cce128" else None, **SMALL)
    assert cfg.amp and cfg.channels_last and cfg.device_rng and cfg.fused_adam
    torch.manual_seed(0)
    g, d = build_models(cfg)
    prepare, cascade = fill_hole, None
    if model == "cce128":
        cascade = CascadeContextEncoder(ContextEncoder(64, cfg.bottleneck, cfg.output, cfg.variant, cfg.width), g)
        prepare = cascade.prepare_input
    opt_g, opt_d = train_mod.setup_training(cfg, g, d, CUDA, extra=cascade)
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


def test_batched_masks_on_the_device():
    gen = torch.Generator(device=CUDA).manual_seed(0)
    for kind in ("random_blocks", "random_region"):
        m = make_masks(kind, 16, 128, gen)
        assert m.device.type == "cuda" and set(m.unique().tolist()) <= {0.0, 1.0} and m.sum() > 0
    cfg = make_config("smoke", **{**SMALL, "mask_chunk": 4})
    stream = MaskStream(cfg, CUDA)
    assert all(stream.next().device.type == "cuda" for _ in range(5))


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
