"""Data-parallel training with PyTorch's own stack: ``torchrun`` + ``DistributedDataParallel`` (issue 14).

    torchrun --nproc_per_node=4 -m cce_core train --model ce128 --mask random_blocks --preset paper --out runs/ce128

``torchrun`` starts the processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`setup` joins them into one process group (NCCL on CUDA, Gloo on the CPU). Nothing here
launches processes or moves bytes itself. The run's maths does not depend on the number of processes N:

* the global batch stays ``cfg.batch_size`` (each process takes ``batch_size / N``);
* BatchNorm is synchronised: on CUDA with :class:`torch.nn.SyncBatchNorm`; on the CPU (whose kernels PyTorch's
  SyncBatchNorm lacks) with :class:`CpuSyncBatchNorm`, the same maths with the batch moments summed by the
  autograd-aware ``torch.distributed.nn.functional.all_reduce``;
* gradients are averaged over the processes by DDP, and each process's loss is the mean over its share, so the
  update is the single-process update on the global batch.

One difference remains: with ``mask="random_region"`` (one mask per batch, as Pathak draws it) each process
draws one mask for its share, so a global batch holds N masks (``global_batch=True`` in
:func:`cce_core.train.train` keeps one).

A single process (no ``torchrun``, or ``WORLD_SIZE=1``) uses none of this: :func:`setup` returns None.
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce
from torch.nn.parallel import DistributedDataParallel as DDP

from .seeding import derive_seed

#: Seconds a collective waits for the other processes before failing (env ``CCE_DIST_TIMEOUT_S`` overrides it),
#: so a process whose peer died ends with an error instead of hanging (torchrun also stops the group then).
DEFAULT_TIMEOUT_S = 600
# The autograd-aware all_reduce is deprecated in favour of a private module without an all_reduce with autograd.
warnings.filterwarnings("ignore", message="torch.distributed.nn.functional.all_reduce is deprecated",
                        category=FutureWarning)


@dataclass
class World:
    """The process group of a data-parallel run, as seen from one process."""

    rank: int
    size: int
    local_rank: int
    device: torch.device
    backend: str
    owned: bool  # this module initialised the process group (and so tears it down)

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0

    def agree(self, flag: bool) -> bool:
        """Rank 0's value of ``flag`` on every process (for decisions taken by wall-clock time)."""
        t = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """Average ``t`` over the processes, in place."""
        dist.all_reduce(t)
        return t.div_(self.size)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the processes, in place."""
        dist.all_reduce(t)
        return t

    def gather(self, obj: object) -> list:
        """``obj`` of every process, in rank order, on every process."""
        out: list = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


def setup(device: str = "auto") -> World | None:
    """Join the process group that ``torchrun`` describes in the environment; None for a single process.

    The device is ``cuda:LOCAL_RANK`` when CUDA is asked for (``auto`` with a GPU, or ``cuda``), else the CPU;
    the backend NCCL on CUDA, Gloo on the CPU. An existing process group is reused (and left alone at the end).
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    if cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    owned = not dist.is_initialized()
    if owned:
        timeout = datetime.timedelta(seconds=float(os.environ.get("CCE_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend, timeout=timeout, **({"device_id": dev} if cuda else {}))
    return World(rank, size, local_rank, dev, dist.get_backend(), owned)


def shutdown(world: World | None) -> None:
    """Leave the process group if :func:`setup` created it."""
    if world is not None and world.owned and dist.is_initialized():
        dist.destroy_process_group()


def per_process_batch(batch_size: int, world: World | None) -> int:
    """The batch of one process: the global ``batch_size`` / N; an error when N does not divide it."""
    n = 1 if world is None else world.size
    if batch_size % n:
        raise ValueError(f"the global batch_size {batch_size} is not divisible by the {n} processes of torchrun; "
                         f"choose --batch-size or --nproc_per_node so that it is")
    return batch_size // n


def rank_seed(seed: int, rank: int, origin: int) -> int:
    """The seed of process ``rank``'s stream of images and masks, started at step ``origin`` (0 for a new run;
    the step of the checkpoint when a run is resumed with another number of processes): ``derive_seed(seed,
    "process", rank, origin)``, 63 bits."""
    return derive_seed(seed, "process", rank, origin)


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d over the whole group's batch, on the CPU (Gloo).

    ``torch.nn.SyncBatchNorm`` only runs on accelerators (its statistics kernels have no CPU version), so CPU
    runs use this: the per-channel mean and variance (two passes, as BatchNorm) are summed over the processes
    with ``torch.distributed.nn.functional.all_reduce``, whose backward all-reduces the gradients, so forward and
    backward are those of one BatchNorm on the global batch. Running statistics are updated as BatchNorm does
    (unbiased variance, ``momentum``). Its state dict is BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype)
        dist.all_reduce(count)
        mean = differentiable_all_reduce(x.sum(dims)) / count
        centred = x - mean[None, :, None, None]
        var = differentiable_all_reduce((centred * centred).sum(dims)) / count  # biased, as in normalisation
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1), alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def sync_batchnorm(module: nn.Module, world: World) -> nn.Module:
    """``module`` with every BatchNorm synchronised over the group (in place for its children): PyTorch's
    ``SyncBatchNorm`` on CUDA, :class:`CpuSyncBatchNorm` on the CPU. Weights, buffers and state-dict keys are
    kept, so checkpoints are those of a single-process run."""
    if world.device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, CpuSyncBatchNorm):
            new = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            new.load_state_dict(child.state_dict())
            if child.affine:  # keep the very Parameter objects (an optimiser may already hold them)
                new.weight, new.bias = child.weight, child.bias
            new.train(child.training)
            module.add_module(name, new)
        else:
            sync_batchnorm(child, world)
    return module


class Logits(nn.Module):
    """``D.logits`` as a module's ``forward``: DDP only hooks ``forward``, and the training step calls
    ``D.logits`` (pre-sigmoid scores for ``binary_cross_entropy_with_logits``)."""

    def __init__(self, d: nn.Module) -> None:
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d.logits(x)


def wrap(g: nn.Module, d: nn.Module, world: World) -> tuple[DDP, DDP]:
    """G and ``D.logits`` in DistributedDataParallel, for :func:`cce_core.train.make_step`'s ``wrappers``.

    G's forward and the D step's two D calls go through these wrappers, so their backward passes all-reduce
    (average) the gradients of G and of D. The G step's D call does NOT (``make_step`` calls the unwrapped
    ``D.logits`` there): that backward only needs to flow through D to G, D's gradients from it are discarded
    (or, with ``freeze_d``, never computed), and a DDP forward there would make DDP wait for D gradients that
    ``freeze_d`` never produces (the "expected to have finished reduction" error) or all-reduce gradients that are
    thrown away. Outside a DDP forward, DDP's gradient hooks are inactive, so the G step's D gradients stay local.
    The synchronised BatchNorms still share the batch statistics in that call, as the maths needs.
    """
    ids = [world.device.index] if world.device.type == "cuda" else None
    # broadcast_buffers=False: the synchronised BatchNorms compute the same running statistics on every process
    # (from the same all-gathered moments), so rank 0's need not be broadcast before every forward.
    return (DDP(g, device_ids=ids, broadcast_buffers=False),
            DDP(Logits(d), device_ids=ids, broadcast_buffers=False))
