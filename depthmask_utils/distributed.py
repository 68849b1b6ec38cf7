"""Chapter 12: training on several processes (``torchrun``), the few collective steps it needs.

With ``torchrun --nproc-per-node=N`` every process runs the same ``train``; each takes every N-th
batch, and DistributedDataParallel averages the model's gradients. What DDP does not do by itself,
and ``train`` does here:

* the loss's own learnable weights (``uncertainty`` weighting) are averaged too, or the processes
  drift apart;
* batch norm's running statistics are made equal before validating (each process updates its own);
* validation is split across the processes and its sums added up, so every process works (and none
  waits long enough to time out) and the result equals one process's over the whole split;
* the logged training loss is the mean over all processes, not the first one's;
* an error that happens on one process (a run folder made with another configuration) reaches every
  process and ends the job with its message, instead of leaving the others waiting forever;
* the process group is made once per process and ended when the process exits, so no process
  aborts on its way out and a second ``train`` in the same process can use it.

Without ``torchrun`` (one process) every function here does nothing, or the obvious single-process thing.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Callable, Iterable, Sequence

import torch


def environment() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (0, 1, 0 without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init(world: int, cuda: bool) -> bool:
    """Join torchrun's process group (NCCL between GPUs, gloo on CPUs), once per process; nothing for
    one process. Returns whether this call made the group.

    The group lives as long as the process and is ended when the process exits (``atexit``), not when
    one ``train`` returns: a second ``train`` in the same process finds it open and uses it (with the
    backend the first one chose: one device type per torchrun job). Ending it
    and making it again would not be safe under torchrun, whose key-value store outlives the group:
    the new group's processes can find the old group's addresses there and wait for them forever.
    Exiting with the group still open is not safe either: gloo's threads can outlive the interpreter
    and the process aborts (SIGABRT, "terminate called without an active exception"), so torchrun
    reports a run that finished as failed.
    """
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
        atexit.register(_end_group)
        return True
    return False


def _end_group() -> None:
    # Not on the way out of an uncaught error: NCCL's shutdown waits for this process's queued
    # collectives, which a peer may never join, so a failing process could hang instead of exiting.
    if torch.distributed.is_initialized() and getattr(sys, "last_value", None) is None:
        torch.distributed.destroy_process_group()


def wrap(model: torch.nn.Module, device_index: int | None) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (its gradients averaged in backward) when several
    processes train; the model itself otherwise. ``device_index``: this process's GPU, None on CPUs."""
    if not active():
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=None if device_index is None else [device_index])


def barrier() -> None:
    """Wait until every process gets here; nothing for one process."""
    if active():
        torch.distributed.barrier()


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient by its mean over the processes (what DDP does for the model)."""
    if not active():
        return
    world = torch.distributed.get_world_size()
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= world


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every process process 0's buffers (batch norm's running statistics).

    DDP averages gradients, so the weights stay equal, but each process updates its running
    statistics from its own batches; DDP copies process 0's at the start of every forward pass in
    training. Before validating (in eval mode, where they are used) the processes must agree too.
    """
    if not active():
        return
    for b in model.buffers():
        torch.distributed.broadcast(b, src=0)


def sum_over_processes(values: Sequence[float], device: torch.device) -> list[float]:
    """Each value summed over the processes (float64 on ``device``); the values themselves without them."""
    if not active():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def gather(value) -> list:
    """Every process's ``value`` (any picklable object), in rank order; ``[value]`` without torchrun."""
    if not active():
        return [value]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, value)
    return out


def shard(items: Sequence, rank: int, world: int) -> list:
    """The share of ``items`` process ``rank`` of ``world`` handles: every ``world``-th, from ``rank``."""
    return list(items[rank::world])


def on_first_process(fn: Callable[[], None], rank: int, error: type[Exception]) -> None:
    """Run ``fn`` on process 0 only; if it raises, raise ``error`` with its message on every process.

    The others would otherwise wait at the next collective step for a process that has already ended.
    """
    if not active():
        if rank == 0:
            fn()
        return
    message = None
    if rank == 0:
        try:
            fn()
        except Exception as exc:  # every kind: the other processes must hear of it
            message = str(exc)
    box = [message]
    torch.distributed.broadcast_object_list(box, src=0)
    message = box[0]
    if message is not None:
        raise error(message)
