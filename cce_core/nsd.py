"""Normalized squared-distortion (NSD), paper section 3.

For an encoder E, images (P_j), j = 1..k, and masks (M_i), i = 1..n, with D-dimensional codes E(P_j, M_i):

* Definition 3.1 (estimator): dist2(P_j) = 1/n^2 sum_{i,i'} ||E(P_j, M_i) - E(P_j, M_i')||^2 ("pairwise form"),
  which by the variance identity equals 2/n sum_i ||E(P_j, M_i) - Zbar_j||^2, Zbar_j = 1/n sum_i E(P_j, M_i).
* Definition 3.2: NSD = dist2 / (2D), since E||X - Y||^2 = 2D for independent X, Y ~ N(0, I_D).
* Final estimator: NSD = 1/(D n k) sum_j sum_i ||E(P_j, M_i) - Zbar_j||^2 = mean_j NSD_j with
  NSD_j = 1/(D n) sum_i ||E(P_j, M_i) - Zbar_j||^2.

The paper reports NSD as "mean +- std" over the k images; :class:`NSDResult` holds both and the per-image values.

Under the null model of the paper (codes i.i.d. N(0, I) whatever the mask), E[NSD_j] = (n - 1)/n, not 1: the
estimator divides by n, not n - 1 (0.99 for n = 100). ``unbiased=True`` multiplies by n/(n - 1).

**Standardisation.** The paper assumes E maps into N(0, I). A real encoder does not: the bottleneck
convolution's output has an arbitrary scale per dimension (it is followed by BatchNorm, so scaling the
convolution's weights changes the raw NSD but not the network's function). ``standardize=True`` divides each
dimension by its standard deviation over all k*n codes (pooled; or by ``scale`` if given). Then NSD_j is the
share of each dimension's total variance that is due to the mask (within-image variance), averaged over
dimensions; the null value stays (n - 1)/n when codes ignore both image and mask, and it is smaller when
codes depend on the image. That share depends on how different the evaluation images are from each other, so
the same codes of one image score differently in two evaluation sets.

**BN-normalisation (the headline reading).** The bottleneck convolution is followed by BatchNorm, whose running
statistics map the code to ``(z - running_mean) / sqrt(running_var + eps)``: the network's own map to
N(0, I), fitted on the training data and fixed before evaluation. ``scale=sqrt(running_var + eps)`` (see
:meth:`cce_core.models.ContextEncoder.code_scale`) gives the NSD of those normalised codes (the mean shift
cancels in z - Zbar), which is the quantity section 3 defines for an encoder into N(0, I); it does not depend
on the evaluation set.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class NSDResult:
    """NSD over k images: ``mean`` +- ``std`` (sample std over images, ddof=1) and the ``per_image`` values."""

    per_image: np.ndarray
    n: int
    dims: int
    standardized: bool = False  # divided by the spread of the evaluation codes
    unbiased: bool = False
    normalized: bool = False  # divided by a fixed scale (the bottleneck BatchNorm's sqrt(running_var + eps))

    @property
    def reading(self) -> str:
        """Which NSD this is: ``"raw"``, ``"standardized"`` (eval-set spread) or ``"normalized"`` (fixed scale)."""
        return "normalized" if self.normalized else "standardized" if self.standardized else "raw"

    @property
    def k(self) -> int:
        return len(self.per_image)

    @property
    def mean(self) -> float:
        return float(self.per_image.mean())

    @property
    def std(self) -> float:
        return float(self.per_image.std(ddof=1)) if self.k > 1 else 0.0

    def __str__(self) -> str:
        return f"NSD = {self.mean:.3f} ± {self.std:.3f} (k={self.k} images, n={self.n} masks, D={self.dims})"


def _as_codes(codes: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Validate a (k, n, D) code array and return it as a float64 CPU tensor."""
    codes = torch.as_tensor(codes).detach().to("cpu", torch.float64)
    if codes.ndim != 3:
        raise ValueError(f"codes must have shape (k images, n masks, D dims), got shape {tuple(codes.shape)}")
    k, n, d = codes.shape
    if k == 0 or d == 0:
        raise ValueError(f"codes are empty: shape {tuple(codes.shape)}")
    if n < 2:
        raise ValueError(f"NSD needs at least n=2 masks per image, got n={n}")
    if not torch.isfinite(codes).all():
        bad = (~torch.isfinite(codes)).any(-1).any(-1).nonzero().flatten().tolist()
        raise ValueError(f"codes contain NaN or infinite values (images {bad[:10]})")
    return codes


def null_expectation(n: int) -> float:
    """E[NSD] when codes are i.i.d. N(0, I) whatever the mask: (n - 1)/n (the estimator divides by n)."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    return (n - 1) / n


def _finish(n: int, within: torch.Tensor, total_var: torch.Tensor | None, unbiased: bool, standardized: bool,
            normalized: bool = False) -> NSDResult:
    """NSD_j from per-image, per-dimension within-mask variances ``within`` (k, D), divided by n (not n - 1)."""
    d = within.shape[1]
    if total_var is not None:
        keep = total_var > 0
        if not keep.all():
            warnings.warn(f"{int((~keep).sum())} of {d} code dimensions are constant over all codes; "
                          "they are left out of the standardised NSD", stacklevel=2)
        if not keep.any():
            raise ValueError("every code dimension is constant: the standardised NSD is undefined")
        within, d = within[:, keep] / total_var[keep], int(keep.sum())
    per_image = within.sum(1) / d
    if unbiased:
        per_image = per_image * n / (n - 1)
    return NSDResult(per_image.numpy(), n=n, dims=d, standardized=standardized, unbiased=unbiased,
                     normalized=normalized)


def nsd(codes: torch.Tensor | np.ndarray, standardize: bool = False, scale: torch.Tensor | None = None,
        unbiased: bool = False) -> NSDResult:
    """The NSD estimator of section 3: NSD_j = 1/(D n) sum_i ||E(P_j, M_i) - Zbar_j||^2, for codes (k, n, D).

    ``standardize`` divides every dimension by its pooled standard deviation over the k*n codes; ``scale``
    (shape (D,)) divides it by a fixed scale instead, e.g. the bottleneck BatchNorm's sqrt(running_var + eps)
    (the BN-normalised reading); see the module docstring for what each does to the null value.
    ``unbiased`` multiplies by n/(n-1), so that the null value is 1 instead of (n-1)/n.
    """
    codes = _as_codes(codes)
    k, n, d = codes.shape
    within = codes.var(dim=1, unbiased=False)  # (k, D): 1/n sum_i (z_i - zbar)^2 per dimension
    if scale is not None:
        if standardize:
            raise ValueError("give either standardize=True or a fixed scale, not both")
        return _finish(n, within, _scale_var(scale, d), unbiased, standardized=False, normalized=True)
    total_var = codes.reshape(k * n, d).var(dim=0, unbiased=False) if standardize else None
    return _finish(n, within, total_var, unbiased, standardized=standardize)


def _scale_var(scale: torch.Tensor | np.ndarray, d: int) -> torch.Tensor:
    """The squared fixed scale (D,), checked: D entries, finite and positive."""
    var = torch.as_tensor(scale, dtype=torch.float64).detach().cpu().flatten() ** 2
    if var.numel() != d:
        raise ValueError(f"scale must have D={d} entries, got {var.numel()}")
    if not (torch.isfinite(var).all() and (var > 0).all()):
        raise ValueError("scale must be finite and positive in every dimension")
    return var


def pairwise_distortion(codes: torch.Tensor | np.ndarray) -> np.ndarray:
    """Definition 3.1's estimator per image: 1/n^2 sum_{i,i'} ||E(P, M_i) - E(P, M_i')||^2, shape (k,).

    Quadratic in n; it exists to check the variance identity: ``pairwise_distortion(c) / (2 D)`` equals
    ``nsd(c).per_image``.
    """
    codes = _as_codes(codes)
    n = codes.shape[1]
    return (torch.cdist(codes, codes, compute_mode="donot_use_mm_for_euclid_dist") ** 2).sum((1, 2)).numpy() / n ** 2


class StreamingNSD:
    """NSD accumulated batch by batch over masks, in O(k D) memory instead of O(k n D).

    Call :meth:`update` with codes of shape (b images, m masks, D) for the images ``index`` (default: all k);
    every image must receive the same total number of masks. Per image and dimension it keeps the running mean
    and sum of squared deviations in float64, merged with Chan et al.'s pairwise update, so the result equals
    :func:`nsd` on the concatenated codes up to float64 rounding.
    """

    def __init__(self, k: int, dims: int) -> None:
        if k < 1 or dims < 1:
            raise ValueError(f"need k >= 1 images and dims >= 1, got k={k}, dims={dims}")
        self.k, self.dims = k, dims
        self.count = torch.zeros(k, dtype=torch.float64)
        self.mean = torch.zeros(k, dims, dtype=torch.float64)
        self.m2 = torch.zeros(k, dims, dtype=torch.float64)

    def update(self, codes: torch.Tensor | np.ndarray, index: slice | list[int] | torch.Tensor = slice(None)) -> None:
        """Add codes (b, m, D) of m more masks for the b images selected by ``index``."""
        codes = torch.as_tensor(codes).detach().to("cpu", torch.float64)
        if codes.ndim != 3 or codes.shape[2] != self.dims or codes.shape[1] == 0:
            raise ValueError(f"codes must have shape (b, m, {self.dims}) with m >= 1, got {tuple(codes.shape)}")
        if not torch.isfinite(codes).all():
            raise ValueError("codes contain NaN or infinite values")
        idx = torch.arange(self.k)[index]
        if idx.unique().numel() != idx.numel():
            raise ValueError("index selects an image more than once; add its masks in separate updates")
        if idx.numel() != codes.shape[0]:
            raise ValueError(f"index selects {idx.numel()} images but codes hold {codes.shape[0]}")
        m = codes.shape[1]
        b_mean = codes.mean(1)
        b_m2 = ((codes - b_mean[:, None]) ** 2).sum(1)
        na = self.count[idx][:, None]
        tot = na + m
        delta = b_mean - self.mean[idx]
        self.mean[idx] = self.mean[idx] + delta * m / tot
        self.m2[idx] = self.m2[idx] + b_m2 + delta ** 2 * na * m / tot
        self.count[idx] += m

    def result(self, standardize: bool = False, unbiased: bool = False,
               scale: torch.Tensor | np.ndarray | None = None) -> NSDResult:
        """The NSD of everything added so far (same meaning of the options as :func:`nsd`)."""
        n = int(self.count[0])
        if not (self.count == n).all():
            raise ValueError(f"images received different numbers of masks: {sorted(set(self.count.int().tolist()))}")
        if n < 2:
            raise ValueError(f"NSD needs at least n=2 masks per image, got n={n}")
        within = self.m2 / n
        if scale is not None:
            if standardize:
                raise ValueError("give either standardize=True or a fixed scale, not both")
            return _finish(n, within, _scale_var(scale, self.dims), unbiased, standardized=False, normalized=True)
        total_var = None
        if standardize:  # pooled variance over all k*n codes = mean within-variance + variance of image means
            grand = self.mean.mean(0)
            total_var = within.mean(0) + ((self.mean - grand) ** 2).mean(0)
        return _finish(n, within, total_var, unbiased, standardized=standardize)


@dataclass(frozen=True)
class VarianceSplit:
    """The codes' variance split into its parts, averaged over the D dimensions (issue 19, item 4).

    ``within``: the mask's part, the variance of E(P_j, M_i) over the n masks of one image, averaged over the
    images (1/n, as the NSD estimator divides); ``between``: the image's part, the variance of the image means
    Zbar_j over the k images; ``total = within + between``, the variance of all k n codes. ``running``: the
    fixed scale's variance (the bottleneck BatchNorm's running_var + eps: what the BN-normalised NSD divides by),
    or None without a scale. All in the units of ``scale`` (each dimension divided by it) when it is given.
    """

    within: float
    between: float
    running: float | None

    @property
    def total(self) -> float:
        return self.within + self.between

    @property
    def within_share(self) -> float:
        """The mask's share of the evaluation codes' variance: the eval-standardised NSD, pooled over dimensions."""
        return self.within / self.total

    @property
    def running_over_total(self) -> float | None:
        """The variance the network's BatchNorm expects over the variance of the evaluation codes (1 when the
        evaluation codes spread as the training codes did)."""
        return None if self.running is None else self.running / self.total


def variance_split(codes: StreamingNSD | torch.Tensor | np.ndarray,
                   scale: torch.Tensor | np.ndarray | None = None) -> VarianceSplit:
    """Split the variance of codes (k, n, D), or of a :class:`StreamingNSD`'s, into the within-image (mask) and
    between-image parts, each averaged over the dimensions after dividing every dimension by ``scale`` (e.g. the
    bottleneck BatchNorm's sqrt(running_var + eps), so that the BN-normalised NSD equals ``within`` and a code
    in N(0, I) has ``running = 1``). Section 3's NSD is the within part; what a value means depends on how it
    compares with the between part: NSD near the total says the mask moves the code as much as another image."""
    acc = codes
    if not isinstance(acc, StreamingNSD):
        c = _as_codes(codes)
        acc = StreamingNSD(c.shape[0], c.shape[2])
        acc.update(c)
    n = int(acc.count[0])
    if n < 2 or not (acc.count == n).all():
        raise ValueError("every image needs the same number n >= 2 of masks")
    var = torch.ones(acc.dims, dtype=torch.float64) if scale is None else _scale_var(scale, acc.dims)
    within = (acc.m2 / n).mean(0) / var
    between = acc.mean.var(0, unbiased=False) / var
    return VarianceSplit(float(within.mean()), float(between.mean()), None if scale is None else 1.0)


def nsd_standard_error(per_image: np.ndarray) -> float:
    """Standard error of the mean NSD over images: std/sqrt(k)."""
    per_image = np.asarray(per_image, dtype=np.float64)
    return float(per_image.std(ddof=1) / math.sqrt(per_image.size))
