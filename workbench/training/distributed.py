"""One training run over several processes: ``torch.distributed`` DistributedDataParallel (DDP),
started by ``torchrun``, which sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``:

    torchrun --standalone --nproc_per_node=N train.py recipe=...

NCCL on GPUs (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPUs. With ``WORLD_SIZE`` unset (or
1) :func:`setup` returns :data:`SINGLE`, whose methods all hand their input back unchanged: the
single-process run is the one it always was.

What the :class:`~workbench.training.trainer.Trainer` asks of this module under DDP:

- every process trains on its own part of each epoch (:class:`DistributedSampler`, reshuffled per
  epoch by ``set_epoch``) with ``batch_size`` images per step; DDP averages the gradients, so one
  step sees ``batch_size * world_size`` images (the global batch);
- augmentation and dropout streams are seeded per epoch *and* per rank (rank 0 gets the
  single-process seed), so a resumed run repeats its epochs exactly and the ranks do not all draw
  the same augmentations;
- after each epoch the BatchNorm statistics of rank 0 are copied to all ranks, so every rank holds
  the same weights (the ones rank 0 saves) before validating;
- validation splits the held-out images between the ranks without padding (rank r takes every
  world_size-th image from r) and sums the int64 confusion matrices over ranks: the mIoU is the one a
  single process computes on the same predictions, no image counted twice;
- whether a step's loss was finite is agreed by all ranks, so they skip (or take) every step together;
- only rank 0 prints and writes files (checkpoints, metrics, OOF, model file, done marker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from ..core.console import console
from ..core.runtime import resolve_device
from ..exceptions import ConfigError

RANK_SEED_STRIDE = 100_003  # rank r's random streams start at seed + r * this (rank 0: the single-process seed)


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes files."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls: ``model`` itself, or its DDP wrapper (which shares its
        parameters; state dicts and evaluation keep using ``model``)."""
        if not self.active:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sampler(self, dataset, seed: int) -> DistributedSampler | None:
        """This rank's share of every epoch (None in one process: the loader shuffles itself)."""
        if not self.active:
            return None
        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed)

    def rank_seed(self, seed: int) -> int:
        return seed + RANK_SEED_STRIDE * self.rank

    def shard(self, idx: np.ndarray) -> np.ndarray:
        """This rank's images of ``idx``: every world_size-th from ``rank``, no padding."""
        return idx[self.rank::self.world_size] if self.active else idx

    def sum(self, array: np.ndarray) -> np.ndarray:
        """``array`` summed over all ranks (int64 stays int64)."""
        if not self.active:
            return array
        t = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def all_true(self, flag: bool) -> bool:
        """True only if ``flag`` is true on every rank."""
        if not self.active:
            return flag
        return bool(self.sum(np.array([0 if flag else 1], dtype=np.int64))[0] == 0)

    def epoch_totals(self, losses: list[float], n_seen: int) -> tuple[float, int]:
        """(mean training loss, images seen) of the epoch over all ranks."""
        if not self.active:
            return (float(np.mean(losses)) if losses else float("nan")), n_seen
        total, count, seen = self.sum(np.array([sum(losses), len(losses), n_seen], dtype=np.float64))
        return (float(total / count) if count else float("nan")), int(seen)

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank; the parameters are
        already equal, DDP having averaged their gradients."""
        if self.active:
            for buffer in model.buffers():
                dist.broadcast(buffer.data, src=0)


SINGLE = Dist()


def setup(device_name: str = "auto") -> tuple[Dist, torch.device]:
    """This process's :class:`Dist` and device. Under torchrun (``WORLD_SIZE`` > 1) it joins the
    process group (NCCL on CUDA, gloo on CPU; once per process) and silences the console of ranks
    other than 0; otherwise it only resolves ``device_name``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size <= 1:
        return SINGLE, device
    if "RANK" not in os.environ:
        raise ConfigError(f"WORLD_SIZE={world_size} is set but RANK is not: start several processes with torchrun "
                          "(README, Scaling out), or unset WORLD_SIZE for one process")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"process {rank} has LOCAL_RANK {local_rank} but this node has "
                              f"{torch.cuda.device_count()} GPU(s): start at most one process per GPU")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank != 0:
        console.quiet = True
    return Dist(rank, world_size, device), device


def close() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
