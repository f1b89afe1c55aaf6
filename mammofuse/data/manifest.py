"""A user's own data: a CSV with ``path``, ``label``, ``patient_id`` and any clinical fields."""

from __future__ import annotations

import csv
from pathlib import Path

from mammofuse.clinical import load_schema
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError

_LABELS = {"1": 1, "0": 0, "malignant": 1, "benign": 0, "benign_without_callback": 0}


def load_manifest(data: str | Path, vocabulary: str = "cbis-ddsm-v1") -> list[Sample]:
    """Rows of ``data`` (a CSV file, or a folder holding ``manifest.csv``); paths are relative to the CSV.

    Optional columns: ``split``, ``abnormality``, ``roi_row``/``roi_col``/``roi_radius`` (lesion circle).
    """
    path = Path(data)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        raise MammofuseError(f"{path}: manifest CSV not found")
    schema = load_schema(vocabulary)
    aliases = {c.lower(): f.name for f in schema.fields for c in (f.name, *f.csv_columns)}
    samples = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label", "patient_id"} - set(reader.fieldnames or [])
        if missing:
            raise MammofuseError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for n, row in enumerate(reader, start=2):
            label = _LABELS.get(row["label"].strip().lower())
            if label is None:
                raise MammofuseError(f"{path}:{n}: label {row['label']!r} is not 0/1/benign/malignant")
            image = (path.parent / row["path"]).as_posix() if row["path"].strip() else None
            region = None
            if row.get("roi_row") and row.get("roi_col") and row.get("roi_radius"):
                region = (float(row["roi_row"]), float(row["roi_col"]), float(row["roi_radius"]))
            samples.append(
                Sample(
                    id=f"row{n}",
                    patient_id=row["patient_id"],
                    label=label,
                    clinical={aliases[k.lower()]: v for k, v in row.items() if k and k.lower() in aliases and v},
                    image_path=image,
                    region=region,
                    image_id=row["path"] or None,
                    abnormality=row.get("abnormality") or None,
                    split=row.get("split") or "all",
                )
            )
    return samples
