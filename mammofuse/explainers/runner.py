"""Explain one case with every chosen method that applies, and write its folder of outputs.

The runner is a loop over the registry (:mod:`mammofuse.explainers.methods`): each method writes
its own files atomically (``mammofuse.atomic``); ``report.html`` gathers them and
``explanation.json`` records the :class:`~mammofuse.explainers.explanation.Explanation`. A method
that does not apply to the model or the case (Grad-CAM for a clinical-only model, attention
for a model without cross-attention) is skipped with a note, not an error; one that fails is
noted too, and the others' outputs are still written; an output that cannot be written is an
:class:`~mammofuse.errors.OutputError`. A run into the folder of an earlier one removes that run's
``report.html`` and ``explanation.json`` before its first output and writes its own last, so that a
run stopped midway leaves no index describing files it did not write.

Example:
    >>> from mammofuse import MammoFuse  # doctest: +SKIP
    >>> model = MammoFuse.from_pretrained("default")  # doctest: +SKIP
    >>> sample = Sample(id="scan", patient_id="", label=-1, clinical={"margin": "spiculated"}, image_path="scan.dcm")
    >>> result = explain_case(model, sample, Path("explanations/scan"))  # doctest: +SKIP
    >>> sorted(result.outputs)  # doctest: +SKIP
    ['attention', 'gradcam', 'gradcam_npy', 'lime_clinical', 'lime_image', 'report', 'shap_json', 'shap_png', 'summary']
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from mammofuse.atomic import check_not_input, write_text
from mammofuse.cases import case_remarks
from mammofuse.clinical import load_schema
from mammofuse.clinical.schema import ClinicalSchema
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError, OutputError
from mammofuse.explainers.explanation import Explanation
from mammofuse.explainers.inputs import IDENTIFYING_TAGS, CaseInputs, prepare_inputs
from mammofuse.explainers.methods import METHODS, CaseContext
from mammofuse.explainers.options import DEFAULT_LAYER, DEFAULT_LIME_SAMPLES, ExplainOptions, chosen_methods
from mammofuse.explainers.report import ReportData, ReportSection, render_report
from mammofuse.imaging.reader import remarks_kept
from mammofuse.inference import OFF_BREAST, on_background
from mammofuse.jsontext import json_text
from mammofuse.model import MammoFuse
from mammofuse.results import decide, path_digest, record_path, sigmoid

SUMMARY, REPORT = "explanation.json", "report.html"
OUTPUT_FILES = (*(file for m in METHODS.values() for file in m.outputs.values()), REPORT, SUMMARY)
"""Every file a run may write into a case's folder (a later run removes those it did not write)."""
MAX_FOLDER_BYTES = 120
"""The longest folder name :func:`output_folders` gives a file's stem, in bytes of UTF-8: with the digest that may
follow it, well within the 255 bytes a file system allows a name."""


def check_options(model: MammoFuse, options: ExplainOptions) -> None:
    """Before any work: some chosen method must apply to ``model``, and each that does may reject its options (e.g. an unknown layer).

    Raises:
        MammofuseError: no chosen method applies to ``model`` (the message says why and names those that would), or an
            option a method cannot use.
    """
    chosen = options.selected()
    applicable = [m for m in chosen if m.applies_to(model) is None]
    if not applicable:
        reasons = "; ".join(f"{m.title}: {m.applies_to(model)}" for m in chosen)
        usable = ", ".join(m.name for m in METHODS.values() if m.applies_to(model) is None)
        raise MammofuseError(f"no chosen method applies to this model ({reasons}); methods for it: {usable}")
    for method in applicable:
        method.check(model, options)


def explain_case(
    model: MammoFuse,
    sample: Sample,
    folder: Path,
    options: ExplainOptions | None = None,
    model_name: str = "",
    on_step: Callable[[str], None] | None = None,
) -> Explanation:
    """Explain ``sample`` with ``model`` and write every output into ``folder``.

    Args:
        model: the model to explain.
        sample: the case: ``image_path`` (DICOM or image), ``clinical`` findings, optionally a lesion region.
        folder: where the outputs go (created; earlier outputs of this runner that this run does not write are removed).
        options: methods and their settings (default: every method, 500 LIME samples, seed 0).
        model_name: how the report and ``explanation.json`` name the model.
        on_step: called with each method's name before it runs (for a progress display).

    Raises:
        MammofuseError: a file this run may write or remove in ``folder`` is one of the case's inputs (before anything
            is written), the file cannot be read, the Grad-CAM layer is invalid, or no chosen method applies to this case.
        OutputError: an output in ``folder`` cannot be written, or an earlier one there cannot be removed.
    """
    check_not_input((folder / name for name in OUTPUT_FILES), [sample.image_path, sample.roi_path, sample.roi_mask_path], "output")
    was_training = model.training
    model.eval()
    try:
        return _explain(model, sample, folder, options or ExplainOptions(), model_name, on_step)
    finally:
        model.train(was_training)


def _explain(
    model: MammoFuse, sample: Sample, folder: Path, options: ExplainOptions, model_name: str, on_step: Callable[[str], None] | None,
) -> Explanation:
    """:func:`explain_case` on a model in eval mode."""
    config = model.config
    device = model.device
    started = time.perf_counter()
    with remarks_kept() as remarks:  # the file is read twice: for the model and for the view shown
        inputs = prepare_inputs(model, sample, device)
    with torch.no_grad():
        logit = float(model(inputs.image, inputs.clinical, inputs.mask, **inputs.extra()).logits[0])
    probability = float(sigmoid(logit))
    threshold = float(config.threshold)
    schema = load_schema(config.vocabulary)
    decoded = schema.display(inputs.clinical[0].cpu().numpy(), inputs.mask[0].cpu().numpy())
    result = Explanation(
        source=inputs.source, folder=folder, probability=probability, logit=logit, threshold=threshold,
        decision=decide(probability, threshold), model=model_name, weights_digest=model.weights_digest(), fusion=config.fusion,
        backbone=config.backbone if config.uses_image else None,
        clinical={name: decoded[name] for name in schema.field_names}, options=options,
        view={"box": list(inputs.view_box), "mirrored": bool(inputs.info.flipped)} if inputs.info else {},
    )
    if inputs.image is not None and inputs.lesion_radius is not None and config.recipe.input == "roi" and on_background(inputs.image[0].cpu().numpy(), config.recipe):
        result.notes.append(OFF_BREAST)
    result.notes.extend([*remarks, *case_remarks(model, sample)])  # as predict's record: the file's, a calcification..., density alone
    result.seconds["read_and_predict"] = time.perf_counter() - started
    case = CaseContext(model=model, inputs=inputs, schema=schema, decoded=decoded, folder=folder, options=options)
    sections: list[ReportSection] = []
    for method in options.selected():
        reason = method.applies_to(model) or method.applies_to_case(case)
        if reason:
            result.notes.append(f"{method.title} skipped: {reason}")
            continue
        if on_step:
            on_step(method.name)
        _remove_earlier(folder, (SUMMARY, REPORT))  # before the first new output: one run stopped midway leaves no index of other files
        step_started = time.perf_counter()
        try:
            output = method.run(case)
        except OutputError:
            raise  # the next method or file could not be written either
        except Exception as exc:  # one method's failure is a note, not the loss of the others' outputs
            result.notes.append(f"{method.title} failed: {exc if isinstance(exc, MammofuseError) else f'{type(exc).__name__}: {exc}'}")
            continue
        result.seconds[method.name] = time.perf_counter() - step_started
        result.outputs.update(output.outputs)
        result.notes.extend(output.notes)
        sections.append(output.section)
        if output.contributions is not None:
            result.top_contributions = output.contributions
    if not sections:
        raise MammofuseError(f"{inputs.source}: nothing to explain: {'; '.join(result.notes)}")

    result.outputs.update(summary=folder / SUMMARY, report=folder / REPORT)
    _remove_stale(folder, result.outputs.values())
    write_text(folder / REPORT, render_report(_report(result, inputs, schema, decoded, sections)))
    result.seconds["total"] = time.perf_counter() - started
    write_text(folder / SUMMARY, json_text(result.to_dict(), indent=2) + "\n")  # last: it lists every other output
    return result


def explain_file(
    model: MammoFuse,
    sample: Sample,
    folder: Path,
    methods: str | Sequence[str] | None = None,
    *,
    lime_samples: int = DEFAULT_LIME_SAMPLES,
    seed: int = 0,
    layer: str = DEFAULT_LAYER,
    include_identifiers: bool = False,
) -> Explanation:
    """:func:`explain_case` with the options spelled out and the model named by ``model.name``; options checked first.

    Args:
        methods: names or groups from :func:`~mammofuse.explainers.methods.available_methods`, or a comma-separated
            string of them, in any case (None: all; those that do not apply to the model are skipped with a note).

    Raises:
        MammofuseError: an unknown method or layer, no method, a setting out of its bounds, or no chosen method that
            applies to the model (before any work); an unreadable file.
        OutputError: an output in ``folder`` cannot be written.
    """
    options = ExplainOptions(methods=chosen_methods(methods), lime_samples=lime_samples, seed=seed, layer=layer,
                             include_identifiers=include_identifiers)
    check_options(model, options)
    return explain_case(model, sample, folder, options, model_name=model.name)


def _report(result: Explanation, inputs: CaseInputs, schema: ClinicalSchema, decoded: dict[str, str | None], sections: list[ReportSection]) -> ReportData:
    return ReportData(
        source=result.source,
        probability=result.probability,
        threshold=result.threshold,
        decision=result.decision,
        model=result.model_description,
        facts=_facts(inputs, result.options.include_identifiers),
        clinical=[(f.label, decoded[f.name] or "not given") for f in schema.fields],
        sections=sections,
        notes=result.notes,
    )


def _remove_stale(folder: Path, written: Iterable[Path]) -> None:
    """Delete outputs of an earlier run into the same folder that this run did not write (so the folder matches its report)."""
    keep = {Path(p).name for p in written}
    _remove_earlier(folder, [name for name in OUTPUT_FILES if name not in keep])


def _remove_earlier(folder: Path, names: Iterable[str]) -> None:
    """Delete these outputs of an earlier run from ``folder`` (those that are there)."""
    for name in names:
        try:
            (folder / name).unlink(missing_ok=True)
        except OSError as exc:  # a folder by that name, no permission
            raise OutputError(folder / name, f"an earlier output cannot be removed: {exc.strerror or exc}") from exc


def _facts(inputs: CaseInputs, include_identifiers: bool) -> list[tuple[str, str]]:
    """The report's file facts; the header's identifiers, dates and free text only when ``include_identifiers``."""
    info = inputs.info
    if info is None:
        return [("file", inputs.source), ("image", "not read: the model is clinical-only")]
    facts = [("file", inputs.source), ("format", info.format), ("size", f"{info.rows} x {info.columns}, {info.bits_stored} bits")]
    hidden = [tag for tag in inputs.header if tag in IDENTIFYING_TAGS and not include_identifiers]
    facts.extend((tag, value) for tag, value in inputs.header.items() if tag not in hidden)
    if include_identifiers and info.patient_id and "PatientID" not in inputs.header:
        facts.append(("patient id", info.patient_id))
    if hidden:
        facts.append(("identifiers", f"left out: {', '.join(hidden)} (--include-identifiers shows them)"))
    for name in ("laterality", "view", "modality"):
        value = getattr(info, name)
        if value:
            facts.append((name, str(value)))
    if info.flipped:
        facts.append(("orientation", "flipped so the breast lies on the left"))
    return facts


def output_folders(sources: Sequence[str], out: Path, notes: list[str] | None = None) -> list[Path]:
    """One folder per input under ``out``, named by the file's stem (:func:`folder_name`).

    A name that several files of the run would have (``a/scan.dcm``, ``b/scan.dcm``), or whose folder holds the
    ``explanation.json`` of another file, gets a digest of the file's path (``scan-1f3a9c04b2``): each file the same
    folder whatever the order of the inputs, and no other file's explanation overwritten. ``notes`` gets a line for
    each file sent away from another file's folder. A folder's name is the same bytes (UTF-8) under any locale.
    """
    names = [folder_name(record_path(source)) for source in sources]
    files_by_name: dict[str, set[str]] = {}
    for source, name in zip(sources, names):
        files_by_name.setdefault(_fold(name), set()).add(path_digest(source))
    folders: list[Path] = []
    for source, name in zip(sources, names):
        shared = len(files_by_name[_fold(name)]) > 1
        plain = out / _on_disk(name)
        other = None if shared else _other_source(plain, source)
        folder = out / _on_disk(f"{name}-{path_digest(source)}") if shared or other is not None else plain
        if other is not None and notes is not None:
            notes.append(f"{plain} holds the explanation of {other}: that of {source} goes to {folder}")
        folders.append(folder)
    return folders


def folder_name(source: str) -> str:
    """A file's folder name: its stem with Unicode letters, marks, digits and ``._-`` kept and each run of anything else
    (separators, spaces, control and bidirectional characters, a name's undecodable bytes) made one ``_``, cut to
    :data:`MAX_FOLDER_BYTES` of UTF-8, no ``.`` or ``_`` at either end; ``case`` when nothing is left."""
    kept = "".join(c if c in "._-" or unicodedata.category(c)[0] in "LMN" else "\0" for c in Path(source).stem)
    stem = re.sub("\0+", "_", kept).encode("utf-8")[:MAX_FOLDER_BYTES].decode("utf-8", "ignore")
    return stem.strip("._") or "case"


def _on_disk(name: str) -> str:
    """A folder name as the file system's text for its UTF-8 bytes (the locale's encoding may be another)."""
    return os.fsdecode(name.encode("utf-8"))


def _fold(name: str) -> str:
    """What a case-insensitive, normalising file system (macOS) makes of a name: folder names alike there collide."""
    return unicodedata.normalize("NFC", name).casefold()


def _other_source(folder: Path, source: str) -> str | None:
    """The file whose explanation ``folder`` holds, where it is not ``source`` (None: no explanation there, one that is
    not explain's, or this file's: the same :func:`~mammofuse.results.path_digest`, from whatever working folder)."""
    summary = folder / SUMMARY
    try:
        recorded = json.loads(summary.read_bytes()) if summary.is_file() else None
    except (OSError, ValueError, RecursionError):  # unreadable, or not an explanation.json
        return None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("source"), str):
        return None
    digest = recorded.get("source_digest")
    if digest == path_digest(source) or digest is None and _same_file(recorded["source"], source):
        return None
    return recorded["source"]


def _same_file(recorded: str, source: str) -> bool:
    """Whether a path recorded by an older ``explanation.json`` (no ``source_digest``; resolved from this working
    folder) is ``source``'s file."""
    try:
        return os.path.samefile(recorded.encode("utf-8", "surrogateescape"), source)
    except (OSError, ValueError):  # gone, or no path a file can have
        return False
