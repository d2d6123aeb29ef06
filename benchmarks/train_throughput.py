"""Training throughput, plain vs fast: images/s of one training iteration (D step + G step) per model.

    python benchmarks/train_throughput.py                    # paper sizes (width 64, D = 4000, batch 64)
    python benchmarks/train_throughput.py --json benchmarks/results/h100.json
    python benchmarks/train_throughput.py --sizes cpu --wait-load 1.5 --json benchmarks/results/cpu-2026-12-01.json
    python benchmarks/train_throughput.py --quick            # tiny sizes, a few steps: CI on 2 CPU cores
    torchrun --nproc_per_node=4 benchmarks/train_throughput.py --models ce128   # data-parallel, 4 GPUs

Arms per model (ce64, ce128 and the cascade's 128 CE, random-block masks), in this process, on this device:

* **plain**: what a straightforward port does, in strict fp32: eager, the images on the host, each batch drawn
  there (CPU generator, the loop mask generator ``random_blocks_reference``) and moved to the device every step,
  mask values checked inside every step (``TrainConfig(fast=False, mask_generator="reference",
  data_on_device=False)``), and TF32 off (``torch.backends.cuda.matmul.allow_tf32`` and
  ``torch.backends.cudnn.allow_tf32`` False: on an H100/H200 cuDNN's convolutions use TF32 by default);
* **defaults**: the same port with torch's own defaults (cuDNN's TF32 on, matmul's off, as torch ships), so
  "port -> library defaults" and "defaults -> fast" are told apart;
* **fast-fp32** (``--arms`` only): ``fast=True`` with ``amp=False, channels_last=False``, the fast path in fp32
  even where ``fast`` would pick bf16 (CUDA);
* **fast**: ``TrainConfig(fast=True)``: images on the device, indices, flips and batched masks drawn there
  from device generators (the masks of 32 steps at a time), D frozen in the G step, mask checks on the
  device; on CUDA also bf16 autocast, channels-last, fused Adam and cuDNN autotuning (on the CPU fp32: see
  :data:`cce_core.config.FAST_PICKS_CPU_BF16`);
* **fast-bf16** (by default on a CPU with native bf16, :func:`cce_core.config.native_bf16_cpu`): the fast path
  with bf16 autocast and channels-last asked for.

Each arm runs inside :func:`cce_core.train.global_switches` with its own cuDNN autotuning and TF32 settings, so
no arm inherits another's (the FLOP count, made on the fast arm, comes first). ``--sizes cpu`` measures at the
``cpu`` preset's sizes (width 32, D = 512, batch 32); ``--wait-load L`` waits before each arm (up to 10 min) until
the 1-minute load average is below L, on a shared machine; the load averages are recorded with each arm.

``--profile [ARM ...]`` (after the timings): torch.profiler over ``--steps`` iterations of each
named arm (default fast), the self time of each operator summed by family (convolution, batch norm,
activation, optimizer, copies and casts, losses and reductions, pooling, elementwise, other) as shares: where
the time goes. On a CPU each arm's TFLOP/s is also given as a share of an fp32 FMA peak (:func:`cpu_fp32_peak`).

Each arm: ``--warmup`` untimed iterations, then ``--repeats`` timed blocks of ``--steps`` iterations (the loop
body of :func:`cce_core.train.train`, losses accumulated on the device and read once per block); the median
block is reported. ``--rounds R`` measures every arm R times, interleaved (arms in turn, the order reversed every
other round, so a drift of the machine falls on all arms alike), and reports each arm's median over the rounds and
its ratio to plain round by round (median, range, rounds faster): on 2 shared CPU cores one pass per arm cannot
tell a 10-20% difference from the machine's drift (:func:`interleaved`). Random images stand in for
photographs (decoding is done once, before training).
GFLOP per image are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one iteration (forward and
backward of D and G, and the cascade's frozen 64 CE); the share of the device's dense bf16 peak is printed for
known devices. ``--compile-models`` (default: ce128 on CUDA, none elsewhere) adds a third arm, fast +
``torch.compile``, and says whether its compile time pays back within a 1 M-sample run.

Under ``torchrun`` (issue 14) each arm trains one model with DistributedDataParallel as ``python -m cce_core
train`` does (:mod:`cce_core.distributed`: synchronised BatchNorm, ``--batch-size`` is the global batch, each
process takes its share); images/s are those of the whole group (global batch x steps / rank 0's time; the
processes move in lockstep), so scaling efficiency on N GPUs is images/s(N) / (N x images/s(1)). GFLOP per image
are counted on one process's share. Rank 0 prints and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cce_core import distributed  # noqa: E402
from cce_core.batches import make_generator, make_mask_stream, next_batch  # noqa: E402
from cce_core.cascade import CascadeContextEncoder  # noqa: E402
from cce_core.checkpoint import build_models  # noqa: E402
from cce_core.config import PRESETS, bf16_pays, cpu_flags, make_config, native_bf16_cpu  # noqa: E402
from cce_core.masks import fill_hole, invalid_mask_count  # noqa: E402
from cce_core.models import ContextEncoder  # noqa: E402
from cce_core.provenance import cpu_model, provenance, resolve_device  # noqa: E402
from cce_core.train import global_switches, make_step, setup_training  # noqa: E402

WORLD: distributed.World | None = None  # set by main() under torchrun

#: Dense bf16 peaks in TFLOP/s (vendor data sheets); matched against the device name, first match wins.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0))

PORT = dict(fast=False, mask_generator="reference", data_on_device=False)
ARMS = {
    "plain": PORT,      # and TF32 off (TF32_OFF)
    "defaults": PORT,   # torch's default switches
    "fast-fp32": dict(fast=True, amp=False, channels_last=False),
    "fast": dict(fast=True),
    "fast-bf16": dict(fast=True, amp=True, channels_last=True),  # asked for: a CPU with native bf16
    "compiled": dict(fast=True, compile=True),
}
#: The arms whose matmuls and convolutions are strict fp32 (no TF32); the others run with torch's defaults.
TF32_OFF = ("plain",)
#: Sizes of ``--sizes``: the presets' (batch, width, D); quick: tiny, for CI.
SIZES = {name: {k: PRESETS[name][k] for k in ("batch_size", "width", "bottleneck")}
         for name in ("paper", "cpu", "study")}
SIZES["quick"] = dict(batch_size=8, width=8, bottleneck=16)
RUN_SAMPLES = 1_000_000  # the run length against which compile time is weighed


#: bf16 FLOP per cycle and core of a CPU's matrix or vector units, for :func:`cpu_bf16_peak`: AMX (Intel Sapphire
#: Rapids and later: one 16x32 by 32x16 bf16 tile product, 16,384 multiply-adds, per 16 cycles = 1,024 FLOP/cycle;
#: Intel's figure) and AVX512-BF16 (AMD Zen 4: VDPBF16PS does 32 bf16 multiply-adds into fp32 per 512-bit
#: instruction, executed as two 256-bit halves on each of two pipes: about 64 FLOP/cycle). An estimate of the
#: ceiling, not a measured one: the benchmark states it as such.
CPU_BF16_FLOP_PER_CYCLE = (("amx_bf16", 1024.0), ("avx512_bf16", 64.0))


def bf16_peak(device_name: str) -> float | None:
    """The device's dense bf16 peak in TFLOP/s, or None if it is not in :data:`BF16_PEAK_TFLOPS`."""
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in device_name), None)


def _cpu_mhz(cpuinfo: str) -> float | None:
    """The clock of the first processor in ``/proc/cpuinfo`` (``cpu MHz``), or None where it is not given."""
    return next((float(ln.split(":", 1)[1]) for ln in cpuinfo.splitlines() if ln.startswith("cpu MHz")), None)


def cpu_bf16_peak(cpuinfo: str, threads: int) -> dict | None:
    """An estimate of a CPU's bf16 peak over ``threads`` cores (TFLOP/s): cores x clock (``/proc/cpuinfo``'s
    ``cpu MHz`` of the first processor) x :data:`CPU_BF16_FLOP_PER_CYCLE` of its best bf16 unit; None where it has
    none (bf16 is then emulated). Returns the unit, the clock and the peak, so the record says how it was made."""
    flags = cpu_flags(cpuinfo)
    unit = next(((f, per) for f, per in CPU_BF16_FLOP_PER_CYCLE if f in flags), None)
    mhz = _cpu_mhz(cpuinfo)
    if unit is None or mhz is None:
        return None
    return {"unit": unit[0], "flop_per_cycle_per_core": unit[1], "mhz": mhz, "cores": threads,
            "tflops": threads * mhz * 1e6 * unit[1] / 1e12,
            "how": "cores x clock (cpu MHz) x FLOP/cycle of the unit: an estimate of the ceiling, not measured"}


def cpu_fp32_peak(cpuinfo: str, threads: int) -> dict | None:
    """An estimate of a CPU's fp32 FMA peak over ``threads`` cores (TFLOP/s): two FMA pipes per core, each 8 fp32
    lanes wide with AVX2 (32 FLOP/cycle), 16 with AVX-512 on Intel (64; AMD's Zen 4 runs AVX-512 as two 256-bit
    halves: 32), times the clock (``cpu MHz``); None without FMA. An estimate of the ceiling, not measured."""
    flags = cpu_flags(cpuinfo)
    mhz = _cpu_mhz(cpuinfo)
    if "fma" not in flags or mhz is None:
        return None
    per = 64.0 if "avx512f" in flags and "AMD" not in cpu_model(cpuinfo) else 32.0
    return {"flop_per_cycle_per_core": per, "mhz": mhz, "cores": threads, "tflops": threads * mhz * 1e6 * per / 1e12,
            "how": "cores x clock x 2 FMA pipes x lanes x 2: an estimate of the ceiling, not measured"}


def arm_switches(arm: str) -> None:
    """Set torch's global switches for ``arm`` (inside :func:`cce_core.train.global_switches`): cuDNN autotuning off
    (the fast arms' :func:`cce_core.train.setup_training` turns it on), TF32 off for :data:`TF32_OFF`, else torch's
    defaults (cuDNN TF32 on, matmul TF32 off, float32 matmul precision "highest")."""
    strict = arm in TF32_OFF
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = not strict
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def wait_for_load(limit: float | None, patience_s: float = 600.0) -> None:
    """Wait (up to ``patience_s``) until the 1-minute load average is below ``limit`` (None: do not wait)."""
    t0 = time.monotonic()
    while limit is not None and os.getloadavg()[0] >= limit and time.monotonic() - t0 < patience_s:
        time.sleep(10)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(model: str, arm: str, sizes: dict, device: torch.device):
    """The config, step function, data and generator of one arm, freshly initialised (seed 0)."""
    cfg = make_config("paper", model=model, mask="random_blocks", ce64="(benchmark)" if model == "cce128" else None,
                      **sizes, **ARMS[arm])
    torch.manual_seed(0)
    g, d = build_models(cfg)
    if WORLD is not None:
        distributed.sync_batchnorm(g, WORLD)
        distributed.sync_batchnorm(d, WORLD)
    prepare, cascade = fill_hole, None
    if model == "cce128":
        ce64 = ContextEncoder(64, cfg.bottleneck, cfg.output, cfg.variant, cfg.width)
        cascade = CascadeContextEncoder(ce64, g)
        prepare = cascade.prepare_input
    opt_g, opt_d = setup_training(cfg, g, d, device, extra=cascade)
    step = make_step(cfg, g, d, opt_g, opt_d, prepare, wrappers=distributed.wrap(g, d, WORLD) if WORLD else None)
    if WORLD is not None:  # this process's share of the global batch, from its own stream
        cfg = replace(cfg, batch_size=distributed.per_process_batch(cfg.batch_size, WORLD),
                      seed=distributed.rank_seed(cfg.seed, WORLD.rank, 0))
    images = torch.randint(0, 256, (256, 3, 128, 128), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    images = images.to(device) if cfg.data_on_device else images
    return cfg, step, images, make_generator(cfg, device), make_mask_stream(cfg, device)


@global_switches()
def measure(model: str, arm: str, sizes: dict, device: torch.device, steps: int, warmup: int, repeats: int) -> dict:
    """Median images/s over ``repeats`` blocks of ``steps`` iterations of one arm, with its warm-up time."""
    arm_switches(arm)
    load_before = os.getloadavg()
    cfg, step, images, gen, masks = _setup(model, arm, sizes, device)
    sums = torch.zeros(4, device=device)
    bad = torch.zeros((), dtype=torch.long, device=device)

    def iteration() -> None:
        nonlocal sums, bad
        x, m = next_batch(cfg, images, gen, device, masks)
        if cfg.device_checks:
            bad += invalid_mask_count(m)
        sums += step(x, m)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for _ in range(warmup):
        iteration()
    sums.tolist()
    _sync(device)
    warmup_s = time.perf_counter() - t
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            iteration()
        sums.tolist()  # one host sync per block, as the training loop does once per log line
        _sync(device)
        rates.append(steps * cfg.batch_size * (WORLD.size if WORLD else 1) / (time.perf_counter() - t))  # group
    assert int(bad) == 0
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"images_per_s": statistics.median(rates), "all_rates": rates, "warmup_s": warmup_s,
            "peak_memory_mb": peak / 2 ** 20,
            "memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS (whole run so far)",
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "threads": torch.get_num_threads(), "bf16_active": bool(cfg.amp and bf16_pays(device.type)),
            "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
            "options": {k: getattr(cfg, k) for k in ("fast", "mask_generator", "data_on_device", "device_rng",
                                                    "mask_chunk", "freeze_d", "device_checks", "amp", "channels_last",
                                                    "fused_adam", "cudnn_benchmark", "compile")}}


@global_switches()
def gflop_per_image(model: str, sizes: dict, device: torch.device) -> float:
    """GFLOP of one iteration (D step + G step, forward and backward) per image, counted on the fast arm."""
    arm_switches("fast")
    cfg, step, images, gen, masks = _setup(model, "fast", sizes, device)
    x, m = next_batch(cfg, images, gen, device, masks)
    with FlopCounterMode(display=False) as counter:
        step(x, m)
    return counter.get_total_flops() / cfg.batch_size / 1e9


#: Op families of :func:`profile_arm`, matched in order against torch's operator names (first match wins).
OP_FAMILIES = (("convolution", ("conv",)), ("batch norm", ("batch_norm",)),
               ("activation", ("relu", "tanh", "sigmoid", "threshold")),
               ("optimizer", ("adam", "_foreach", "addcdiv", "addcmul", "lerp", "sqrt")),
               ("copy and cast", ("copy", "_to_", "contiguous", "clone", "cat", "stack")),
               ("loss and reductions", ("mse", "binary_cross", "loss", "sum", "mean", "var", "std", "norm")),
               ("pooling", ("pool",)),
               ("elementwise", ("mul", "add", "sub", "div", "where", "fill", "zero", "neg", "exp", "log", "flip",
                                "pow", "masked")))


def op_family(name: str) -> str:
    """The family of :data:`OP_FAMILIES` a profiled operator belongs to ("other" if none)."""
    low = name.lower()
    return next((fam for fam, keys in OP_FAMILIES if any(k in low for k in keys)), "other")


@global_switches()
def profile_arm(model: str, arm: str, sizes: dict, device: torch.device, steps: int, warmup: int) -> dict:
    """Where one arm's training iterations spend their time: torch.profiler over ``steps`` iterations, each
    operator's self time (CPU, or CUDA on a GPU) summed by :func:`op_family`, as shares of the total, with the ten
    costliest operators. Profiling slows the run; the shares, not the absolute times, are the figure."""
    from torch.profiler import ProfilerActivity, profile

    arm_switches(arm)
    cfg, step, images, gen, masks = _setup(model, arm, sizes, device)
    for _ in range(warmup):
        step(*next_batch(cfg, images, gen, device, masks)).tolist()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(*next_batch(cfg, images, gen, device, masks)).tolist()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    ops = [(e.key, getattr(e, attr) / 1e6) for e in prof.key_averages()]
    total = sum(t for _, t in ops)
    families: dict[str, float] = {}
    for name, t in ops:
        family = op_family(name)
        families[family] = families.get(family, 0.0) + t
    top = sorted(ops, key=lambda o: -o[1])[:10]
    return {"arm": arm, "steps": steps, "total_s": total, "time_kind": attr,
            "families": {f: t / total for f, t in sorted(families.items(), key=lambda kv: -kv[1])},
            "top_ops": [{"op": name, "share": t / total} for name, t in top]}


def cpu_rates(folder: Path, arm: str = "defaults", sizes: tuple[str, ...] = ("cpu", "study")) -> tuple[Path, dict]:
    """The newest CPU result file in ``folder`` (by its provenance date) measured at one of ``sizes`` with ``arm`` for
    all three models, and its images/s per model: the re-run page's measured CPU cost. Files of other kinds (a
    profile of two models, a compile run, another benchmark's results) are passed over."""
    found = []
    for path in folder.glob("cpu-*.json"):
        res = json.loads(path.read_text())
        rows = {r["model"]: r for r in res.get("results", [])}
        if res.get("sizes") in sizes and {"ce64", "ce128", "cce128"} <= rows.keys() and all(
                arm in r for r in rows.values()):
            found.append((res["provenance"]["date"], path, {m: r[arm]["images_per_s"] for m, r in rows.items()}))
    if not found:
        raise FileNotFoundError(f"no CPU benchmark in {folder} with arm {arm!r} for ce64, ce128 and cce128")
    _, path, rates = max(found)
    return path, rates


def interleaved(rates: dict[str, list[float]]) -> dict[str, dict]:
    """Per-arm summary of ``--rounds``: each arm's ratio to plain in each round (the arms of one round were measured
    back to back), their median, range and the number of rounds in which the arm was faster than plain."""
    out = {}
    for arm, xs in rates.items():
        ratios = [x / p for x, p in zip(xs, rates["plain"])]
        out[arm] = {"ratios": ratios, "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                    "rounds_faster": sum(r > 1 for r in ratios), "rounds": len(ratios)}
    return out


def compile_payback(fast: dict, compiled: dict, warmup: int, batch: int) -> dict:
    """Whether torch.compile's one-off cost (its warm-up time beyond that of eager) is recovered by its faster
    steps within a :data:`RUN_SAMPLES`-sample run."""
    extra_s = compiled["warmup_s"] - warmup * batch / compiled["images_per_s"]
    saved_per_sample = 1 / fast["images_per_s"] - 1 / compiled["images_per_s"]
    samples = extra_s / saved_per_sample if saved_per_sample > 0 else None  # None: never (not faster)
    return {"compile_overhead_s": extra_s, "break_even_samples": samples,
            "pays_back_within_1M": samples is not None and samples <= RUN_SAMPLES}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["ce64", "ce128", "cce128"], choices=["ce64", "ce128", "cce128"])
    p.add_argument("--sizes", choices=sorted(SIZES), default="paper",
                   help="batch, width and D of a preset (paper: 64, 64, 4000; cpu: 32, 32, 512)")
    p.add_argument("--batch-size", type=int, help="overrides --sizes")
    p.add_argument("--width", type=int, help="overrides --sizes")
    p.add_argument("--bottleneck", type=int, help="overrides --sizes")
    p.add_argument("--arms", nargs="+", choices=[a for a in ARMS if a != "compiled"],
                   help="arms to measure (default: plain, defaults, fast; and fast-bf16 on a CPU with native bf16)")
    p.add_argument("--wait-load", type=float, metavar="L",
                   help="before each arm wait (up to 10 min) until the 1-minute load average is below L")
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=40, help="iterations per timed block")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks (the median is reported)")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every arm this many times, interleaved (order reversed every other round); "
                        "report medians and per-round ratios to plain")
    p.add_argument("--compile-models", nargs="*", default=None,
                   help="models also measured with torch.compile (default: ce128 on CUDA, none elsewhere)")
    p.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's; 1 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and a few steps (width 8, D 16, batch 8, 1 thread): a smoke test that fits CI")
    p.add_argument("--profile", nargs="*", metavar="ARM", default=None,
                   help="after the timings, profile these arms (default: fast) of every model: the share of time per "
                        "op family (convolution, batch norm, activation, optimizer, copies, ...)")
    p.add_argument("--json", help="write the figures to this file")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.warmup, a.steps, a.repeats = "quick", 2, 3, 3
        a.threads = a.threads or 1  # tiny models: two threads spin-waiting on a shared 2-core CI box are 10x slower
    for key in ("batch_size", "width", "bottleneck"):
        if getattr(a, key) is None:
            setattr(a, key, SIZES[a.sizes][key])
    if a.threads:
        torch.set_num_threads(a.threads)
    global WORLD
    WORLD = distributed.setup(a.device)
    device = WORLD.device if WORLD else resolve_device(a.device)
    if WORLD and not WORLD.main:  # rank 0 speaks
        sys.stdout = open(os.devnull, "w")
        a.json = None
    compiled_models = a.compile_models if a.compile_models is not None else (["ce128"] if device.type == "cuda" else [])
    cpu_bf16 = device.type == "cpu" and native_bf16_cpu()
    arms = a.arms or ["plain", "defaults", "fast"] + (["fast-bf16"] if cpu_bf16 else [])
    if "plain" not in arms:
        arms.insert(0, "plain")  # the reference of every ratio
    sizes = dict(batch_size=a.batch_size, width=a.width, bottleneck=a.bottleneck, device=str(device))
    prov = provenance(device)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = {"model": cpu_model(cpuinfo), "threads": torch.get_num_threads(),
           "flags": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if f in cpu_flags(cpuinfo)],
           "bf16_peak": cpu_bf16_peak(cpuinfo, torch.get_num_threads()),
           "fp32_peak": cpu_fp32_peak(cpuinfo, torch.get_num_threads())} if device.type == "cpu" else None
    fp32_peak = cpu["fp32_peak"]["tflops"] if cpu and cpu["fp32_peak"] else None
    peak = bf16_peak(prov["device"]) or (cpu["bf16_peak"]["tflops"] if cpu and cpu["bf16_peak"] else None)
    print(f"device: {prov['device']}, torch {prov['torch']}, commit {prov['commit']}"
          + (f"; {WORLD.size} processes ({WORLD.backend}), images/s of the whole group" if WORLD else ""))
    print(f"batch {a.batch_size}, width {a.width}, D {a.bottleneck}, random_blocks masks; {a.warmup} warm-up "
          f"iterations, median of {a.repeats} blocks of {a.steps}; dense bf16 peak: "
          f"{f'{peak:.0f} TFLOP/s' if peak else 'n/a (unknown device)'}"
          + (f"; fp32 FMA peak (estimate) {fp32_peak:.3f} TFLOP/s" if fp32_peak else ""))
    print(f"{'model':7s} {'arm':9s} {'images/s':>10s} {'vs plain':>8s} {'GFLOP/img':>9s} {'TFLOP/s':>8s} "
          f"{'of bf16 peak':>12s} {'peak MiB':>9s}")
    rows: list[dict] = []

    def save() -> None:  # after every measurement: a run killed later (a timeout) still leaves its figures
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps({"provenance": prov, "cpu": cpu, "bf16_peak_tflops": peak,
                                                "quick": a.quick, "sizes": a.sizes, "arms": arms,
                                                "load_average": os.getloadavg(),
                                                "warmup": a.warmup, "steps": a.steps, "repeats": a.repeats,
                                                "rounds": a.rounds,
                                                "world_size": WORLD.size if WORLD else 1, "results": rows}, indent=1))

    def report(row: dict, arm: str) -> None:
        r = row[arm]
        ratio = r["images_per_s"] / row["plain"]["images_per_s"]
        share = f"{r['share_of_bf16_peak']:.1%}" if peak else "n/a"
        share += f" (fp32 {r['share_of_fp32_peak']:.0%})" if r.get("share_of_fp32_peak") else ""
        print(f"{row['model']:7s} {arm:9s} {r['images_per_s']:10.1f} {ratio:7.2f}x {row['gflop_per_image']:9.2f} "
              f"{r['tflop_per_s']:8.3f} {share:>12s} {r['peak_memory_mb']:9.0f}", flush=True)

    def run_arm(row: dict, arm: str, rounds: list[dict] | None = None) -> None:
        if rounds is None:
            wait_for_load(a.wait_load)
            r = measure(row["model"], arm, sizes, device, a.steps, a.warmup, a.repeats)
        else:  # the median round (by images/s), with every round's figure kept
            r = dict(sorted(rounds, key=lambda x: x["images_per_s"])[len(rounds) // 2])
            r["round_rates"] = [x["images_per_s"] for x in rounds]
            r["load_average_before"] = [x["load_average_before"] for x in rounds]
        r["tflop_per_s"] = row["gflop_per_image"] * r["images_per_s"] / 1e3
        r["share_of_bf16_peak"] = r["tflop_per_s"] / peak if peak else None
        r["share_of_fp32_peak"] = r["tflop_per_s"] / fp32_peak if fp32_peak else None
        row[arm] = r
        report(row, arm)
        save()

    for model in a.models:  # plain and fast of every model first; compilation (slow to start) comes last
        row = {"model": model, "mask": "random_blocks", **sizes,
               "gflop_per_image": gflop_per_image(model, sizes, device)}
        rows.append(row)
        if a.rounds == 1:
            for arm in arms:
                run_arm(row, arm)
        else:
            measured = {arm: [] for arm in arms}
            for k in range(a.rounds):
                for arm in (arms if k % 2 == 0 else arms[::-1]):
                    wait_for_load(a.wait_load)
                    measured[arm].append(measure(model, arm, sizes, device, a.steps, a.warmup, a.repeats))
                print(f"{model:7s} round {k + 1}/{a.rounds}: " + ", ".join(
                    f"{arm} {measured[arm][-1]['images_per_s']:.1f}" for arm in arms), flush=True)
            for arm in arms:
                run_arm(row, arm, measured[arm])
            row["interleaved"] = interleaved({arm: [x["images_per_s"] for x in measured[arm]] for arm in arms})
            for arm, r in row["interleaved"].items():
                print(f"{model:7s} {arm:9s} / plain, round by round: median {r['median']:.2f}x "
                      f"({r['min']:.2f}-{r['max']:.2f}), faster in {r['rounds_faster']} of {r['rounds']} rounds")
        row["vs_plain"] = {arm: row[arm]["images_per_s"] / row["plain"]["images_per_s"] for arm in arms}
        if "fast" in arms:
            row["speedup"] = row["vs_plain"]["fast"]
        save()
    for row in rows:
        if row["model"] not in compiled_models:
            continue
        run_arm(row, "compiled")
        pay = compile_payback(row["fast"], row["compiled"], a.warmup, a.batch_size)
        row["compile"] = pay
        samples = pay["break_even_samples"]
        when = "never (not faster)" if samples is None else f"after {samples:.3g} samples"
        verdict = "pays back" if pay["pays_back_within_1M"] else "does NOT pay back"
        print(f"{row['model']:7s} torch.compile: {pay['compile_overhead_s']:.1f} s of compilation, break-even {when}: "
              f"{verdict} within a 1 M-sample run")
        save()
    for row in rows if a.profile is not None else []:
        row["profile"] = {}
        for arm in a.profile or ["fast"]:
            pr = profile_arm(row["model"], arm, sizes, device, a.steps, a.warmup)
            row["profile"][arm] = pr
            print(f"{row['model']:7s} {arm:9s} profile: " + ", ".join(f"{f} {v:.0%}" for f, v in pr["families"].items())
                  + "; top: " + ", ".join(f"{o['op']} {o['share']:.0%}" for o in pr["top_ops"][:4]), flush=True)
        save()
    if not compiled_models:
        print("torch.compile: not measured here (--compile-models MODEL to measure it); it is off by default")
    if a.json:
        print(f"wrote {a.json}")
    distributed.shutdown(WORLD)


if __name__ == "__main__":
    main()
