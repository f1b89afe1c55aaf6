"""Reading CSV files a user or a dataset provides: one clear error per problem, one pass, lean.

Every failure names the file (and the line where it has one): not UTF-8, not CSV, another
delimiter, required columns missing, a row with more cells than the header. A first line ``sep=,``
(which Excel writes to name the delimiter) is skipped. The formula guard of the CSV cells mammofuse
writes (:func:`csv_cell`) is here too, with its inverse (:func:`cell_text`), for whatever reads them back.
"""

from __future__ import annotations

import csv
import difflib
from collections import Counter
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence, TextIO

from mammofuse.errors import MammofuseError

Record = tuple[int, dict[str, str]]
"""(first line of the record in the file, its cells keyed by normalised column name)."""
SEP_LINE = "sep=,"
"""A first line that names the delimiter (Excel writes it when asked): no header, skipped."""
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet run a cell as a formula: such cells get a ``'`` in CSV."""
GUARDED_START = (*FORMULA_START, "'")
"""First characters that get a ``'`` in CSV: a formula's, and the ``'`` itself, so that reading a cell back is exact."""


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell, with a ``'`` before text a spreadsheet would run as a formula, and before a ``'``."""
    if isinstance(value, list):
        value = "; ".join(str(v) for v in value)
    if isinstance(value, str) and value.startswith(GUARDED_START):
        return "'" + value
    return value


def cell_text(cell: str) -> str:
    """The text of a CSV cell written by :func:`csv_cell` (its guard removed): the exact inverse of it."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(GUARDED_START) else cell


def csv_columns(path: Path, key: Callable[[str], str] = str.strip) -> list[str]:
    """The header of a CSV, each name passed through ``key``.

    Raises:
        MammofuseError: missing file, not UTF-8, malformed or empty CSV.
    """
    with _open(path) as fh:
        header = next(csv.reader(_lines(fh)[0]), None)
    if header is None:
        raise MammofuseError(f"{path}: empty file (expected a CSV with a header row)")
    return [key(c) for c in header]


def csv_records(
    path: Path, required: tuple[str, ...] = (), key: Callable[[str], str] = str.strip, meaning: Mapping[str, str] | None = None,
    as_written: Collection[str] = (),
) -> Iterator[Record]:
    """Yield the records of a CSV, one at a time, with column names passed through ``key`` and cells stripped.

    Args:
        path: the CSV file (UTF-8, a BOM allowed, comma-separated).
        required: normalised column names that must be present.
        key: how a column name is normalised.
        meaning: what a normalised column name stands for, where several do for one thing (a clinical
            field's aliases): two columns for one thing are an error, as one column named twice is.
        as_written: normalised column names whose cells are kept as written, spaces around them included (file names).

    Raises:
        MammofuseError: missing file, not UTF-8, malformed CSV, a column named twice, two columns for one
            thing, missing columns (with a hint when the file seems to use another delimiter), a row with
            more non-empty cells than the header (an unquoted comma: its extra cells would be lost).
    """
    columns = csv_columns(path, key)
    _check_unique(path, columns, meaning or {})
    missing = [c for c in required if c not in columns]
    if missing:
        header = csv_columns(path, str)  # as written: a key may strip a tab (``sep=\t``)
        raise MammofuseError(f"{path}: missing column(s) {_with_guesses(missing, columns, required)}{delimiter_hint(header)}")
    with _open(path) as fh:
        lines, skipped = _lines(fh)
        reader = csv.reader(lines)
        next(reader)
        line = skipped + reader.line_num + 1
        for cells in reader:
            if any(c.strip() for c in cells[len(columns):]):
                raise MammofuseError(
                    f"{path}: line {line} has {len(cells)} cells, the header has {len(columns)}; quote a value that holds a comma"
                )
            if any(c.strip() for c in cells):
                yield line, {name: cell if name in as_written else cell.strip() for name, cell in zip(columns, cells) if name}
            line = skipped + reader.line_num + 1


def _with_guesses(missing: list[str], columns: list[str], required: Collection[str]) -> str:
    """The ``missing`` column names, each with the closest of the file's other ``columns`` it may be spelt as (``patient.id``)."""
    others = [c for c in columns if c and c not in required]
    return ", ".join(with_guess(column, others) for column in missing)


def with_guess(column: str, names: Sequence[str]) -> str:
    """``column``, with the closest of ``names`` it may have meant: ``densty (did you mean density?)``."""
    close = difflib.get_close_matches(column, names, n=1)
    return column + (f" (did you mean {close[0]}?)" if close else "")


def _check_unique(path: Path, columns: list[str], meaning: Mapping[str, str]) -> None:
    """Raise MammofuseError when two columns have one (normalised) name, or stand for one thing (``meaning``):
    which of their values counts would be a guess."""
    twice = sorted(c for c, n in Counter(columns).items() if c and n > 1)  # one pass: headers may be 40,000 columns wide
    if twice:
        raise MammofuseError(f"{path}: column(s) {', '.join(repr(c) for c in twice)} appear more than once; keep one of each")
    first: dict[str, str] = {}
    for column in columns:
        thing = meaning.get(column)
        if thing is not None and first.setdefault(thing, column) != column:
            raise MammofuseError(f"{path}: columns {first[thing]!r} and {column!r} both give {thing}; keep one")


def delimiter_hint(columns: list[str]) -> str:
    """A hint when a header looks separated by something other than commas ('' otherwise)."""
    text = ",".join(columns)
    for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
        if delimiter in text:
            return f" (the header seems to use {name}; columns must be separated by commas)"
    return ""


def _lines(fh: TextIO) -> tuple[Iterable[str], int]:
    """The lines of an open CSV without a first line ``sep=,``, and how many lines that leaves out (1 or 0)."""
    first = fh.readline()
    if first.rstrip("\r\n") == SEP_LINE:
        return fh, 1
    return chain([first], fh), 0


@contextmanager
def _open(path: Path) -> Iterator[TextIO]:
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            yield fh
    except FileNotFoundError:
        raise MammofuseError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MammofuseError(f"{path}: is a folder, not a CSV file") from None
    except UnicodeDecodeError as exc:
        raise MammofuseError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise MammofuseError(f"{path}: not a valid CSV ({exc})") from None
    except OSError as exc:  # no permission, a name too long: an input, so a usage error rather than an unwritable output
        raise MammofuseError(f"{path}: cannot read ({exc.strerror or exc})") from None
