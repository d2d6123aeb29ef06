"""Measuring trained models: NSD (paper section 5), inpaintings and their quality, and both along training.

**NSD**: k images x n masks through an encoder, streamed over masks. The same n masks are used for every image
and for every model compared, so two models can be compared pairwise (:func:`cce_core.stats.paired_comparison`).
A 64 CE is evaluated on the images and masks downscaled by the cascade's ``down``, i.e. on what it sees inside
the cascade.

**Quality measures** (per image, over the missing pixels only, on images scaled to [0, 1]):

* ``l1``: mean absolute error in the hole (lower is better);
* ``psnr``: 10 log10(1 / MSE) in the hole, in dB (higher is better; it rewards blur, as the paper warns in
  section 3: a blurred mean prediction minimises the squared error);
* ``ssim``: scikit-image's ``structural_similarity`` (7x7 uniform window, ``data_range=1``) computed on the whole
  inpainted 128x128 image, its SSIM map then averaged over the missing pixels: the similarity of the local
  structure around every missing pixel (each window reaches 3 pixels into the known border). Averaging the whole
  map instead would mostly count known pixels, which are identical by construction.

Every model is measured at 128x128: a 64 CE's inpainting is upscaled x2 into the 128 hole, exactly what the
cascade feeds its 128 CE (section 4.2, step (iii)), so the six models are measured on the same pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity
from tqdm import tqdm

from .cascade import CascadeContextEncoder, downscale, downscale_mask, upscale
from .checkpoint import atomic_write_text, load_checkpoint, load_model, open_cache, snapshot_path, trained_commit
from .data import EVAL_CROPS, ImageSet, load_images, to_float
from .masks import MaskKind, fill_hole, make_masks, paste
from .models import ContextEncoder
from .nsd import NSDResult, StreamingNSD
from .provenance import file_sha256, measured_by
from .seeding import derive_seed

Encoder = ContextEncoder | CascadeContextEncoder


#: The purpose of the evaluation masks' stream (:func:`cce_core.seeding.derive_seed`).
EVAL_MASK_STREAM = "evaluation masks"


def eval_masks(kind: MaskKind, n: int, seed: int = 0, size: int = 128) -> torch.Tensor:
    """The n evaluation masks (n, 1, size, size), shared by all images and models, drawn once from
    ``derive_seed(seed, "evaluation masks")``: a stream of its own, which never meets the training masks of the
    run with the same seed (:mod:`cce_core.seeding`)."""
    if n < 2:
        raise ValueError(f"NSD needs at least n=2 masks, got {n}")
    if kind == "central":
        raise ValueError("the central mask is a single mask: NSD needs varying masks (random_blocks or random_region)")
    kw = {"per_batch": False} if kind == "random_region" else {}
    return make_masks(kind, n, size, torch.Generator().manual_seed(derive_seed(seed, EVAL_MASK_STREAM)), **kw)


def eval_images(source: str | os.PathLike | Sequence[str | os.PathLike], k: int, seed: int = 0) -> ImageSet:
    """The first k images of an evaluation source, for the evaluation of training seed ``seed``: a folder's or
    zip's images are the same for every seed; embedded photos are the seed's own evaluation crops (the stream
    ``derive_seed(seed, "evaluation crops")``, apart from its training crops). The NSD page and the scale ladder
    both take their images from here."""
    return load_images(source, limit=k, embedded_count=k, seed=seed, purpose=EVAL_CROPS, progress=False)


def _is_small(model: Encoder) -> bool:
    return isinstance(model, ContextEncoder) and model.size == 64


def at_model_scale(model: Encoder, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8 or [-1, 1] float) and masks on the model's device, at its resolution: a 64 CE gets both
    downscaled by the cascade's ``down``, i.e. what it sees inside the cascade."""
    return _images_at_scale(model, images), _masks_at_scale(model, masks)


def _images_at_scale(model: Encoder, images: torch.Tensor) -> torch.Tensor:
    x = images.to(next(model.parameters()).device)
    x = to_float(x) if x.dtype == torch.uint8 else x
    return downscale(x) if _is_small(model) else x


def _masks_at_scale(model: Encoder, masks: torch.Tensor) -> torch.Tensor:
    m = masks.to(next(model.parameters()).device)
    return downscale_mask(m) if _is_small(model) else m


@torch.no_grad()
def encode_all(model: Encoder, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 100,
               progress: bool = True) -> StreamingNSD:
    """Stream E(P_j, M_i) for every image j (uint8 or [-1, 1] float, (k, 3, 128, 128)) and mask i into NSD moments.

    Memory is O(k D): codes are folded into a :class:`StreamingNSD` batch by batch, never stored all at once.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (k, 3, 128, 128), got {tuple(images.shape)}")
    if masks.ndim != 4 or masks.shape[0] < 2:
        raise ValueError(f"need at least 2 masks of shape (n, 1, 128, 128), got {tuple(masks.shape)}")
    model.eval()
    dims = (model.ce128 if isinstance(model, CascadeContextEncoder) else model).bottleneck
    acc = StreamingNSD(images.shape[0], dims)
    masks = _masks_at_scale(model, masks)  # once: the same n masks for every image
    for j in tqdm(range(images.shape[0]), disable=not progress, desc="NSD codes", unit="image"):
        x = _images_at_scale(model, images[j:j + 1])
        for i in range(0, masks.shape[0], batch_size):
            m = masks[i:i + batch_size]
            acc.update(model.encode(x.expand(len(m), -1, -1, -1), m)[None].float().cpu(), index=[j])
    return acc


def code_scale(model: Encoder) -> torch.Tensor:
    """The fixed per-dimension scale of the BN-normalised NSD: sqrt(running_var + eps) of the bottleneck
    BatchNorm of the model, for the cascade of its 128 CE (whose bottleneck gives the cascade's code)."""
    ce = model.ce128 if isinstance(model, CascadeContextEncoder) else model
    return ce.code_scale().cpu()


#: The three NSD readings, the headline one first.
READINGS = ("normalized", "raw", "standardized")
#: How the book names them.
READING_LABELS = {"normalized": "BN-normalised", "raw": "raw", "standardized": "eval-standardised"}


@dataclass
class ModelNSD:
    """NSD of one model in three readings (see :mod:`cce_core.nsd`).

    ``normalized``: codes divided by the bottleneck BatchNorm's sqrt(running_var + eps), the network's own map to
    N(0, I) (the headline); ``raw``: the formula on the convolution's output as is; ``standardized``: each
    dimension divided by its spread over the evaluation codes (depends on the evaluation set).
    """

    raw: NSDResult
    standardized: NSDResult
    normalized: NSDResult


def model_nsd(model: Encoder, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 100,
              progress: bool = True) -> ModelNSD:
    """NSD (section 3's estimator) of a model's codes over all images and masks, in the three readings."""
    return nsd_readings(encode_all(model, images, masks, batch_size, progress), model)


def nsd_readings(acc: StreamingNSD, model: Encoder) -> ModelNSD:
    """The three NSD readings of codes already folded into ``acc`` (:func:`encode_all`) by ``model``: lets a
    caller keep the moments, e.g. for :func:`cce_core.nsd.variance_split`, without encoding twice."""
    return ModelNSD(acc.result(), acc.result(standardize=True), acc.result(scale=code_scale(model)))


@torch.no_grad()
def inpaint(model: Encoder, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Inpaintings in [-1, 1] of uint8 or float images (B, 3, 128, 128) with one mask per image (a 64 CE's at 64)."""
    model.eval()
    outs = [model.inpaint(*at_model_scale(model, images[i:i + batch_size], masks[i:i + batch_size])).cpu()
            for i in range(0, len(images), batch_size)]
    return torch.cat(outs)


@torch.no_grad()
def codes(model: Encoder, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """E(P, M_i) of one image (3, 128, 128) under each of the n masks, shape (n, D) (for Fig. 2 and 3)."""
    model.eval()
    x, m = at_model_scale(model, image[None], masks)
    return model.encode(x.expand(len(m), -1, -1, -1), m).cpu()


def hole_mse(inpainted: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error over the missing pixels only, in the [-1, 1] scale, shape (B,)."""
    images = to_float(images) if images.dtype == torch.uint8 else images
    sq = ((inpainted - images) ** 2 * masks).flatten(1).sum(1)
    return sq / (3 * masks.flatten(1).sum(1)).clamp(min=1)


@torch.no_grad()
def cascade_stages(cce: CascadeContextEncoder, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage of the cascade (section 4.2, steps (i)-(iv)) for one image and mask, as [-1, 1] images (Fig. 1)."""
    cce.eval()
    x, m = at_model_scale(cce, image[None], mask[None] if mask.ndim == 3 else mask)
    small, small_mask = downscale(x * (1 - m)), downscale_mask(m)
    stages = {
        "image P": x,
        "(i) hole dropped": fill_hole(x, m),
        "(ii) downscaled, 64 CE input": fill_hole(small, small_mask),
        "(ii) 64 CE inpainting": cce.ce64.inpaint(small, small_mask),
        "(iii) upscaled into the hole": cce.prepare_input(x, m),
        "(iv) 128 CE output": cce.inpaint(x, m),
    }
    return {k: v[0].cpu() for k, v in stages.items()}


def project_2d(points: torch.Tensor) -> torch.Tensor:
    """Principal-component projection of (N, D) points to (N, 2), after per-dimension standardisation (Fig. 2)."""
    x = points.double()
    x = (x - x.mean(0)) / x.std(0).clamp(min=1e-12)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:2].T).float()


# --- quality of inpaintings ----------------------------------------------------------------------------------

#: The quality measures and whether a higher value is better.
QUALITY = {"l1": False, "psnr": True, "ssim": True}


@torch.no_grad()
def inpaint_128(model: Encoder, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Inpaintings at 128x128 in [-1, 1] of images (B, 3, 128, 128) with masks (B, 1, 128, 128).

    A 64 CE inpaints the leak-free downscaled image and its result is upscaled (bilinear) into the 128 hole,
    as the cascade's steps (i)-(iii) do; the other models inpaint at 128 directly.
    """
    model.eval()
    dev = next(model.parameters()).device
    x = images.to(dev)
    x = to_float(x) if x.dtype == torch.uint8 else x
    m = masks.to(dev, x.dtype)
    if isinstance(model, ContextEncoder) and model.size == 64:
        small = model.inpaint(downscale(x * (1 - m)), downscale_mask(m))
        return paste(x, upscale(small), m).cpu()
    return model.inpaint(x, m).cpu()


def hole_quality(inpainted: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> dict[str, np.ndarray]:
    """In-hole L1, PSNR (dB) and SSIM per image of inpaintings against the originals (both [-1, 1] or uint8 for
    ``images``), on [0, 1]-scaled pixels; see the module docstring for the SSIM window."""
    images = to_float(images) if images.dtype == torch.uint8 else images
    if inpainted.shape != images.shape or masks.shape[0] != images.shape[0]:
        raise ValueError(f"need inpaintings, images and masks of one batch: got {tuple(inpainted.shape)}, "
                         f"{tuple(images.shape)}, {tuple(masks.shape)}")
    x = ((inpainted.double().cpu() + 1) / 2).clamp(0, 1)
    y = ((images.double().cpu() + 1) / 2).clamp(0, 1)
    m = masks.double().cpu().expand_as(x)
    count = m.flatten(1).sum(1)
    if (count == 0).any():
        raise ValueError("a mask has no missing pixel: in-hole quality is undefined")
    l1 = ((x - y).abs() * m).flatten(1).sum(1) / count
    mse = ((x - y) ** 2 * m).flatten(1).sum(1) / count
    psnr = 10 * torch.log10(1 / mse.clamp(min=1e-10))
    ssim = []
    for xi, yi, mi in zip(x.numpy(), y.numpy(), m.numpy()):
        _, smap = structural_similarity(yi, xi, channel_axis=0, data_range=1.0, full=True)
        ssim.append(float((smap * mi).sum() / mi.sum()))
    return {"l1": l1.numpy(), "psnr": psnr.numpy(), "ssim": np.array(ssim)}


def model_quality(model: Encoder, images: torch.Tensor, masks: torch.Tensor,
                  batch_size: int = 50) -> dict[str, np.ndarray]:
    """Per-image quality (k,) of a model, averaged over the masks: every image gets each of the q masks
    (q, 1, 128, 128); the same images and masks for every model make the comparison paired."""
    if masks.ndim != 4 or masks.shape[0] < 1:
        raise ValueError(f"masks must have shape (q, 1, 128, 128), got {tuple(masks.shape)}")
    k = images.shape[0]
    sums = {name: np.zeros(k) for name in QUALITY}
    for mask in masks:
        for i in range(0, k, batch_size):
            x = images[i:i + batch_size]
            mm = mask[None].expand(len(x), -1, -1, -1)
            q = hole_quality(inpaint_128(model, x, mm), x, mm)
            for name in QUALITY:
                sums[name][i:i + len(x)] += q[name]
    return {name: s / masks.shape[0] for name, s in sums.items()}


# --- along training, and the NSD-loss runs ------------------------------------------------------------------------

def checkpoint_curve(checkpoints: list[str | Path], images: torch.Tensor, nsd_masks: torch.Tensor,
                     quality_masks: torch.Tensor, device: str | torch.device = "cpu") -> list[dict]:
    """BN-normalised NSD and in-hole PSNR/L1/SSIM of a list of checkpoints of one run (e.g. saved at several steps):
    does NSD fall as the inpainting improves? One dict per checkpoint, with its training step."""
    rows = []
    for path in checkpoints:
        step = int(load_checkpoint(path)["step"])
        model = load_model(path, device)
        res = encode_all(model, images, nsd_masks, progress=False).result(scale=code_scale(model))
        q = model_quality(model, images, quality_masks)
        rows.append({"checkpoint": str(path), "step": step, "nsd_normalized": res.mean,
                     **{name: float(v.mean()) for name, v in q.items()}})
    return rows


def fill_spread(model: Encoder, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 50) -> float:
    """The inpaintings' spread between images: for each of the q masks (q, 1, 128, 128), every image inpainted
    under it, the variance across the k images of each missing pixel ([0, 1] scale, each channel), averaged over
    the hole and then the masks. A model that fills every hole with the same picture scores 0."""
    out = []
    for mask in masks:
        fills = torch.cat([inpaint_128(model, images[i:i + batch_size],
                                       mask[None].expand(len(images[i:i + batch_size]), -1, -1, -1))
                           for i in range(0, len(images), batch_size)])
        var = ((fills.double() + 1) / 2).clamp(0, 1).var(0)  # (3, 128, 128)
        hole = mask.double().cpu().expand_as(var)
        out.append(float((var * hole).sum() / hole.sum()))
    return float(np.mean(out))


def evaluate_nsd_runs(checkpoints: dict[float, str | os.PathLike], images: torch.Tensor, nsd_masks: torch.Tensor,
                      quality_masks: torch.Tensor, device: str | torch.device = "cpu") -> dict[float, dict]:
    """Per NSD weight: the model's NSD in the three readings (:func:`model_nsd`, the same n masks for every image
    and model), its per-image in-hole L1/PSNR/SSIM (:func:`model_quality`, the same q masks), and the collapse
    checks: ``code_spread``, the mean over dimensions of the variance across images of the per-image mean code
    (BN-normalised, as the decoder receives it), and ``fill_spread`` (:func:`fill_spread`):
    ``{lambda: {"nsd": ModelNSD, "quality": {measure: (k,) array}, "code_spread": float, "fill_spread": float,
    "model": model}}``."""
    out = {}
    for lam, ckpt in checkpoints.items():
        model = load_model(ckpt, device)
        acc = encode_all(model, images, nsd_masks, progress=False)
        scale = code_scale(model).double()
        nsd = ModelNSD(acc.result(), acc.result(standardize=True), acc.result(scale=scale))
        out[lam] = {"model": model, "nsd": nsd, "quality": model_quality(model, images, quality_masks),
                    "code_spread": float((acc.mean.double() / scale).var(0).mean()),
                    "fill_spread": fill_spread(model, images, quality_masks)}
    return out


# --- the scale ladder (issue 21) ------------------------------------------------------------------------------------

def snapshot_at(run: str | os.PathLike, step: int) -> Path:
    """The model state of ``run`` after ``step`` steps: its snapshot, or its final checkpoint if it ended there.
    FileNotFoundError (one line) when the run kept neither."""
    run = Path(run)
    snap = snapshot_path(run, step)
    if snap.is_file():
        return snap
    final = run / "checkpoint.pt"
    if final.is_file() and int(load_checkpoint(final)["step"]) == step:
        return final
    raise FileNotFoundError(f"{run} has no snapshot at step {step} (train it with snapshot_every dividing {step})")


def _ladder_key(images: torch.Tensor, nsd_masks: torch.Tensor, quality_masks: torch.Tensor) -> dict:
    """What a ladder cache was measured on: the sizes and SHA-256 of its images and masks."""
    return {"k": int(images.shape[0]), "n": int(nsd_masks.shape[0]), "q": int(quality_masks.shape[0]),
            **{name: hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
               for name, t in (("images", images), ("nsd_masks", nsd_masks), ("quality_masks", quality_masks))}}


def _ladder_point(path: Path, images: torch.Tensor, nsd_masks: torch.Tensor, quality_masks: torch.Tensor,
                  device: str | torch.device) -> dict[str, list[float]]:
    """One model state's per-image NSD readings and quality measures, at full precision."""
    model = load_model(path, device)
    nsd = model_nsd(model, images, nsd_masks, progress=False)
    q = model_quality(model, images, quality_masks)
    return {**{f"nsd_{r}": np.asarray(getattr(nsd, r).per_image, dtype=float).tolist() for r in READINGS},
            **{name: np.asarray(v, dtype=float).tolist() for name, v in q.items()}}


def ladder_seed(runs: dict[str, str | os.PathLike | dict[int, str | os.PathLike]], steps: list[int],
                images: torch.Tensor, nsd_masks: torch.Tensor,
                quality_masks: torch.Tensor, device: str | torch.device = "cpu",
                cache: str | os.PathLike | None = None) -> dict[str, dict[str, dict]]:
    """One training seed's models along training: for each step of ``steps`` and each run of ``runs`` ({model:
    run directory}, e.g. the 128 CE and the cascade; or {model: {step: run directory}} where each point is its own
    run, as the fair ladder's cascades), NSD in the three readings (:func:`model_nsd`, the same images
    and masks for every step and model) and the in-hole quality (:func:`model_quality`), per image, so that the
    cascade - CE difference can be paired image by image.

    Returns ``{str(step): {model: {"nsd_<reading>": [k floats], "<measure>": [k floats], "measured": {...}}}}``;
    ``measured`` says what measured the values: the commit, the SHA-256 of the library's code
    (:func:`cce_core.provenance.code_sha256`, ``tree``), the date, device and torch, and the model state measured
    with its SHA-256; and ``trained_commit``, the commit that trained it. ``cache`` (a JSON file): points already
    measured are read from it and each new one is written as soon as it is done, so an interrupted ladder resumes; a
    point whose checkpoint file or code changed since is measured again, and a cache made on other images or masks
    (their sizes or SHA-256 differ) is refused."""
    key = _ladder_key(images, nsd_masks, quality_masks)
    cache = Path(cache) if cache else None
    done = open_cache(cache, key, "points", "images or masks")
    code = measured_by(device)
    run_at = {(st, m): Path(r[st] if isinstance(r, dict) else r) for st in steps for m, r in runs.items()}
    paths = {point: snapshot_at(run, point[0]) for point, run in run_at.items()}
    shas = {point: file_sha256(path) for point, path in paths.items()}

    def current(st: int, m: str) -> bool:
        was = done["points"].get(str(st), {}).get(m, {}).get("measured", {})
        return was.get("checkpoint_sha256") == shas[st, m] and was.get("tree") == code["tree"]

    todo = [(st, m) for st, m in paths if not current(st, m)]
    for st, m in tqdm(todo, desc="ladder", unit="model", disable=not todo):
        point = _ladder_point(paths[st, m], images, nsd_masks, quality_masks, device)
        point["measured"] = {**code, "checkpoint": paths[st, m].relative_to(run_at[st, m].parent).as_posix(),
                             "checkpoint_sha256": shas[st, m], "trained_commit": trained_commit(run_at[st, m])}
        done["points"].setdefault(str(st), {})[m] = point
        if cache:
            atomic_write_text(cache, json.dumps(done))
    return {str(st): {m: done["points"][str(st)][m] for m in runs} for st in steps}
