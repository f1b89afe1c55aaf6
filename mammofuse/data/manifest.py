"""A user's own data: a CSV with ``path``, ``label``, ``patient_id`` and any clinical fields."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Collection, Sequence

from mammofuse.clinical import load_schema
from mammofuse.clinical.schema import DEFAULT_VOCABULARY, ClinicalSchema, ClinicalValueError
from mammofuse.data.sample import Sample
from mammofuse.errors import DatasetWarning, MammofuseError, reading
from mammofuse.tabular import csv_columns, csv_records, delimiter_hint, with_guess
from mammofuse.validation import REGION_COLUMNS, region_cells

_LABELS = {"1": 1, "0": 0, "malignant": 1, "benign": 0, "benign_without_callback": 0}
_REQUIRED = ("path", "label", "patient_id")
_ABNORMALITIES = {"mass": "mass", "calc": "calc", "calcification": "calc"}
_COLUMNS = (*_REQUIRED, "split", "abnormality", *REGION_COLUMNS)
_LEAKING = frozenset({"assessment", "subtlety"})  # the protocol's rule: never inputs


def load_manifest(data: str | Path) -> list[Sample]:
    """Rows of ``data`` (a CSV file, or a folder holding ``manifest.csv``); paths are relative to the CSV.

    Optional columns: ``split`` (any case: read in lower case), ``abnormality``, ``roi_row``/``roi_col``/``roi_radius``
    (lesion circle). A column that is none of these nor a clinical field of the schema gets a :class:`DatasetWarning`.

    Raises:
        MammofuseError: no such CSV, a missing column, or (naming the file and line) a short row, an empty
            label or patient_id, an image given to two patients (by any path to it), a lesion (image and circle) given
            twice, or a bad label, abnormality, clinical value or circle. A row repeated cell for cell gets a warning.
    """
    path = Path(data)
    if path.is_dir():
        path = path / "manifest.csv"
    with reading(path):  # a folder that cannot be searched
        found = path.is_file()
    if not found:
        raise MammofuseError(f"{path}: manifest CSV not found")
    schema = load_schema(DEFAULT_VOCABULARY)
    aliases = {c.lower(): f.name for f in schema.fields for c in (f.name, *f.csv_columns)}
    key = lambda c: c.strip().lower()  # noqa: E731
    header = csv_columns(path, str)
    columns = [key(c) for c in header]
    other_delimiter = delimiter_hint(header) and not set(_REQUIRED) <= set(columns)  # refused below, saying so: no note first
    if not other_delimiter and (unread := unread_columns(columns, {*aliases, *_COLUMNS})):
        warnings.warn(f"{path}: column(s) not read: {unread}", DatasetWarning, stacklevel=2)
    samples = []
    owners: dict[str, tuple[str, int]] = {}  # image (its real path: links resolved) -> (patient, first line): one image is one patient's
    rows: dict[tuple[tuple[str, str], ...], int] = {}  # a row's cells -> the line that gave them first
    repeats: list[str] = []
    lesions: dict[tuple[str, tuple[float, float, float]], int] = {}  # (real image path, circle) -> the line that gave it first
    for n, row in csv_records(path, _REQUIRED, key=key, meaning=aliases):
        _check_required(row, path, n)
        image_path = (path.parent / row["path"]).as_posix() if row["path"] else None
        region = region_cells(row, f"{path}:{n}")
        if (first := rows.setdefault(tuple(sorted(row.items())), n)) != n:
            repeats.append(f"{n} (of {first})")
        if image_path:
            real = _real_path(image_path)
            patient, line = owners.setdefault(real, (row["patient_id"], n))
            if patient != row["patient_id"]:
                raise MammofuseError(f"{path}:{n}: image {row['path'][:80]!r} belongs to patient {patient!r} on line {line}, not "
                                     f"{row['patient_id'][:40]!r}: patient-grouped splits could put it on both sides")
            if region is not None and (first := lesions.setdefault((real, region), n)) != n:
                raise MammofuseError(f"{path}:{n}: the lesion of line {first} again (the same image and circle): give each lesion once")
        label = _LABELS.get(row["label"].lower())
        if label is None:
            raise MammofuseError(f"{path}:{n}: label {row['label']!r} is not 0/1/benign/malignant")
        samples.append(
            Sample(
                id=f"row{n}",
                patient_id=row["patient_id"],
                label=label,
                clinical=_clinical(row, aliases, schema, path, n),
                image_path=image_path,
                region=region,
                image_id=row["path"] or None,
                abnormality=_abnormality(row, path, n),
                split=(row.get("split") or "all").lower(),
            )
        )
    if repeats:
        warnings.warn(f"{path}: line(s) {', '.join(repeats[:10])}{' ...' if len(repeats) > 10 else ''} repeat an earlier row: each counts "
                      "as a case of its own (two lesions alike, or one given twice?)", DatasetWarning, stacklevel=2)
    return samples


def _real_path(path: str) -> str:
    """``path`` with its links resolved; made absolute as written where no file can have it (a NUL in it): reading fails later."""
    try:
        return os.path.realpath(path)
    except (ValueError, OSError):
        return os.path.abspath(path)


def unread_columns(columns: Sequence[str], read: Collection[str]) -> str:
    """The ``columns`` of a dataset's CSV that are none of the ``read`` ones, each with why (a column that gives the label
    away) or what it may have meant (the closest ``read`` one); empty when none."""
    known = sorted(read)
    unread = []
    for column in (c for c in columns if c and c not in read):
        if column in _LEAKING:
            unread.append(f"{column} (never an input: it would give the label away)")
        else:
            unread.append(with_guess(column, known))
    return ", ".join(unread)


def _check_required(row: dict[str, str], path: Path, n: int) -> None:
    """Raise MammofuseError naming the file and line for a row shorter than the required columns, or an empty label or patient_id."""
    missing = [c for c in _REQUIRED if c not in row]
    if missing:
        raise MammofuseError(f"{path}:{n}: no {' or '.join(missing)} cell: the row has fewer cells than the header")
    if not row["label"]:
        raise MammofuseError(f"{path}:{n}: label is empty (0/1/benign/malignant)")
    if not row["patient_id"]:
        raise MammofuseError(f"{path}:{n}: patient_id is empty: every row needs its patient (splits are grouped by patient)")


def _abnormality(row: dict[str, str], path: Path, n: int) -> str | None:
    """The lesion type of a row, ``mass`` or ``calc`` (None when empty); a MammofuseError naming the file and line for another value."""
    value = row.get("abnormality", "")
    if not value:
        return None
    kind = _ABNORMALITIES.get(value.lower())
    if kind is None:
        raise MammofuseError(f"{path}:{n}: abnormality {value[:40]!r} is not mass, calc or calcification (any case; empty when unknown)")
    return kind


def _clinical(row: dict[str, str], aliases: dict[str, str], schema: ClinicalSchema, path: Path, n: int) -> dict[str, str]:
    """The clinical findings of a row, keyed by field; a ClinicalValueError naming the file and line for an unknown value."""
    clinical = {aliases[k]: v for k, v in row.items() if k in aliases and v}
    try:
        schema.normalise(clinical)
    except ClinicalValueError as exc:
        raise ClinicalValueError(f"{path}:{n}: {exc}") from None
    return clinical
