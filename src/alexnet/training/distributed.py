"""Data-parallel training over processes with torch.distributed, as launched by ``torchrun``.

The global batch size is what the configuration says, whatever the number of processes: each of
the N processes takes ``batch_size // N`` images per step, and DistributedDataParallel averages
the gradients, so one step of N processes equals one step of one process on the whole batch.
A batch size that N does not divide is refused (rather than silently changing the recipe).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import AlexNetError


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, value):
        """``value`` as rank 0 has it, on every rank."""
        if not self.distributed:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


def init_process_group(device: str = "auto") -> ProcessGroup:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR...), or return a single-process group when there is none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return ProcessGroup()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        # A rank that dies leaves the others waiting in a collective; the timeout turns that
        # hang into an error, and torchrun then stops the whole group.
        timeout = datetime.timedelta(seconds=int(os.environ.get("ALEXNET_DIST_TIMEOUT", "300")))
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    return ProcessGroup(rank=rank, world_size=world_size, local_rank=local_rank)


def per_process_batch(batch_size: int, world_size: int) -> int:
    if batch_size % world_size:
        raise AlexNetError(
            f"batch size {batch_size} does not divide evenly over {world_size} processes; use a "
            f"multiple of {world_size} (the batch size is global: each process takes an equal share)"
        )
    return batch_size // world_size


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
