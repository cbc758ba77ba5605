"""Data-parallel training of one domain under ``torchrun`` or ``accelerate launch``.

Each process (rank) takes its share of every global batch, gradients are averaged
across ranks before the optimiser step, and the weights stay identical everywhere.
Rank 0 alone talks to MLflow, writes checkpoints, evaluates, registers and
promotes; the other ranks only train. Without ``WORLD_SIZE`` > 1 in the
environment nothing here does anything.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from domain_mlflow.exceptions import ConfigError


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, indices: list[int]) -> list[int]:
        """This rank's part of a global batch: every ``world_size``-th example (a batch
        smaller than the group, the end of an epoch, gives some ranks the same one)."""
        if not self.active:
            return indices
        if len(indices) < self.world_size:
            return [indices[self.rank % len(indices)]]
        return indices[self.rank::self.world_size]

    def average_gradients(self, parameters: Iterable[Any]) -> None:
        if not self.active:
            return
        import torch.distributed as dist

        for parameter in parameters:
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= self.world_size

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (every rank gets the same number)."""
        return self._reduce(value) / self.world_size if self.active else value

    def total(self, value: float) -> float:
        return self._reduce(value) if self.active else value

    def _reduce(self, value: float) -> float:
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a run id, a decision)."""
        if not self.active:
            return value
        import torch.distributed as dist

        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def sync_parameters(self, parameters: Iterable[Any]) -> None:
        """Start every rank from rank 0's weights."""
        if not self.active:
            return
        import torch.distributed as dist

        for parameter in parameters:
            dist.broadcast(parameter.data, src=0)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number (set by torchrun or "
                          "accelerate launch)") from None


def planned_world_size() -> int:
    """How many training processes the launcher started (``WORLD_SIZE``; 1 without one)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def join_process_group() -> ProcessGroup:
    """The group described by ``WORLD_SIZE``/``RANK`` (set by the launcher), joined once.

    A group this starts is destroyed when the process exits: a process whose gloo
    group is still alive in the interpreter's shutdown can abort (SIGABRT) and fail
    the launch after training succeeded. A group the caller started is left to it.
    """
    if planned_world_size() <= 1:
        return ProcessGroup()
    import torch.distributed as dist

    if not dist.is_initialized():
        # gloo: the training loop keeps its tensors on the CPU.
        dist.init_process_group(backend="gloo")
        atexit.register(_leave_process_group)
    return ProcessGroup(rank=dist.get_rank(), world_size=dist.get_world_size())


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
