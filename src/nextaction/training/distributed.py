"""Data-parallel training under ``torchrun``: process group, sharding, and the few collectives we use.

``torchrun --nproc-per-node N -m nextaction train …`` starts N copies of the normal command. Each reads
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) in :func:`init_from_env`, which
joins the process group: NCCL when CUDA is available (one GPU per process, ``cuda:LOCAL_RANK``), gloo
otherwise. Without torchrun (WORLD_SIZE unset or 1) nothing is initialised and every helper here is the
identity, so a single process runs exactly the code it always ran.

The optimisation is the single-process one (see :func:`shard_batches`): every rank builds the same list
of global batches for an epoch and trains on its slice of each, DDP averages the gradients, so the batch
size, the number of steps and the learning-rate schedule do not depend on the number of processes.

Importing this module does no work; nothing touches the network before :func:`init_from_env`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from nextaction.batches import select_users
from nextaction.data.dataset import Sequences

T = TypeVar("T")

# A rank's dropout / negative-sampling seeds are offset by rank * RANK_SEED_STRIDE (rank 0 keeps the
# single-process seeds), so ranks draw different noise for different rows.
RANK_SEED_STRIDE = 1_000_000_007


def default_device(local_rank: int = 0) -> torch.device:
    """``cuda:local_rank`` when a GPU is visible, else the CPU (hide GPUs with CUDA_VISIBLE_DEVICES=)."""
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. A plain run is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0


_owned = False  # True when init_from_env created the process group (so shutdown() destroys it)


def init_from_env() -> DistInfo:
    """Join torchrun's process group (once; later calls return the same info) and say where we are.

    Adopts a process group that the caller already initialised (e.g. ``torch.multiprocessing.spawn``).
    """
    global _owned
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return DistInfo(device=default_device())
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            dist.init_process_group(backend="nccl")
        else:
            dist.init_process_group(backend="gloo")
        _owned = True
    on_gpu = dist.get_backend() == "nccl"
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=torch.device("cuda", local_rank) if on_gpu else torch.device("cpu"),
    )


def is_main() -> bool:
    """True on rank 0 and in a plain run (also after :func:`shutdown`, from torchrun's RANK)."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64), the same list on every rank."""
    if not _active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (picklable) on every rank: how ranks take one decision together."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[no-any-return]


def all_gather_arrays(a: np.ndarray) -> np.ndarray:
    """Every rank's array, concatenated in rank order (the same array on every rank)."""
    if not _active():
        return a
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, a)
    return np.concatenate(parts)


def barrier() -> None:
    if _active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group if :func:`init_from_env` created it (a caller's own group is left alone)."""
    global _owned
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False


# ---- sharding ----------------------------------------------------------------------------------------


def shard_batches(
    batches: list[np.ndarray], rank: int, world_size: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(global rows, this rank's rows) for every global batch of an epoch: rank r takes ``rows[r::world]``.

    Every rank gets the same list of global batches (same seed), so the effective batch size, the number
    of steps and the LR schedule equal a single process's. A batch with fewer rows than ranks (at most the
    epoch's one short batch) is skipped by every rank: all ranks must take the same number of steps.
    """
    return [(rows, rows[rank::world_size]) for rows in batches if len(rows) >= world_size]


def steps_per_epoch(n_rows: int, batch_size: int, world_size: int) -> int:
    """Number of global batches :func:`shard_batches` keeps out of ``n_rows`` rows."""
    full, rest = divmod(n_rows, batch_size)
    return full + (1 if rest >= world_size else 0)


def shard_users(seqs: Sequences, rank: int, world_size: int) -> Sequences:
    """The sequences of users ``rank, rank + world, …`` (for evaluating a share of the users per rank)."""
    return select_users(seqs, np.arange(rank, len(np.asarray(seqs.offsets)) - 1, world_size))


def wrap(module: nn.Module, *, find_unused_parameters: bool = False) -> nn.Module:
    """``module`` in DistributedDataParallel, every rank starting from rank 0's parameters and buffers.

    The buffers (item text embeddings) are constant during training, so they are broadcast once here
    rather than at every forward, as DDP would by default.
    """
    from torch.nn.parallel import DistributedDataParallel

    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)
    # torch >= 2.13 renamed broadcast_buffers (which also skipped the initial sync) to forward_sync_buffers
    params = inspect.signature(DistributedDataParallel).parameters
    no_sync = (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(module, find_unused_parameters=find_unused_parameters, **no_sync)
