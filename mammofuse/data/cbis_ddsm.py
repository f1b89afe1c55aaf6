"""CBIS-DDSM from its official case-description CSVs, with images from TCIA download trees or keyed image folders."""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from mammofuse.atomic import write_text
from mammofuse.cache import cache_dir, file_identity, warn_uncached
from mammofuse.clinical import load_schema
from mammofuse.clinical.schema import DEFAULT_VOCABULARY
from mammofuse.data.cbis_images import Box, FolderImage, ImageFolder, ShortKey, box_region
from mammofuse.data.manifest import unread_columns
from mammofuse.data.sample import Sample
from mammofuse.errors import DatasetWarning, MammofuseError, OutputError, reading
from mammofuse.imaging.preprocess import Region
from mammofuse.imaging.reader import read_dicom
from mammofuse.listing import files_under
from mammofuse.tabular import csv_columns, csv_records

CSV_SPLITS = {
    "mass_case_description_train_set.csv": ("train", "mass"),
    "calc_case_description_train_set.csv": ("train", "calc"),
    "mass_case_description_test_set.csv": ("test", "mass"),
    "calc_case_description_test_set.csv": ("test", "calc"),
}
_INDEX_VERSION = 1
_INDEX_KEPT = "the index of the CBIS-DDSM images"
REQUIRED_COLUMNS = ("patient_id", "left_or_right_breast", "image_view", "pathology")
FILE_COLUMNS = ("abnormality_id", "image_file_path", "cropped_image_file_path", "roi_mask_file_path")
LEFT_ALONE = ("abnormality_type", "assessment", "subtlety")
"""Official columns that are not read: the lesion type is the file's; BI-RADS assessment and subtlety give the label away."""
LESION_FIELDS = {"mass": ("shape", "margin"), "calc": ("calc_type", "calc_distribution")}
"""The clinical fields that describe a lesion of each type (the breast density describes the breast)."""
PATHOLOGY_LABELS = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
LEFT_OUT = ("left_out", "mixed_pathology", "box_count")
"""Counts of CSV rows left out: all, and why (their film holds lesions of both pathologies; its boxes and rows differ in number)."""
DENSITY_COLUMN = "breast_density"
UNRECORDED_DENSITIES = frozenset({"0"})  # not a BI-RADS value; two official Calc-Test rows have it


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


ABNORMALITIES = ("mass", "calc", "all")


def load_cbis_ddsm(
    data: str | Path,
    images: str | Path | Sequence[str | Path] | None = None,
    abnormality: str = "all",
    report: dict[str, Any] | None = None,
) -> list[Sample]:
    """Samples from every official CSV found in ``data``; images looked up under each of ``images``.

    An images folder is either a TCIA download tree of DICOMs (found by UIDs and folder names) or a
    flat folder of full-field images named by image key with COCO lesion boxes (see
    :mod:`mammofuse.data.cbis_images`). With boxes, a box becomes its lesion's region where the
    image has one lesion of that kind; where it has several of one pathology, each box is a sample
    with that label and the findings all its rows share; mixed-pathology images are left out.
    ``report``, if given, receives the matching counts (``mammofuse data summary`` shows them) and, per
    split, the CSV rows and how many of them were left out or became per-box samples (``rows``). A CSV with columns
    that are not read (a clinical field spelt otherwise), or with no column for a finding of its lesions, gets one
    :class:`DatasetWarning` naming them.
    """
    if abnormality not in ABNORMALITIES:
        raise MammofuseError(f"abnormality must be one of {', '.join(ABNORMALITIES)}, not {abnormality!r}")
    data = Path(data)
    with reading(data):  # a folder that cannot be searched
        found = [(data / name, split, kind) for name, (split, kind) in CSV_SPLITS.items() if (data / name).is_file()]
    if not found:
        raise MammofuseError(f"{data}: no CBIS-DDSM case-description CSVs here (expected e.g. {next(iter(CSV_SPLITS))})")
    if not (chosen := [f for f in found if abnormality in ("all", f[2])]):
        have = ", ".join(path.name for path, _, _ in found)
        raise MammofuseError(f"{data}: no {abnormality} case-description CSV here (it has {have}); choose another --abnormality")
    found = chosen
    schema = load_schema(DEFAULT_VOCABULARY)
    columns = {f.name: [_key(c) for c in f.csv_columns] for f in schema.fields}
    locator = _Locator(_roots(images))
    per_split: dict[str, Counter[str]] = {}
    tables: list[tuple[Path, str, str, dict[str, list[CaseRow]]]] = []
    for path, split, kind in found:
        counts = per_split.setdefault(split, Counter())
        films: dict[str, list[CaseRow]] = {}
        for row in read_case_csv(path):
            parts = _path_parts(row.get("image_file_path", ""))
            film = parts[0] if parts else f"{kind.capitalize()}-{split}_{row['patient_id']}_{row['left_or_right_breast']}_{row['image_view']}"
            films.setdefault(film, []).append(row)
            counts["rows"] += 1
        _warn_of_columns(path, kind, columns)
        tables.append((path, split, kind, films))
    locator.learn_splits((short_key(rows[0]), split) for _, split, _, films in tables for rows in films.values())
    samples: list[Sample] = []
    for path, split, kind, films in tables:
        for film, rows in films.items():
            samples.extend(_film_samples(film, rows, split, kind, locator, columns, per_split[split], path))
    if report is not None:
        report.update(locator.report(sum(per_split.values(), Counter())))
        report["rows"] = {split: {k: c[k] for k in ("rows", *LEFT_OUT, "ambiguous")} for split, c in per_split.items()}
    return samples


def _warn_of_columns(path: Path, kind: str, columns: dict[str, list[str]]) -> None:
    """One DatasetWarning for a case-description CSV (of ``kind`` lesions) with columns that are not read (a clinical
    field spelt otherwise: ``mass.shape``), naming them with what each may have meant, or with no column that gives a
    finding of its lesions, which are then read with the breast density at most."""
    header = csv_columns(path, _key)
    read = {*REQUIRED_COLUMNS, *FILE_COLUMNS, *LEFT_ALONE, *(c for names in columns.values() for c in names)}
    problems = [f"column(s) not read: {unread}"] if (unread := unread_columns(header, read)) else []
    if not any(c in header for name in LESION_FIELDS[kind] for c in columns[name]):
        lesion_columns = " or ".join(columns[name][0] for name in LESION_FIELDS[kind])
        problems.append(f"no {lesion_columns} column: its lesions have no finding but the breast density")
    if problems:
        warnings.warn(f"{path}: {'; '.join(problems)}", DatasetWarning, stacklevel=3)


def short_key(row: dict[str, str]) -> ShortKey:
    """(patient, breast, view) of a CSV row, as a short image key names its file."""
    return row["patient_id"], row.get("left_or_right_breast", "").upper(), row.get("image_view", "").upper()


def _narrowed(found: list[tuple[ImageFolder, FolderImage]], keep: Callable[[ImageFolder, FolderImage], bool]) -> list[tuple[ImageFolder, FolderImage]]:
    """The matches that ``keep`` keeps, or all of them where it keeps none (it then tells nothing apart)."""
    return [f for f in found if keep(*f)] or found


def _roots(images: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if images is None:
        return []
    return [Path(images)] if isinstance(images, (str, Path)) else [Path(p) for p in images]


def _check_images_folder(root: Path) -> None:
    """Fail, naming ``root``, unless it is a folder (a file given as the images folder is said to be one)."""
    if root.is_dir():
        return
    if root.exists():
        raise MammofuseError(f"{root}: is a file, not an images folder (give the folder that holds the images)")
    raise MammofuseError(f"{root}: images folder not found")


def _warn_unread(root: Path, unread: list[str]) -> None:
    """One warning naming the folders under ``root`` that could not be listed (each with its reason)."""
    unread = sorted(unread)
    more = f" and {len(unread) - 3} more" if len(unread) > 3 else ""
    warnings.warn(f"{root}: {len(unread)} folder{'s' * (len(unread) > 1)} under it cannot be read, their images left out: "
                  f"{', '.join(unread[:3])}{more}", DatasetWarning, stacklevel=4)


class _Locator:
    """Finds a film's file in the given folders: keyed image folders first, then DICOM trees."""

    def __init__(self, roots: list[Path]) -> None:
        self.folders: list[ImageFolder] = []
        self.trees: list[ImageIndex] = []
        self.split_of: dict[Path, str | None] = {}
        for root in dict.fromkeys(roots):
            with reading(root):  # a name too long, a folder that cannot be listed
                _check_images_folder(root)
                if any(root.samefile(f.root) for f in self.folders):
                    continue  # one folder given twice
                folder = ImageFolder.scan(root)
            if folder is not None:
                self.folders.append(folder)
            else:
                self.trees.append(ImageIndex.build(root))

    def learn_splits(self, films: Iterable[tuple[ShortKey, str]]) -> None:
        """Which split each keyed folder holds: the one most of its short keys belong to alone.

        A short key (``00016_LEFT_CC``) does not say its split, and one patient's breast and view may
        be in both; when training and test folders both hold it, a film takes the file of its split's folder.
        """
        splits: dict[ShortKey, set[str]] = {}
        for key, split in films:
            splits.setdefault(key, set()).add(split)
        for folder in self.folders:
            votes = Counter(min(s) for key in folder.short_keys if len(s := splits.get(key, set())) == 1).most_common(2)
            self.split_of[folder.root] = votes[0][0] if votes and (len(votes) == 1 or votes[0][1] > votes[1][1]) else None

    def find(self, film: str, row: dict[str, str], kind: str, split: str) -> tuple[str | None, list[Box] | None, ImageIndex | None]:
        """(image path, lesion boxes of ``kind`` or None when unannotated, the DICOM tree it came from)."""
        image = next((i for folder in self.folders if (i := folder.by_film(film)) is not None), None)
        if image is None:
            image = self._by_key(film, short_key(row), kind, split)
        if image is not None:
            image.used = True
            return str(image.path), image.boxes_for(kind), None
        image_parts = _path_parts(row.get("image_file_path", "")) or [film]
        for tree in self.trees:
            path = tree.full_image(image_parts)
            if path:
                return path, None, tree
        return None, None, None

    def _by_key(self, film: str, key: ShortKey, kind: str, split: str) -> FolderImage | None:
        """The file of ``film`` by short key; where several folders hold one, that of the film's split and lesion type."""
        found = [(folder, image) for folder in self.folders if (image := folder.by_key(key)) is not None]
        if len(found) > 1:
            found = _narrowed(found, lambda folder, image: self.split_of.get(folder.root) == split)
            found = _narrowed(found, lambda folder, image: image.boxes_for(kind) is not None)
        if len(found) > 1:
            files = " and ".join(str(image.path) for _, image in found)
            raise MammofuseError(
                f"{film}: {files} both hold it by short key (patient, breast, view), which does not say its split or lesion "
                f"type; give only the folder of its split, or name the files by full key ({film}{found[0][1].path.suffix})"
            )
        return found[0][1] if found else None

    def report(self, counts: Counter[str]) -> dict[str, Any]:
        """How films matched files and lesions regions; both None when no images folder was given."""
        if not (self.folders or self.trees):
            return {"images": None, "lesions": None}
        unused = sum(not image.used for folder in self.folders for image in folder.images)
        return {
            "images": {"matched": counts["films_found"], "missing": counts["films"] - counts["films_found"], "unused_files": unused},
            "lesions": {k: counts[k] for k in ("matched", "ambiguous", *LEFT_OUT, "without_region")},
        }


def _film_samples(
    film: str, rows: Sequence[CaseRow], split: str, kind: str, locator: _Locator,
    columns: dict[str, list[str]], counts: Counter[str], csv_path: Path,
) -> list[Sample]:
    """The samples of one film's CSV rows, with lesion regions from its boxes where they map."""
    image_path, boxes, tree = locator.find(film, rows[0], kind, split)
    counts["films"] += 1
    counts["films_found"] += image_path is not None
    labels = [pathology_label(r, csv_path) for r in rows]
    findings = [{name: r[c] for name, cols in columns.items() for c in cols if r.get(c)} for r in rows]

    def sample(suffix: str, row: dict[str, str], label: int, clinical: dict[str, str], region: Region | None) -> Sample:
        crop_parts, mask_parts = (_path_parts(row.get(c, "")) for c in ("cropped_image_file_path", "roi_mask_file_path"))
        roi, mask = tree.roi_files(crop_parts, mask_parts, image_path) if tree else (None, None)
        return Sample(
            id=f"{film}_{suffix}", patient_id=row["patient_id"], label=label, clinical=clinical, image_path=image_path,
            roi_path=roi, roi_mask_path=mask, region=region, image_id=film, abnormality=kind, split=split,
        )

    if image_path is None or boxes is None:
        counts["without_region"] += len(rows) if image_path else 0
        return [sample(r.get("abnormality_id", "1"), r, label, clinical, None) for r, label, clinical in zip(rows, labels, findings)]
    if len(set(labels)) > 1 or len(boxes) != len(rows):  # boxes cannot be told apart, or do not match the rows
        counts["left_out"] += len(rows)
        counts["mixed_pathology" if len(set(labels)) > 1 else "box_count"] += len(rows)
        return []
    if len(rows) == 1:
        counts["matched"] += 1
        return [sample(rows[0].get("abnormality_id", "1"), rows[0], labels[0], findings[0], box_region(boxes[0]))]
    shared = {k: v for k, v in findings[0].items() if all(f.get(k) == v for f in findings[1:])}
    counts["ambiguous"] += len(boxes)
    return [sample(f"box{k + 1}", rows[0], labels[0], dict(shared), box_region(box)) for k, box in enumerate(boxes)]


IndexRecord = dict[str, str | int]  # one DICOM of an ImageIndex: path, study, series, patient_id, folder, pixels


class ImageIndex:
    """DICOMs under a download root, found by UIDs and the first path component, cached per user."""

    def __init__(self, records: list[IndexRecord]) -> None:
        self.by_series: dict[tuple[str, str], list[IndexRecord]] = {}
        self.by_folder: dict[str, list[IndexRecord]] = {}
        self.pixels = {str(rec["path"]): int(rec["pixels"]) for rec in records}
        for rec in records:
            self.by_series.setdefault((str(rec["study"]), str(rec["series"])), []).append(rec)
            for name in {str(rec["patient_id"]), str(rec["folder"])}:
                self.by_folder.setdefault(name, []).append(rec)

    @classmethod
    def build(cls, root: Path) -> "ImageIndex":
        with reading(root):
            _check_images_folder(root)
            unread: list[str] = []
            listed = files_under(root, unlisted=lambda folder, exc: unread.append(f"{folder} ({exc.strerror or exc})"))
            files = sorted(p for p in listed if p.name.endswith(".dcm") and p.is_file())
            if unread:
                _warn_unread(root, unread)
            resolved = str(root.resolve())
            stamp = hashlib.sha256(
                json.dumps([resolved, _INDEX_VERSION, [(str(p), file_identity(p)) for p in files]]).encode()
            ).hexdigest()[:20]
        root_key = hashlib.sha256(resolved.encode()).hexdigest()[:12]
        folder = cache_dir("index", keeps=_INDEX_KEPT)
        cached = folder / f"cbis-{root_key}-{stamp}.json" if folder else None
        if cached is not None and cached.is_file():
            try:
                records = json.loads(cached.read_text(encoding="utf-8"))
                if isinstance(records, list):
                    return cls(records)
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                pass  # damaged or unreadable (a disk error, an edit): made again below
        records = list(_scan(files, root))
        if cached is not None:
            try:
                write_text(cached, json.dumps(records))
            except OutputError as exc:  # a full disk, say: the index is still good for this run
                warn_uncached(exc, _INDEX_KEPT)
            else:
                _drop_older_indexes(cached, root_key)
        return cls(records)

    def _candidates(self, parts: list[str]) -> list[IndexRecord]:
        if len(parts) >= 3 and (parts[1], parts[2]) in self.by_series:
            return self.by_series[(parts[1], parts[2])]
        return self.by_folder.get(parts[0], []) if parts else []

    def full_image(self, parts: list[str]) -> str | None:
        """The largest image of the film's series (the full-field mammogram)."""
        candidates = self._candidates(parts)
        return str(max(candidates, key=lambda r: int(r["pixels"]))["path"]) if candidates else None

    def roi_files(self, crop: list[str], mask: list[str], film: str | None) -> tuple[str | None, str | None]:
        """(cropped lesion image, full-size lesion mask) of one lesion; each None when not found.

        The file sizes say which is which, not the CSV columns: in about 7% of the mass rows the two
        lie in different series, where the columns alone could not catch a swapped pair. Of the files
        of both series (else of the lesion's folder), one at least half the film's size is the mask and
        the smallest other one the crop; without the film, the larger of two files is the mask and a
        single file the crop.
        """
        found = {str(r["path"]): r for parts in (crop, mask) if len(parts) >= 3 for r in self.by_series.get((parts[1], parts[2]), [])}
        if not found:
            found = {str(r["path"]): r for parts in (crop, mask) if parts for r in self.by_folder.get(parts[0], [])}
        files = sorted(found.values(), key=lambda r: int(r["pixels"]))
        if not files:
            return None, None
        film_pixels = self.pixels.get(film or "") or (int(files[-1]["pixels"]) if len(files) > 1 else None)
        crops = [r for r in files if film_pixels is None or int(r["pixels"]) < film_pixels / 2]
        masks = [r for r in files if film_pixels is not None and int(r["pixels"]) >= film_pixels / 2]
        return (str(crops[0]["path"]) if crops else None), (str(masks[-1]["path"]) if masks else None)


def _drop_older_indexes(kept: Path, root_key: str) -> None:
    """Delete the indexes beside ``kept`` of the same root (earlier file lists: never read again) and those named
    as before the root was in the name (``cbis-<stamp>.json``, never read either). Another process may be deleting
    them too, or have just written one: a file gone already is fine, and a deleted one is only made again."""
    for index in kept.parent.glob("cbis-*.json"):
        if index != kept and (index.name.startswith(f"cbis-{root_key}-") or index.name.count("-") == 1):
            with contextlib.suppress(OSError):
                index.unlink()


def _scan(files: Iterable[Path], root: Path) -> Iterable[IndexRecord]:
    for path in files:
        try:
            ds = read_dicom(path, stop_before_pixels=True, specific_tags=[
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
