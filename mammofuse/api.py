"""The front door: score, explain and evaluate from Python. The CLI only renders what these return.

Example:
    >>> import mammofuse
    >>> model = mammofuse.MammoFuse.from_pretrained("default")  # doctest: +SKIP
    >>> p = mammofuse.predict("scan.dcm", model, density=3, margin="spiculated")  # doctest: +SKIP
    >>> p.probability, p.decision  # doctest: +SKIP

Remarks a user should see (a lesion-crop model given no region, findings an image-only model
ignores) are issued as :class:`MammofuseWarning`; the CLI prints them as ``note:`` lines.
"""

from __future__ import annotations

import os
import sys
import warnings
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, overload

from mammofuse.errors import MammofuseError, MammofuseWarning
from mammofuse.explainers.options import DEFAULT_LAYER, DEFAULT_LIME_SAMPLES
from mammofuse.serial import one_at_a_time
from mammofuse.validation import MAX_AWAY_PATCHES, MAX_BATCH_SIZE, MAX_BOOTSTRAP, MAX_SEED, Rule, check_region, checked, shown

if TYPE_CHECKING:
    from mammofuse.cases import ListedFile
    from mammofuse.data.sample import Sample
    from mammofuse.evaluation.evaluate import Metrics
    from mammofuse.explainers import Explanation
    from mammofuse.model import MammoFuse
    from mammofuse.results import Prediction

PathLike = str | Path
ROI_FORM = "roi must be the lesion circle (row, column, radius) in the file's pixels: three numbers"


def as_model(model: MammoFuse | str | Path | None, device: str = "auto") -> MammoFuse:
    """``model`` itself when it is one (the model a ``torch.compile`` wrapper holds, for one); otherwise
    :meth:`MammoFuse.from_pretrained` of the spec (None: ``default``).

    Raises:
        TypeError: ``model`` is none of these (a number, another module).
    """
    from mammofuse.interrupts import load_torch

    load_torch()  # a Ctrl-C now waits for torch to finish loading, then stops the call
    from mammofuse.model import MammoFuse

    if isinstance(model, MammoFuse):
        return model
    if isinstance(getattr(model, "_orig_mod", None), MammoFuse):  # torch.compile(model)
        return model._orig_mod
    if model is None or isinstance(model, (str, os.PathLike)):
        return MammoFuse.from_pretrained(model, device=device)
    raise TypeError(f"model must be a MammoFuse, a name or path (str or pathlib.Path), or None, not {_type_name(model)}")


@one_at_a_time
def cases(
    inputs: PathLike | Sequence[PathLike],
    model: MammoFuse,
    findings: Mapping[str, Any] | None = None,
    clinical_csv: PathLike | None = None,
    roi: tuple[float, float, float] | None = None,
    recursive: bool = False,
    explaining: bool = False,
    unread: list[tuple[str, str]] | None = None,
) -> list[Sample]:
    """One case per image file (folders listed), or per lesion of it (``clinical_csv``), with the findings that apply;
    remarks as warnings.

    Args:
        inputs: DICOM or image files, or folders of them.
        model: the model that will score them (its vocabulary validates the findings).
        findings: findings for every file, by vocabulary field (``density``, ``margin``...).
        clinical_csv: per-file findings (and optional lesion regions); its values win.
        roi: a lesion circle (row, column, radius) in the files' pixels for files without one.
        recursive: descend into sub-folders.
        explaining: the cases are to be explained, not scored (the remarks say what explaining does without a region);
            folders holding an ``explanation.json`` (explain's own outputs) are not searched, and a file with several
            lesions in ``clinical_csv`` is an error (explain takes one lesion per file).
        unread: receives (path, problem) of each sub-folder that cannot be listed (no permission, say), instead of a
            warning each.
    """
    return [f.sample for f in _listed(inputs, model, findings, clinical_csv, roi, recursive, explaining=explaining, unread=unread)]


def _listed(
    inputs: PathLike | Sequence[PathLike], model: MammoFuse, findings: Mapping[str, Any] | None, clinical_csv: PathLike | None,
    roi: tuple[float, float, float] | None, recursive: bool, per_breast: bool = False, explaining: bool = False,
    unread: list[tuple[str, str]] | None = None,
) -> list[ListedFile]:
    from mammofuse.cases import breast_notes, list_cases, model_notes, unit_of

    paths = as_paths(inputs, "images")
    flags = {k: str(v) for k, v in (findings or {}).items() if v is not None}
    notes: list[str] = []
    csv = as_path(clinical_csv, "clinical_csv") if clinical_csv is not None else None
    outputs: str | None = None
    folders: list[tuple[str, str]] = [] if unread is None else unread
    if explaining:
        from mammofuse.explainers.runner import SUMMARY

        outputs = SUMMARY  # explain's own output folders hold it: their figures are no mammograms to explain
    files = list_cases(paths, recursive, flags, csv, vocabulary=model.config.vocabulary, notes=notes, region=as_region(roi), breasts=per_breast,
                       skip_folders_with=outputs, lesions=not explaining, unread=folders)
    if unread is None:
        notes += [f"{path}: {problem}" for path, problem in folders]
    notes += model_notes(model, [f.sample for f in files], bool(flags or clinical_csv), unit=unit_of(files), explaining=explaining)
    if per_breast:
        notes += breast_notes(model, files)
    for message in notes:
        warnings.warn(message, MammofuseWarning, stacklevel=_caller_level())
    return files


def as_path(value: Any, name: str) -> Path:
    """``value`` (``str`` or :class:`os.PathLike`) as a Path; TypeError naming ``name`` for anything else, and
    MammofuseError for an empty one (an unset variable), which ``Path`` would read as the current folder."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or pathlib.Path), not {_type_name(value)}")
    if not os.fspath(value):
        raise MammofuseError(f"{name} is an empty path (an unset variable?); name a file or folder ('.' for the current one)")
    return Path(value)


def as_paths(value: Any, name: str) -> list[Path]:
    """``value`` as paths: one path (``str`` or :class:`os.PathLike`) or an iterable of them (a list, a generator).

    Raises:
        TypeError: anything else (a number, bytes, an image object, a nested list), naming ``name``.
        MammofuseError: an empty path.
    """
    if isinstance(value, (str, os.PathLike)):
        return [as_path(value, name)]
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        return [as_path(item, f"{name}[{i}]") for i, item in enumerate(list(value))]
    raise TypeError(f"{name} must be a file or folder path (str or pathlib.Path) or a list of them, not {_type_name(value)}")


def as_region(roi: Any) -> tuple[float, float, float] | None:
    """``roi`` (a tuple, list or array of three numbers) as the lesion circle (row, column, radius); None stays None.

    Raises:
        MammofuseError: not three numbers, or a circle :func:`~mammofuse.validation.check_region` refuses.
    """
    if roi is None:
        return None
    values = list(roi) if isinstance(roi, Iterable) and not isinstance(roi, (str, bytes, Mapping)) else []
    if len(values) != 3 or not all(isinstance(v, Real) and not isinstance(v, bool) for v in values):
        raise MammofuseError(f"{ROI_FORM}; not {shown(roi)}")
    row, col, radius = values
    return check_region(row, col, radius, "roi", ("row", "column", "radius"))


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside mammofuse (the user's call,
    however many of the package's frames lie between: ``mammofuse.predict`` or ``model.predict``)."""
    package = str(Path(__file__).parent)
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


@overload
def predict(images: PathLike, model: MammoFuse | str | Path | None = ..., **kwargs: Any) -> Prediction: ...
@overload
def predict(images: Sequence[PathLike], model: MammoFuse | str | Path | None = ..., **kwargs: Any) -> list[Prediction]: ...


@one_at_a_time
def predict(
    images: PathLike | Sequence[PathLike],
    model: MammoFuse | str | Path | None = None,
    *,
    roi: tuple[float, float, float] | None = None,
    clinical_csv: PathLike | None = None,
    threshold: float | None = None,
    per_breast: bool = False,
    recursive: bool = False,
    device: str = "auto",
    batch_size: int = 8,
    **findings: Any,
) -> Prediction | list[Prediction]:
    """Probability of malignancy of each mammogram, with the clinical findings given.

    Args:
        images: one file (returns one :class:`Prediction`), or files and folders (returns a list: a Prediction per
            file, or per lesion where ``clinical_csv`` gives a file several).
        model: a loaded :class:`MammoFuse` (or ``torch.compile`` of one), or a spec for :meth:`MammoFuse.from_pretrained`
            (None: ``default``).
        roi: lesion circle (row, column, radius) in the file's pixels; lesion-crop models need one
            to look at the image.
        clinical_csv: per-file findings (see ``mammofuse predict --help``).
        threshold: decision threshold instead of the model's stored one.
        per_breast: also combine views per breast (``breast``, ``breast_probability``).
        recursive: descend into sub-folders.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (for a model loaded here).
        batch_size: images per forward pass.
        **findings: findings by vocabulary field, e.g. ``density=3, shape="irregular", margin="spiculated"``.

    A file that cannot be scored gives a Prediction with ``error`` set; it never raises. A sub-folder that cannot be
    listed (no permission, say) is left out with a warning naming it.

    Raises:
        MammofuseError: a missing path, an unknown model, an unknown clinical value, an invalid ``roi``,
            ``threshold`` or ``batch_size``; one file (not in a list) that ``clinical_csv`` gives several lesions.
        TypeError: ``images`` is neither a path nor a list of paths (e.g. an image already in memory), or ``model``
            is neither a model nor a spec.
    """
    from mammofuse.scoring import LocalEngine, ScoringRun

    paths = as_paths(images, "images")  # a generator is read once, here
    batch_size = checked("batch_size", batch_size, Rule(int, 1, MAX_BATCH_SIZE))
    net = as_model(model, device)
    files = _listed(paths, net, findings, clinical_csv, roi, recursive, per_breast)
    one = isinstance(images, (str, os.PathLike)) and not Path(images).is_dir()
    if one and len(files) > 1:
        raise MammofuseError(f"{images}: clinical_csv gives this one file {len(files)} lesions; pass it in a list, [path], "
                             "for a Prediction per lesion")
    run = ScoringRun(net, files, threshold=threshold, per_breast=per_breast)
    records = run.collect(LocalEngine(batch_size=batch_size))
    if one:
        return records[0]
    return records


@one_at_a_time
def explain(
    image: PathLike,
    out: PathLike,
    model: MammoFuse | str | Path | None = None,
    *,
    methods: str | Sequence[str] | None = None,
    roi: tuple[float, float, float] | None = None,
    lime_samples: int = DEFAULT_LIME_SAMPLES,
    seed: int = 0,
    layer: str = DEFAULT_LAYER,
    include_identifiers: bool = False,
    device: str = "auto",
    **findings: Any,
) -> Explanation:
    """Explain one mammogram's score: Grad-CAM, SHAP, LIME and attention outputs written under ``out``.

    Args:
        image: a DICOM or image file.
        out: folder for the figures and the HTML report.
        model: a loaded :class:`MammoFuse` or a spec (None: ``default``).
        methods: names from :func:`mammofuse.explainers.available_methods`, or one name, or a comma-separated string
            of them, in any case (None: every method that applies).
        roi: lesion circle (row, column, radius) in the file's pixels.
        lime_samples: perturbed samples for each LIME explanation (10 to 100,000).
        seed: seeds LIME's sampling: the same seed writes the same explanation.
        layer: the Grad-CAM layer, a dotted module name (e.g. ``backbone.layer3``).
        include_identifiers: show the DICOM header's patient identifiers, dates and free-text descriptions in the report (left out by default).
        device: as in :func:`predict`.
        **findings: findings by vocabulary field.

    Raises:
        MammofuseError: a folder or a file that cannot be explained, an ``out`` where explaining would overwrite or
            remove ``image`` (before anything is written), an invalid ``roi``, an unknown method, layer or model, no
            method, ``lime_samples`` or ``seed`` out of bounds.
        OutputError: ``out`` is a file or under one (before any work), or an output in ``out`` cannot be written (a folder
            by its name, read-only, disk full).
        TypeError: ``image`` or ``out`` is not a path.
    """
    from mammofuse.interrupts import load_torch

    load_torch()  # before the explainers, which import it
    from mammofuse.atomic import check_writable_folder
    from mammofuse.explainers import explain_file

    path, folder = as_path(image, "image"), as_path(out, "out")
    if path.is_dir():
        raise MammofuseError(f"{path}: explain takes one file, not a folder: explain each file in turn")
    check_writable_folder(folder)
    net = as_model(model, device)
    (sample,) = cases(path, net, findings, None, roi, explaining=True)
    return explain_file(net, sample, folder, methods, lime_samples=lime_samples, seed=seed, layer=layer, include_identifiers=include_identifiers)


@one_at_a_time
def evaluate(
    model: MammoFuse | str | Path | None,
    dataset: str,
    data: PathLike,
    *,
    images: PathLike | Sequence[PathLike] | None = None,
    split: str = "test",
    abnormality: str = "all",
    bootstrap: int = 1000,
    seed: int = 0,
    control: str | None = None,
    per_breast: bool = False,
    device: str = "auto",
    batch_size: int = 16,
    away_patches: int = 1,
) -> Metrics:
    """Metrics of a model on one split of a dataset, at the model's stored threshold, with patient-bootstrap intervals.

    Args:
        model: a loaded :class:`MammoFuse` or a spec (None: ``default``).
        dataset: ``cbis-ddsm``, ``mini-mias`` or ``manifest`` (see :func:`mammofuse.load_dataset`).
        data: the dataset's CSV folder (or ``Info.txt`` folder, or manifest CSV).
        images: a CBIS-DDSM image folder, or several.
        split: the split to score (``all`` for datasets without one).
        abnormality: ``mass``, ``calc`` or ``all``.
        bootstrap: patient-level bootstrap resamples for the intervals.
        seed: bootstrap seed.
        control: ``masked`` or ``away``: a shortcut control instead of the lesion.
        per_breast: add metrics of one mean score per breast.
        device: as in :func:`predict`.
        batch_size: images per forward pass.
        away_patches: with ``control="away"``, patches per case whose scores are averaged (logits).

    Remarks on the result are issued as :class:`MammofuseWarning`, as the CLI prints them: evaluated patients that
    the model was trained on, an AUC >= 0.97 (check for leakage), CSV rows left out, findings the model cannot use.
    """
    from mammofuse.data import load_dataset
    from mammofuse.evaluation.evaluate import evaluate_model, report_remarks, select_split

    _check_evaluate_options(control, bootstrap, seed, away_patches)
    batch_size = checked("batch_size", batch_size, Rule(int, 1, MAX_BATCH_SIZE))
    folders = as_paths(images, "images") if images is not None else []
    net = as_model(model, device)
    _check_control(net, control)
    matching: dict[str, Any] = {}
    samples = select_split(load_dataset(dataset, as_path(data, "data"), folders or None, abnormality, matching), split)
    rows = matching.get("rows", {}).get(split)
    describe = {"dataset": dataset, "split": split, "model_spec": net.name, "control": control, **({"rows": rows} if rows else {})}
    metrics = evaluate_model(net, samples, n_boot=bootstrap, seed=seed, batch_size=batch_size,
                             describe=describe, control=control, per_breast=per_breast, away_patches=away_patches)
    for remark in report_remarks(metrics.report):
        warnings.warn(remark.text, MammofuseWarning, stacklevel=_caller_level())
    return metrics


def _check_evaluate_options(control: str | None, bootstrap: int, seed: int, away_patches: int) -> None:
    """Raise MammofuseError, before any work, for an option :func:`evaluate` cannot use (as the CLI's flags are checked)."""
    from mammofuse.imaging.controls import CONTROLS

    checked("control", control, Rule(str, choices=CONTROLS, optional=True))
    checked("bootstrap", bootstrap, Rule(int, 0, MAX_BOOTSTRAP))
    checked("seed", seed, Rule(int, 0, MAX_SEED))
    checked("away_patches", away_patches, Rule(int, 1, MAX_AWAY_PATCHES))
    if away_patches > 1 and control != "away":
        raise MammofuseError("away_patches is for control='away'")


def _check_control(model: MammoFuse, control: str | None) -> None:
    """The 'away' control moves a lesion crop: a whole-breast model cannot take it."""
    from mammofuse.imaging.controls import AWAY_NEEDS_ROI, controls_for

    if control is not None and not controls_for(model.config.recipe.input, [control]):
        raise MammofuseError(f"control={control!r}: {AWAY_NEEDS_ROI}")
