"""Training throughput (images/s) and peak memory of each model on the current device.

    python benchmarks/train_throughput.py                       # cpu preset sizes, on this machine's device
    python benchmarks/train_throughput.py --preset paper --batch-size 64 --json benchmarks/results/h100.json

Each measurement: ``--warmup`` untimed steps, then ``--repeats`` timed blocks of ``--steps`` iterations (one
iteration = D step + G step of :func:`cce_core.train.make_step`, on batches from :func:`cce_core.train.next_batch`,
masks and flips included); the median block is reported. Random images stand in for photographs: decoding is not
part of the step (the training loop decodes the data set once, before training).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cce_core.cascade import CascadeContextEncoder  # noqa: E402
from cce_core.masks import fill_hole  # noqa: E402
from cce_core.models import ContextEncoder  # noqa: E402
from cce_core.provenance import provenance, resolve_device  # noqa: E402
from cce_core.train import build_models, make_config, make_step, next_batch  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: str, mask: str, preset: str, batch_size: int | None, device: torch.device, steps: int,
            warmup: int, repeats: int) -> dict:
    """Median images/s over ``repeats`` blocks of ``steps`` iterations of one model's training step."""
    cfg = make_config(preset, model=model, mask=mask, batch_size=batch_size, ce64="(benchmark)" if model == "cce128" else None)
    torch.manual_seed(0)
    g, d = build_models(cfg)
    g.to(device), d.to(device)
    prepare = fill_hole
    if model == "cce128":
        ce64 = ContextEncoder(64, cfg.bottleneck, cfg.output, cfg.variant, cfg.width)
        prepare = CascadeContextEncoder(ce64, g).to(device).prepare_input
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999))
    step = make_step(cfg, g, d, opt_g, opt_d, prepare)
    images = torch.randint(0, 256, (256, 3, 128, 128), dtype=torch.uint8, device=device)
    gen = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step(*next_batch(cfg, images, gen, device))
    _sync(device)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            losses = step(*next_batch(cfg, images, gen, device))
        losses.tolist()
        _sync(device)
        rates.append(steps * cfg.batch_size / (time.perf_counter() - t))
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": model, "mask": mask, "preset": preset, "batch_size": cfg.batch_size, "width": cfg.width,
            "bottleneck": cfg.bottleneck, "images_per_s": statistics.median(rates), "all_rates": rates,
            "peak_memory_mb": peak / 2 ** 20, "memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", choices=["smoke", "cpu", "paper"])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--models", nargs="+", default=["ce64", "ce128", "cce128"])
    p.add_argument("--masks", nargs="+", default=["central", "random_blocks"])
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the figures to this file")
    a = p.parse_args()
    device = resolve_device(a.device)
    prov = provenance(device)
    print(f"device: {prov['device']}, torch {prov['torch']}, commit {prov['commit']}")
    rows = []
    for model in a.models:
        for mask in a.masks:
            r = measure(model, mask, a.preset, a.batch_size, device, a.steps, a.warmup, a.repeats)
            rows.append(r)
            print(f"{model:7s} {mask:14s} batch {r['batch_size']:4d} width {r['width']:3d} D {r['bottleneck']:5d}: "
                  f"{r['images_per_s']:9.1f} images/s  (peak {r['memory_kind']} {r['peak_memory_mb']:.0f} MiB)", flush=True)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"provenance": prov, "results": rows}, indent=1))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
