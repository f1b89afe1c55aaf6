"""Records written as files are scored: JSONL or CSV, whole records per write, flushed and fsynced per batch.

A ``kill -9`` (or a crash) therefore loses at most the batches in flight and, at worst, leaves one
torn record at the end of the file, which :mod:`mammofuse.scoring.resume` drops. Each record
carries the file's size and modification time: with its path, the key ``--resume`` matches on.
Records are UTF-8 on stdout as in a file, whatever the locale, a file name's bytes as they are (see
:func:`~mammofuse.results.record_path`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Iterator, Sequence

from mammofuse.errors import STDOUT, MammofuseError, OutputError
from mammofuse.tabular import csv_cell

if TYPE_CHECKING:
    from mammofuse.cases import ListedFile
    from mammofuse.results import Prediction

STREAM_FORMATS = ("jsonl", "csv")


def file_record(prediction: Prediction, file: ListedFile, weights: str) -> dict[str, Any]:
    """The record written for a file: the prediction's JSON record, the file's size and modification time, and the
    digest of the model's weights (``--resume`` checks all three).

    The modification time is a decimal string: in nanoseconds it is above 2**53, which JSON readers that take every
    number as a double (jq, JavaScript) would round.
    """
    return {**prediction.to_dict(), "file_size": file.size, "file_mtime_ns": str(file.mtime_ns), "weights_digest": weights}


def json_record(record: Any, indent: int | None = None) -> str:
    """A record (or list of them) as JSON; NaN or infinity raises ValueError, as JSON has no such numbers."""
    return json.dumps(record, indent=indent, default=str, allow_nan=False)


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """A record as one CSV row: a nested mapping (``clinical``) gives a column per key; lists are joined with ``; ``."""
    row: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            row.update({k: csv_cell(v) for k, v in value.items()})
        else:
            row[key] = csv_cell(value)
    return row


def csv_text(columns: Sequence[str], rows: Iterable[dict[str, Any]], header: bool = False) -> str:
    """Rows (of :func:`flat_row`) as CSV lines ending in ``\\n``, the header first when ``header``.

    A cell holding a line break is quoted, a bare ``\\r`` included: the csv module quotes only the
    characters of its line terminator, so rows are written ending in ``\\r\\n``, then cut to ``\\n``.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    lines = []
    for row in [dict(zip(columns, columns)), *rows] if header else rows:
        writer.writerow(row)
        lines.append(buffer.getvalue()[:-2] + "\n")
        buffer.seek(0)
        buffer.truncate()
    return "".join(lines)


def encoded(text: str) -> bytes:
    """Records' text as written, to a file or stdout alike: UTF-8, a file name's undecodable bytes (held as surrogates)
    written back as they were."""
    return text.encode("utf-8", "surrogateescape")


def write_stdout(data: bytes) -> None:
    """Write ``data`` to stdout and flush it.

    Raises:
        OutputError: it cannot be written (a full disk behind ``>``); a closed pipe's BrokenPipeError is its cause.
    """
    stdout = stdout_bytes()
    try:
        stdout.write(data)
        stdout.flush()
    except OSError as exc:
        raise OutputError(STDOUT, exc.strerror or str(exc)) from exc


def stdout_bytes() -> BinaryIO:
    """stdout for records' bytes (what was written to it as text flushed first)."""
    sys.stdout.flush()
    return sys.stdout.buffer


def csv_columns(record: dict[str, Any]) -> list[str]:
    """The CSV columns of a record: its flattened keys, ``error`` last."""
    columns = [k for k in flat_row(record) if k != "error"]
    return [*columns, "error"] if "error" in record else columns


@dataclass(frozen=True)
class RecordLayout:
    """What a run writes for each file: the record's fields, its CSV columns, the model, its weights and threshold.

    An output being resumed must have been written with the same layout.
    """

    fields: tuple[str, ...]
    columns: tuple[str, ...]
    model: str
    threshold: float
    weights: str

    @classmethod
    def of(cls, record: dict[str, Any]) -> RecordLayout:
        """The layout of records like ``record`` (any one of the run's)."""
        return cls(tuple(record), tuple(csv_columns(record)), record["model"], record["threshold"], record["weights_digest"])


class RecordWriter:
    """Writes records to a byte stream in one format; each :meth:`write` is whole records, flushed, and fsynced for a file."""

    def __init__(self, stream: BinaryIO, fmt: str, layout: RecordLayout, output: Path | None = None) -> None:
        if fmt not in STREAM_FORMATS:
            raise MammofuseError(f"records stream as {' or '.join(STREAM_FORMATS)}, not {fmt!r}")
        self.stream, self.fmt, self.layout, self.output = stream, fmt, layout, output
        self._sync = output is not None and stat.S_ISREG(os.fstat(stream.fileno()).st_mode)  # a pipe or device cannot fsync

    def header(self) -> None:
        """The CSV header (JSONL has none)."""
        if self.fmt == "csv":
            self._put(self._csv([], header=True))

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append whole records."""
        if records:
            self._put("".join(json_record(r) + "\n" for r in records) if self.fmt == "jsonl" else self._csv(records))

    def _csv(self, records: Sequence[dict[str, Any]], header: bool = False) -> str:
        return csv_text(self.layout.columns, (flat_row(r) for r in records), header)

    def _put(self, text: str) -> None:
        try:
            self.stream.write(encoded(text))
            self.stream.flush()
            if self._sync:
                os.fsync(self.stream.fileno())
        except OSError as exc:
            raise OutputError(self.output or STDOUT, exc.strerror or str(exc)) from exc


@contextmanager
def record_writer(output: Path | None, fmt: str, layout: RecordLayout, append: bool = False) -> Iterator[RecordWriter]:
    """A writer to ``output`` (stdout when None): a new file, or appended to when ``append`` (a CSV header only in an empty file).

    A symlink's target is written; a FIFO or device (``/dev/stdout``) is written as a stream, header first.

    Raises:
        OutputError: the file cannot be opened or written, or ``output`` no longer names it at the end (the file or
            its folder removed, or the file replaced, meanwhile: the records went to a file no one can read).
    """
    if output is None:
        writer = RecordWriter(stdout_bytes(), fmt, layout)
        writer.header()
        yield writer
        return
    try:
        fh = open(output, "ab" if append else "wb")
    except OSError as exc:
        raise OutputError(output, exc.strerror or str(exc)) from exc
    try:
        writer = RecordWriter(fh, fmt, layout, output)
        if not append or not fh.seekable() or fh.tell() == 0:
            writer.header()
        yield writer
        _check_in_place(output, fh)
    except BaseException:
        with suppress(OSError):  # closing flushes again what could not be written: the first error is the one to report
            fh.close()
        raise
    try:
        fh.close()
    except OSError as exc:
        raise OutputError(output, exc.strerror or str(exc)) from exc


def _check_in_place(output: Path, fh: BinaryIO) -> None:
    """Raise OutputError when ``output`` no longer names the regular file ``fh`` writes (a stream is not checked)."""
    written = os.fstat(fh.fileno())
    if not stat.S_ISREG(written.st_mode):
        return
    try:
        there = os.stat(output)
    except OSError:
        there = None
    if there is None or not os.path.samestat(there, written):
        raise OutputError(output, "removed or replaced while it was written")
