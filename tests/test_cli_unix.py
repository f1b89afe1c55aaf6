"""The command line as a Unix citizen: a terminal on stderr, pipes that close early, file names that are not UTF-8,
caches that cannot be written, concurrent writers of one output."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model
from dicom_factory import breast_phantom
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def mammofuse(*args: object) -> list[str]:
    """The command line of ``mammofuse ARGS`` run as a user runs it (a new process)."""
    return [sys.executable, "-m", "mammofuse", *map(str, args)]


def environment(**changes: str | None) -> dict[str, str]:
    """This process's environment for a child, with ``changes`` (None removes a variable)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-unix") / "model")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small PNG mammogram phantoms in a folder."""
    folder = tmp_path_factory.mktemp("studies")
    image = Image.fromarray(breast_phantom(bits=8).astype(np.uint8))
    for name in ("a.png", "b.png", "c.png"):
        image.save(folder / name)
    return folder


def test_records_go_to_redirected_stdout_while_a_progress_bar_is_drawn_on_a_terminal(tiny: Path, studies: Path, tmp_path: Path) -> None:
    """They went to the terminal, through the bar's redirection of stdout, and the file stayed empty."""
    import pty

    master, terminal = pty.openpty()
    drained: list[bytes] = []

    def drain() -> None:  # a terminal that nobody reads blocks its writer
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            drained.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = tmp_path / "scores.csv"
    with out.open("w") as stdout:
        done = subprocess.run(mammofuse("predict", studies, "--model", tiny, "-f", "csv", "--batch-size", "1"), stdout=stdout, stderr=terminal,
                              env=environment(TERM="xterm", COLUMNS="100"), timeout=180)
    os.close(terminal)
    reader.join(timeout=10)
    os.close(master)
    shown = b"".join(drained).decode(errors="replace")
    assert done.returncode == 0, shown
    assert "scoring" in shown  # the bar was drawn
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert sorted(Path(r["path"]).name for r in rows) == ["a.png", "b.png", "c.png"]
    assert "a.png" not in shown
