"""Training on several processes: PyTorch's DistributedDataParallel under ``torchrun``.

``torchrun`` starts one process per GPU (or CPU worker) and sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init` then joins the process group (NCCL on CUDA, each process on GPU
``LOCAL_RANK``; gloo on the CPU). Without those variables nothing here does anything: a single
process trains exactly as it always did.

How a run is shared out (:func:`training.loop.fit`):

- the seeded batch order is the same in every process; each micro-batch of ``--batch-size``
  indices is cut into ``WORLD_SIZE`` equal contiguous shares, rank r taking share r (:func:`shares`),
  so the global batch (``--batch-size`` x ``--grad-accum``) does not depend on the number of processes;
- every process draws the randomness of the whole micro-batch from the one seeded generator and keeps
  its share's part, so the generators stay equal across ranks and a training state fits any world size;
- DDP averages the gradients; the loss of a share is scaled so that the gradient is the global-batch mean;
- rank 0 alone writes the run folder (``run.json``, metrics, checkpoints, state, samples, export) and
  validates; the others get what they need from it by broadcast.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from training.options import TrainingError

T = TypeVar("T")


def launched() -> bool:
    """Whether torchrun (or another launcher of torch.distributed) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 in a single process); before :func:`init`, torchrun's ``RANK``."""
    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the process that writes the run folder and logs."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun; returns this process's device (CUDA: GPU
    ``LOCAL_RANK``). A single process gets ``device`` back unchanged."""
    if not launched():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise TrainingError(
                f"torchrun LOCAL_RANK {local}: this node has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (--nproc_per_node)"
            )
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not active():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return device


def shutdown() -> None:
    """Leave the process group (a no-op in a single process)."""
    if active():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast(value: T) -> T:
    """Rank 0's ``value`` in every process (a picklable object)."""
    if world_size() == 1:
        return value
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(work: Callable[[], T]) -> T:
    """Run ``work`` on rank 0 alone and give every process its result, or raise its error in every
    process (so that no rank waits forever for a rank 0 that stopped)."""
    if world_size() == 1:
        return work()
    outcome: tuple[bool, Any] = (True, None)
    if is_main():
        try:
            outcome = (True, work())
        except Exception as exc:  # handed to every rank, then raised there
            outcome = (False, exc)
    ok, value = broadcast(outcome)
    if not ok:
        raise value
    return value


def mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the processes (a new tensor; itself in a single process)."""
    if world_size() == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world_size()


def shares(batch_size: int, max_process_batch: int | None) -> list[slice] | None:
    """This rank's part of a micro-batch of ``batch_size``, as the passes it runs: its contiguous
    share cut into slices of at most ``max_process_batch`` images. None for one process and one pass
    (the plain single-process step)."""
    world = world_size()
    if batch_size % world:
        raise TrainingError(
            f"--batch-size {batch_size} does not split evenly over {world} processes (torchrun WORLD_SIZE); "
            f"choose a multiple of {world}"
        )
    share = batch_size // world
    limit = min(share, max_process_batch or share)
    if world == 1 and limit == share:
        return None
    start = rank() * share
    return [slice(s, min(s + limit, start + share)) for s in range(start, start + share, limit)]


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel (gradients averaged over the processes in backward)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


__all__ = [
    "active",
    "barrier",
    "broadcast",
    "init",
    "is_main",
    "launched",
    "mean",
    "on_main",
    "rank",
    "shares",
    "shutdown",
    "world_size",
    "wrap",
]
