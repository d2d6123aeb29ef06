"""Tests of the paper's building blocks: models (spec 4-6), masks (section 4.3), cascade (4.2) and NSD (3)."""

import numpy as np
import pytest
import torch

from cce_core.cascade import CascadeContextEncoder, downscale, downscale_mask, upscale
from cce_core.masks import (
    PATHAK_FILL,
    center_box,
    central_mask,
    coverage,
    fill_hole,
    make_masks,
    paste,
    random_blocks,
    random_region,
)
from cce_core.models import ContextEncoder, Discriminator, count_parameters
from cce_core.nsd import StreamingNSD, nsd, null_expectation, pairwise_distortion
from cce_core.stats import bootstrap_ci, paired_comparison


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- models -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, expected", [
    (lambda: ContextEncoder(128), 71_124_544),
    (lambda: Discriminator(128), 2_765_568),
    (lambda: ContextEncoder(64), 70_930_752),
    (lambda: Discriminator(64), 2_637_312),
    (lambda: ContextEncoder(64, variant="W"), 52_576_704),
    (lambda: Discriminator(64, variant="W"), 663_296),
    (lambda: ContextEncoder(128, output="full"), 71_190_208),
    (lambda: ContextEncoder(64, output="full"), 71_058_880),
    (lambda: Discriminator(128, input="full"), 2_831_232),
])
def test_parameter_counts_match_spec(make, expected):
    model = make()
    print(type(model).__name__, count_parameters(model))
    assert count_parameters(model) == expected


def test_no_conv_biases_and_init():
    g = ContextEncoder(128, bottleneck=100, width=16)
    convs = [m for m in g.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(m.bias is None for m in convs)
    w = torch.cat([m.weight.flatten() for m in convs])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    bns = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    gamma = torch.cat([m.weight for m in bns])
    assert abs(gamma.mean().item() - 1) < 0.01 and torch.all(torch.cat([m.bias for m in bns]) == 0)


@pytest.mark.parametrize("size, output, out",
                         [(128, "center", 64), (128, "full", 128), (64, "center", 32), (64, "full", 64)])
def test_shapes(size, output, out):
    g = ContextEncoder(size, bottleneck=32, output=output, width=8)
    d = Discriminator(size, input=output, width=8)
    x = torch.rand(3, 3, size, size) * 2 - 1
    y = g(x)
    assert y.shape == (3, 3, out, out) and y.abs().max() <= 1
    assert g.encode(x).shape == (3, 32)
    p = d(y)
    assert p.shape == (3,) and torch.all((p > 0) & (p < 1))


def test_encode_is_the_bottleneck_convolution():
    g = ContextEncoder(64, bottleneck=16, width=8).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    z = g.encode(x)
    # forward = decoder(LeakyReLU(BN(z))): feeding z through the rest must reproduce forward
    y = g.decoder(g.bottleneck_act(z.view(2, 16, 1, 1)))
    torch.testing.assert_close(y, g(x))


def test_model_bad_input():
    g = ContextEncoder(128, bottleneck=8, width=8)
    with pytest.raises(ValueError, match="128x128"):
        g(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="channels"):
        g(torch.zeros(1, 1, 128, 128))
    with pytest.raises(ValueError, match="shape"):
        g(torch.zeros(3, 128, 128))
    with pytest.raises(ValueError, match="bottleneck"):
        ContextEncoder(128, bottleneck=0)
    with pytest.raises(ValueError, match="size"):
        ContextEncoder(96)


# --- masks --------------------------------------------------------------------------------------------------

def test_central_mask_geometry():
    m = central_mask(2, 128)
    assert m.shape == (2, 1, 128, 128)
    rows = m[0, 0].sum(1).nonzero().flatten()
    assert rows.min() == 36 and rows.max() == 91 and m[0, 0].sum() == 56 * 56
    assert center_box(128) == (32, 96)
    m64 = central_mask(1, 64)
    assert m64[0, 0].sum() == 28 * 28 and m64[0, 0, 18, 18] == 1 and m64[0, 0, 17, 17] == 0
    torch.testing.assert_close(downscale_mask(central_mask(1, 128)), m64)  # the 64 hole is the 128 hole at 1/2


def test_random_blocks_coverage_never_above_quarter():
    m = random_blocks(500, 128, gen(1))
    cov = coverage(m)
    assert cov.max() <= 0.25 and cov.min() >= 0.10
    assert cov.std() > 0.02  # genuinely random
    assert torch.equal(downscale_mask(m), torch.nn.functional.avg_pool2d(m, 2))  # aligned to 2x2 cells
    m64 = random_blocks(200, 64, gen(2))
    assert coverage(m64).max() <= 0.25


def test_masks_seeded():
    assert torch.equal(random_blocks(8, 128, gen(3)), random_blocks(8, 128, gen(3)))
    assert not torch.equal(random_blocks(8, 128, gen(3)), random_blocks(8, 128, gen(4)))
    a = random_region(4, 128, gen(5), pattern_size=2000)
    assert torch.equal(a, random_region(4, 128, gen(5), pattern_size=2000))
    cov = coverage(a)
    assert torch.all((cov > 0.2) & (cov < 0.3)) and torch.equal(a[0], a[3])  # one mask per batch (Pathak)
    b = random_region(4, 128, gen(5), pattern_size=2000, per_batch=False)
    assert not torch.equal(b[0], b[1])


def test_mask_bad_parameters():
    with pytest.raises(ValueError, match="batch"):
        random_blocks(0, 128)
    with pytest.raises(ValueError, match="coverage"):
        random_blocks(2, 128, max_coverage=1.5)
    with pytest.raises(ValueError, match="size"):
        central_mask(1, 100)
    with pytest.raises(ValueError, match="overlap"):
        central_mask(1, 128, overlap=40)
    with pytest.raises(ValueError, match="unknown mask kind"):
        make_masks("circles", 2)


def test_fill_hole_and_paste():
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    m = central_mask(2, 128)
    filled = fill_hole(x, m)
    assert torch.allclose(filled[:, :, 50, 50], torch.tensor(PATHAK_FILL).expand(2, 3))
    assert torch.equal(filled[:, :, 0, 0], x[:, :, 0, 0])
    pred = torch.zeros(2, 3, 64, 64)
    out = paste(x, pred, m)
    assert torch.equal(out[:, :, 33, 33], x[:, :, 33, 33])  # ring keeps real pixels
    assert torch.all(out[:, :, 36:92, 36:92] == 0)
    with pytest.raises(ValueError, match="shape"):
        fill_hole(x, torch.zeros(2, 1, 64, 64))
    with pytest.raises(ValueError, match="0 \\(known\\) and 1"):
        fill_hole(x, torch.full((2, 1, 128, 128), 0.5))
    with pytest.raises(ValueError, match="outside"):
        paste(x, pred, random_blocks(2, 128, gen(0)) + central_mask(2, 128).clamp(max=0))


# --- cascade ------------------------------------------------------------------------------------------------

def small_cascade(output: str = "center") -> CascadeContextEncoder:
    torch.manual_seed(0)
    return CascadeContextEncoder(ContextEncoder(64, 16, output, width=8), ContextEncoder(128, 16, output, width=8))


@pytest.mark.parametrize("output, kind", [("center", "central"), ("full", "random_blocks")])
def test_cascade_keeps_known_pixels_and_hides_the_hole(output, kind):
    cce = small_cascade(output)
    x = torch.rand(4, 3, 128, 128) * 2 - 1
    m = make_masks(kind, 4, 128, gen(0))
    inp = cce.prepare_input(x, m)
    known = m == 0
    assert torch.equal(inp.masked_select(known.expand_as(x)), x.masked_select(known.expand_as(x)))
    # no hidden pixel leaks: change them all, the 128 input and the code stay the same
    y = torch.where(m.bool().expand_as(x), torch.rand_like(x), x)
    torch.testing.assert_close(cce.prepare_input(y, m), inp, rtol=0, atol=0)
    torch.testing.assert_close(cce.encode(y, m), cce.encode(x, m), rtol=0, atol=0)
    out = cce.inpaint(x, m)
    assert torch.equal(out.masked_select(known.expand_as(x)), x.masked_select(known.expand_as(x)))


def test_cascade_64_is_frozen():
    cce = small_cascade("full")
    cce.train()
    assert not cce.ce64.training and cce.ce128.training
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    m = random_blocks(2, 128, gen(0))
    before = {k: v.clone() for k, v in cce.ce64.state_dict().items()}
    cce(x, m).square().mean().backward()
    assert all(p.grad is None for p in cce.ce64.parameters())
    assert all(p.grad is not None for p in cce.ce128.parameters())
    assert all(torch.equal(before[k], v) for k, v in cce.ce64.state_dict().items())  # BN stats untouched


def test_cascade_fill_is_the_upscaled_64_inpainting():
    cce = small_cascade("center").eval()
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    m = central_mask(2, 128)
    small = cce.ce64.inpaint(downscale(x * (1 - m)), downscale_mask(m))
    expected = upscale(small)[:, :, 36:92, 36:92]
    torch.testing.assert_close(cce.prepare_input(x, m)[:, :, 36:92, 36:92], expected)


def test_cascade_rejects_wrong_sizes():
    with pytest.raises(ValueError, match="64x64 CE and a 128x128"):
        CascadeContextEncoder(ContextEncoder(128, 8, width=8), ContextEncoder(128, 8, width=8))


# --- NSD ----------------------------------------------------------------------------------------------------

def test_nsd_equals_pairwise_form_over_2d():
    codes = torch.randn(5, 7, 11, generator=gen(0)) * 3 + 1
    r = nsd(codes)
    np.testing.assert_allclose(pairwise_distortion(codes) / (2 * 11), r.per_image, rtol=1e-12)
    manual = ((codes - codes.mean(1, keepdim=True)) ** 2).sum((1, 2)) / (11 * 7)
    np.testing.assert_allclose(r.per_image, manual.double().numpy(), rtol=1e-6)


def test_nsd_null_value_is_n_minus_1_over_n():
    k, n, d = 200, 10, 256
    r = nsd(torch.randn(k, n, d, generator=gen(1)))
    se = r.std / np.sqrt(k)
    assert abs(r.mean - null_expectation(n)) < 4 * se
    assert abs(nsd(torch.randn(k, n, d, generator=gen(1)), unbiased=True).mean - 1) < 4 * se * n / (n - 1)


def test_nsd_zero_for_mask_invariant_codes_and_standardised():
    z = torch.randn(6, 1, 32, generator=gen(2)).expand(6, 5, 32)
    assert nsd(z).mean == 0 and nsd(z, standardize=True).mean == 0
    # standardisation removes the per-dimension scale
    codes = torch.randn(50, 20, 8, generator=gen(3))
    scaled = codes * torch.logspace(-3, 3, 8)
    np.testing.assert_allclose(nsd(codes, standardize=True).per_image, nsd(scaled, standardize=True).per_image,
                               rtol=1e-6)
    assert abs(nsd(codes, standardize=True).mean - 19 / 20) < 0.05


def test_streaming_equals_batch():
    codes = torch.randn(9, 30, 16, generator=gen(4)) * 2 + 5
    s = StreamingNSD(9, 16)
    for i in range(0, 30, 7):
        s.update(codes[:5, i:i + 7], index=slice(0, 5))
        s.update(codes[5:, i:i + 7], index=[5, 6, 7, 8])
    for std in (False, True):
        np.testing.assert_allclose(s.result(standardize=std).per_image, nsd(codes, standardize=std).per_image,
                                   rtol=1e-10)
    partial = StreamingNSD(2, 16)
    partial.update(codes[:1, :3], index=[0])
    with pytest.raises(ValueError, match="different numbers"):
        partial.result()


def test_nsd_bad_input():
    with pytest.raises(ValueError, match="n=2"):
        nsd(torch.randn(3, 1, 4))
    with pytest.raises(ValueError, match="empty"):
        nsd(torch.randn(0, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        nsd(torch.randn(3, 4))
    bad = torch.randn(3, 4, 5)
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        nsd(bad)


def test_bootstrap_and_paired_comparison():
    rng = np.random.default_rng(0)
    a = rng.normal(0.8, 0.17, 250)
    lo, hi = bootstrap_ci(a, seed=1)
    assert lo < a.mean() < hi and hi - lo < 0.06
    base = torch.randn(250, 20, 8, generator=gen(5))
    ra, rb = nsd(base), nsd(base * 0.8)  # b: less mask variance on every image
    cmp = paired_comparison(ra, rb, seed=0)
    assert cmp.mean < 0 and cmp.ci[1] < 0 and cmp.p_value < 0.01 and cmp.fraction_lower == 1.0
    same = paired_comparison(ra, nsd(base), seed=0)
    assert same.mean == 0 and same.p_value == 1.0


def test_same_seed_same_masks_same_nsd():
    def run(seed: int) -> float:
        torch.manual_seed(0)
        ce = ContextEncoder(128, 16, "full", width=8).eval()
        x = torch.rand(3, 3, 128, 128, generator=gen(9)) * 2 - 1
        masks = random_blocks(6, 128, gen(seed))
        with torch.no_grad():
            codes = torch.stack([ce.encode(x[j:j + 1].expand(6, -1, -1, -1), masks) for j in range(3)])
        return nsd(codes).mean
    assert run(1) == run(1)
    assert run(1) != run(2)
