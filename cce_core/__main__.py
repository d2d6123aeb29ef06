"""Command line: ``python -m cce_core train | nsd | reproduce | compact`` (also installed as ``cce``).

Bad input (an unknown device, a missing or corrupt data file, an output that would overwrite something) is
reported as one line on stderr with exit status 2, before any work starts and without losing anything.
"""

from __future__ import annotations

import argparse
import ast
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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows ``(default: X)`` only for options that have a default worth showing: not for required options,
    switches, options without a default (None) or ones whose help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.required or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or "default" in text or not action.option_strings):
            return text
        return text + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's usage errors also exit 2, but print the whole usage first: keep them to one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(name: str, cast: type, valid, rule: str):
    """An argparse type: ``cast(text)`` that must satisfy ``valid``, else a one-line error naming ``name``."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {'a whole number' if cast is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"{name} must {rule}, got {value:g}")
        return value
    return parse


def _positive(name: str):
    return _number(name, int, lambda v: v >= 1, "be at least 1")


def _seed(name: str):
    """An argparse type for a seed: a whole number, 0 or more (the random streams derive from it)."""
    return _number(name, int, lambda v: v >= 0, "be 0 or more")


_fraction = _number("--max-bad-fraction", float, lambda v: 0 <= v <= 1, "lie in [0, 1]")
_seconds = _number("--time-budget", float, lambda v: v > 0, "be a positive number of seconds")
_masks = _number("--masks", int, lambda v: v >= 2, "be at least 2 (NSD compares codes under several masks)")


def preset_names() -> list[str]:
    """The names of the training presets, :data:`cce_core.config.PRESETS`' keys, read from config.py's source:
    importing it would import torch, and ``--help`` should answer at once."""
    tree = ast.parse(Path(__file__).with_name("config.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "PRESETS":
            return [ast.literal_eval(key) for key in node.value.keys]
    raise RuntimeError("cce_core/config.py defines no PRESETS")


#: What ``--fast`` does (:class:`cce_core.config.TrainConfig`, :func:`cce_core.config.bf16_pays`).
FAST_HELP = ("the fast path: same model and loss; masks and batches drawn on the device (32 steps of masks at a "
             "time), D frozen in the G step, mask checks on the device; on CUDA also bf16 autocast, channels-last, "
             "fused Adam and cuDNN autotuning; on a CPU fp32, the plain path's maths (bf16 is not picked, even on a "
             "CPU with native bf16: cce_core.config.FAST_PICKS_CPU_BF16)")


# The command handlers import the library where they run, not at the top: importing it (torch, scikit-image,
# papermill's callers) takes seconds, and `--help` or a usage error should answer at once. Nothing imports this
# module, so these imports cannot hide a circle (the layers contract in pyproject.toml has it on top).

def _train(a: argparse.Namespace) -> None:
    from .checkpoint import load_checkpoint
    from .config import make_config
    from .provenance import resolve_device
    from .train import train
    resolve_device(a.device)  # an unknown or missing device fails before anything is written
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a run folder")
    if a.resume and a.model == "cce128" and not a.ce64 and (out / "checkpoint.pt").exists():
        a.ce64 = load_checkpoint(out)["config"]["ce64"]  # the 64 CE is stored inside the cascade's checkpoint
    cfg = make_config(a.preset, model=a.model, mask=a.mask, data=a.data, steps=a.steps, batch_size=a.batch_size,
                      bottleneck=a.bottleneck, width=a.width, variant=a.variant, ce64=a.ce64, seed=a.seed,
                      device=a.device, limit=a.limit, upscale=a.upscale, max_bad_fraction=a.max_bad_fraction,
                      fast=a.fast or None, nsd_weight=a.nsd_weight, nsd_masks=a.nsd_masks,
                      nsd_norm=a.nsd_norm)
    run = train
    if "TORCHELASTIC_RUN_ID" in os.environ:  # under torchrun: the agent reports an exception's traceback
        from torch.distributed.elastic.multiprocessing.errors import record
        run = record(train)
    existed = out.exists()
    try:
        path = run(cfg, out, resume=a.resume, force=a.force, progress=not a.quiet, global_batch=a.global_batch)
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed start leaves no empty run folder behind
        raise
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 speaks
        print(f"checkpoint: {path}")


def _significant(values) -> list[float]:
    """Per-image NSD values for the JSON file, to 9 significant digits (a raw NSD can be far below 1e-8, so
    rounding to a fixed number of decimals would turn it into zeros)."""
    return [float(f"{v:.9g}") for v in values]


def _checkpoint_name(path: str) -> str:
    """A checkpoint named without the machine's path: its run folder and file name."""
    p = Path(path).resolve()
    return f"{p.name}/checkpoint.pt" if p.is_dir() else f"{p.parent.name}/{p.name}"


def _nsd(a: argparse.Namespace) -> None:
    from .data import EVAL_CROPS, describe_sources, load_images
    from .provenance import provenance, resolve_device
    device = resolve_device(a.device)
    out = Path(a.out) if a.out else None
    if out is not None and out.is_dir():  # checked before the NSD is computed, so no work is lost
        raise ValueError(f"--out {out} is a folder; give the name of the JSON file to write")
    sources = describe_sources(a.data, embedded_count=a.images)  # missing or corrupt data: fail now
    from .checkpoint import load_model
    from .evaluate import eval_masks, model_nsd
    model = load_model(a.checkpoint, device)
    # embedded crops: the evaluation stream of the seed (as the notebooks), apart from the training crops
    loaded = load_images(a.data, limit=a.images, embedded_count=a.images, seed=a.seed, purpose=EVAL_CROPS,
                         max_bad_fraction=a.max_bad_fraction, progress=not a.quiet)
    if len(loaded) < a.images:
        print(f"warning: only {len(loaded)} images in {' '.join(a.data)}, fewer than --images {a.images}",
              file=sys.stderr)
    masks = eval_masks(a.mask, a.masks, a.seed)
    res = model_nsd(model, loaded.images, masks, progress=not a.quiet)
    readings = {"raw": res.raw, "standardized": res.standardized}
    if getattr(res, "normalized", None) is not None:  # the BN-normalised reading, where evaluate provides it
        readings["normalized"] = res.normalized
    for kind, r in readings.items():
        label = {"standardized": "standardised", "normalized": "normalised"}.get(kind, kind)
        print(f"{label + ':':14}{r}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"checkpoint": _checkpoint_name(a.checkpoint), "data": sources, "k": res.raw.k, "n": res.raw.n,
                  "mask": a.mask, "seed": a.seed, "images": loaded.names}  # per_image[i] is images[i]'s value
        for kind, r in readings.items():
            record[kind] = {"mean": r.mean, "std": r.std, "per_image": _significant(r.per_image)}
        record["provenance"] = provenance(device)
        out.write_text(json.dumps(record, indent=1))
        print(f"per-image values: {out}")


def _reproduce(a: argparse.Namespace) -> None:
    from .reproduce import reproduce
    reproduce(preset=a.preset, data=a.data, eval_data=a.eval_data, ood_data=a.ood_data, out=a.out,
              device=a.device, seed=a.seed, book=not a.no_book, force=a.force, time_budget=a.time_budget,
              pack=a.pack, seeds=a.seeds, fast=a.fast, nsd_loss=a.nsd_loss,
              loss_variants=a.loss_variants, central_once=a.central_once, ladder=a.ladder,
              train_only=a.train_only, nsd_loss_seeds=a.nsd_loss_seeds, notebooks=a.notebooks,
              allow_dirty=a.allow_dirty, fair_ladder=a.fair_ladder, gap=a.gap,
              gap_cells=a.gap_cells, extend_ladder=a.extend_ladder)


def _compact(a: argparse.Namespace) -> None:
    from .reproduce import compact_generated
    folder = Path(a.folder)
    size = lambda: sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())  # noqa: E731
    before = size()
    compact_generated(folder)
    print(f"{folder}: {before / 2**20:.1f} MiB -> {size() / 2**20:.1f} MiB")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser. Long because it declares every option of the three commands, one statement
    each, in the order ``--help`` shows them; there is no logic to split out."""
    p = ArgumentParser(prog="python -m cce_core", description="Cascade context encoder (arXiv:1803.04033): "
                       "train the context encoders, measure NSD, reproduce the paper's book.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    device_help = "auto (a GPU if there is one, else the CPU), cpu, cuda, cuda:1 ...; a device named must exist"

    t = sub.add_parser("train", help="train a 64 CE, a 128 CE or the cascade's 128 CE", formatter_class=HelpFormatter)
    t.add_argument("--model", required=True, choices=["ce64", "ce128", "cce128"],
                   help="ce64: the 64x64 CE; ce128: the plain 128x128 CE; cce128: the cascade's 128 CE (needs --ce64)")
    t.add_argument("--mask", default="random_blocks", choices=["central", "random_blocks", "random_region"],
                   help="the masks it learns to fill")
    t.add_argument("--preset", default="smoke", choices=preset_names(),
                   help="smoke: seconds on a CPU; cpu: minutes on train-mini; study: the cpu sizes trained twice as "
                        "long, with snapshots for reproduce --ladder; paper: D=4000, width 64, for a GPU")
    t.add_argument("--data", nargs="+", default=["embedded"], metavar="PATH", help="'embedded', folders or zips")
    t.add_argument("--out", required=True, help="run directory (config.json, log.jsonl, checkpoint.pt)")
    t.add_argument("--ce64", help="checkpoint (or run directory) of the trained 64 CE, for --model cce128")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--force", action="store_true", help="overwrite a previous run in --out")
    for name, what in [("steps", "iterations"), ("batch-size", "images per batch"), ("bottleneck", "D, the code size"),
                       ("width", "channels of the first layer")]:
        t.add_argument(f"--{name}", type=_positive(f"--{name}"), metavar="N", help=f"{what} (default: the preset's)")
    t.add_argument("--limit", type=_positive("--limit"), metavar="N", help="use only the first N images (default: all)")
    t.add_argument("--variant", choices=["R", "W"], help="64 CE widths, spec 6.2 (default: R)")
    t.add_argument("--upscale", choices=["bilinear", "bicubic", "nearest"],
                   help="the cascade's x2 filter (default: bilinear)")
    t.add_argument("--max-bad-fraction", type=_fraction, metavar="F",
                   help="share of unreadable or too small image files tolerated (default: 0.05)")
    t.add_argument("--seed", type=_seed("--seed"), default=0, help="seed of the weights, batches and masks")
    t.add_argument("--device", default="auto", help=device_help)
    t.add_argument("--nsd-weight", type=float, metavar="LAMBDA",
                   help="beyond the paper: weight of the NSD loss added to G's (default 0: the paper's recipe)")
    t.add_argument("--nsd-masks", type=int, metavar="M",
                   help="masks per image and step for the NSD loss (default 2; only with --nsd-weight)")
    t.add_argument("--nsd-norm", choices=("batch", "running"),
                   help="the NSD loss's scale: the batch codes' spread (default, scale-free) or the bottleneck "
                        "BatchNorm's running variance (the first version)")
    t.add_argument("--fast", action="store_true", help=FAST_HELP)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--global-batch", action="store_true",
                   help="under torchrun: every process draws the whole global batch from the single-process "
                        "stream and keeps its share (the batches of a 1-process run; to check a multi-GPU run)")
    t.set_defaults(func=_train)

    n = sub.add_parser("nsd", help="NSD of a trained model over k images x n masks (paper section 3)",
                       formatter_class=HelpFormatter)
    n.add_argument("--checkpoint", required=True, help="checkpoint.pt or run directory")
    n.add_argument("--data", nargs="+", required=True, metavar="PATH",
                   help="evaluation images (folder, zip, or 'embedded': held-out crops drawn from the seed's own "
                        "stream 'evaluation crops', apart from the training crops)")
    n.add_argument("--images", type=_positive("--images"), default=250, metavar="K",
                   help="k: number of images (the first k)")
    n.add_argument("--masks", type=_masks, default=100, metavar="N", help="n: number of masks (2 or more)")
    n.add_argument("--mask", default="random_blocks", choices=["random_blocks", "random_region"],
                   help="kind of the n masks")
    n.add_argument("--seed", type=_seed("--seed"), default=0, help="seed of the masks (and of embedded crops)")
    n.add_argument("--max-bad-fraction", type=_fraction, default=0.05, metavar="F",
                   help="share of unreadable or too small image files tolerated")
    n.add_argument("--device", default="auto", help=device_help)
    n.add_argument("--out", metavar="FILE.json", help="write the per-image values, the image names and provenance here")
    n.add_argument("--quiet", action="store_true", help="no progress bar")
    n.set_defaults(func=_nsd)

    r = sub.add_parser("reproduce", help="run the book's notebooks with papermill and build the book",
                       formatter_class=HelpFormatter)
    r.add_argument("--preset", default="smoke", choices=preset_names(),
                   help="the training preset of all six models (see train --help); study: the cpu sizes for "
                        "19,200 samples with snapshots for --ladder")
    r.add_argument("--data", nargs="+", default=["embedded"], metavar="PATH", help="training images")
    r.add_argument("--eval-data", nargs="+", metavar="PATH",
                   help="NSD images (default: 'embedded' held-out crops when training on 'embedded'; else required)")
    r.add_argument("--ood-data", nargs="+", metavar="PATH", help="out-of-distribution NSD images (optional)")
    r.add_argument("--out", required=True, help="output folder (executed notebooks, runs, and the built book)")
    r.add_argument("--device", default="auto", help=device_help)
    seed = r.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=_seed("--seed"), default=0, help="seed of the trainings and of the NSD masks")
    seed.add_argument("--seeds", type=_seed("--seeds"), nargs="+", metavar="K",
                      help="train and measure every model once per seed (the first in runs/, the others in "
                           "runs/seed<K>); the book shows the first and compares the seeds")
    r.add_argument("--no-book", action="store_true", help="skip building the HTML book")
    r.add_argument("--nsd-loss", action="store_true",
                   help="beyond the paper: also train the 128 CE and the cascade with the NSD loss at two weights, "
                        "for every seed, and add the chapter 'Beyond the paper' (not covered by --time-budget)")
    r.add_argument("--nsd-loss-seeds", type=_seed("--nsd-loss-seeds"), nargs="+", metavar="K",
                   help="--nsd-loss for these seeds only (a subset of --seeds; implies --nsd-loss)")
    r.add_argument("--loss-variants", action="store_true",
                   help="also train the three random-block models with the paper's eq. (1) loss weighting (missing "
                        "pixels only; runs/<model>-random_blocks-hole) and compare their NSD and quality with the "
                        "default uniform weighting (not covered by --time-budget)")
    r.add_argument("--central-once", action="store_true",
                   help="train the central-mask models for the first seed only (they serve the figures; the NSD "
                        "claim rests on the random-block models of every seed)")
    r.add_argument("--ladder", action="store_true",
                   help="the scale ladder (needs 2 or more seeds and a preset with snapshots a factor 2 apart, e.g. "
                        "study): NSD and quality of every seed's 128 CE and cascade at 4 training lengths, and its "
                        "page in the book")
    r.add_argument("--fair-ladder", action="store_true",
                   help="with --ladder: also a cascade per seed and ladder point whose 64 CE and 128 stage have both "
                        "seen that point's samples (3 more cascade trainings per seed), and that ladder beside it")
    r.add_argument("--extend-ladder", action="store_true",
                   help="with --fair-ladder: one more point at twice the preset's length (38,400 samples at the study "
                        "preset): each seed's 128 CE and 64 CE continued there in runs of their own and a cascade "
                        "trained that long (about 30 min per seed on 2 CPU cores)")
    r.add_argument("--gap", action="store_true",
                   help="the page 'Why our NSD is far below the paper's': every seed's CE and cascade read in each "
                        "evaluation-side way, with the chance line (needs 2 or more seeds)")
    r.add_argument("--gap-cells", action="store_true",
                   help="with --gap: also train that page's training-side cells (bottleneck D = 4000, one mask per "
                        "batch, width 64, noise fill; half the preset's samples, 2-3 seeds each: about 105 min on "
                        "2 CPU cores at the study preset) and compare each with the seed's own models")
    r.add_argument("--train-only", action="store_true",
                   help="train every model and stop (run.json says 'trained'); the same command without it later "
                        "reuses the trainings and runs the notebooks")
    r.add_argument("--notebooks", nargs="+", metavar="NAME",
                   help="execute only these notebooks (training, scale_ladder, nsd_eval, figures, nsd_loss) into "
                        "an --out where an earlier call executed the others, which are kept (e.g. nsd_loss after "
                        "adding its trainings); the trainings are reused or made first")
    r.add_argument("--fast", action="store_true", help=FAST_HELP)
    r.add_argument("--time-budget", type=_seconds, metavar="SECONDS",
                   help="bound the whole call: each training stops at its share, the NSD and figures still run "
                        "(not with --ladder, whose trainings must run their full length)")
    r.add_argument("--pack", metavar="FILE.tar.gz",
                   help="also write OUT/generated as one archive (at most 16 MiB), even if a notebook fails")
    r.add_argument("--force", action="store_true", help="retrain the runs already in --out, and write into an "
                   "--out that holds other files (they are left alone)")
    r.add_argument("--allow-dirty", action="store_true",
                   help="run although cce_core/ or notebooks/ differ from the git commit (else refused); the "
                        "provenance then says -dirty")
    r.set_defaults(func=_reproduce)

    c = sub.add_parser("compact", help="make a reproduction's executed notebooks and figures small, in place "
                       "(nothing is re-run)", formatter_class=HelpFormatter)
    c.add_argument("folder", help="the generated/ folder of a reproduction (with run.json), e.g. book/generated")
    c.set_defaults(func=_compact)
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    from .config import keep_freed_memory
    from .reproduce import ReproductionFailed
    keep_freed_memory()  # host-side speed on the CPU, results unchanged
    try:
        a.func(a)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except ReproductionFailed as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
