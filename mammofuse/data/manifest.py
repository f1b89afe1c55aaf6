"""A user's own data: a CSV with ``path``, ``label``, ``patient_id`` and any clinical fields."""

from __future__ import annotations

import os
from pathlib import Path

from mammofuse.clinical import load_schema
from mammofuse.clinical.schema import DEFAULT_VOCABULARY, ClinicalSchema, ClinicalValueError
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError
from mammofuse.tabular import csv_records
from mammofuse.validation import region_cells

_LABELS = {"1": 1, "0": 0, "malignant": 1, "benign": 0, "benign_without_callback": 0}
_REQUIRED = ("path", "label", "patient_id")
_ABNORMALITIES = {"mass": "mass", "calc": "calc", "calcification": "calc"}


def load_manifest(data: str | Path) -> list[Sample]:
    """Rows of ``data`` (a CSV file, or a folder holding ``manifest.csv``); paths are relative to the CSV.

    Optional columns: ``split``, ``abnormality``, ``roi_row``/``roi_col``/``roi_radius`` (lesion circle).

    Raises:
        MammofuseError: no such CSV, a missing column, or (naming the file and line) a short row, an empty
            label or patient_id, an image given to two patients, or a bad label, abnormality, clinical value or circle.
    """
    path = Path(data)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        raise MammofuseError(f"{path}: manifest CSV not found")
    schema = load_schema(DEFAULT_VOCABULARY)
    aliases = {c.lower(): f.name for f in schema.fields for c in (f.name, *f.csv_columns)}
    samples = []
    owners: dict[str, tuple[str, int]] = {}  # image (absolute, normalised) -> (patient, first line): one image is one patient's
    for n, row in csv_records(path, _REQUIRED, key=lambda c: c.strip().lower(), meaning=aliases):
        _check_required(row, path, n)
        image_path = (path.parent / row["path"]).as_posix() if row["path"] else None
        if image_path:
            patient, line = owners.setdefault(os.path.abspath(image_path), (row["patient_id"], n))
            if patient != row["patient_id"]:
                raise MammofuseError(f"{path}:{n}: image {row['path'][:80]!r} belongs to patient {patient!r} on line {line}, not "
                                     f"{row['patient_id'][:40]!r}: patient-grouped splits could put it on both sides")
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
                region=region_cells(row, f"{path}:{n}"),
                image_id=row["path"] or None,
                abnormality=_abnormality(row, path, n),
                split=row.get("split") or "all",
            )
        )
    return samples


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
