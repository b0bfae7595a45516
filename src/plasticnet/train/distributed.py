"""Data-parallel training under torchrun: one run across K processes with DistributedDataParallel.

``torchrun --nproc_per_node K -m plasticnet train TASK ...`` starts K copies of the command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment. Each process joins the group
(:func:`start`: gloo on a CPU, NCCL on GPUs, one GPU a process), builds the same experiment from the same seed and
draws the same global batch of ``batch_size`` from the same generators, then keeps its contiguous shard of it
(:func:`shard`). The model runs inside DistributedDataParallel (:func:`wrap`), whose all-reduce averages the
shards' gradients during the backward pass: each optimiser step is the one-process step on the global batch, to
rounding, and every process holds the same weights, optimiser and generator states. Rank 0 alone writes the run
directory, so a run trained by K processes is evaluated, exported or resumed like any other.

Outside torchrun every function here is the identity or a no-op, and nothing is initialised.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def launched() -> bool:
    """True in a process that torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_size() -> int:
    dist = _dist()
    return dist.get_world_size() if dist is not None else 1


def rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist is not None else 0


def start(device: str) -> tuple[str, bool]:
    """Join torchrun's process group if this process is one of several and no group exists yet. Returns this
    process's device (``cuda`` becomes ``cuda:LOCAL_RANK``) and whether this call created the group (then
    :func:`stop` should end it)."""
    import torch.distributed as dist

    if not launched() or _dist() is not None:
        return device, False
    if torch.device(device).type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return f"cuda:{local}", True
    dist.init_process_group("gloo")
    return device, True


def stop() -> None:
    dist = _dist()
    if dist is not None:
        dist.destroy_process_group()


def shard(batch_size: int, option: str = "--batch-size") -> slice:
    """This process's contiguous share of a global batch of ``batch_size``: all of it in one process. ``option``
    names the setting in the error when the batch does not split."""
    k = world_size()
    if batch_size % k:
        raise ConfigError(f"{option} {batch_size} does not split into {k} equal shards; use a multiple of {k}")
    per = batch_size // k
    return slice(rank() * per, (rank() + 1) * per)


def wrap(module: nn.Module) -> Callable:
    """``module`` itself in one process; under torchrun, ``module`` inside DistributedDataParallel, so that the
    backward pass of what it computes averages the gradients across processes. The experiment keeps ``module``
    for its state dict (no ``module.`` prefix), so checkpoints do not depend on the number of processes."""
    if world_size() == 1:
        return module
    device = next(module.parameters()).device
    return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


class Apply(nn.Module):
    """``Apply(module)(fn, *args) == fn(module, *args)``: lets DistributedDataParallel wrap a computation other
    than the module's forward (an agent's whole episode); it holds the same parameters."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, fn: Callable, *args):
        return fn(self.module, *args)


def _tensor(values: list, dtype) -> torch.Tensor:
    """A tensor where the group's backend can reduce it (NCCL reduces GPU tensors only)."""
    dist = _dist()
    on_gpu = dist.get_backend() == "nccl"
    return torch.tensor(values, dtype=dtype, device=torch.cuda.current_device() if on_gpu else "cpu")


def mean(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the processes (a logged point: every shard's metrics count). An int whose
    average is whole stays an int (an epoch number is logged as one process logs it)."""
    dist = _dist()
    if dist is None or not values:
        return values
    keys = list(values)  # the same order in every process: the experiment's and the loop's
    total = _tensor([float(values[k]) for k in keys], torch.float64)
    dist.all_reduce(total)
    averages = {k: v / dist.get_world_size() for k, v in zip(keys, total.tolist())}
    return {k: int(v) if isinstance(values[k], int) and v.is_integer() else v for k, v in averages.items()}


def total(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the processes (a new tensor; ``value`` itself outside torchrun)."""
    dist = _dist()
    if dist is None:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value


def gather_rows(value: torch.Tensor) -> torch.Tensor:
    """Every process's ``value`` (the same shape in each) stacked along the first dimension in rank order: the
    shards of a batch put back into the whole batch. ``value`` itself outside torchrun."""
    dist = _dist()
    if dist is None:
        return value
    value = value.contiguous()
    parts = [torch.empty_like(value) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, value)
    return torch.cat(parts)


def any_of(flag: bool) -> bool:
    """True if ``flag`` is true in any process: every process stops at the same iteration."""
    dist = _dist()
    if dist is None:
        return flag
    value = _tensor([int(flag)], torch.int64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    dist = _dist()
    if dist is not None:
        dist.barrier()


class NullWriter:
    """Stands in for TensorBoard's writer in the processes that do not write the run directory."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass
