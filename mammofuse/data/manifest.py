"""A user's own data: a CSV with ``path``, ``label``, ``patient_id`` and any clinical fields."""

from __future__ import annotations

from pathlib import Path

from mammofuse.clinical import load_schema
from mammofuse.clinical.schema import ClinicalSchema, ClinicalValueError
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError
from mammofuse.tabular import csv_records

_LABELS = {"1": 1, "0": 0, "malignant": 1, "benign": 0, "benign_without_callback": 0}


def load_manifest(data: str | Path, vocabulary: str = "cbis-ddsm-v1") -> list[Sample]:
    """Rows of ``data`` (a CSV file, or a folder holding ``manifest.csv``); paths are relative to the CSV.

    Optional columns: ``split``, ``abnormality``, ``roi_row``/``roi_col``/``roi_radius`` (lesion circle).

    Raises:
        MammofuseError: no such CSV, a missing column, or a bad label, clinical value or circle (naming the file and line).
    """
    path = Path(data)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        raise MammofuseError(f"{path}: manifest CSV not found")
    schema = load_schema(vocabulary)
    aliases = {c.lower(): f.name for f in schema.fields for c in (f.name, *f.csv_columns)}
    samples = []
    for n, row in csv_records(path, ("path", "label", "patient_id"), key=lambda c: c.strip().lower()):
        label = _LABELS.get(row["label"].lower())
        if label is None:
            raise MammofuseError(f"{path}:{n}: label {row['label']!r} is not 0/1/benign/malignant")
        samples.append(
            Sample(
                id=f"row{n}",
                patient_id=row["patient_id"],
                label=label,
                clinical=_clinical(row, aliases, schema, path, n),
                image_path=(path.parent / row["path"]).as_posix() if row["path"] else None,
                region=_region(row, path, n),
                image_id=row["path"] or None,
                abnormality=row.get("abnormality") or None,
                split=row.get("split") or "all",
            )
        )
    return samples


def _clinical(row: dict[str, str], aliases: dict[str, str], schema: ClinicalSchema, path: Path, n: int) -> dict[str, str]:
    """The clinical findings of a row, keyed by field; a ClinicalValueError naming the file and line for an unknown value."""
    clinical = {aliases[k]: v for k, v in row.items() if k in aliases and v}
    try:
        schema.normalise(clinical)
    except ClinicalValueError as exc:
        raise ClinicalValueError(f"{path}:{n}: {exc}") from None
    return clinical


def _region(row: dict[str, str], path: Path, n: int) -> tuple[float, float, float] | None:
    """The lesion circle of a row, when all three columns are filled."""
    values = [row.get(c, "") for c in ("roi_row", "roi_col", "roi_radius")]
    if not all(values):
        return None
    try:
        return (float(values[0]), float(values[1]), float(values[2]))
    except ValueError:
        raise MammofuseError(f"{path}:{n}: roi_row, roi_col and roi_radius must be numbers") from None
