"""Cases to score: files and folders given on the command line, with their clinical findings.

Clinical findings come from flags that apply to every file and, optionally, a CSV with one
row per file, or per lesion (predict's own CSV output is one). A row is matched to a file by its ``path`` column (a path
relative to the CSV's folder or the working folder, a file name, or a file stem; as written or without the spaces
around it) or by a ``SOPInstanceUID`` column (read from the DICOM header). Where both give a field, the file's own row wins over the flags.
Rows that name one file by its path or SOPInstanceUID, each with its own lesion circle, are that
image's lesions: each is a case of its own.

Example:
    >>> from pathlib import Path
    >>> cases = cases_from_inputs([Path("scan.dcm")], False, {"density": "3"}, None)  # doctest: +SKIP
    >>> cases[0].clinical  # doctest: +SKIP
    {'density': '3'}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from mammofuse.clinical import load_schema
from mammofuse.clinical.schema import (
    BREAST_FIELDS,
    DEFAULT_VOCABULARY,
    ClinicalSchema,
    ClinicalValueError,
)
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError, reading
from mammofuse.evaluation.aggregate import breast_of_file
from mammofuse.imaging.reader import IMAGE_SUFFIXES, is_dicom_image_file, read_header
from mammofuse.listing import files_under
from mammofuse.provenance import unfinished_remark
from mammofuse.results import Prediction
from mammofuse.tabular import cell_text, csv_columns, csv_records, delimiter_hint
from mammofuse.validation import REGION_COLUMNS, circle_of_text, region_cells

if TYPE_CHECKING:  # torch stays out of import time
    from mammofuse.imaging.reader import MammogramInfo
    from mammofuse.model import MammoFuse
    from mammofuse.scoring.shard import Shard

PATH_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_path")
UID_COLUMNS = ("sopinstanceuid", "sop_instance_uid", "sop_uid")
REGION_TEXT_COLUMN = "region"
"""predict's column for the lesion circle, ``ROW; COL; RADIUS``: read back, in a CSV predict wrote (one with its
:data:`PREDICT_COLUMNS`), where there are no ``roi_*`` columns. Another CSV's ``region`` (a quadrant) is not read."""
PREDICT_COLUMNS = ("probability", "prediction", "threshold", "model")
CALCIFICATION_FIELDS = ("calc_type", "calc_distribution")
_UID = re.compile(r"^\d+(\.\d+)+$")
UNLABELLED = -1


def _column_key(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def find_image_files(
    paths: Iterable[Path], recursive: bool = False, notes: list[str] | None = None, skip_folders_with: str | None = None,
    unread: list[tuple[str, str]] | None = None,
) -> list[Path]:
    """Files given, plus mammogram-looking files inside given folders (sorted, each once).

    In folders, a file counts when its suffix is an image or DICOM suffix; an extensionless
    file only when it carries the DICOM preamble (TCIA downloads have such files; READMEs do not) and
    is no DICOMDIR (the index of a DICOM media folder).
    A file reached twice (``a.dcm ./a.dcm``, or a folder and a file in it) is kept once, with a
    remark in ``notes`` when given. With ``skip_folders_with`` (explain's ``explanation.json``), a folder
    holding a file of that name is not searched, given or found (explain's own output folders), with a
    remark; a file named is always kept.

    A sub-folder that cannot be listed (no permission, say) is left out, as (path, problem) in ``unread`` when given,
    else an error. An extensionless file that cannot be read is kept: it fails when read, as a file named would.

    Raises:
        MammofuseError: no path given, a path that does not exist or cannot be read (a sub-folder too, without
            ``unread``), or nothing to score at all.
    """
    paths = list(paths)
    if not paths:
        raise MammofuseError("no files or folders given: nothing to score")
    files: list[Path] = []
    skipped: list[Path] = []

    def unlisted(folder: Path, exc: OSError) -> None:
        problem = f"cannot read the folder ({exc.strerror or exc}): its files are left out"
        if unread is None:
            raise MammofuseError(f"{folder}: {problem}")
        unread.append((str(folder), problem))

    def skip(folder: Path) -> bool:
        try:
            marked = skip_folders_with is not None and (folder / skip_folders_with).is_file()
        except OSError:  # a folder that cannot be entered: said when it is listed
            return False
        if marked:
            skipped.append(folder)
        return marked

    for path in paths:
        path = Path(path)
        with reading(path):  # a name too long, a folder that cannot be listed
            if path.is_dir():
                if skip(path):
                    continue
                found = files_under(path, skip, unlisted) if recursive else path.iterdir()
                files.extend(sorted(p for p in found if _looks_like_image(p)))
            elif path.exists():
                files.append(path)
            else:
                raise MammofuseError(f"{path}: no such file or folder")
    first: dict[str, Path] = {}
    for file in files:
        first.setdefault(os.path.normpath(file.absolute()), file)
    unique = list(first.values())
    if len(unique) < len(files) and notes is not None:
        notes.append(f"{len(files) - len(unique)} of {len(files)} paths name a file already given: each file is scored once")
    if skipped and notes is not None:
        notes.append(f"{len(skipped)} folder{'s' if len(skipped) > 1 else ''} holding {skip_folders_with} left out as explain's own "
                     f"outputs: {_first_names([str(f) for f in sorted(skipped)], 3)}")
    if not unique:
        given = ", ".join(str(p) for p in paths)
        hint = "" if recursive else " (use --recursive, recursive=True in Python, to look in sub-folders)"
        if unread:
            hint = f"; {len(unread)} folder{'s' * (len(unread) > 1)} could not be read: {_first_names([p for p, _ in unread], 3)}"
        raise MammofuseError(f"no mammogram files found in {given}{hint}")
    return unique


def _looks_like_image(path: Path) -> bool:
    if path.name.startswith(".") or not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix:
        return suffix in IMAGE_SUFFIXES
    return is_dicom_image_file(path) or (path.name.upper() != "DICOMDIR" and not _readable(path))


def _readable(path: Path) -> bool:
    """Whether the file opens for reading: one that does not may be a DICOM all the same, which fails when read."""
    try:
        path.open("rb").close()
    except OSError:
        return False
    return True


@dataclass
class ClinicalRow:
    """One row of a clinical CSV: its keys for matching and its validated values."""

    line: int
    key: str
    clinical: dict[str, str]
    region: tuple[float, float, float] | None = None
    patient_id: str = ""
    uid: str | None = None
    used: bool = False


Index = dict[str, dict[Any, list[ClinicalRow]]]
"""Rows of a clinical CSV by what a file can match them by (``path``, ``file name``, ``SOPInstanceUID``), then its value."""


@dataclass
class ClinicalTable:
    """A clinical CSV, indexed once so that matching a file to its row costs a lookup, not a scan."""

    path: Path
    rows: list[ClinicalRow]
    ignored_columns: list[str] = field(default_factory=list)
    _indexes: tuple[Index, Index] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        as_written = self._indexed((row.key, row) for row in self.rows)
        stripped = self._indexed((key, row) for row in self.rows if (key := row.key.strip()) != row.key)
        self._indexes = (as_written, stripped)

    def _indexed(self, keyed: Iterable[tuple[str, ClinicalRow]]) -> Index:
        """The rows by each thing a file can match them by, each row under ``key`` (its path cell, or that stripped)."""
        index: Index = {"path": {}, "file name": {}, "SOPInstanceUID": {}}
        for key, row in keyed:
            if key:
                for candidate in dict.fromkeys(self._candidates(key)):
                    index["path"].setdefault(candidate, []).append(row)
                index["file name"].setdefault(key, []).append(row)
            for uid in {row.uid, key} - {None, ""}:
                index["SOPInstanceUID"].setdefault(uid, []).append(row)
        return index

    @property
    def wants_uids(self) -> bool:
        return any(r.uid for r in self.rows)

    def match(self, file: Path, uid: str | None = None, lesions: bool = True) -> list[ClinicalRow]:
        """The rows for ``file``: by resolved path, then file name, then stem, then SOPInstanceUID (none: no row); each
        by the path cell as written or without the spaces around it (a hand-written ``scan.dcm , 3``), together.

        Several rows naming this one image (by its path or SOPInstanceUID) are its lesions when ``lesions`` and each
        gives its own lesion circle.

        Raises:
            MammofuseError: when the best kind of match finds several rows that are no lesions of this image (ambiguous).
        """
        lookups = (
            ("path", "path", file.resolve()),
            ("file name", "file name", file.name),
            ("file stem", "file name", file.stem),
            ("SOPInstanceUID", "SOPInstanceUID", uid),
        )
        for how, index, value in lookups:
            found = [row for indexed in self._indexes for row in indexed[index].get(value, [])] if value is not None else []
            if len(found) > 1:
                self._check_lesions(file, how, found, lesions)
            if found:
                return found
        return []

    def _check_lesions(self, file: Path, how: str, rows: list[ClinicalRow], lesions: bool) -> None:
        """Raise a MammofuseError unless ``rows`` are lesions of ``file``: rows naming this one image (by its path or
        UID; a name may be several images'), each with a lesion circle of its own, where ``lesions`` are taken."""
        lines = ", ".join(str(r.line) for r in rows[:5])
        if how not in ("path", "SOPInstanceUID"):
            several = ", or to give one image several lesions" if lesions else ""
            raise MammofuseError(f"{file}: matches lines {lines} of {self.path} by {how}; give each file's full path (or a "
                                 f"SOPInstanceUID column) to tell them apart{several}")
        if not lesions:
            raise MammofuseError(f"{file}: lines {lines} of {self.path} all give this file's {how}: explain takes one lesion "
                                 "per image; give it one row (a CSV per lesion, or --roi)")
        if without := [r for r in rows if r.region is None]:
            raise MammofuseError(f"{file}: lines {lines} of {self.path} all give this file's {how}, and line {without[0].line} "
                                 "gives no lesion circle: the rows of one image are its lesions, each with its own "
                                 "roi_row, roi_col and roi_radius")
        if len({r.patient_id for r in rows}) > 1:
            other = next(r for r in rows if r.patient_id != rows[0].patient_id)
            raise MammofuseError(f"{file}: lines {rows[0].line} and {other.line} of {self.path} give this file's lesions "
                                 f"different patient_id ({rows[0].patient_id or 'none'}, {other.patient_id or 'none'}): one image is one patient's")
        seen: dict[tuple[float, float, float], int] = {}
        for row in rows:
            if row.region in seen:
                raise MammofuseError(f"{file}: lines {seen[row.region]} and {row.line} of {self.path} give this file the same "
                                     "lesion circle: give each lesion of an image once")
            seen[row.region] = row.line

    def _candidates(self, key: str) -> list[Path]:
        try:
            raw = Path(key).expanduser()
            if raw.is_absolute():
                return [raw.resolve()]
            return [(self.path.parent / raw).resolve(), raw.resolve()]
        except (OSError, RuntimeError, ValueError):  # a key that is no usable path (NUL, loops)
            return []


def read_clinical_csv(path: Path, vocabulary: str = DEFAULT_VOCABULARY) -> ClinicalTable:
    """Read and validate a clinical CSV (unknown values are errors naming the line).

    Columns: ``path`` (or ``file``/``filename``) and/or ``SOPInstanceUID``; any schema field
    (``density``, ``breast_density``, ``mass shape``, ...); optional ``patient_id`` and the lesion
    circle ``roi_row``, ``roi_col``, ``roi_radius`` in the file's pixels. Other columns are ignored.
    A CSV that predict wrote reads back as written: a cell's formula guard (:func:`~mammofuse.tabular.cell_text`) is
    removed, the path cell is kept whole, spaces included, and its ``region`` column (``ROW; COL; RADIUS``) gives
    the lesion circle.
    """
    path = Path(path)
    with reading(path):  # a name too long, no permission
        if path.is_dir():
            raise MammofuseError(f"{path}: is a folder; clinical_csv (--clinical) takes a CSV file")
        if not path.is_file():
            raise MammofuseError(f"{path}: clinical CSV not found" if not path.exists() else f"{path}: clinical CSV is not a regular file")
    schema = load_schema(vocabulary)
    aliases = {_column_key(c): f.name for f in schema.fields for c in (f.name, *f.csv_columns)}
    header = csv_columns(path, key=str)
    columns = [_column_key(c) for c in header]
    key_column = next((c for c in PATH_COLUMNS if c in columns), None)
    uid_column = next((c for c in UID_COLUMNS if c in columns), None)
    if key_column is None and uid_column is None:
        raise MammofuseError(
            f"{path}: needs a 'path' (or 'file', 'filename') or 'SOPInstanceUID' column to match rows to files"
            f"{delimiter_hint(header)}"  # as written: the key turns a tab into _
        )
    missing = [c for c in REGION_COLUMNS if c not in columns]
    if missing and len(missing) < len(REGION_COLUMNS):
        raise MammofuseError(f"{path}: has no {' or '.join(missing)} column: a lesion circle needs roi_row, roi_col and roi_radius")
    region_column = REGION_TEXT_COLUMN if REGION_TEXT_COLUMN in columns and all(c in columns for c in PREDICT_COLUMNS) else None
    if region_column and not missing:
        raise MammofuseError(f"{path}: has both roi_row, roi_col, roi_radius and predict's region column: keep one way of giving the lesion circle")
    known = set(PATH_COLUMNS) | set(UID_COLUMNS) | set(REGION_COLUMNS) | {region_column, "patient_id"} | set(aliases)
    ignored = [c for c in columns if c not in known]
    records = csv_records(path, key=_column_key, meaning=aliases, as_written=(key_column,) if key_column else ())
    rows = [_row(n, values, key_column, uid_column, aliases, schema, path, region_column) for n, values in records]
    return ClinicalTable(path, rows, ignored)


def _row(
    n: int, values: dict[str, str], key_column: str | None, uid_column: str | None, aliases: dict[str, str],
    schema: ClinicalSchema, path: Path, region_column: str | None = None,
) -> ClinicalRow:
    values = {k: cell_text(v) for k, v in values.items()}
    clinical = {aliases[k]: v for k, v in values.items() if k in aliases and v}
    try:
        schema.normalise(clinical)
    except ClinicalValueError as exc:
        raise ClinicalValueError(f"{path}:{n}: {exc}") from None
    region = region_cells(values, f"{path}:{n}")
    if region is None and region_column and values.get(region_column):
        region = circle_of_text(values[region_column], f"{path}:{n}")
    key = values.get(key_column, "") if key_column else ""
    key = key if key.strip() else ""  # a blank cell names no file
    uid = values.get(uid_column, "") if uid_column else ""
    if not uid and _UID.match(key.strip()):
        uid = key.strip()
    return ClinicalRow(line=n, key=key, clinical=clinical, region=region, patient_id=values.get("patient_id", ""), uid=uid or None)


@dataclass(frozen=True, slots=True)
class ListedFile:
    """A file to score: its case, what identifies this version of it (size and modification time, the
    ``--resume`` key) and, when asked, its breast (``patient/L|R``, None when unknown) and what identifies its
    image (its SOPInstanceUID, else the file itself: one image under two names counts once in its breast's score)."""

    sample: Sample
    size: int
    mtime_ns: int
    breast: str | None = None
    image: str | None = None

    @property
    def path(self) -> str:
        return self.sample.image_path or self.sample.id


def list_cases(
    paths: list[Path],
    recursive: bool,
    clinical: dict[str, str],
    clinical_csv: Path | None,
    *,
    vocabulary: str = DEFAULT_VOCABULARY,
    notes: list[str] | None = None,
    region: tuple[float, float, float] | None = None,
    breasts: bool = False,
    shard: Shard | None = None,
    skip_folders_with: str | None = None,
    lesions: bool = True,
    unread: list[tuple[str, str]] | None = None,
) -> list[ListedFile]:
    """The files to score, each with its clinical findings, size and modification time; no pixel is decoded.

    A file is listed once per lesion its CSV rows give it (rows naming it by path or SOPInstanceUID, each with its own
    lesion circle), else once.

    A DICOM header is read (once, without pixel data) only where needed: to match a
    ``SOPInstanceUID`` column of the CSV, or to find each file's breast when ``breasts``.

    Args:
        paths: files and folders.
        recursive: descend into sub-folders of folders.
        clinical: findings for every file, keyed by schema field (``density``, ``margin``...).
        clinical_csv: optional per-file findings (see :func:`read_clinical_csv`).
        vocabulary: the clinical vocabulary to validate against.
        notes: if given, receives human-readable remarks (files without a row, unused rows).
        region: a lesion circle (row, column, radius) in the files' pixels for every file whose
            CSV row gives none.
        breasts: set each file's ``breast`` from its header or file name.
        shard: keep only this part of the files (:mod:`mammofuse.scoring.shard`): by path, or by
            breast with ``breasts`` so that the views of a breast stay together.
        skip_folders_with: leave out folders holding a file of this name (see :func:`find_image_files`).
        lesions: take several rows of one image as its lesions (else they are an error).
        unread: receives (path, problem) of each sub-folder that cannot be listed (see :func:`find_image_files`).

    Raises:
        MammofuseError: missing paths, nothing to score, unknown clinical values (with the valid
            ones), an unreadable or ambiguous CSV.
    """
    schema = load_schema(vocabulary)
    schema.normalise(clinical)
    files = find_image_files(paths, recursive, notes, skip_folders_with, unread)
    table = read_clinical_csv(clinical_csv, vocabulary) if clinical_csv else None
    if shard is not None and not breasts:
        files = [f for f in files if shard.holds(str(f))]
    listed: list[tuple[ListedFile, bool]] = []
    for file in files:
        header = read_header(file) if breasts or (table is not None and table.wants_uids) else None
        rows = table.match(file, header.sop_uid if header else None, lesions) if table else []
        size, mtime_ns = _identity(file)
        for row in rows or [None]:
            if row is not None:
                row.used = True
            patient_id = row.patient_id if row else ""
            sample = Sample(
                id=str(file),
                patient_id=patient_id,
                label=UNLABELLED,
                clinical={**clinical, **(row.clinical if row else {})},
                image_path=str(file),
                region=row.region if row and row.region else region,
                image_id=file.name,
            )
            breast, image = (breast_of_file(str(file), header, patient_id), _image_of(file, header)) if breasts else (None, None)
            listed.append((ListedFile(sample, size, mtime_ns, breast, image), row is not None))
    if shard is not None and breasts:
        listed = [(f, matched) for f, matched in listed if shard.holds(f.breast or f.path)]
    count = len({f.path for f, _ in listed})
    unknown = len({f.path for f, _ in listed if f.breast is None}) if breasts else 0
    if unknown and notes is not None:
        notes.append(f"{unknown} of {count} files have no known breast (no patient and laterality in the DICOM header or file name): "
                     "they get no breast score")
    if table is not None and notes is not None:
        unmatched = sum(not matched for _, matched in listed)
        if unmatched:
            notes.append(f"{unmatched} of {count} files have no row in {table.path}: only the flags apply to them")
        unused = [r for r in table.rows if not r.used]
        if unused and shard is None:  # in a shard, the other shards' rows are expected to be unused
            example = ", ".join(f"line {r.line} ({r.key or r.uid})" for r in unused[:3])
            notes.append(f"{len(unused)} rows of {table.path} match no file given: {example}")
        if table.ignored_columns:
            notes.append(f"ignored columns of {table.path}: {_first_names(table.ignored_columns)}")
    return [f for f, _ in listed]


def several_lesions(items: Sequence[ListedFile] | Sequence[Prediction]) -> bool:
    """Whether some file comes more than once among ``items`` (listed files or their predictions): once per lesion."""
    return len({item.path for item in items}) < len(items)


def unit_of(files: Sequence[ListedFile]) -> str:
    """What the listed cases are, for notes that count them: ``files``, or ``cases`` where a file has several lesions."""
    return "cases" if several_lesions(files) else "files"


def _first_names(names: Sequence[str], shown: int = 10) -> str:
    """The first ``shown`` of ``names`` comma-separated, and how many more there are: a very wide CSV's are a screenful."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _identity(file: Path) -> tuple[int, int]:
    """(size, modification time in ns); (-1, -1) for a file gone since it was listed (it fails when read)."""
    try:
        stat = file.stat()
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


def _image_of(file: Path, header: MammogramInfo | None) -> str:
    """What identifies the image ``file`` holds: its SOPInstanceUID, else the file (device and inode, a link's target's)."""
    if header is not None and header.sop_uid:
        return header.sop_uid
    try:
        stat = file.stat()
    except OSError:  # gone since it was listed: it fails when read
        return os.path.normpath(file.absolute())
    return f"{stat.st_dev}:{stat.st_ino}"


def breast_notes(model: MammoFuse, files: Sequence[ListedFile]) -> list[str]:
    """Remarks on the breast scores of ``files`` (listed with ``breasts``), made before any file is read: an image given
    under several names, which counts once in its breast's mean (its lesions averaged first), and breasts whose mean averages views scored with
    their image and views scored on their findings alone, two scales."""
    notes = []
    names: dict[tuple[str, str], dict[str, None]] = {}
    for f in files:
        if f.breast is not None and f.image is not None:
            names.setdefault((f.breast, f.image), {})[f.path] = None  # a file's lesions: one name
    if repeated := [" = ".join(paths) for paths in names.values() if len(paths) > 1]:
        notes.append(f"{len(repeated)} image{'s are' if len(repeated) > 1 else ' is'} given under several names (one SOPInstanceUID or "
                     f"one file): each counts once in its breast's score: {_first_names(repeated, 3)}")
    scales: dict[str, set[str]] = {}
    for f in files:
        if f.breast is not None and (scale := _scale(model.config, f.sample)):
            scales.setdefault(f.breast, set()).add(scale)
    if mixed := sorted(breast for breast, found in scales.items() if len(found) > 1):
        notes.append(f"{len(mixed)} of {len(scales)} breasts average views scored with their image and views scored on their findings "
                     f"alone (no lesion region), scores on two scales: {_first_names(mixed, 3)}. Give each view its lesion circle "
                     "(roi_row, roi_col, roi_radius columns in --clinical, or clinical_csv= in Python)")
    return notes


def _scale(config: Any, sample: Sample) -> str | None:
    """What a model of ``config`` scores ``sample`` on: ``image`` (with any findings), ``findings`` alone, or None (nothing: it fails)."""
    if _image_used(config, sample):
        return "image"
    return "findings" if config.uses_clinical and load_schema(config.vocabulary).normalise(sample.clinical) else None


def cases_from_inputs(
    paths: list[Path],
    recursive: bool,
    clinical: dict[str, str],
    clinical_csv: Path | None,
    *,
    vocabulary: str = DEFAULT_VOCABULARY,
    notes: list[str] | None = None,
    region: tuple[float, float, float] | None = None,
) -> list[Sample]:
    """One unlabelled :class:`Sample` (label -1) per file (or per lesion), with the clinical findings that apply (see :func:`list_cases`)."""
    return [f.sample for f in list_cases(paths, recursive, clinical, clinical_csv, vocabulary=vocabulary, notes=notes, region=region)]


def score_cases(
    model: MammoFuse,
    samples: list[Sample],
    model_name: str,
    threshold: float | None = None,
    batch_size: int = 16,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> list[Prediction]:
    """One :class:`Prediction` per case, in their order, scored in this process (see :func:`mammofuse.scoring.score_files`)."""
    from mammofuse.scoring import LocalEngine, score_files

    engine = LocalEngine(batch_size=batch_size, workers=workers)
    return list(score_files(model, samples, model_name=model_name, threshold=threshold, engine=engine, on_batch=on_batch))


ROI_HINT = "Give --roi ROW,COL,RADIUS (roi= in Python, or roi_row, roi_col, roi_radius columns in --clinical)"
DENSITY_ONLY = ("scored on the breast density alone, which describes the breast, not a lesion: not an assessment of a lesion "
                "(give the lesion's findings)")
NO_LESION_FINDING = ("no finding of the lesion given: scored on its image (and the breast density, where given) alone, not on "
                     "image and findings together as the model is meant to (give the lesion's findings)")


def model_notes(
    model: MammoFuse, samples: Sequence[Sample], findings_given: bool, hint: str = ROI_HINT, unit: str = "files", explaining: bool = False,
    control: str | None = None,
) -> list[str]:
    """Remarks on what ``model`` makes of these cases: findings or images it does not use, lesion regions it lacks.

    Made before any file is read, so they claim nothing about files that then fail. ``hint`` says how to give
    the missing regions; ``unit`` names the samples (``files``, ``cases``). ``explaining``: the cases are to be
    explained, not scored: a lesion-crop model that needs a region cannot explain a case without one (it fails
    rather than being scored on its findings), so the notes say that and leave those cases out of the rest.
    ``control``: the cases are scored on that shortcut control, which a case without a region fails likewise.
    The calcification and density remarks are made of each case's record too (:func:`case_remarks`).
    """
    name, config = model.name, model.config
    schema = load_schema(config.vocabulary)
    given = [set(schema.normalise(s.clinical)) for s in samples]  # "NA" and empty cells are findings not given
    notes = [f"model {name}: {remark}"] if (remark := unfinished_remark(config.provenance)) else []
    if not config.uses_clinical and findings_given:
        notes.append(f"model {name} is image-only (fusion {config.fusion}): clinical findings are not used")
    trained_on = _lesions_trained_on(config)
    calcifications = sum(_is_calcification(s, fields) for s, fields in zip(samples, given))
    if trained_on and calcifications:
        by_findings = sum(bool(fields & set(CALCIFICATION_FIELDS)) for fields in given)
        which = "given calcification findings" if by_findings == calcifications else "that are calcifications (by their findings or their dataset)"
        notes.append(
            f"model {name} was trained on {trained_on} lesions only and never saw calcifications: its score is not meaningful "
            f"for the {calcifications} of {len(samples)} {unit} {which}"
        )
    if not config.uses_image:
        notes.append(f"model {name} is clinical-only: images are not read")
    elif config.recipe.input == "roi":
        without = sum(s.has_image and not _has_region(s) for s in samples)
        if control:
            how = f"the {control!r} control needs the lesion region, so each of them fails"
        elif not config.recipe.needs_region():
            how = "each that can be read is scored on its whole breast instead"
        elif explaining:
            how = "explaining needs the lesion's region, so each of them fails"
        else:
            how = "their image is not used: each that can be read is scored on its clinical findings alone"
        if without:
            notes.append(f"model {name} looks at lesion crops, and {without} of {len(samples)} {unit} have no lesion region: {how}. {hint}")
    fails = config.uses_image and (explaining and config.recipe.needs_region() or control is not None)  # a case without a region is not scored
    density_only = sum(_density_only(config, s, fields) for s, fields in zip(samples, given) if not (fails and s.has_image and not _has_region(s)))
    if density_only:
        notes.append(
            f"{density_only} of {len(samples)} {unit} give the model only the breast density, which describes the breast, not a lesion: "
            "a score from it is what the model learnt for lesions in breasts of that density, not an assessment of a lesion. "
            "Give the lesion's findings (--shape, --margin...)"
        )
    if image_alone := sum(_no_lesion_finding(config, s, fields) for s, fields in zip(samples, given)):
        notes.append(
            f"{image_alone} of {len(samples)} {unit} give no finding of the lesion: each is scored on its image (and the breast density, "
            f"where given) alone, not on image and findings together as model {name} is meant to. "
            "Give the lesion's findings (--shape, --margin...)"
        )
    return notes


def case_remarks(model: MammoFuse, sample: Sample) -> list[str]:
    """The remarks of :func:`model_notes` that concern this one case, for its record's ``note``: a score of a
    calcification by a model that never saw one, a score of the breast density alone, a fusion model's score of the
    image without a finding of the lesion."""
    config = model.config
    fields = set(load_schema(config.vocabulary).normalise(sample.clinical))
    remarks = []
    if _is_calcification(sample, fields) and (remark := calcification_remark(model)):
        remarks.append(remark)
    if _density_only(config, sample, fields):
        remarks.append(DENSITY_ONLY)
    if _no_lesion_finding(config, sample, fields):
        remarks.append(NO_LESION_FINDING)
    return remarks


def calcification_remark(model: MammoFuse) -> str | None:
    """A record's remark on a calcification scored by ``model``, None when its provenance does not say it never saw one."""
    trained_on = _lesions_trained_on(model.config)
    if not trained_on:
        return None
    return f"model {model.name} was trained on {trained_on} lesions only and never saw calcifications: this score is not meaningful for a calcification"


def _lesions_trained_on(config: Any) -> str:
    """The lesion kinds a model was trained on, where its provenance names them and calcifications are not among them; '' otherwise."""
    trained_on = config.provenance.get("abnormality") or []
    return "" if "calc" in trained_on else ", ".join(trained_on)


def _is_calcification(sample: Sample, fields: set[str]) -> bool:
    """Whether a case is a calcification: given calcification findings, or so labelled by its dataset (mini-MIAS CALC has none)."""
    return bool(fields & set(CALCIFICATION_FIELDS)) or sample.abnormality == "calc"


def _density_only(config: Any, sample: Sample, fields: set[str]) -> bool:
    """Whether a model of ``config`` scores ``sample`` on the breast density alone (no lesion finding, no image used)."""
    return config.uses_clinical and fields == {"density"} and not _image_used(config, sample)


def _no_lesion_finding(config: Any, sample: Sample, fields: set[str]) -> bool:
    """Whether a fusion model of ``config`` scores ``sample``'s image without any finding of the lesion (the density at most)."""
    return config.uses_clinical and not fields - BREAST_FIELDS and _image_used(config, sample)


def _has_region(sample: Sample) -> bool:
    """Whether ``sample`` gives its lesion's region (a circle, or a CBIS-DDSM crop or mask file)."""
    return sample.region is not None or bool(sample.roi_path or sample.roi_mask_path)


def uses_every_modality(config: Any, sample: Sample) -> bool:
    """Whether a model of ``config`` scores ``sample`` on every modality it uses (its image, and a finding, the breast
    density included: a late-fusion score of both is a mean of two branches' logits, what the map corrects): the cases a
    calibration map is fitted on and applies to (:meth:`mammofuse.model.MammoFuse.forward`)."""
    image = not config.uses_image or _image_used(config, sample)
    findings = not config.uses_clinical or bool(load_schema(config.vocabulary).normalise(sample.clinical))
    return image and findings


def _image_used(config: Any, sample: Sample) -> bool:
    """Whether a model of ``config`` scores ``sample``'s image (a lesion-crop model that skips cases without a region does not)."""
    return config.uses_image and sample.has_image and not (config.recipe.needs_region() and not _has_region(sample))
