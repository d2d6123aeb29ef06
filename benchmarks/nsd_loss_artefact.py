"""Does the NSD loss's effect survive the scale-free penalty? Issue 20's measurement, repeated for both
normalisations (``TrainConfig.nsd_norm``): the tiny 128 CE of ``tests/test_nsd_loss.py`` (width 8, D = 16,
batches of 8, 60 steps on 12 synthetic pictures, one thread) at lambda = 0 and 10; then the bottleneck
convolution's weight norm and running / batch code variance (last log line), NSD BN-normalised and
eval-standardised and the codes' between-image spread (8 images x 6 masks). Smoke size: a check of the
mechanism, not evidence about the method.

    PYTHONPATH=$PWD python benchmarks/nsd_loss_artefact.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from cce_core.checkpoint import load_model, read_log
from cce_core.config import make_config
from cce_core.data import load_images
from cce_core.evaluate import code_scale, encode_all, eval_masks
from cce_core.train import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic import write_pictures  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        write_pictures(folder, 12)
        images = load_images([str(folder)], progress=False).images[:8]
        masks = eval_masks("random_blocks", 6, seed=1)
        print("| nsd_norm | λ | ‖W‖ | running/batch var | NSD BN-norm | NSD eval-std | codes' spread |")
        print("|---|---|---|---|---|---|---|")
        for norm, lam in (("running", 0.0), ("running", 10.0), ("batch", 10.0)):
            c = make_config("smoke", model="ce128", mask="random_blocks", data=[str(folder)], steps=60, batch_size=8,
                            width=8, bottleneck=16, log_every=60, checkpoint_every=60, device="cpu",
                            nsd_weight=lam, nsd_norm=norm)
            out = Path(tmp) / f"{norm}-{lam:g}"
            g = load_model(train(c, out, progress=False))
            last = read_log(out)[-1]
            acc = encode_all(g, images, masks, progress=False)
            scale = code_scale(g).double()
            print(f"| {norm if lam else '–'} | {lam:g} | {last['code_weight_norm']:.2f} | "
                  f"{last['code_var_ratio']:.2f} | "
                  f"{acc.result(scale=scale).mean:.3f} | {acc.result(standardize=True).mean:.3f} | "
                  f"{float((acc.mean / scale).var(0).mean()):.3f} |", flush=True)


if __name__ == "__main__":
    main()
