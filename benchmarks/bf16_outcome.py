"""Is bf16 training on a CPU accepted by what it trains? The outcome test of issue 32.

    python benchmarks/bf16_outcome.py --data D/train-gpu.zip --eval-data D/eval-imagenet250.zip \
        --out _build/bf16-outcome --json benchmarks/results/bf16-outcome-<date>.json
    python benchmarks/bf16_outcome.py ... --fp32-runs RUN/runs    # reuse a study's fp32 trainings of these seeds

For each training seed (default 0, 1, 2), the 128 CE and the cascade (with its own 64 CE) at the ``study`` preset
(19,200 samples, random blocks) are trained twice: in fp32 (the recipe, as the study trains them) and with bf16
autocast and channels-last (``amp=True, channels_last=True``: the networks' arithmetic, nothing else; the same
seed, so the same batches, flips and masks). Every model is then **evaluated in fp32** on the first k = 250
evaluation images with n = 25 evaluation masks per image (the scale ladder's): BN-normalised NSD, the in-hole PSNR
on the first 4 masks, and the cascade − CE difference in NSD that the book's headline is about.

Per seed and measure the bf16 − fp32 difference; over the seeds two one-sided t-tests
(:func:`cce_core.stats.seed_equivalence`, 90% interval inside ±margin). The margins were fixed before any run
(:data:`MARGINS`, also in ``tests/test_fast.py``) from the committed CPU study (5 seeds, 19,200 samples, commit
of the book's results before issue 32): each is about one between-seed sd of its measure there (NSD of the CE
0.0042, of the cascade 0.0041; in-hole PSNR 0.25 and 0.13 dB; the cascade − CE NSD difference 0.0032). The book
draws its conclusions at the seed level, so an arithmetic whose effect is shown to be smaller than what changing
the training seed does cannot move them. bf16 passes if every measure is "equivalent"; then ``--fast`` may pick it
on CPUs with native bf16 (:data:`cce_core.config.FAST_PICKS_CPU_BF16`). On a CPU without native bf16 the bf16
arm cannot run (the configuration falls back to fp32 and says so): the script refuses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cce_core.checkpoint import load_checkpoint, load_model
from cce_core.config import cpu_flags, make_config, native_bf16_cpu
from cce_core.evaluate import eval_images, eval_masks, model_nsd, model_quality
from cce_core.provenance import cpu_model, provenance
from cce_core.stats import seed_equivalence
from cce_core.train import train

#: The equivalence margins of bf16 − fp32, fixed before the first run (see the module docstring).
MARGINS = {"nsd_ce128": 0.004, "nsd_cce128": 0.004, "psnr_ce128": 0.2, "psnr_cce128": 0.2, "delta_nsd": 0.003}
Q = 4  # masks per image of the in-hole PSNR (the first Q of the n)


def _cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = cpu_flags(info)
    return {"model": cpu_model(info), "bf16_flags": [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags],
            "capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "native_bf16": native_bf16_cpu()}


def _fp32_run(runs: Path, seeds: list[int], seed: int, model: str, preset: str) -> Path:
    """A study's fp32 checkpoint of ``model`` for ``seed`` (the reproduction's layout: the first seed's runs in
    ``runs``, the others' in ``runs/seed<s>``), checked to be what this test compares against."""
    ckpt = (runs if seed == seeds[0] else runs / f"seed{seed}") / f"{model}-random_blocks" / "checkpoint.pt"
    cfg = load_checkpoint(ckpt)["config"]
    want = {"preset": preset, "seed": seed, "amp": False, "steps": make_config(preset).steps}
    if any(cfg.get(k) != v for k, v in want.items()) or not load_checkpoint(ckpt)["finished"]:
        raise ValueError(f"{ckpt} is not a finished fp32 study run of seed {seed}: {({k: cfg.get(k) for k in want})}")
    return ckpt


def _train(out: Path, data: list[str], seed: int, bf16: bool, preset: str, steps: int | None) -> dict[str, Path]:
    """The 64 CE, 128 CE and cascade of one seed and arm, trained (or reused) under ``out``."""
    extra = dict(amp=True, channels_last=True) if bf16 else {}
    ckpts = {}
    for model in ("ce64", "ce128", "cce128"):
        cfg = make_config(preset, model=model, mask="random_blocks", data=data, seed=seed, device="cpu",
                          ce64=str(ckpts["ce64"]) if model == "cce128" else None, steps=steps, **extra)
        if bf16 and not cfg.amp:
            raise SystemExit("this CPU has no native bf16: the bf16 arm would run in fp32 (see cce_core.config)")
        ckpts[model] = train(cfg, out / f"seed{seed}" / model, resume="auto", progress=True)
    return ckpts


def _measure(ckpt: Path, images: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    model = load_model(ckpt, "cpu")  # evaluated in fp32 whatever it was trained in
    nsd = model_nsd(model, images, masks, progress=False)
    quality = model_quality(model, images, masks[:Q])
    return {"nsd": float(nsd.normalized.per_image.mean()), "psnr": float(np.mean(quality["psnr"])),
            "nsd_per_image": nsd.normalized.per_image.astype(float).tolist()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="training images (the study's: train-gpu.zip)")
    p.add_argument("--eval-data", nargs="+", required=True, help="evaluation images (eval-imagenet250.zip)")
    p.add_argument("--out", type=Path, required=True, help="folder of the trainings (resumed if present)")
    p.add_argument("--fp32-runs", type=Path, help="a study's runs/ folder: its fp32 models of these seeds are reused")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--preset", default="study", help="training preset (the test: study; smoke for a quick check)")
    p.add_argument("--steps", type=int, help="training steps (default: the preset's; fewer for a quick check)")
    p.add_argument("--k", type=int, default=250, help="evaluation images")
    p.add_argument("--n", type=int, default=25, help="evaluation masks per image")
    p.add_argument("--json", type=Path, help="write the results here")
    a = p.parse_args(argv)
    cpu = _cpu()
    if not cpu["native_bf16"]:
        raise SystemExit(f"{cpu['model']} ({cpu['capability']}) has no native bf16: nothing to test here")
    t0, rows = time.perf_counter(), {}
    for s in a.seeds:
        fp32 = ({m: _fp32_run(a.fp32_runs, a.seeds, s, m, a.preset) for m in ("ce128", "cce128")} if a.fp32_runs
                else _train(a.out / "fp32", a.data, s, False, a.preset, a.steps))
        bf16 = _train(a.out / "bf16", a.data, s, True, a.preset, a.steps)
        images, masks = eval_images(a.eval_data, a.k, s).images, eval_masks("random_blocks", a.n, s)
        rows[s] = {arm: {m: _measure(ckpts[m], images, masks) for m in ("ce128", "cce128")}
                   for arm, ckpts in (("fp32", fp32), ("bf16", bf16))}
    diffs = {f"{x}_{m}": [rows[s]["bf16"][m][x] - rows[s]["fp32"][m][x] for s in a.seeds]
             for x in ("nsd", "psnr") for m in ("ce128", "cce128")}
    diffs["delta_nsd"] = [(rows[s]["bf16"]["cce128"]["nsd"] - rows[s]["bf16"]["ce128"]["nsd"])
                          - (rows[s]["fp32"]["cce128"]["nsd"] - rows[s]["fp32"]["ce128"]["nsd"]) for s in a.seeds]
    tests = {x: seed_equivalence(d, MARGINS[x]).as_dict() for x, d in diffs.items()}
    passed = all(t["verdict"] == "equivalent" for t in tests.values())
    for x, t in tests.items():
        ci = "none (one seed)" if t["ci90"] is None else f"[{t['ci90'][0]:+.5f}, {t['ci90'][1]:+.5f}]"
        print(f"{x:12s} bf16 - fp32 per seed {np.round(diffs[x], 5).tolist()}  90% CI {ci}  margin ±{t['margin']}  "
              f"{t['verdict']}")
    print(f"bf16 {'passes' if passed else 'does not pass'} the outcome test ({time.perf_counter() - t0:,.0f} s)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"cpu": cpu, "preset": a.preset, "steps": a.steps or make_config(a.preset).steps, "seeds": a.seeds,
                  "k": a.k, "n": a.n, "q": Q, "margins": MARGINS,
                  "per_seed": rows, "differences": diffs, "tests": tests, "passed": passed,
                  "provenance": provenance("cpu"), "argv": sys.argv[1:],
                  "fp32_runs": os.fspath(a.fp32_runs) if a.fp32_runs else None}
        a.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
