"""The Context Encoder of Pathak et al. (2016) and its discriminator, layer for layer.

The paper under reproduction (Zielinski et al., arXiv:1803.04033, section 4.1) uses "the same encoder and
discriminator architecture and the same parameters and hyper-parameters as in [1]". [1]'s released code
(pathak22/context-encoder, ``train.lua`` and ``train_random.lua``) is the reference followed here, as written
up in ``shared/reference/context-encoder-spec.md`` (sections 4 to 6 and 13):

* every convolution and transposed convolution has ``bias=False`` (the Torch code zeroes biases every step);
* BatchNorm everywhere except the first encoder conv, the first D conv and the two outputs;
* LeakyReLU(0.2) in the encoder and in D, ReLU in the decoder, Tanh on G's output, Sigmoid on D's;
* the bottleneck is a 4x4 "valid" convolution 512 -> ``bottleneck`` (4000 in the paper) followed by BN and
  LeakyReLU; the decoder starts with a 4x4 transposed convolution back to 512x4x4;
* weights ~ N(0, 0.02), BN gamma ~ N(1, 0.02), beta = 0.

``ContextEncoder(size=128)`` inpaints the central 64x64 block of a 128x128 image (``output="center"``) or
predicts the whole image (``output="full"``, Pathak's random-region generator). ``size=64`` is the 64x64 CE
of the cascade: the 128 network with its highest-resolution layer removed on both sides ("Variant R" of the
spec, section 6.2, the default) or the DCGAN width rule ("Variant W").

``width`` scales every channel count (64 in the paper). It exists only so that CPU smoke runs are fast; the
parameter counts of the spec hold for ``width=64``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .masks import fill_hole, paste

Size = Literal[64, 128]
Output = Literal["center", "full"]
Variant = Literal["R", "W"]


def _check_choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _down(cin: int, cout: int, bn: bool) -> list[nn.Module]:
    """A 4x4 stride-2 convolution halving the resolution, with optional BN, then LeakyReLU(0.2)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


def _up(cin: int, cout: int, first: bool = False) -> list[nn.Module]:
    """A 4x4 transposed convolution (from 1x1 to 4x4 if ``first``, else doubling), BN, ReLU."""
    conv = (nn.ConvTranspose2d(cin, cout, 4, 1, 0, bias=False) if first
            else nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False))
    return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def init_weights(module: nn.Module) -> None:
    """Pathak's initialisation (``train.lua:L58-67``): conv weights ~ N(0, 0.02); BN gamma ~ N(1, 0.02), beta = 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def check_images(x: torch.Tensor, size: int, what: str = "input") -> None:
    """Raise a clear error unless ``x`` is a float batch of shape (B, 3, size, size)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{what} must have shape (B, 3, {size}, {size}), got {tuple(x.shape)} ({x.ndim} dims)")
    if x.shape[1] != 3:
        raise ValueError(f"{what} must have 3 (RGB) channels, got {x.shape[1]} in shape {tuple(x.shape)}")
    if x.shape[2] != size or x.shape[3] != size:
        raise ValueError(f"{what} must be {size}x{size} pixels, got {x.shape[2]}x{x.shape[3]}")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor in [-1, 1], got dtype {x.dtype}")


class ContextEncoder(nn.Module):
    """Pathak et al.'s inpainting generator F: an encoder to a ``bottleneck``-dimensional code and a decoder.

    Args:
        size: input resolution, 128 (spec section 4) or 64 (spec section 6.2).
        bottleneck: dimension D of the latent code E(P, M) (4000 in the paper).
        output: ``"center"`` predicts the central (size/2)^2 block (the central-mask CE); ``"full"`` predicts the
            whole size^2 image (Pathak's random-region generator, spec 3.2, used with random masks).
        variant: decoder widths of the 64 CE: ``"R"`` (resolution-matched, default) or ``"W"`` (DCGAN width rule).
            At size 128, and for ``output="full"`` at size 64, both rules give the same network.
        width: base channel count (nef = ngf = 64 in the paper).
    """

    def __init__(self, size: Size = 128, bottleneck: int = 4000, output: Output = "center",
                 variant: Variant = "R", width: int = 64) -> None:
        super().__init__()
        _check_choice("size", size, (64, 128))
        _check_choice("output", output, ("center", "full"))
        _check_choice("variant", variant, ("R", "W"))
        if not isinstance(bottleneck, int) or bottleneck <= 0:
            raise ValueError(f"bottleneck must be a positive integer, got {bottleneck!r}")
        if not isinstance(width, int) or width <= 0 or width % 4:
            raise ValueError(f"width must be a positive multiple of 4, got {width!r}")
        self.size, self.bottleneck, self.output, self.variant, self.width = size, bottleneck, output, variant, width
        w = width

        # Encoder: 128 -> 64 -> 32 -> 16 -> 8 -> 4 (size 128) or 64 -> 32 -> 16 -> 8 -> 4 (size 64).
        enc_ch = [3, w, w, 2 * w, 4 * w, 8 * w] if size == 128 else [3, w, 2 * w, 4 * w, 8 * w]
        enc: list[nn.Module] = []
        for i in range(len(enc_ch) - 1):
            enc += _down(enc_ch[i], enc_ch[i + 1], bn=i > 0)
        self.encoder = nn.Sequential(*enc)
        # The bottleneck: a 4x4 "valid" convolution to D x 1 x 1 (spec 4, E6). Its output is the code E(P, M).
        self.bottleneck_conv = nn.Conv2d(8 * w, bottleneck, 4, 1, 0, bias=False)
        self.bottleneck_act = nn.Sequential(nn.BatchNorm2d(bottleneck), nn.LeakyReLU(0.2, inplace=True))

        # Decoder: 1 -> 4 -> 8 -> ... -> out_size, widths halving from 8w, last layer to 3 channels + Tanh.
        out_size = self.out_size
        n_up = {4: 0, 32: 3, 64: 4, 128: 5}[out_size]  # number of stride-2 up-convolutions after the first
        if size == 64 and output == "center" and variant == "W":
            top = 4 * w  # DCGAN rule: the top decoder width is ngf * out_size / 8 = 256 for a 32x32 output
        else:
            top = 8 * w
        dec_ch = [top // 2 ** i for i in range(n_up)]
        if size == 128 and output == "full":
            dec_ch = [8 * w, 4 * w, 2 * w, w, w]  # official random G at 128: an extra 64->64 up-conv (spec 3.2, 6.1)
        dec: list[nn.Module] = _up(bottleneck, dec_ch[0], first=True)
        for i in range(len(dec_ch) - 1):
            dec += _up(dec_ch[i], dec_ch[i + 1])
        dec += [nn.ConvTranspose2d(dec_ch[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.decoder = nn.Sequential(*dec)
        init_weights(self)

    @property
    def out_size(self) -> int:
        """Side of the predicted region: size/2 for ``output="center"``, size for ``output="full"``."""
        return self.size // 2 if self.output == "center" else self.size

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The latent code E(P, M) of the paper (section 3): the bottleneck convolution's output, shape (B, D).

        ``x`` is the network input (the hole already filled). If ``mask`` is given, ``x`` is the clean image and
        the hole (mask == 1) is filled with Pathak's constants first (:func:`cce_core.masks.fill_hole`).
        """
        if mask is not None:
            x = fill_hole(x, mask)
        check_images(x, self.size)
        return self.bottleneck_conv(self.encoder(x)).flatten(1)

    @property
    def bottleneck_bn(self) -> nn.BatchNorm2d:
        """The BatchNorm that follows the bottleneck convolution (its running statistics normalise the code)."""
        return self.bottleneck_act[0]

    def code_scale(self) -> torch.Tensor:
        """sqrt(running_var + eps) of the bottleneck BatchNorm, shape (D,): the fixed per-dimension scale of the
        BN-normalised NSD (section 3 assumes codes in N(0, I); this is the network's own map there)."""
        bn = self.bottleneck_bn
        return torch.sqrt(bn.running_var.detach().double() + bn.eps)  # float64: no rounding of var + eps

    def normalize_code(self, z: torch.Tensor) -> torch.Tensor:
        """(z - running_mean) / sqrt(running_var + eps): codes (B, D) as the bottleneck BatchNorm standardises them
        in eval mode, before its affine weight and bias."""
        return ((z.double() - self.bottleneck_bn.running_mean.double()) / self.code_scale()).to(z.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F(x): the prediction for the central block (B, 3, size/2, size/2) or the whole image (B, 3, size, size)."""
        check_images(x, self.size)
        z = self.bottleneck_act(self.bottleneck_conv(self.encoder(x)))
        return self.decoder(z)

    def inpaint(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fill the hole of ``images`` (mask == 1) with the prediction and keep every known pixel (spec 7.3)."""
        return paste(images, self(fill_hole(images, mask)), mask)


class Discriminator(nn.Module):
    """Pathak et al.'s discriminator D: strided 4x4 convolutions down to 4x4, then a 4x4 valid conv and a Sigmoid.

    Args:
        size: resolution of the CE it judges (128 or 64).
        input: ``"center"``: D sees the central (size/2)^2 block only (spec 5); ``"full"``: the whole image
            (``train_random.lua``).
        variant: widths of D-64 on a 32x32 input, ``"R"`` (D-128 without C1) or ``"W"`` (DCGAN rule), spec 6.3.
        width: base channel count (ndf = 64 in the paper).

    ``forward`` returns probabilities of shape (B,), as the Torch model does; :meth:`logits` returns the
    pre-sigmoid scores, which the training loop feeds to ``binary_cross_entropy_with_logits`` (the same loss,
    computed stably).
    """

    def __init__(self, size: Size = 128, input: Output = "center", variant: Variant = "R", width: int = 64) -> None:
        super().__init__()
        _check_choice("size", size, (64, 128))
        _check_choice("input", input, ("center", "full"))
        _check_choice("variant", variant, ("R", "W"))
        if not isinstance(width, int) or width <= 0 or width % 4:
            raise ValueError(f"width must be a positive multiple of 4, got {width!r}")
        self.size, self.input, self.variant, self.width = size, input, variant, width
        self.in_size = size // 2 if input == "center" else size
        w = width
        ch = {128: [3, w, w, 2 * w, 4 * w, 8 * w],  # official random D at 128: an extra 64->64 conv after C1
              64: [3, w, 2 * w, 4 * w, 8 * w],
              32: [3, 2 * w, 4 * w, 8 * w] if variant == "R" else [3, w, 2 * w, 4 * w]}[self.in_size]
        layers: list[nn.Module] = []
        for i in range(len(ch) - 1):
            layers += _down(ch[i], ch[i + 1], bn=i > 0)
        layers.append(nn.Conv2d(ch[-1], 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores, shape (B,)."""
        check_images(x, self.in_size, what="discriminator input")
        return self.net(x).flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """D(x): the probability that ``x`` is real, shape (B,)."""
        return torch.sigmoid(self.logits(x))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (conv weights and BN affine), as counted in the spec's table (section 8)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
