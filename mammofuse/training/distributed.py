"""torchrun support: process group from the environment, sharding, gathering results.

``torchrun --standalone --nproc-per-node 2 -m mammofuse train ...`` sets RANK, WORLD_SIZE
and LOCAL_RANK; with one process (plain ``mammofuse train``) everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from mammofuse.errors import MammofuseError


@dataclass
class Distributed:
    """Where this process stands in a run: rank 0 of 1 unless started by torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we created the process group, so we tear it down
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives take their tensors

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, device: torch.device) -> "Distributed":
        """Join the process group torchrun describes (gloo on CPU, nccl on CUDA) from this process's ``device``."""
        import torch.distributed as dist

        world = env_int("WORLD_SIZE", 1)
        if world <= 1:
            return cls()
        rank, local_rank = env_int("RANK", 0), env_local_rank()
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False, device=device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend=backend)
        except (RuntimeError, ValueError) as exc:
            raise MammofuseError(f"cannot join the torchrun process group ({backend}): {exc}") from None
        return cls(rank, world, local_rank, owns_group=True, device=device)

    def shard(self, items: Sequence[int]) -> list[int]:
        """This rank's share of ``items`` (interleaved, no padding)."""
        return list(items[self.rank :: self.world])

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (just ``[obj]`` without torchrun)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum(self, *values: float) -> list[float]:
        """Element-wise sums of ``values`` over ranks, reduced on this process's device (NCCL reduces only CUDA tensors)."""
        if not self.enabled:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics). DDP syncs them only when a
        training forward starts, so after the last step each rank holds its own; rank 0's are saved."""
        if not self.enabled:
            return
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
            self.owns_group = False


def env_local_rank() -> int:
    """This process's GPU index on its machine as torchrun sets it (0 without torchrun)."""
    return env_int("LOCAL_RANK", 0)


def env_int(name: str, default: int) -> int:
    """The number torchrun sets in the environment variable ``name`` (``default`` when unset or empty).

    Raises:
        MammofuseError: naming the variable, when it holds anything but a non-negative integer.
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdecimal() or not value.isascii():
        raise MammofuseError(f"environment variable {name} must be a non-negative integer (torchrun sets it), not {value[:40]!r}")
    return int(value)


def padded_shard(order: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's part of ``order``, padded by wrapping so every rank gets the same count
    (as DistributedSampler does: DDP needs the same number of steps on every rank)."""
    order = list(order)
    if world <= 1 or not order:
        return order
    total = -(-len(order) // world) * world
    padded = (order * (total // len(order) + 1))[:total]
    return padded[rank::world]
