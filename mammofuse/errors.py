"""Errors a user can act on. The CLI prints them as one line, never a traceback."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


class MammofuseError(Exception):
    """A problem with the user's input, files or environment, explained in one line."""


class MammofuseWarning(UserWarning):
    """A remark about how inputs were used or read (shown as ``note:`` by the CLI); every warning of the package is one."""


class DatasetWarning(MammofuseWarning):
    """A dataset value or column treated other than as given (e.g. breast density 0, a column not read); names the file."""


class InputFileError(MammofuseError):
    """A file that cannot be read as a mammogram; the message names the file."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


STDOUT = "stdout"
"""How an :class:`OutputError` names standard output, which has no file name (``> full-disk/out.csv``)."""


class OutputError(MammofuseError):
    """An output that cannot be written (a folder, read-only, disk full...), or a folder a run works in (shared memory,
    a local Ray's temporary folder) that cannot take what it writes there; the message names it."""

    def __init__(self, path: object, problem: str, message: str | None = None) -> None:
        super().__init__(message or f"{path}: cannot write ({problem})")
        self.path = path
        self.problem = problem


class ResumeMismatch(MammofuseError):
    """An interrupted training run that cannot be continued as asked; ``difference`` says what differs (settings, data...)."""

    def __init__(self, message: str, difference: str) -> None:
        super().__init__(message)
        self.difference = difference


@contextmanager
def reading(path: object) -> Iterator[None]:
    """An ``OSError`` met while finding or reading the input ``path`` (a name too long, no permission...) as a
    one-line :class:`MammofuseError` naming it: a usage error, where an uncaught ``OSError`` means an output
    that cannot be written."""
    try:
        yield
    except OSError as exc:
        raise unreadable(path, exc) from None


def unreadable(path: object, exc: OSError) -> MammofuseError:
    """The one-line error for an input ``path`` that ``exc`` kept from being read."""
    return MammofuseError(f"{path}: cannot read ({exc.strerror or exc})")


def check_openable(path: str | os.PathLike[str]) -> None:
    """Open ``path`` for reading and close it again, before a library that misreports a file it cannot open is given
    it (safetensors says "No such file or directory" where permission is denied): a missing file raises
    ``FileNotFoundError``, any other ``OSError`` is a :func:`reading` error naming it. A FIFO is opened without
    waiting for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise unreadable(path, exc) from None
    os.close(fd)
