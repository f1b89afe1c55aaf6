"""CBIS-DDSM from its official case-description CSVs, with images from a TCIA download tree."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from mammofuse.atomic import write_text
from mammofuse.cache import cache_dir
from mammofuse.clinical import load_schema
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError
from mammofuse.tabular import csv_records

CSV_SPLITS = {
    "mass_case_description_train_set.csv": ("train", "mass"),
    "calc_case_description_train_set.csv": ("train", "calc"),
    "mass_case_description_test_set.csv": ("test", "mass"),
    "calc_case_description_test_set.csv": ("test", "calc"),
}
_INDEX_VERSION = 1
REQUIRED_COLUMNS = ("patient_id", "left_or_right_breast", "image_view", "pathology")
PATHOLOGY_LABELS = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
DENSITY_COLUMN = "breast_density"
UNRECORDED_DENSITIES = frozenset({"0"})  # not a BI-RADS value; two official Calc-Test rows have it


class DatasetWarning(UserWarning):
    """A dataset value treated as not recorded (e.g. breast density 0); names the file and lines."""


class CaseRow(dict[str, str]):
    """One CSV record with normalised column names, and the file line where it starts."""

    line: int = 0


def _key(column: str) -> str:
    return column.strip().lower().replace(" ", "_")


def read_case_csv(path: Path) -> Iterator[CaseRow]:
    """Rows with normalised column names (``breast density`` and ``breast_density`` agree), read lazily.

    A breast density of 0 is treated as not recorded, with one warning naming its lines.

    Raises:
        MammofuseError: not UTF-8, not CSV, or a required column missing (naming the file).
    """
    unrecorded: list[int] = []
    for line, cells in csv_records(path, REQUIRED_COLUMNS, key=_key):
        row = CaseRow(cells)
        row.line = line
        if _drop_unrecorded_density(row):
            unrecorded.append(line)
        yield row
    if unrecorded:
        lines = ", ".join(map(str, unrecorded[:10])) + (" ..." if len(unrecorded) > 10 else "")
        warnings.warn(f"{path}: breast density 0 (not a BI-RADS value) treated as not recorded on line(s) {lines}", DatasetWarning, stacklevel=2)


def _drop_unrecorded_density(row: CaseRow) -> bool:
    """Blank a density that is not a BI-RADS value but means 'not recorded'; True when blanked."""
    if row.get(DENSITY_COLUMN) in UNRECORDED_DENSITIES:
        row[DENSITY_COLUMN] = ""
        return True
    return False


def pathology_label(row: CaseRow, path: Path) -> int:
    """1 for MALIGNANT, 0 for BENIGN and BENIGN_WITHOUT_CALLBACK; anything else is an error naming file and line."""
    value = row["pathology"]
    label = PATHOLOGY_LABELS.get(value.upper())
    if label is None:
        raise MammofuseError(f"{path}:{row.line}: unknown pathology {value!r} (expected {', '.join(PATHOLOGY_LABELS)})")
    return label


def _path_parts(value: str) -> list[str]:
    return [p for p in value.replace("\\", "/").strip().split("/") if p]


def load_cbis_ddsm(data: str | Path, images: str | Path | None = None, vocabulary: str = "cbis-ddsm-v1") -> list[Sample]:
    """Samples from every official CSV found in ``data``; images looked up under ``images``."""
    data = Path(data)
    found = [(data / name, split, kind) for name, (split, kind) in CSV_SPLITS.items() if (data / name).is_file()]
    if not found:
        raise MammofuseError(f"{data}: no CBIS-DDSM case-description CSVs here (expected e.g. {next(iter(CSV_SPLITS))})")
    schema = load_schema(vocabulary)
    columns = {f.name: [_key(c) for c in f.csv_columns] for f in schema.fields}
    index = ImageIndex.build(Path(images)) if images else None
    samples = []
    for path, split, kind in found:
        for row in read_case_csv(path):
            image_parts = _path_parts(row.get("image_file_path", ""))
            crop_parts = _path_parts(row.get("cropped_image_file_path", ""))
            film = image_parts[0] if image_parts else f"{row['patient_id']}_{row['left_or_right_breast']}_{row['image_view']}"
            clinical = {name: row[c] for name, cols in columns.items() for c in cols if row.get(c)}
            samples.append(
                Sample(
                    id=f"{film}_{row.get('abnormality_id', '1')}",
                    patient_id=row["patient_id"],
                    label=pathology_label(row, path),
                    clinical=clinical,
                    image_path=index.full_image(image_parts) if index else None,
                    roi_path=index.roi_crop(crop_parts) if index else None,
                    image_id=film,
                    abnormality=kind,
                    split=split,
                )
            )
    return samples


class ImageIndex:
    """DICOMs under a download root, found by UIDs and the first path component, cached per user."""

    def __init__(self, records: list[dict[str, str | int]]) -> None:
        self.by_series: dict[tuple[str, str], list[dict]] = {}
        self.by_folder: dict[str, list[dict]] = {}
        for rec in records:
            self.by_series.setdefault((str(rec["study"]), str(rec["series"])), []).append(rec)
            for name in {str(rec["patient_id"]), str(rec["folder"])}:
                self.by_folder.setdefault(name, []).append(rec)

    @classmethod
    def build(cls, root: Path) -> "ImageIndex":
        if not root.is_dir():
            raise MammofuseError(f"{root}: images folder not found")
        files = sorted(p for p in root.rglob("*.dcm") if p.is_file())
        stamp = hashlib.sha256(
            json.dumps([str(root.resolve()), _INDEX_VERSION, [(str(p), p.stat().st_mtime_ns) for p in files]]).encode()
        ).hexdigest()[:20]
        cached = cache_dir("index") / f"cbis-{stamp}.json"
        if cached.is_file():
            return cls(json.loads(cached.read_text(encoding="utf-8")))
        records = list(_scan(files, root))
        write_text(cached, json.dumps(records))
        return cls(records)

    def _candidates(self, parts: list[str]) -> list[dict]:
        if len(parts) >= 3 and (parts[1], parts[2]) in self.by_series:
            return self.by_series[(parts[1], parts[2])]
        return self.by_folder.get(parts[0], []) if parts else []

    def full_image(self, parts: list[str]) -> str | None:
        """The largest image of the film's series (the full-field mammogram)."""
        candidates = self._candidates(parts)
        return str(max(candidates, key=lambda r: int(r["pixels"]))["path"]) if candidates else None

    def roi_crop(self, parts: list[str]) -> str | None:
        """The cropped lesion image: in its series the smaller file (the other is the full-size mask)."""
        candidates = self._candidates(parts)
        return str(min(candidates, key=lambda r: int(r["pixels"]))["path"]) if candidates else None


def _scan(files: Iterable[Path], root: Path) -> Iterable[dict[str, str | int]]:
    import pydicom

    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[
                "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns"])
        except Exception:  # not a DICOM we can use: it is simply not indexed
            continue
        rel = path.relative_to(root).parts
        yield {
            "path": str(path),
            "folder": rel[0] if len(rel) > 1 else "",
            "patient_id": str(ds.get("PatientID", "")),
            "study": str(ds.get("StudyInstanceUID", "")),
            "series": str(ds.get("SeriesInstanceUID", "")),
            "pixels": int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)),
        }
