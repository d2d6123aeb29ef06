"""A short sweep of the NSD loss's weight lambda (beyond the paper, :mod:`cce_core.losses`), to choose the values
that ``reproduce --nsd-loss`` trains.

The 128 CE with random blocks at one preset (``cpu``: 300 steps of 32 on train-mini), one seed, for each lambda;
then, on the same k held-out images and n masks: NSD (BN-normalised and eval-standardised), the codes' between-image
spread relative to lambda = 0 (the collapse check), in-hole PSNR/L1/SSIM of q masks, and from the last log line the
bottleneck convolution's weight norm and running / batch code variance. Prints one markdown row per lambda.

    PYTHONPATH=$PWD python benchmarks/nsd_loss_sweep.py --data ../shared/data/photos128/train-mini.zip \\
        --eval-data ../shared/data/photos128/eval-imagenet250.zip --lambdas 0 0.1 0.3 1 3 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cce_core.checkpoint import read_log
from cce_core.data import load_images
from cce_core.evaluate import eval_masks, evaluate_nsd_runs
from cce_core.runs import ensure_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--eval-data", nargs="+", required=True)
    p.add_argument("--lambdas", nargs="+", type=float, default=[0.0, 0.1, 0.3, 1.0, 3.0, 10.0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--model", default="ce128", choices=("ce128", "cce128"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--q", type=int, default=4)
    p.add_argument("--runs", default="_build/nsd-sweep/runs")
    a = p.parse_args()
    lambdas = sorted(set([0.0] + a.lambdas))
    data = [str(Path(d).resolve()) for d in a.data]
    ckpts, seconds = {}, {}
    for lam in lambdas:
        ckpts[lam] = ensure_run(a.runs, a.model, "random_blocks", a.preset, data, seed=a.seed, device="cpu",
                                nsd_weight=lam)
        run = Path(ckpts[lam]).parent  # its training seconds, from the speed of each log line (reused runs too)
        cfg = json.loads((run / "config.json").read_text())["config"]
        log = read_log(run)
        steps = [r["step"] - prev for r, prev in zip(log, [0] + [r["step"] for r in log])]
        seconds[lam] = sum(n * cfg["batch_size"] / r["images_per_s"] for n, r in zip(steps, log))
        print(f"lambda = {lam:g}: {seconds[lam]:.0f} s of training", flush=True)
    images = load_images(a.eval_data, limit=a.k, seed=a.seed + 1000, progress=False).images
    masks = eval_masks("random_blocks", a.n, seed=a.seed)
    res = evaluate_nsd_runs(ckpts, images, masks, masks[:a.q])
    base = res[0.0]["code_spread"]
    print("| λ | train s | ‖W‖ | running/batch var | NSD BN-norm | NSD eval-std | code spread / λ=0 | "
          "inpainting spread | PSNR | L1 | SSIM |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for lam, r in res.items():
        last = read_log(Path(ckpts[lam]).parent)[-1]
        q = {name: float(v.mean()) for name, v in r["quality"].items()}
        print(f"| {lam:g} | {seconds[lam]:.0f} | {last['code_weight_norm']:.3f} | {last['code_var_ratio']:.3f} | "
              f"{r['nsd'].normalized.mean:.4f} | {r['nsd'].standardized.mean:.4f} | {r['code_spread'] / base:.3f} | "
              f"{r['fill_spread']:.4f} | {q['psnr']:.2f} | {q['l1']:.4f} | {q['ssim']:.4f} |")


if __name__ == "__main__":
    main()
