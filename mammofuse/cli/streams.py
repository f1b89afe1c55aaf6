"""stdout and stderr as the command line writes them, whatever the locale, and however they were left open.

- Text a stream's encoding cannot show (``…`` on a Latin-1 or ASCII terminal) falls back to a look-alike (``...``),
  else a backslash escape; a file name's undecodable bytes (surrogates U+DC80-U+DCFF) go out as those bytes.
- stdout written unbuffered (``PYTHONUNBUFFERED``, ``-u``) is written whole: a short write is continued, so that a reader
  gone mid-write is a broken pipe (141), not output silently cut.
- A stdout closed from the start (``>&-``) is an error to write to (exit 3), not output silently lost.
- stderr is best effort: notes and errors that cannot be written (a full disk) are dropped, and the command goes on.
"""

from __future__ import annotations

import codecs
import errno
import io
import os
import sys
from typing import BinaryIO, TextIO

FALLBACK = "mammofuse-fallback"
"""The codec error handler of stdout and stderr (:func:`_fall_back`)."""

STDOUT_IS_CLOSED = "stdout is closed"
LOOK_ALIKES = {
    "\u2026": "...", "\u00b1": "+/-", "\u2010": "-", "\u2011": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\u2192": "->", "\u2190": "<-", "\u00d7": "x", "\u2264": "<=", "\u2265": ">=", "\u2022": "*", "\u00a0": " ",
}
"""What a stream writes for characters it cannot (people's text only: records go out as UTF-8 bytes,
:func:`mammofuse.cli.common.emit`)."""


def _fall_back(error: UnicodeError) -> tuple[str | bytes, int]:
    """What a stream writes for the first character its encoding cannot: a surrogate's byte, a look-alike or an escape."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    char = error.object[error.start]
    if "\udc80" <= char <= "\udcff":
        return bytes([ord(char) - 0xDC00]), error.start + 1
    return LOOK_ALIKES.get(char) or char.encode("ascii", "backslashreplace").decode("ascii"), error.start + 1


codecs.register_error(FALLBACK, _fall_back)


class ClosedStdout(io.TextIOBase):
    """``sys.stdout`` of a command started with stdout closed (``>&-``): writing to it raises ``OSError``."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        raise closed_stdout_error()

    @property
    def buffer(self) -> BinaryIO:
        """Records' bytes cannot be written either (:func:`mammofuse.scoring.sink.stdout_bytes`)."""
        raise closed_stdout_error()


def closed_stdout_error() -> OSError:
    """The error of writing to a stdout that is closed."""
    return OSError(errno.EBADF, STDOUT_IS_CLOSED)


class BestEffortStderr(io.TextIOBase):
    """``sys.stderr``, written best effort: once a write fails (a full disk), stderr points at the null device."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    def write(self, text: str) -> int:
        try:
            self._stream.write(text)
        except OSError:
            to_null_device(self._stream)
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            to_null_device(self._stream)

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()


def to_null_device(stream: TextIO) -> None:
    """Point ``stream`` at the null device, where what it holds goes: writing it, and flushing it at exit, cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
        stream.flush()
    except (OSError, ValueError):  # a stream without a descriptor (a test's, a closed stdout's)
        pass
    finally:
        os.close(devnull)


def settle_stdout() -> None:
    """Flush stdout at the end of a command; one that cannot be written (its error already reported: every write of the
    CLI is flushed) goes to the null device, so that Python's own flush at exit does not fail again (exit 120)."""
    try:
        sys.stdout.flush()
    except OSError:
        to_null_device(sys.stdout)


def prepare() -> None:
    """Set up ``sys.stdout`` and ``sys.stderr`` for a command, once, before it writes anything."""
    sys.stdout = _stdout(sys.stdout)
    if isinstance(sys.stderr, io.TextIOWrapper):
        sys.stderr.reconfigure(errors=FALLBACK)
        sys.stderr = BestEffortStderr(sys.stderr)


def _stdout(stream: TextIO | None) -> TextIO:
    """``stream`` (Python's stdout) ready for the CLI: its own fallback, written whole, or :class:`ClosedStdout`."""
    if stream is None:  # fd 1 was closed: it is held on the null device, so that no file opened later takes its number
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != 1:
            os.dup2(devnull, 1)
            os.close(devnull)
        return ClosedStdout()
    if not isinstance(stream, io.TextIOWrapper):
        return stream
    if isinstance(stream.buffer, io.RawIOBase):  # unbuffered: TextIOWrapper would drop what a short write left
        return io.TextIOWrapper(io.BufferedWriter(stream.buffer), stream.encoding, FALLBACK, line_buffering=True, write_through=True)
    stream.reconfigure(errors=FALLBACK)
    return stream
