"""What defines a training run: :class:`TrainConfig`, its presets and its checks (paper section 4, spec section 7).

The fields follow Pathak et al.'s recipe (see :mod:`cce_core.train`); the "fast path" options change where and how
the work is done, not the model or the loss. ``config.json`` of every run holds one :class:`TrainConfig`.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .masks import MASK_GENERATORS

MODELS = ("ce64", "ce128", "cce128")
MASKS = ("central", "random_blocks", "random_region")
#: Training-mask laws of random blocks: a mask per image (this book's default) or one per batch (Pathak's rule for
#: his random region, ``train_random.lua``; issue 28's training-side factor).
MASK_LAWS = ("image", "batch")
#: What fills the hole of G's input in training: Pathak's per-channel constants (``train.lua``) or uniform noise
#: in [-1, 1] (:class:`cce_core.masks.NoiseFill`, issue 28's training-side factor; beyond the paper).
FILLS = ("pathak", "noise")
#: The speed options of the fast path; each left at None follows ``TrainConfig.fast``.
FAST_OPTIONS = ("device_rng", "freeze_d", "device_checks", "amp", "channels_last", "fused_adam", "cudnn_benchmark")
#: Config fields that may differ between a run and its resumption.
RESUMABLE = ("steps", "device", "planned_steps", "snapshot_every")
#: /proc/cpuinfo flags of x86 CPUs that compute bf16 natively (AVX512-BF16; AMX tiles).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str) -> list[str]:
    """The flags of the first processor listed in a ``/proc/cpuinfo`` text (empty if none)."""
    return next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), [])


def has_native_bf16(capability: str, cpuinfo: str) -> bool:
    """Whether a CPU with PyTorch kernel ``capability`` (``torch.backends.cpu.get_cpu_capability()``: "AVX2",
    "AVX512", ...) and this ``/proc/cpuinfo`` text computes bf16 natively: AVX512 kernels and AVX512-BF16 (e.g. AMD
    EPYC Zen 4) or AMX (Intel Xeon Sapphire Rapids and later) among the flags."""
    return capability.startswith("AVX512") and any(f in cpu_flags(cpuinfo) for f in BF16_CPU_FLAGS)


@functools.cache
def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (:func:`has_native_bf16` on this machine; False off Linux).
    There bf16 autocast with channels-last pays (issue 21: a 128 CE's step about 1.8x faster than fp32); on other
    CPUs bf16 is emulated and slower, so it stays off."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return False
    return has_native_bf16(torch.backends.cpu.get_cpu_capability(), cpuinfo)


#: glibc malloc settings that keep freed memory in the process (see :func:`keep_freed_memory`): mmap only above 32 MiB
#: (glibc's largest threshold), trim the heap only above 2 GiB free (the largest value ``mallopt`` takes), grow it
#: 1 GiB at a time (address space; pages count only once touched).
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": 32 << 20, "MALLOC_TRIM_THRESHOLD_": (1 << 31) - 1,
                   "MALLOC_TOP_PAD_": 1 << 30}
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2, "MALLOC_MMAP_THRESHOLD_": -3}  # glibc's M_* numbers


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel (``mallopt`` with
    :data:`MALLOC_SETTINGS`), in this process and, through the same ``MALLOC_*_`` environment variables, in the
    processes it starts (the notebooks' kernels). Not in the paper or Pathak's code: host-side only, the trained
    weights are bit-identical (``tests/test_fast.py``). A CPU training step frees and allocates the same large
    tensors every step; with glibc's defaults each allocation comes back as fresh pages, tens of thousands of page
    faults a second and about a fifth of a core in the kernel (``benchmarks/malloc_tuning.py``).

    Returns whether it applied them: not where ``CCE_KEEP_FREED_MEMORY=0``, where any ``MALLOC_*_`` variable of
    :data:`MALLOC_SETTINGS` is already set (the user's choice), or where the C library is not glibc."""
    if os.environ.get("CCE_KEEP_FREED_MEMORY") == "0" or any(k in os.environ for k in MALLOC_SETTINGS):
        return False
    import ctypes
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    if not all(mallopt(_MALLOPT[k], v) == 1 for k, v in MALLOC_SETTINGS.items()):
        return False
    os.environ.update({k: str(v) for k, v in MALLOC_SETTINGS.items()})
    return True


def bf16_applies(device: str) -> bool:
    """Whether bf16 autocast and channels-last take effect on ``device`` (a config's device name) at all: on CUDA
    ("auto" where CUDA exists) and on a CPU with native bf16; elsewhere the run is fp32 whatever is asked."""
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return True
    return device in ("cpu", "auto") and native_bf16_cpu()


#: Whether ``fast=True`` also picks bf16 autocast and channels-last on a CPU with native bf16. The gate is the
#: outcome test of issue 32 (``benchmarks/bf16_outcome.py``): the 128 CE and the cascade trained at the study preset
#: in fp32 and in bf16 with the same seeds, evaluated in fp32, bf16 − fp32 of NSD, in-hole PSNR and the cascade − CE
#: difference equivalent within margins fixed beforehand, for 3 seeds. It has not yet run on a CPU with native bf16
#: (it needs one), so this stays off; the earlier gate (D's 300-step mean loss within 30% of fp32) compared two
#: drifting adversarial games and is now only a smoke check that bf16 learns (tests/test_fast.py). bf16 on such a
#: CPU stays available by asking for it (``amp=True, channels_last=True``).
FAST_PICKS_CPU_BF16 = False


def bf16_pays(device: str) -> bool:
    """Whether ``fast=True`` picks bf16 autocast and channels-last on ``device`` (a config's device name): on CUDA;
    on a CPU with native bf16 (:func:`native_bf16_cpu`) only if :data:`FAST_PICKS_CPU_BF16`; "auto" is CUDA where
    it exists, else the CPU."""
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return cuda or (FAST_PICKS_CPU_BF16 and bf16_applies(device))


@dataclass
class TrainConfig:
    """Everything that defines a training run; written to ``config.json`` next to its outputs."""

    model: str = "ce128"              # ce64 | ce128 | cce128 (the cascade's 128 CE)
    mask: str = "central"             # central | random_blocks | random_region
    data: list[str] = field(default_factory=lambda: ["embedded"])
    preset: str = "custom"
    steps: int = 1000                 # iterations (batches)
    batch_size: int = 64
    bottleneck: int = 4000            # D, the latent dimension
    width: int = 64                   # nef = ngf = ndf
    variant: str = "R"                # 64 CE widths (spec 6.2): R or W
    overlap: int | None = None        # central mask ring (None: 4 at 128, 2 at 64)
    lr_g: float = 2e-3
    lr_d: float = 2e-4
    beta1: float = 0.5
    wtl2: float = 0.999               # lambda_rec; lambda_adv = 1 - wtl2
    overlap_weight: float = 10.0      # L2 weight of the overlap ring, relative to the hole
    full_known_weight: float = 1.0    # full-image models: weight of known pixels (1: Pathak README, 0: eq. (1))
    flip: bool = True
    upscale: str = "bilinear"         # the cascade's x2 filter
    ce64: str | None = None           # checkpoint of the trained 64 CE (cce128 only)
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    checkpoint_every: int | None = 100  # checkpoint every this many steps (None: by time and at the end only)
    checkpoint_seconds: float | None = None  # and at the first log step after this many seconds since the last
    snapshot_every: int | None = None  # also keep G alone every this many steps in snapshots/ (NSD along training)
    limit: int | None = None          # use only the first `limit` images
    embedded_count: int = 512         # crops in the embedded default data set
    data_on_device: bool = True       # keep the decoded uint8 images on the training device
    max_bad_fraction: float = 0.05    # fail if more than this share of the image files is corrupt or too small
    mask_generator: str = "batched"   # batched | reference: masks.random_blocks or its loop version (same law)
    mask_law: str = "image"           # random blocks: one mask per image (ours) | "batch": one per batch (Pathak)
    fill: str = "pathak"              # the hole's content in training: Pathak's constants | "noise" (plain CEs)
    planned_steps: int | None = None  # set when train(time_limit=...) cut the run: the steps it was asked for
    # --- beyond the paper (issue 13, cce_core.losses): lambda * NSD_batch added to G's loss. 0: the recipe. ----
    nsd_weight: float = 0.0           # lambda
    nsd_masks: int = 2                # m: extra masks per image and step for NSD_batch (m encoder passes per step)
    nsd_norm: str = "batch"           # codes divided by the batch's spread (scale-free) | "running": BN running var
    # --- the fast path (same model and loss; see the module docstring). None: follow `fast`. ----------------
    fast: bool = False
    device_rng: bool | None = None      # indices, flips and masks drawn on the training device (device generator)
    mask_chunk: int | None = None       # random masks drawn for this many steps at once (None: 32 if fast, else 1)
    freeze_d: bool | None = None        # D's parameters frozen in the G step (its backward skips D's gradients)
    device_checks: bool | None = None   # mask values checked on the device per batch, read at log time
    amp: bool | None = None             # CUDA and bf16 CPUs: bf16 autocast of the networks (losses in fp32)
    channels_last: bool | None = None   # CUDA and bf16 CPUs: channels-last memory format
    fused_adam: bool | None = None      # CUDA only: fused Adam
    cudnn_benchmark: bool | None = None  # CUDA only: cuDNN autotuning
    compile: bool = False               # torch.compile G and D.logits (off even with fast: see the benchmark)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {self.mask!r}")
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [str(self.data)]
        self.data = [str(d) for d in self.data]
        if self.mask_generator not in MASK_GENERATORS:
            raise ValueError(f"mask_generator must be one of {MASK_GENERATORS}, got {self.mask_generator!r}")
        if self.mask_law not in MASK_LAWS:
            raise ValueError(f"mask_law must be one of {MASK_LAWS}, got {self.mask_law!r}")
        if self.mask_law == "batch" and self.mask != "random_blocks":
            raise ValueError(f"mask_law 'batch' applies to random_blocks (random_region is one mask per batch "
                             f"already, the central mask is one mask), got mask {self.mask!r}")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
        if self.fill == "noise" and self.model == "cce128":
            raise ValueError("fill 'noise' is for the plain CEs (ce64, ce128): the cascade's 128 CE sees its 64 CE's "
                             "inpainting in the hole, not a fill")
        bf16 = bf16_pays(self.device) if self.fast else False
        for name in FAST_OPTIONS:  # amp and channels-last only where they pay (bf16_pays), recorded as resolved
            if getattr(self, name) is None:
                setattr(self, name, bool(self.fast) and (bf16 or name not in ("amp", "channels_last")))
        if (self.amp or self.channels_last) and not bf16_applies(self.device):  # record what runs: fp32
            warnings.warn(f"amp/channels_last asked for on device {self.device!r}, which has no native bf16: the "
                          "run is fp32 and its configuration says so", stacklevel=2)
            self.amp = self.channels_last = False
        if self.mask_chunk is None:
            self.mask_chunk = 32 if self.fast else 1
        if int(self.mask_chunk) < 1:
            raise ValueError(f"mask_chunk must be at least 1, got {self.mask_chunk}")
        for name in ("steps", "batch_size", "log_every") + ("checkpoint_every",) * (self.checkpoint_every is not None):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.checkpoint_every is not None and self.checkpoint_every % self.log_every:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of log_every "
                             f"({self.log_every})")
        if self.snapshot_every is not None and int(self.snapshot_every) < 1:
            raise ValueError(f"snapshot_every must be at least 1 or None, got {self.snapshot_every}")
        if self.checkpoint_seconds is not None and not self.checkpoint_seconds > 0:
            raise ValueError(f"checkpoint_seconds must be positive or None, got {self.checkpoint_seconds}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm needs a batch)")
        self.nsd_weight, self.nsd_masks = float(self.nsd_weight), int(self.nsd_masks)
        if not (math.isfinite(self.nsd_weight) and self.nsd_weight >= 0):
            raise ValueError(f"nsd_weight must be a finite number >= 0, got {self.nsd_weight}")
        if self.nsd_masks < 2:
            raise ValueError("nsd_masks must be an integer >= 2 (NSD compares codes under several masks), "
                             f"got {self.nsd_masks}")
        if self.nsd_norm not in ("batch", "running"):
            raise ValueError(f"nsd_norm must be 'batch' or 'running', got {self.nsd_norm!r}")
        if self.nsd_weight > 0 and self.mask == "central":
            raise ValueError("nsd_weight > 0 needs varying masks (random_blocks or random_region): the central mask "
                             "is one mask")
        if self.model == "cce128" and not self.ce64:
            raise ValueError("model 'cce128' (the cascade) needs the trained 64 CE: pass its checkpoint as ce64 "
                             "(--ce64 CKPT)")

    @property
    def size(self) -> int:
        return 64 if self.model == "ce64" else 128

    @property
    def output(self) -> str:
        return "center" if self.mask == "central" else "full"


#: Named presets. ``smoke``: seconds on a CPU, for tests and nbval; ``cpu``: a meaningful run of minutes on
#: train-mini; ``paper``: the faithful architecture (D = 4000, width 64) for a GPU, with a snapshot of G every
#: 2,000 steps (8 along a full run, for NSD along training; one is 271 MiB in fp32, a cascade's 542 MiB with its
#: 64 CE: they stay in the run's folder, and only the NSD curve computed from them is packed). ``study``: the
#: ``cpu`` sizes trained twice as long (19,200 samples), with snapshots at 2,400 / 4,800 / 9,600 samples on the way:
#: the scale ladder of the CPU study (:func:`ladder_steps`, ``reproduce --ladder``).
PRESETS: dict[str, dict] = {
    "smoke": dict(steps=20, batch_size=16, bottleneck=64, width=16, log_every=2, checkpoint_every=10,
                  snapshot_every=5),
    "cpu": dict(steps=300, batch_size=32, bottleneck=512, width=32, log_every=10, checkpoint_every=100,
                snapshot_every=60),
    "study": dict(steps=600, batch_size=32, bottleneck=512, width=32, log_every=10, checkpoint_every=100,
                  snapshot_every=75),
    "paper": dict(steps=16000, batch_size=64, bottleneck=4000, width=64, log_every=50, checkpoint_every=None,
                  checkpoint_seconds=60, snapshot_every=2000),
}


#: Pathak et al.'s training length, which the paper adopts without stating it ("the same parameters and
#: hyper-parameters as [1]", section 5). His README trains the published models for ``niter`` = 500 epochs of Paris
#: StreetView; ``train.lua``'s default is 25 epochs. An epoch is ceil(images / 64) batches of 64 (the reference spec,
#: section 7.2); 14,900 is the CE paper's count of Paris StreetView training images (not verified).
PATHAK_TRAINING = {"images": 14_900, "batch_size": 64, "epochs_readme": 500, "epochs_default": 25}


def pathak_samples(epochs: int) -> int:
    """Image samples per model of ``epochs`` of Pathak's training (:data:`PATHAK_TRAINING`): epochs x iterations per
    epoch x batch; 500 epochs are 116,500 iterations, 7,456,000 samples."""
    p = PATHAK_TRAINING
    return epochs * math.ceil(p["images"] / p["batch_size"]) * p["batch_size"]


#: Training lengths in image samples per model: the one place the book takes them from (the model page shows them,
#: the re-run page, the report and the CPU study read them from here). ``paper``: None, the paper does not state its
#: training length; ``pathak_readme`` and ``pathak_default``: :func:`pathak_samples` of Pathak's 500 (README) and 25
#: (code default) epochs; ``paper_preset``: steps x batch of ``PRESETS["paper"]``. The preset trains about a seventh
#: of Pathak's README length. That is a choice of budget (a first paper-architecture run that is short on one GPU),
#: neither the paper's length nor a finding; the scale tiers' ``cce_core.stats.MIN_SAMPLES`` sits just below the
#: preset, so "paper scale" in this book means the paper's architecture and number of training images, trained
#: about a seventh as long as Pathak's README. Kept here, beside the presets whose length it explains, and below
#: ``stats`` in the import layers, so that the library and every notebook can read it.
TRAINING_LENGTH: dict[str, int | None] = {
    "paper": None,
    "pathak_readme": pathak_samples(PATHAK_TRAINING["epochs_readme"]),
    "pathak_default": pathak_samples(PATHAK_TRAINING["epochs_default"]),
    "paper_preset": PRESETS["paper"]["steps"] * PRESETS["paper"]["batch_size"],
}


def training_length_note() -> str:
    """:data:`TRAINING_LENGTH` in one sentence, for a page's text."""
    t, p = TRAINING_LENGTH, PATHAK_TRAINING
    return (f"the paper does not state its training length; Pathak's README trains {p['epochs_readme']} epochs of "
            f"Paris StreetView, {t['pathak_readme']:,} image samples per model (his code's default, "
            f"{p['epochs_default']} epochs: {t['pathak_default']:,}); the book's paper preset trains "
            f"{t['paper_preset']:,}, about 1/{t['pathak_readme'] / t['paper_preset']:.0f} of Pathak's README "
            "length, to keep the first GPU run short")


def make_config(preset: str = "smoke", **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a named preset, with ``overrides`` (None values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = {**PRESETS[preset], "preset": preset, **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**values)


def ladder_steps(steps: int, snapshot_every: int | None, points: int = 4) -> list[int]:
    """The training steps of a scale ladder: ``points`` steps a factor 2 apart ending at ``steps`` (e.g. 75, 150,
    300, 600), each of which keeps a snapshot (a multiple of ``snapshot_every``). ValueError when the run's
    snapshots cannot give such a ladder."""
    ladder = [steps // 2**i for i in reversed(range(points))]
    if snapshot_every is None or any(s < 1 or s * 2**i != steps or s % snapshot_every
                                     for i, s in zip(reversed(range(points)), ladder)):
        raise ValueError(f"no ladder of {points} points a factor 2 apart ending at step {steps} among snapshots "
                         f"every {snapshot_every} steps: choose steps = snapshot_every x 2^{points - 1} x m")
    return ladder
