"""The process group a run trains in, and how a global batch is split across it.

A run is one process, or N processes of one job (submitit's `TorchDistributedEnvironment`
exports MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE and LOCAL_RANK for each task). Every process
loads the same data and draws the same global batch (the shuffling is seeded by the config);
process `rank` trains on its share of the batch's sequences, in `micro_batches` pieces. The loss
of each piece is its summed per-position loss over the global batch's positions, so the
gradients add up to those of one process training on the whole batch.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os

import numpy as np
import torch
import torch.distributed as dist

from gr_core.devices import collective_backend, resolve_device, use_device

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ProcessGroup:
    """This process's place in the run: rank in 0..world_size-1; `device`: where its collectives'
    tensors live (NCCL reduces GPU tensors only)."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def any(self, flag: bool) -> bool:
        """True on every process when `flag` is true on any (a collective when distributed)."""
        if not self.distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def sum(self, value: float) -> float:
        """The sum of `value` over the processes (a collective when distributed)."""
        if not self.distributed:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return float(total.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def join_process_group(device: torch.device | None = None, timeout_s: float = 1800.0) -> ProcessGroup:
    """Join the run's process group from the environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT).

    device: where this process computes (NCCL for a GPU, gloo for the CPU). Without WORLD_SIZE,
    or with WORLD_SIZE=1, the run is one process and nothing is initialised. A group initialised
    earlier (by the caller or DeepSpeed) is used as it is.
    """
    device = torch.device("cpu") if device is None else device
    backend = collective_backend(device)
    if dist.is_available() and dist.is_initialized():
        return ProcessGroup(rank=dist.get_rank(), world_size=dist.get_world_size(), device=str(device))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup(device=str(device))
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} unset: launch the run's tasks through "
            "submitit's TorchDistributedEnvironment (or torchrun), which exports them"
        )
    rank = int(os.environ["RANK"])
    dist.init_process_group(
        backend, init_method="env://", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s)
    )
    log.info("joined process group: rank %d of %d (%s)", rank, world_size, backend)
    return ProcessGroup(rank=rank, world_size=world_size, device=str(device))


def join_on_device(requested_device: str) -> tuple[torch.device, ProcessGroup]:
    """This process's device for `train.device` (made current), and its process group on it."""
    device = resolve_device(requested_device)
    use_device(device)
    return device, join_process_group(device)


def micro_batch_ranges(num_seqs: int, group: ProcessGroup, micro_batches: int) -> list[tuple[int, int]]:
    """This process's micro-batches of a global batch of `num_seqs` sequences: [start, stop) each.

    The batch is cut into world_size * micro_batches contiguous pieces as equal as np.array_split
    makes them (process r takes pieces r*M .. r*M + M - 1). A piece may be empty when the batch
    has fewer sequences than pieces (the last batch of an epoch).
    """
    pieces = group.world_size * micro_batches
    bounds = [len(chunk) for chunk in np.array_split(np.arange(num_seqs), pieces)]
    edges = np.concatenate([[0], np.cumsum(bounds)])
    first = group.rank * micro_batches
    return [(int(edges[k]), int(edges[k + 1])) for k in range(first, first + micro_batches)]
