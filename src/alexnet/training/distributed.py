"""Data-parallel training over processes with torch.distributed, as launched by ``torchrun``.

The global batch size is what the configuration says, whatever the number of processes: each of
the N processes takes ``batch_size // N`` images per step, and DistributedDataParallel averages
the gradients, so one step of N processes equals one step of one process on the whole batch.
A batch size that N does not divide is refused (rather than silently changing the recipe).
With gradient accumulation an optimiser step sees ``accumulation_steps * batch_size`` images.

A process that dies makes the others' next collective fail (gloo: "Connection reset by peer";
NCCL: a timeout): ``lost_peer`` recognises that, and torchrun stops the whole group. Under
``torchrun --max-restarts`` a restarted group continues from the run folder's last checkpoint
(``restarted_run_folder``).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import AlexNetError
from ..processes import start_child, stop_with_parent
# A run folder started under torchrun holds the job's TORCHELASTIC_RUN_ID (RunFolder.elastic_run_id),
# so that a restarted group finds the folder again when its name was made up from the time.
from ..runs import ELASTIC_RUN_ID_FILE, RunFolder


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
    # torchrun starts each rank in a session of its own: were torchrun killed (SIGKILL, out of
    # memory), its ranks would otherwise train on to the end as orphans. SIGTERM: they save first.
    stop_with_parent()
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        # A rank that dies leaves the others waiting in a collective; the timeout turns that
        # hang into an error, and torchrun then stops the whole group.
        timeout = datetime.timedelta(seconds=int(os.environ.get("ALEXNET_DIST_TIMEOUT", "300")))
        backend = "nccl" if use_cuda else "gloo"
        store = _attempt_store(rank, world_size, timeout)
        if store is None:
            dist.init_process_group(backend, timeout=timeout)
        else:
            dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    return ProcessGroup(rank=rank, world_size=world_size, local_rank=local_rank)


def _attempt_store(rank: int, world_size: int, timeout: datetime.timedelta) -> dist.Store | None:
    """After a torchrun restart, the store the new group meets in, with keys of its own.

    torchrun's workers share one key-value store across restarts, and a restarted group that
    reads it as it is finds the previous attempt's keys: the dead group's socket addresses
    (gloo's connection is then refused) and its barrier counts (the new group then waits
    forever). Prefixing every key with the attempt number gives each attempt a clean slate.
    None outside torchrun or in its first attempt: the default ``env://`` set-up is right there.
    """
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt == 0:
        return None
    agent_serves = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=not agent_serves and rank == 0, timeout=timeout,
                          multi_tenant=not agent_serves)
    return dist.PrefixStore(f"alexnet/attempt_{attempt}", store)


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


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process went away."""
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        marker in text for marker in ("gloo", "NCCL", "Connection reset", "Connection closed"))


def elastic_run_id() -> str | None:
    """torchrun's id for this job (``--standalone`` makes a fresh one; ``--rdzv-id`` names it);
    None outside torchrun or when it is the default ``none`` shared by every job."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return run_id if run_id and run_id != "none" else None


def elastic_restart_count() -> int:
    """How many times torchrun has restarted the group (``--max-restarts``); 0 outside torchrun."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def restarted_run_folder(out: str | Path, name: str | None) -> Path | None:
    """After torchrun restarted the group (``--max-restarts``, TORCHELASTIC_RESTART_COUNT > 0):
    the run folder to continue, ``out/name`` or the one this torchrun job started, if it has a
    checkpoint to continue from. None on a first start, and when there is nothing to continue."""
    if elastic_restart_count() == 0:
        return None
    if name:
        folder = Path(out) / name
    else:
        run_id = elastic_run_id()
        marks = Path(out).glob(f"*/{ELASTIC_RUN_ID_FILE}") if run_id else ()
        folder = next((mark.parent for mark in marks if mark.read_text().strip() == run_id), None)
    if folder is not None and RunFolder(folder).last.is_file():
        return folder
    return None


def run_torchrun(parent: int) -> None:
    """torchrun's command line (``sys.argv[1:]``), as ``alexnet train --nproc N`` (process ``parent``)
    runs it: a child that stops with that command however it ends (``alexnet.processes``), and that,
    stopped by a signal, exits with 128 + its number instead of torchrun's traceback of
    ``SignalException``."""
    import sys
    import tempfile

    start_child(parent)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main

    # torchrun keeps each rank's error file in a folder of its own under /tmp and never removes it:
    # one more folder for every run. Here it lives as long as torchrun (whose summary prints what the
    # error files held), unless the user asked torchrun to keep logs (its PET_ variables).
    keeps_logs = any(os.environ.get(name) for name in ("PET_LOG_DIR", "PET_REDIRECTS", "PET_TEE"))
    with tempfile.TemporaryDirectory(prefix="torchelastic_") as logs:
        try:
            main(sys.argv[1:] if keeps_logs else ["--log-dir", logs, *sys.argv[1:]])
        except SignalException as stopped:
            sys.exit(128 + int(stopped.sigval))
