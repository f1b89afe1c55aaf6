"""``--device`` for every command: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mammofuse.errors import MammofuseError

if TYPE_CHECKING:  # torch stays out of import time
    import torch


def resolve_device(device: str, local_rank: int | None = None) -> "torch.device":
    """``auto`` -> CUDA when available, else CPU; an unavailable device is a usage error.

    Under torchrun, a bare ``cuda`` (or ``auto`` on a GPU machine) means this process's
    ``local_rank`` GPU.
    """
    import torch

    if not isinstance(device, str):
        raise TypeError(f"device must be a string: auto, cpu, cuda, cuda:N or mps, not {device!r}")
    name = device.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MammofuseError(f"--device {device}: CUDA is not available on this machine (use cpu or auto)")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise MammofuseError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", int(index) if index else (local_rank or 0))
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise MammofuseError("--device mps: Apple MPS is not available on this machine")
        return torch.device("mps")
    if name != "cpu":
        raise MammofuseError(f"--device must be auto, cpu, cuda, cuda:N or mps, not {device!r}")
    return torch.device("cpu")
