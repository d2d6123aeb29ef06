"""Beyond the paper: NSD as a training loss (the paper's last paragraph; issue 13).

The paper ends: "we plan to include NSD training loss function. We believe that accurately modified loss function
can produce network with smaller NSD, and in consequence improve the results of inpainting." This module is that
loss. With ``TrainConfig.nsd_weight`` = lambda > 0, every training step draws m = ``nsd_masks`` further masks per
image of the batch (the run's mask strategy), encodes each image under each of them and adds

    lambda * NSD_batch,   NSD_batch = 1/(D m B) sum_j sum_i ||zhat_ij - zbar_j||^2,   zbar_j = 1/m sum_i zhat_ij

to G's loss: section 3's final estimator over the B images and m masks of the step, on the **BN-normalised**
codes zhat = (z - running_mean) / sqrt(running_var + eps) of the bottleneck BatchNorm (its running statistics,
detached: :meth:`cce_core.models.ContextEncoder.normalize_code`; the mean cancels in zhat - zbar). Dividing by
the BatchNorm's own scale means the penalty cannot be won by shrinking the bottleneck convolution's weights: BN
divides that scale out of the network's function, and the running variance follows it (with BN's momentum, a
lag of about ten steps, so a small pull towards smaller weights remains between updates).

**What else could collapse it.** NSD_batch is zero for any code that ignores the mask: a constant code (which
ignores the image too), or a code that sees only the pixels no mask ever hides. A constant code carries no
information about the image, so the decoder could only output one image for every input: the reconstruction
term (lambda_rec ||W (G(x) - x)||^2, on the hole and, for full-image models, on the known pixels) is then large,
and the adversarial term punishes one repeated output (D separates it from real crops at once). A code that
ignores the hidden pixels is what a context encoder should have anyway (it cannot see them); the penalty asks it
to ignore *where* the hole is, which the reconstruction of the known pixels and the hole's border resists only as
far as the decoder needs the mask's position. So lambda trades invariance against reconstruction; a large lambda
may still shrink the codes' between-image spread, which ``tests/test_nsd_loss.py`` checks stays well above zero
at smoke size.

**Cost and BatchNorm.** The m B extra encodes are m encoder forwards (and backwards) per step, as one batch of
m B images (for the cascade also m forwards of the frozen 64 CE, eq. (1)), on top of the step's G and D
passes; ``benchmarks`` do not time it yet. They run in **train mode** (batch statistics over the m B images, like the main forward:
the penalty differentiates the same function the network trains) but leave the encoder's BatchNorm running
statistics untouched (:func:`keep_running_stats`), so these, and the bottleneck BN's scale, are estimated from
the main stream's inputs only, exactly as without the penalty.

**Randomness.** The extra masks come from their own generator (:func:`make_nsd_generator`, seeded from the run's
seed), never from the run's generator or its :class:`cce_core.train.MaskStream`: the batches and main masks of a
run are the same for every lambda, and lambda = 0 draws nothing at all (bit-identical to the recipe without the
option). The generator's state is stored in the checkpoint, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from .cascade import downscale_mask
from .masks import make_masks

#: Added to the run's seed (in the generator's upper bits) so the extra masks' stream is disjoint from the run's.
NSD_STREAM = 0x4E5344  # "NSD"


def nsd_penalty(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """NSD_batch of codes (B images, m masks, D) divided by a fixed per-dimension ``scale`` (D,) (detached):
    1/(D m B) sum_j sum_i ||(z_ij - zbar_j) / scale||^2, section 3's final estimator, as a differentiable scalar.

    With ``scale`` = the bottleneck BatchNorm's sqrt(running_var + eps) this is the BN-normalised NSD, i.e.
    ``cce_core.nsd.nsd(codes, scale=scale).mean``.
    """
    if codes.ndim != 3 or codes.shape[1] < 2:
        raise ValueError(f"codes must have shape (B images, m >= 2 masks, D), got {tuple(codes.shape)}")
    if scale.shape != codes.shape[2:]:
        raise ValueError(f"scale must have shape ({codes.shape[2]},), got {tuple(scale.shape)}")
    z = codes.float() / scale.detach().float()
    return ((z - z.mean(1, keepdim=True)) ** 2).mean()


def make_nsd_generator(cfg, device: torch.device) -> torch.Generator:
    """The generator of the penalty's extra masks, seeded from ``cfg.seed`` on a stream of its own: on the training
    device with ``device_rng`` and the batched mask generator (the loop versions draw on the CPU), else the CPU."""
    on = device if cfg.device_rng and cfg.mask_generator == "batched" else torch.device("cpu")
    from .train import stream_seed  # train imports this module
    return torch.Generator(device=on).manual_seed(stream_seed(cfg.seed, NSD_STREAM))


def draw_nsd_masks(cfg, gen: torch.Generator, batch: int, device: torch.device) -> torch.Tensor:
    """m = ``cfg.nsd_masks`` independent masks for each of ``batch`` images, shape (m * batch, 1, s, s), mask-major
    (row i * batch + j: mask i of image j), at the model's resolution s (a 64 CE's downscaled by ``down``)."""
    kw = {"per_batch": False} if cfg.mask == "random_region" else {}  # one mask per image, not one per batch
    m = make_masks(cfg.mask, cfg.nsd_masks * batch, 128, gen, mask_generator=cfg.mask_generator, **kw).to(device)
    return downscale_mask(m) if cfg.model == "ce64" else m


@contextlib.contextmanager
def keep_running_stats(module: nn.Module) -> Iterator[None]:
    """Inside, ``module``'s BatchNorms in train mode normalise with batch statistics but neither read nor update
    their running statistics (``track_running_stats`` off for the while; nothing is modified in place, so the
    autograd graph of the main forward stays valid)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


def batch_penalty(cfg, g, x: torch.Tensor, gen: torch.Generator, prepare) -> torch.Tensor:
    """NSD_batch of the step's images ``x`` (B, 3, s, s) under m fresh masks each, BN-normalised (see module doc).

    ``prepare(images, masks)`` builds G's input (``fill_hole``, or the cascade's eq. (1) input); ``g`` is the
    trained :class:`cce_core.models.ContextEncoder` (the cascade's 128 CE), or a wrapper of it with ``.module``
    (DistributedDataParallel: the gradients of these passes reach the same parameters and are reduced with the
    main forward's, as autograd sums them before each parameter's hook runs).
    """
    g = getattr(g, "module", g)
    b, m = len(x), cfg.nsd_masks
    masks = draw_nsd_masks(cfg, gen, b, x.device)
    xs = x[None].expand(m, *x.shape).reshape(m * b, *x.shape[1:])
    with keep_running_stats(g.encoder):
        z = g.encode(prepare(xs, masks))  # (m B, D): the bottleneck convolution's output, E(P, M)
    codes = z.view(m, b, -1).transpose(0, 1)  # (B, m, D)
    return nsd_penalty(codes, g.code_scale())


# --- the chapter's runs ---------------------------------------------------------------------------------------

def ensure_nsd_runs(runs_dir: str | os.PathLike, lambdas: Sequence[float], preset: str, data: list[str],
                    seed: int = 0, device: str = "auto", nsd_masks: int = 2, progress: bool = False) -> dict[float, Path]:
    """Train (or resume, or reuse) the 128 CE with random blocks for each NSD weight; returns {lambda: checkpoint}.

    Every run has the same seed, data, preset and therefore the same batches and main masks. lambda = 0 is the
    recipe without the penalty, i.e. the reproduction's own ``ce128-random_blocks`` run (reused if it exists);
    lambda > 0 trains ``runs_dir/ce128-random_blocks-nsd<lambda>`` with ``nsd_masks`` extra masks per image
    (:func:`cce_core.reproduce.ensure_run`, which names and reuses every run of a reproduction).
    """
    from .reproduce import ensure_run  # reproduce imports train, which imports this module

    out = {}
    for lam in map(float, lambdas):
        if lam < 0:
            raise ValueError(f"NSD weights must be >= 0, got {lam}")
        out[lam] = ensure_run(runs_dir, "ce128", "random_blocks", preset, data, seed=seed, device=device,
                              progress=progress, nsd_weight=lam, nsd_masks=nsd_masks)
    return out


def evaluate_nsd_runs(checkpoints: dict[float, str | os.PathLike], images: torch.Tensor, nsd_masks: torch.Tensor,
                      quality_masks: torch.Tensor, device: str | torch.device = "cpu") -> dict[float, dict]:
    """Per NSD weight: the model's NSD in the three readings (:func:`cce_core.evaluate.model_nsd`, the same n
    masks for every image and model) and its per-image in-hole L1/PSNR/SSIM (:func:`cce_core.metrics.model_quality`,
    the same q masks): ``{lambda: {"nsd": ModelNSD, "quality": {measure: (k,) array}, "model": model}}``."""
    from .evaluate import model_nsd
    from .metrics import model_quality
    from .train import load_model

    out = {}
    for lam, ckpt in checkpoints.items():
        model = load_model(ckpt, device)
        out[lam] = {"model": model, "nsd": model_nsd(model, images, nsd_masks, progress=False),
                    "quality": model_quality(model, images, quality_masks)}
    return out


def nsd_loss_table(results: dict[float, dict], seed: int = 0) -> list[dict]:
    """One row per NSD weight: NSD mean ± std in the three readings, in-hole L1/PSNR/SSIM means, and for lambda > 0
    the paired difference to lambda = 0 (BN-normalised NSD and PSNR) with its 95% bootstrap CI."""
    from .evaluate import READING_LABELS, READINGS
    from .nsd import bootstrap_ci, paired_comparison

    base = results.get(0.0)
    rows = []
    for lam, r in results.items():
        row: dict = {"λ": lam}
        for reading in READINGS:
            res = getattr(r["nsd"], reading)
            row[f"NSD {READING_LABELS[reading]}"] = f"{res.mean:.4f} ± {res.std:.4f}"
        for name, v in r["quality"].items():
            row[{"l1": "L1", "psnr": "PSNR (dB)", "ssim": "SSIM"}[name]] = round(float(v.mean()), 4)
        if base is not None and lam != 0:
            c = paired_comparison(base["nsd"].normalized, r["nsd"].normalized, seed=seed)
            row["ΔNSD vs λ=0 [95% CI]"] = f"{c.mean:+.4f} [{c.ci[0]:+.4f}, {c.ci[1]:+.4f}]"
            d = r["quality"]["psnr"] - base["quality"]["psnr"]
            lo, hi = bootstrap_ci(d, seed=seed)
            row["ΔPSNR vs λ=0 [95% CI]"] = f"{d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"
        rows.append(row)
    return rows


def nsd_loss_verdicts(results: dict[float, dict], scale, seed: int = 0) -> dict[float, str]:
    """The verdict on the paper's belief (:func:`cce_core.report.verdict_nsd_training`) for each lambda > 0
    against lambda = 0, on the same images and masks (paired 95% CIs)."""
    from .nsd import bootstrap_ci, paired_comparison
    from .report import verdict_nsd_training

    if 0.0 not in results:
        raise ValueError("the verdict compares with the model trained without the penalty: include lambda = 0")
    base = results[0.0]
    out = {}
    for lam, r in results.items():
        if lam == 0:
            continue
        cmp = paired_comparison(base["nsd"].normalized, r["nsd"].normalized, seed=seed)
        diffs = {name: bootstrap_ci(r["quality"][name] - base["quality"][name], seed=seed) for name in r["quality"]}
        out[lam] = verdict_nsd_training(cmp, diffs, scale, lam)
    return out
