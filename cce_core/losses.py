"""The generator's losses: the reconstruction loss of Pathak's recipe, and NSD as a training loss (beyond the paper).

**Reconstruction** (spec 7.1): per-pixel L2 weights W (:func:`reconstruction_weights`, lambda_rec included) over
G's output, against :func:`reconstruction_target`: the central block, or the whole image for the random masks.
The adversarial loss is plain BCE on D's logits, in :func:`cce_core.train.make_step`.

**Beyond the paper: NSD as a training loss** (the paper's last paragraph; issue 13).

The paper ends: "we plan to include NSD training loss function. We believe that accurately modified loss function
can produce network with smaller NSD, and in consequence improve the results of inpainting." This module is that
loss. With ``TrainConfig.nsd_weight`` = lambda > 0, every training step draws m = ``nsd_masks`` further masks per
image of the batch (the run's mask strategy), encodes each image under each of them and adds

    lambda * NSD_batch,   NSD_batch = 1/(D m B) sum_j sum_i ||zhat_ij - zbar_j||^2,   zbar_j = 1/m sum_i zhat_ij

to G's loss: section 3's final estimator over the B images and m masks of the step, on codes divided by a
per-dimension scale chosen by ``TrainConfig.nsd_norm``:

* ``"batch"`` (the default): the **current batch's** spread, sqrt of the variance of each code dimension over the
  step's m B codes (not detached). The penalty is then sum over dimensions of (within-image variance) / (total
  variance), a share in [0, 1]: the fraction of each dimension's spread that comes from the mask rather than from
  the image (1 - R^2 of a one-way ANOVA by image). **Why:** the bottleneck BatchNorm follows the bottleneck
  convolution, so scaling that convolution's weights by any c > 0 changes neither G's output nor the
  reconstruction and adversarial losses. This penalty is invariant to that scale too (z -> c z divides out), in
  value and in gradient w.r.t. every other parameter; its gradient w.r.t. the convolution's weight W is orthogonal
  to W (Euler: a function of degree 0), so it does not pull ||W|| down. It also cannot be won by shrinking every
  image's code to one point: that lowers the total variance as much as the within-image one.
* ``"running"`` (issue 13's first version, kept as a named option to show the artefact): the bottleneck
  BatchNorm's detached sqrt(running_var + eps) (:meth:`cce_core.models.ContextEncoder.code_scale`), i.e. the
  BN-normalised NSD of the evaluation. Within a step the denominator is a constant, so the penalty scales by c^2
  with the convolution's weights and pulls ||W|| down; the running variance follows W with BN's momentum lag, and
  the evaluation divides by that same running variance, so part of a lower BN-normalised NSD after training is
  the denominator lagging, not the codes becoming mask-invariant (issue 20: at smoke size lambda = 10 took ||W||
  from 3.05 to 2.39 and running_var / batch var from 0.43 to 0.34). The log line records both
  (``code_weight_norm``, ``code_var_ratio``: :func:`code_stats`) for every run, so the two can be told apart.

**What else could collapse it.** NSD_batch is zero for any code that ignores the mask: a constant code (which
ignores the image too), or a code that sees only the pixels no mask ever hides. With ``nsd_norm="batch"`` a
constant code is not a minimum (within / total is 0/0, and shrinking all codes together leaves the share as it
is); with ``"running"`` it is. The reconstruction term (lambda_rec ||W (G(x) - x)||^2) and the adversarial term
resist a collapse, but nothing guarantees they win at a large lambda (at lambda = 1 with the running variance,
issue 20 saw 7.6 dB PSNR and black-and-white fills): the chapter measures the codes' and the inpaintings'
spread between images rather than assuming it. A code that
ignores the hidden pixels is what a context encoder should have anyway (it cannot see them); the penalty asks it
to ignore *where* the hole is, which the reconstruction of the known pixels and the hole's border resists only as
far as the decoder needs the mask's position. So lambda trades invariance against reconstruction; a large lambda
may still shrink the codes' between-image spread, which ``tests/test_nsd_loss.py`` checks stays well above zero
at smoke size.

**Cost and BatchNorm.** The m B extra encodes are m encoder forwards (and backwards) per step, as one batch of
m B images (for the cascade also m forwards of the frozen 64 CE, eq. (1)), on top of the step's G and D
passes; ``benchmarks`` do not time it yet. They run in **train mode** (batch statistics over the m B images, like
the main forward: the penalty differentiates the same function the network trains) but leave the encoder's
BatchNorm running statistics untouched (:func:`keep_running_stats`), so these, and the bottleneck BN's scale, are
estimated from the main stream's inputs only, exactly as without the penalty.

**Randomness.** The extra masks come from their own generator (:func:`make_nsd_generator`, seeded from the run's
seed), never from the run's generator or its :class:`cce_core.batches.MaskStream`: the batches and main masks of a
run are the same for every lambda, and lambda = 0 draws nothing at all (bit-identical to the recipe without the
option). The generator's state is stored in the checkpoint, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .cascade import downscale_mask
from .config import TrainConfig
from .masks import center_box, make_masks
from .seeding import derive_seed

# --- the reconstruction loss (Pathak's recipe) -------------------------------------------------------------------

def reconstruction_weights(cfg: TrainConfig, mask: torch.Tensor) -> torch.Tensor:
    """Per-pixel L2 weights W (lambda_rec included) over G's output, spec 7.1.

    Central block: wtl2 on the hole, ``overlap_weight`` * wtl2 on the overlap ring. Full image (random masks):
    wtl2 on missing pixels and ``full_known_weight`` * wtl2 on known ones (Pathak's README: uniform).
    """
    if cfg.output == "center":
        lo, hi = center_box(cfg.size)
        hole = mask[:, :, lo:hi, lo:hi]
        return cfg.wtl2 * (hole + cfg.overlap_weight * (1 - hole))
    return cfg.wtl2 * (mask + cfg.full_known_weight * (1 - mask))


def reconstruction_target(cfg: TrainConfig, images: torch.Tensor) -> torch.Tensor:
    """What G's output is compared with: the central block of the images (central mask), else the whole image."""
    if cfg.output == "center":
        lo, hi = center_box(cfg.size)
        return images[:, :, lo:hi, lo:hi]
    return images


# --- beyond the paper: the NSD penalty ------------------------------------------------------------------------

#: The purpose of the extra masks' stream (:func:`cce_core.seeding.derive_seed`), apart from every other stream.
NSD_STREAM = "nsd loss masks"


#: The ways of normalising the codes in the penalty (``TrainConfig.nsd_norm``; see the module docstring).
NSD_NORMS = ("batch", "running")


def nsd_penalty(codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """NSD_batch of codes (B images, m masks, D): 1/(D m B) sum_j sum_i ||(z_ij - zbar_j) / s||^2, section 3's
    final estimator, as a differentiable scalar, with the per-dimension scale s:

    * ``scale`` None (``nsd_norm="batch"``): s_d^2 = the variance of dimension d over all B m codes (population,
      not detached), so the value is the mean over d of within-image / total variance, in [0, 1], and is
      invariant to z -> c z for any c > 0 (see the module docstring for why that matters);
    * ``scale`` given (D,) (``nsd_norm="running"``): that fixed scale, detached; with the bottleneck BatchNorm's
      sqrt(running_var + eps) this is the BN-normalised NSD, ``cce_core.nsd.nsd(codes, scale=scale).mean``.
    """
    if codes.ndim != 3 or codes.shape[1] < 2:
        raise ValueError(f"codes must have shape (B images, m >= 2 masks, D), got {tuple(codes.shape)}")
    if scale is not None:
        if scale.shape != codes.shape[2:]:
            raise ValueError(f"scale must have shape ({codes.shape[2]},), got {tuple(scale.shape)}")
        z = codes.float() / scale.detach().float()
        return ((z - z.mean(1, keepdim=True)) ** 2).mean()
    z = codes if codes.dtype == torch.float64 else codes.float()
    within = ((z - z.mean(1, keepdim=True)) ** 2).mean((0, 1))  # (D,)
    total = ((z - z.mean((0, 1), keepdim=True)) ** 2).mean((0, 1))  # >= within: the share is in [0, 1]
    return (within / (total + torch.finfo(z.dtype).tiny)).mean()


def make_nsd_generator(cfg, device: torch.device) -> torch.Generator:
    """The generator of the penalty's extra masks, seeded from ``cfg.seed`` on a stream of its own: on the training
    device with ``device_rng`` and the batched mask generator (the loop versions draw on the CPU), else the CPU."""
    on = device if cfg.device_rng and cfg.mask_generator == "batched" else torch.device("cpu")
    return torch.Generator(device=on).manual_seed(derive_seed(cfg.seed, NSD_STREAM))


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
    """NSD_batch of the step's images ``x`` (B, 3, s, s) under m fresh masks each, normalised as ``cfg.nsd_norm``
    says (see module doc).

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
    return nsd_penalty(codes, g.code_scale() if cfg.nsd_norm == "running" else None)


@torch.no_grad()
def code_stats(g, inp: torch.Tensor) -> torch.Tensor:
    """For the log line: ``tensor([code_weight_norm, code_var_ratio])`` of G (or its DDP wrapper), on the device.

    ``code_weight_norm``: the Frobenius norm of the bottleneck convolution's weight W. ``code_var_ratio``: the mean
    over dimensions of (running_var + eps) / (var + eps), the bottleneck BatchNorm's running variance over the
    variance of the codes of G's input ``inp`` (the step's batch, re-encoded after the step; batch statistics in
    the encoder, its running statistics untouched). 1 when the running variance keeps up with the codes' scale;
    below 1 when W grew faster than it follows, above when W shrank. No random number is drawn and no state is
    changed, so logging it leaves a run's numbers as they are.
    """
    g = getattr(g, "module", g)
    bn = g.bottleneck_bn
    with keep_running_stats(g.encoder):
        z = g.encode(inp).float()
    ratio = ((bn.running_var.float() + bn.eps) / (z.var(0) + bn.eps)).mean()
    return torch.stack([g.bottleneck_conv.weight.detach().float().norm(), ratio])
