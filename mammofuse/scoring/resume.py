"""``--resume``: what an interrupted run already wrote, so that only the rest is scored.

A record counts as done when its path, size and modification time match a file of this run (the path as records
carry it, :func:`~mammofuse.results.record_path`: the same file under any locale), and, for a file with several
lesions, its region one of them. A
record scored with other inputs than this run gives its file (model and its weights, threshold,
clinical findings, lesion region, the fields ``--aggregate`` adds) is refused rather than mixed in. The output is
repaired before anything is appended: a record torn by a ``kill -9`` at the end of the
file is cut off, and records of files changed since (or seen twice) are dropped, so the run ends
with every file exactly once. Records of files that are not in this run are kept.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from mammofuse.cases import ListedFile
from mammofuse.errors import MammofuseError
from mammofuse.results import record_path
from mammofuse.scoring.sink import RecordLayout
from mammofuse.tabular import cell_text

Span = tuple[int, int]
"""A byte range [start, end) of the output."""
Inputs = tuple[dict[str, Any], tuple[float, ...] | None]
"""What a record says its file was scored with: the clinical findings used, and the lesion region."""


@dataclass
class Resumed:
    """What an output already holds for the files of a run.

    Attributes:
        done: position of each file already scored -> its probability (NaN where it failed).
        failed: (path, error) of the files already scored that failed.
        foreign: records of files that are not in this run (kept).
        dropped: records removed: files changed since they were scored, or scored twice.
        reopened: records removed because their breast has a file still to score: a breast's
            files are scored together, so that all its records carry the same breast score.
    """

    done: dict[int, float] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    foreign: int = 0
    dropped: int = 0
    reopened: int = 0


@dataclass(frozen=True)
class _Record:
    line: int
    span: Span
    values: dict[str, Any] | None  # None: not a whole record (torn, when it is the last)


def resume_output(
    output: Path, fmt: str, files: Sequence[ListedFile], layout: RecordLayout, inputs: Callable[[ListedFile], Inputs], per_breast: bool = False,
) -> Resumed:
    """Read ``output`` (a missing file holds nothing), check it was written like this run, and repair it.

    ``inputs`` gives what this run scores a file with, to compare with each record of it. With
    ``per_breast``, the records of a breast that has a file still to score are removed too.

    Raises:
        MammofuseError: a record before the last is unreadable, or the output was written with
            another model, threshold, findings, region or options (naming the file and line).
    """
    resumed = Resumed()
    if not output.is_file():
        return resumed
    positions: dict[str, list[int]] = {}  # a file's cases: one, or one per lesion
    for i, f in enumerate(files):
        positions.setdefault(record_path(f.path), []).append(i)
    drops: list[Span] = []
    spans: dict[int, Span] = {}
    cut: int | None = None
    with output.open("rb") as fh:
        for record in _jsonl(fh, output) if fmt == "jsonl" else _csv(fh, output, layout):
            if record.values is None:
                if fmt == "jsonl" and not spans and not resumed.foreign and not drops and not _starts_a_record(fh, record.span):
                    raise MammofuseError(f"{output}:{record.line}: not a JSON record (written by something else?); cannot --resume it")
                cut = record.span[0]
                break
            where = f"{output}:{record.line}"
            path, size, mtime_ns, probability, error = _checked(record.values, where, layout)
            cases = positions.get(path)
            if cases is None:
                resumed.foreign += 1
            elif (size, mtime_ns) != (files[cases[0]].size, files[cases[0]].mtime_ns):  # the file changed since
                drops.append(record.span)
            else:
                recorded = _recorded_inputs(record.values, where)
                index = _case_of(cases, recorded, files, inputs, f"{where}: {path}")
                _check_inputs(recorded, inputs(files[index]), f"{where}: {path}")  # before "scored twice": another lesion's record
                if index in resumed.done:
                    drops.append(record.span)
                    continue
                resumed.done[index] = math.nan if probability is None else probability
                spans[index] = record.span
                if error is not None:
                    resumed.failed.append((files[index].path, error))
    resumed.dropped = len(drops)
    if per_breast:
        drops += _reopen_unfinished_breasts(resumed, files, spans)
    _repair(output, sorted(drops), cut)
    return resumed


def _case_of(cases: list[int], recorded: Inputs, files: Sequence[ListedFile], inputs: Callable[[ListedFile], Inputs], where: str) -> int:
    """The position of the case a record of one of ``cases`` (a file's) is of: the file's one case, or its lesion with
    the record's region.

    Raises:
        MammofuseError: the file has several lesions in this run and none has the record's region.
    """
    if len(cases) == 1:
        return cases[0]
    for i in cases:
        if inputs(files[i])[1] == recorded[1]:
            return i
    given = "; ".join(_region_text(inputs(files[i])[1]) for i in cases[:3])
    raise MammofuseError(f"{where} was scored at {_region_text(recorded[1])}, but this run gives this file {len(cases)} lesions, "
                         f"none there ({given}); resume with the same --clinical findings, or write to another --output")


def _reopen_unfinished_breasts(resumed: Resumed, files: Sequence[ListedFile], spans: dict[int, Span]) -> list[Span]:
    """Take the records of every breast with a file still to score out of ``resumed`` (its files are scored together
    again, so that all its records carry one breast score); returns their spans, to be removed from the output."""
    unfinished = {f.breast for i, f in enumerate(files) if i not in resumed.done} - {None}
    reopened = [i for i in resumed.done if files[i].breast in unfinished]
    for i in reopened:
        del resumed.done[i]
    paths = {files[i].path for i in reopened}
    resumed.failed = [(path, error) for path, error in resumed.failed if path not in paths]
    resumed.reopened = len(reopened)
    return [spans[i] for i in reopened]


def _starts_a_record(fh: BinaryIO, span: Span) -> bool:
    """Whether the bytes at ``span`` begin like a record of mammofuse predict (a first line torn by a ``kill -9``)."""
    here = fh.tell()
    fh.seek(span[0])
    start = fh.read(min(span[1] - span[0], 16))
    fh.seek(here)
    return b'{"path": '.startswith(start[:9])  # a fragment shorter than the key counts while it agrees


def _jsonl(fh: BinaryIO, output: Path) -> Iterator[_Record]:
    offset, bad = 0, None
    for number, line in enumerate(fh, 1):
        span, offset = (offset, offset + len(line)), offset + len(line)
        if bad is not None:
            raise MammofuseError(f"{output}:{bad.line}: not a JSON record (written by something else?); cannot --resume it")
        if not line.strip():
            continue
        values = _json_object(line) if line.endswith(b"\n") else None
        record = _Record(number, span, values)
        if values is None:
            bad = record
        else:
            yield record
    if bad is not None:
        yield bad


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        values = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return values if isinstance(values, dict) else None


def _csv(fh: BinaryIO, output: Path, layout: RecordLayout) -> Iterator[_Record]:
    size = os.fstat(fh.fileno()).st_size
    read = [0, True]  # bytes read, whether the last line read ended with a newline

    def lines() -> Iterator[str]:
        for raw in fh:
            read[0] += len(raw)
            read[1] = raw.endswith(b"\n")
            yield raw.decode("utf-8", "surrogateescape")

    reader = csv.reader(lines(), strict=True)
    start, header, bad = 0, None, None
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            if read[0] < size:
                raise MammofuseError(f"{output}:{reader.line_num}: not a CSV record ({exc}); cannot --resume it") from None
            cells = []  # a quoted cell torn at the end of the file
            read[1] = False
        if cells is None:
            break
        span, start = (start, read[0]), read[0]
        if bad is not None:
            raise MammofuseError(f"{output}:{bad.line}: not a whole CSV record; cannot --resume it")
        if cells == [] and read[1]:  # a blank line
            continue
        whole = read[1] and (header is None or len(cells) == len(header))
        if not whole:
            bad = _Record(reader.line_num, span, None)
        elif header is None:
            header = cells
            if tuple(cells) != layout.columns:
                raise MammofuseError(f"{output}: its columns are not the ones this run writes ({_difference(cells, layout.columns)}); "
                                     "resume with the options that wrote it (e.g. --aggregate), or write to another --output")
        else:
            yield _Record(reader.line_num, span, {k: cell_text(v) for k, v in zip(header, cells)})
    if bad is not None:
        yield bad


def _checked(values: dict[str, Any], where: str, layout: RecordLayout) -> tuple[str, int, int, float | None, str | None]:
    """(path, size, mtime_ns, probability, error) of a record written like this run's, else a MammofuseError."""
    if set(values) != set(layout.fields) and set(values) != set(layout.columns):  # JSONL fields, or CSV columns
        raise MammofuseError(f"{where}: its fields are not the ones this run writes ({_difference(values, layout.fields)}); "
                             "resume with the options that wrote it (e.g. --aggregate), or write to another --output")
    try:
        threshold = float(values["threshold"])
        probability = None if values["probability"] in (None, "") else float(values["probability"])
        size, mtime_ns = int(values["file_size"]), int(values["file_mtime_ns"])  # a string: an integer in earlier versions' JSONL
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: a size or time of Infinity
        raise MammofuseError(f"{where}: not a record of mammofuse predict ({exc}); cannot --resume it") from None
    if not _same_model(str(values["model"]), layout.model) or not math.isclose(threshold, layout.threshold, abs_tol=1e-9):
        raise MammofuseError(f"{where}: scored by model {values['model']} at threshold {threshold:g}, but this run uses model "
                             f"{layout.model} at threshold {layout.threshold:g}; resume with the same --model and --threshold, "
                             "or write to another --output")
    if values["weights_digest"] != layout.weights:
        raise MammofuseError(f"{where}: scored by other weights of model {layout.model} (digest {values['weights_digest']}, now "
                             f"{layout.weights}): the model changed since; write to another --output")
    return str(values["path"]), size, mtime_ns, probability, values["error"] or None


def _same_model(recorded: str, name: str) -> bool:
    """Whether a record's model is this run's: the same name, or the same local folder as typed when it was written
    (mammofuse 0.1 named a local model by its path as given; the weights' digest is compared after)."""
    return recorded == name or (os.path.isabs(name) and os.path.abspath(recorded) == name)


def _recorded_inputs(values: dict[str, Any], where: str) -> Inputs:
    """The findings and region of a JSONL record, or of a CSV row (a column per finding, the region as ``row; col; radius``)."""
    region = values["region"]
    try:
        if isinstance(region, str):
            region = [float(v) for v in region.split(";")] if region else None
        region = tuple(float(v) for v in region) if region is not None else None
    except (TypeError, ValueError):
        raise MammofuseError(f"{where}: its region {str(values['region'])[:40]!r} is not ROW, COL, RADIUS; cannot --resume it") from None
    clinical = values["clinical"] if isinstance(values.get("clinical"), dict) else values
    return clinical, region


def _check_inputs(recorded: Inputs, wanted: Inputs, where: str) -> None:
    """Raise a MammofuseError saying what changed when a record was scored with other findings or another region."""
    findings, region = wanted
    changed = [k for k in findings if (recorded[0].get(k) or None) != findings[k]]
    if not changed and recorded[1] == region:
        return
    was = [f"{k}={recorded[0].get(k) or 'none'}" for k in changed]
    now = [f"{k}={findings[k] or 'none'}" for k in changed]
    if recorded[1] != region:
        was.append(_region_text(recorded[1]))
        now.append(_region_text(region))
    raise MammofuseError(f"{where} was scored with {', '.join(was)}, but this run gives {', '.join(now)}; resume with the same "
                         "clinical flags, --clinical findings and --roi, or write to another --output")


def _region_text(region: tuple[float, ...] | None) -> str:
    return f"lesion region {','.join(f'{v:g}' for v in region)}" if region else "no lesion region"


def _difference(found: Any, wanted: Sequence[str]) -> str:
    missing = [k for k in wanted if k not in found]
    extra = [k for k in found if k not in wanted]
    parts = [f"missing {', '.join(missing)}" if missing else "", f"extra {', '.join(extra)}" if extra else ""]
    return "; ".join(p for p in parts if p) or "in another order"


def _repair(output: Path, drops: list[Span], cut: int | None) -> None:
    """Cut the output at ``cut`` (a torn record) and drop the ``drops`` spans (atomically, by rewriting it)."""
    if not drops:
        if cut is not None:
            os.truncate(output, cut)
        return
    from mammofuse.atomic import atomic_path

    with atomic_path(output, follow_symlink=True) as tmp, output.open("rb") as src, tmp.open("wb") as dst:
        position = 0
        for start, end in [*drops, (cut if cut is not None else output.stat().st_size,) * 2]:
            _copy(src, dst, start - position)
            src.seek(end)
            position = end


def _copy(src: BinaryIO, dst: BinaryIO, size: int) -> None:
    while size > 0:
        chunk = src.read(min(size, 1 << 20))
        if not chunk:
            return
        dst.write(chunk)
        size -= len(chunk)
