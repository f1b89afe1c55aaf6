"""A full or read-only shared memory (``/dev/shm``), through which image-reading processes hand their batches over: one
line naming it and ``--workers 0``, exit 3, no second error. The failures are made where torch and multiprocessing meet
them: a reader's allocation of a batch's shared memory, and the lock of the loader's queues."""

from __future__ import annotations

import _multiprocessing
import errno
import gc
import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model
from torch.utils.data import Dataset
from typer.testing import CliRunner

from mammofuse.cli import app
from mammofuse.errors import OutputError
from mammofuse.interrupts import loader_batches

SHM_ERROR = "/dev/shm (shared memory, through which image-reading processes hand their batches over): {}; use --workers 0 to read the images in this process"
# torch's message (ATen's MapAllocator) when the shared memory of a reader's batch cannot be allocated
TORCH_FULL = "unable to allocate shared memory(shm) for file </torch_4242_1234567890_0>: No space left on device (28)"


class _Numbers(Dataset):
    """Four small tensors."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.full((8,), float(index))


def _full(cls: type, size: int) -> None:
    raise RuntimeError(TORCH_FULL)


def test_a_full_shared_memory_is_one_line_naming_it_and_exit_3(mini_mias: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_tiny_model(tmp_path / "model", backbone="cnn4")
    monkeypatch.setattr(torch.UntypedStorage, "_new_using_fd_cpu", classmethod(_full))  # a reader's batch, in shared memory
    images = [str(mini_mias / "images" / f"mdb00{i}.png") for i in (1, 2)]
    findings = ["--roi", "500,500,60", "--density", "2", "--shape", "round", "--margin", "circumscribed"]
    result = CliRunner().invoke(app, ["predict", *images, "--model", str(model), *findings, "--workers", "2", "--batch-size", "1",
                                      "-o", str(tmp_path / "scores.jsonl")], env={"COLUMNS": "250"})
    assert (result.exit_code, result.stderr) == (3, f"error: {SHM_ERROR.format('no space left on device')}\n")


def test_another_error_of_a_reader_is_raised_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cls: type, size: int) -> None:
        raise RuntimeError("a reader's own failure")

    monkeypatch.setattr(torch.UntypedStorage, "_new_using_fd_cpu", classmethod(broken))
    with pytest.raises(RuntimeError, match="a reader's own failure"):
        list(loader_batches(_Numbers(), batch_size=2, num_workers=1))


def test_a_read_only_shared_memory_fails_before_the_readers_start_with_no_second_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's loader, failing half built on its queues' lock, would report an AttributeError as it is collected."""
    def read_only(*args: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(_multiprocessing, "SemLock", read_only)
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(OutputError) as error:
        list(loader_batches(_Numbers(), batch_size=2, num_workers=1))
    assert str(error.value) == SHM_ERROR.format("read-only file system")
    del error
    gc.collect()
    assert unraisable == []
