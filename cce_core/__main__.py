"""Command line: ``python -m cce_core train | nsd | reproduce`` (also installed as ``cce``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EPILOG = """examples:
  python -m cce_core train --model ce64 --mask random_blocks --preset smoke --out runs/ce64
  python -m cce_core train --model cce128 --mask random_blocks --preset smoke --ce64 runs/ce64 --out runs/cce
  python -m cce_core nsd --checkpoint runs/cce --data ../shared/data/photos128/eval-imagenet250.zip
  python -m cce_core reproduce --preset smoke --out _build/smoke
  torchrun --nproc_per_node=4 -m cce_core train --model ce128 --preset paper --data DATA --out runs/ce128

Data: 'embedded' (photos shipped with scikit-image, no download), a folder of JPEG/PNG images, or stored zips
such as ../shared/data/photos128/train-00.zip (several may be given)."""


def _train(a: argparse.Namespace) -> None:
    from .train import make_config, train
    if a.resume and a.model == "cce128" and not a.ce64 and (Path(a.out) / "config.json").exists():
        a.ce64 = json.loads((Path(a.out) / "config.json").read_text())["config"]["ce64"]  # stored with the run
    cfg = make_config(a.preset, model=a.model, mask=a.mask, data=a.data, steps=a.steps, batch_size=a.batch_size,
                      bottleneck=a.bottleneck, width=a.width, variant=a.variant, ce64=a.ce64, seed=a.seed,
                      device=a.device, limit=a.limit, upscale=a.upscale, max_bad_fraction=a.max_bad_fraction)
    run = train
    if "TORCHELASTIC_RUN_ID" in os.environ:  # under torchrun: the agent reports an exception's traceback
        from torch.distributed.elastic.multiprocessing.errors import record
        run = record(train)
    path = run(cfg, a.out, resume=a.resume, force=a.force, progress=not a.quiet, global_batch=a.global_batch)
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 speaks
        print(f"checkpoint: {path}")


def _significant(values) -> list[float]:
    """Per-image NSD values for the JSON file, to 9 significant digits (a raw NSD can be far below 1e-8, so
    rounding to a fixed number of decimals would turn it into zeros)."""
    return [float(f"{v:.9g}") for v in values]


def _nsd(a: argparse.Namespace) -> None:
    from .data import load_images
    from .evaluate import eval_masks, model_nsd
    from .provenance import provenance, resolve_device
    from .train import load_model
    device = resolve_device(a.device)
    model = load_model(a.checkpoint, device)
    images = load_images(a.data, limit=a.images, progress=not a.quiet).images
    if a.images and len(images) < a.images:
        print(f"warning: only {len(images)} images in {a.data}, fewer than --images {a.images}", file=sys.stderr)
    masks = eval_masks(a.mask, a.masks, a.seed)
    res = model_nsd(model, images, masks, progress=not a.quiet)
    print(f"raw:          {res.raw}")
    print(f"standardised: {res.standardized}")
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "checkpoint": str(a.checkpoint), "data": a.data, "k": res.raw.k, "n": res.raw.n, "mask": a.mask,
            "seed": a.seed, "raw": {"mean": res.raw.mean, "std": res.raw.std, "per_image": _significant(res.raw.per_image)},
            "standardized": {"mean": res.standardized.mean, "std": res.standardized.std,
                             "per_image": _significant(res.standardized.per_image)},
            "provenance": provenance(device)}, indent=1))
        print(f"per-image values: {out}")


def _reproduce(a: argparse.Namespace) -> None:
    from .reproduce import reproduce
    reproduce(preset=a.preset, data=a.data, eval_data=a.eval_data, ood_data=a.ood_data, out=a.out,
              device=a.device, seed=a.seed, book=not a.no_book, force=a.force)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cce_core", description="Cascade context encoder (arXiv:1803.04033): "
                                "train the context encoders, measure NSD, reproduce the paper's book.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a 64 CE, a 128 CE or the cascade's 128 CE",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--model", required=True, choices=["ce64", "ce128", "cce128"],
                   help="ce64: the 64x64 CE; ce128: the plain 128x128 CE; cce128: the cascade's 128 CE (needs --ce64)")
    t.add_argument("--mask", default="random_blocks", choices=["central", "random_blocks", "random_region"])
    t.add_argument("--preset", default="smoke", choices=["smoke", "cpu", "paper"],
                   help="smoke: seconds on a CPU; cpu: minutes on train-mini; paper: D=4000, width 64, for a GPU")
    t.add_argument("--data", nargs="+", default=["embedded"], metavar="PATH", help="'embedded', folders or zips")
    t.add_argument("--out", required=True, help="run directory (config.json, log.jsonl, checkpoint.pt)")
    t.add_argument("--ce64", help="checkpoint (or run directory) of the trained 64 CE, for --model cce128")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--force", action="store_true", help="overwrite a previous run in --out")
    for name, typ in [("steps", int), ("batch-size", int), ("bottleneck", int), ("width", int), ("limit", int)]:
        t.add_argument(f"--{name}", type=typ, help="override the preset's value")
    t.add_argument("--variant", choices=["R", "W"], help="64 CE widths (spec 6.2)")
    t.add_argument("--upscale", choices=["bilinear", "bicubic", "nearest"], help="the cascade's x2 filter")
    t.add_argument("--max-bad-fraction", type=float, help="share of unreadable/too-small image files tolerated (0.05)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--global-batch", action="store_true",
                   help="under torchrun: every process draws the whole global batch from the single-process "
                        "stream and keeps its share (the batches of a 1-process run; to check a multi-GPU run)")
    t.set_defaults(func=_train)

    n = sub.add_parser("nsd", help="NSD of a trained model over k images x n masks (paper section 3)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    n.add_argument("--checkpoint", required=True, help="checkpoint.pt or run directory")
    n.add_argument("--data", nargs="+", required=True, metavar="PATH", help="evaluation images (folder, zip, 'embedded')")
    n.add_argument("--images", type=int, default=250, help="k: number of images (the first k)")
    n.add_argument("--masks", type=int, default=100, help="n: number of masks")
    n.add_argument("--mask", default="random_blocks", choices=["random_blocks", "random_region"])
    n.add_argument("--seed", type=int, default=0, help="seed of the masks")
    n.add_argument("--device", default="auto")
    n.add_argument("--out", help="write the per-image values and provenance to this JSON file")
    n.add_argument("--quiet", action="store_true")
    n.set_defaults(func=_nsd)

    r = sub.add_parser("reproduce", help="run the book's notebooks with papermill and build the book",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("--preset", default="smoke", choices=["smoke", "cpu", "paper"])
    r.add_argument("--data", nargs="+", default=["embedded"], metavar="PATH", help="training images")
    r.add_argument("--eval-data", nargs="+", default=None, metavar="PATH",
                   help="NSD images (default: the training source for 'embedded', else required)")
    r.add_argument("--ood-data", nargs="+", default=None, metavar="PATH", help="out-of-distribution NSD images")
    r.add_argument("--out", required=True, help="output folder (executed notebooks, runs, and the built book)")
    r.add_argument("--device", default="auto")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--no-book", action="store_true", help="skip building the HTML book")
    r.add_argument("--force", action="store_true", help="retrain models whose runs already exist in --out")
    r.set_defaults(func=_reproduce)

    a = p.parse_args(argv)
    try:
        a.func(a)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
