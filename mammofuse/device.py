"""The device of every command and API call: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mammofuse.errors import MammofuseError

if TYPE_CHECKING:  # torch stays out of import time
    import torch

CHOICES = "auto, cpu, cuda, cuda:N or mps"


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (``taskset``, a Slurm allocation, a container's cpuset) where the
    system has one, else all of the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def resolve_device(device: "str | torch.device", local_rank: int | None = None) -> "torch.device":
    """``auto`` -> CUDA when available, else CPU; an unavailable device is a usage error.

    Under torchrun, a bare ``cuda`` (or ``auto`` on a GPU machine) means this process's
    ``local_rank`` GPU. ``cpu:0`` and ``mps:0`` are the same as ``cpu`` and ``mps``.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string: {CHOICES}, not {device!r}")
    name = device.strip().lower()
    kind, colon, index = name.partition(":")
    if name == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise MammofuseError(f"device {device}: CUDA is not available on this machine (use cpu or auto)")
        if colon and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise MammofuseError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", int(index) if index else (local_rank or 0))
    if kind not in ("cpu", "mps") or (colon and index != "0"):
        raise MammofuseError(f"device must be {CHOICES}, not {device!r}")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MammofuseError(f"device {device}: Apple MPS is not available on this machine")
    return torch.device(kind)
