"""The three NSD readings (section 3): BN-normalised against an independent numpy computation, and their options."""

import numpy as np
import pytest
import torch

from cce_core.cascade import CascadeContextEncoder
from cce_core.evaluate import code_scale, model_nsd
from cce_core.masks import random_blocks
from cce_core.models import ContextEncoder
from cce_core.nsd import StreamingNSD, nsd, variance_split
from cce_core.stats import paired_comparison


def _set_bn(ce: ContextEncoder, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Give the bottleneck BatchNorm known running statistics (variances over 4 orders of magnitude, around the
    codes' own scale); returns them as stored in the buffers (float32), in float64."""
    rng = np.random.default_rng(seed)
    d = ce.bottleneck
    bn = ce.bottleneck_bn
    bn.running_mean.copy_(torch.as_tensor(rng.normal(0, 3, d)))
    bn.running_var.copy_(torch.as_tensor(10.0 ** rng.uniform(-7, -3, d)))
    bn.eps = 1e-6
    return bn.running_mean.double().numpy(), bn.running_var.double().numpy(), bn.eps


def _numpy_normalized_nsd(codes: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float) -> np.ndarray:
    """Section 3's estimator on (z - running_mean) / sqrt(running_var + eps), written out in plain numpy."""
    z = (codes.astype(np.float64) - mean) / np.sqrt(var + eps)  # (k, n, D)
    k, n, d = z.shape
    zbar = z.mean(axis=1, keepdims=True)
    return ((z - zbar) ** 2).sum(axis=(1, 2)) / (d * n)


@pytest.mark.parametrize("cascade", [False, True])
def test_bn_normalized_nsd_matches_numpy(cascade):
    torch.manual_seed(0)
    ce = ContextEncoder(128, bottleneck=24, output="full", width=8)
    mean, var, eps = _set_bn(ce, 1)
    model = ce
    if cascade:  # the cascade's normalisation is its 128 CE's bottleneck BN, not the 64 CE's
        ce64 = ContextEncoder(64, bottleneck=24, output="full", width=8)
        _set_bn(ce64, 2)
        model = CascadeContextEncoder(ce64, ce)
    model.eval()
    images = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(3)) * 2 - 1
    masks = random_blocks(5, 128, torch.Generator().manual_seed(4))
    res = model_nsd(model, images, masks, batch_size=5, progress=False)  # same batches: identical float32 codes
    with torch.no_grad():  # codes stored, one image at a time
        codes = np.stack([model.encode(images[j:j + 1].expand(5, -1, -1, -1), masks).numpy() for j in range(3)])
    expected = _numpy_normalized_nsd(codes, mean, var, eps)
    np.testing.assert_allclose(res.normalized.per_image, expected, rtol=1e-9)
    assert res.normalized.normalized and res.normalized.reading == "normalized" and res.normalized.dims == 24
    # the scale matters here: the raw reading is far from the normalised one
    assert abs(res.raw.mean / res.normalized.mean - 1) > 0.5
    np.testing.assert_allclose(code_scale(model).numpy(), np.sqrt(var + eps), rtol=1e-6)
    np.testing.assert_allclose(ce.normalize_code(torch.as_tensor(codes[0])).numpy(),
                               (codes[0] - mean) / np.sqrt(var + eps), rtol=1e-5, atol=1e-5)


def test_normalized_is_independent_of_the_evaluation_set():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(1, 20, 16))  # one image's codes
    others_a = rng.normal(size=(30, 20, 16)) * 0.1  # images close to each other
    others_b = rng.normal(size=(30, 20, 16)) * 10  # images far apart (plus large image means)
    others_b += rng.normal(size=(30, 1, 16)) * 30
    scale = np.full(16, 2.0)
    a, b = np.concatenate([target, others_a]), np.concatenate([target, others_b])
    assert nsd(a, scale=scale).per_image[0] == pytest.approx(nsd(b, scale=scale).per_image[0], rel=1e-12)
    sa, sb = nsd(a, standardize=True).per_image[0], nsd(b, standardize=True).per_image[0]
    assert sa > 10 * sb  # the eval-standardised reading of the same codes moves with the other images


def test_streaming_scale_and_reading_checks():
    codes = torch.randn(6, 12, 8, generator=torch.Generator().manual_seed(5)) * 3
    scale = torch.linspace(0.5, 4, 8)
    s = StreamingNSD(6, 8)
    for i in range(0, 12, 5):
        s.update(codes[:, i:i + 5])
    np.testing.assert_allclose(s.result(scale=scale).per_image, nsd(codes, scale=scale).per_image, rtol=1e-10)
    np.testing.assert_allclose(nsd(codes, scale=scale).per_image, nsd(codes.double() / scale.double()).per_image,
                               rtol=1e-10)
    with pytest.raises(ValueError, match="either"):
        s.result(standardize=True, scale=scale)
    with pytest.raises(ValueError, match="D=8"):
        nsd(codes, scale=scale[:4])
    with pytest.raises(ValueError, match="positive"):
        nsd(codes, scale=torch.zeros(8))
    with pytest.raises(ValueError, match="same reading"):
        paired_comparison(nsd(codes), nsd(codes, scale=scale))


def test_variance_split_on_codes_with_a_known_split():
    """Codes a_j + w s_i (image means a_j = ±b, mask offsets s_i = ±1 summing to 0): the mask's part is w², the
    image's part b², in every dimension; divided by a scale c both shrink by c²; the mask's part is the NSD."""
    k, n, d, b, w = 6, 8, 5, 3.0, 0.5
    a = b * torch.tensor([1.0, -1.0] * (k // 2))[:, None, None].expand(k, n, d)
    s = torch.tensor([1.0, -1.0] * (n // 2))[None, :, None].expand(k, n, d)
    codes = a + w * s
    split = variance_split(codes)
    assert split.within == pytest.approx(w ** 2) and split.between == pytest.approx(b ** 2)
    assert split.within_share == pytest.approx(w ** 2 / (w ** 2 + b ** 2)) and split.running is None
    scaled = variance_split(codes, scale=torch.full((d,), 2.0))
    assert scaled.within == pytest.approx(w ** 2 / 4) and scaled.between == pytest.approx(b ** 2 / 4)
    assert scaled.within == pytest.approx(nsd(codes, scale=torch.full((d,), 2.0)).mean)
    assert scaled.running_over_total == pytest.approx(4 / (w ** 2 + b ** 2))
    acc = StreamingNSD(k, d)
    acc.update(codes[:, : n // 2])
    acc.update(codes[:, n // 2:])
    assert variance_split(acc).between == pytest.approx(b ** 2)
    with pytest.raises(ValueError, match="D=5"):
        variance_split(codes, scale=torch.ones(3))
