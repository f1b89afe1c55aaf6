"""``mammofuse predict``: score mammograms (files or folders) with clinical findings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mammofuse import RESEARCH_NOTICE
from mammofuse.cli.common import (
    SOME_FAILED,
    CalcDistribution,
    CalcType,
    ClinicalCsv,
    Density,
    Device,
    InputPaths,
    Margin,
    ModelSpec,
    Output,
    RecordFormatOption,
    Recursive,
    Roi,
    Shape,
    cases_and_model,
    cell,
    check_choice,
    check_output,
    clinical_flags,
    emit,
    err_console,
    guarded,
    output_format,
    parse_roi,
    render_records,
    safe,
)
from mammofuse.cli.output import progress, show
from mammofuse.results import MALIGNANT, Prediction


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
    aggregate: Annotated[str, typer.Option("--aggregate", help="view: a score per file; breast: also the mean score of each breast's files (patient and laterality from the DICOM header or file name).")] = "view",
    fmt: RecordFormatOption = None,
    output: Output = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Decision threshold on the probability \\[default: the model's own].", min=0.0, max=1.0, show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.", min=1)] = 8,
    device: Device = "auto",
    workers: Annotated[int | None, typer.Option("--workers", help="Processes reading images while the model runs \\[default: up to 4, by CPUs and files].", min=0, show_default=False)] = None,
) -> None:
    """Score each mammogram: probability of malignancy and a benign/malignant call.

    Clinical flags apply to every file; missing findings are allowed and shown as null.
    Exit status: 0 all scored, 1 some files failed (the rest are scored), 2 usage error,
    3 output not writable (checked before scoring).

    Examples:

        mammofuse predict scan.dcm --density 3 --shape irregular --margin spiculated

        mammofuse predict studies/ --recursive --clinical findings.csv --format csv -o scores.csv

        mammofuse predict scan.dcm --model owner/mammofuse-cbis@v1 --threshold 0.3 --format json

        mammofuse predict scan.dcm --roi 2210,1400,180 --density 3 --shape irregular --margin spiculated

        mammofuse predict study/ --aggregate breast --format csv -o scores.csv
    """
    fmt = output_format(fmt, output)
    check_output(output)
    check_choice("--aggregate", aggregate, ("view", "breast"))
    flags = clinical_flags(density, shape, margin, calc_type, calc_distribution)
    region = parse_roi(roi)

    from mammofuse.cases import add_breast_scores, score_cases

    samples, net, name, device = cases_and_model(paths, recursive, flags, clinical, model, device, region)

    if workers is None:
        batches = -(-len(samples) // batch_size)  # a worker reads whole batches: one batch cannot overlap
        workers = 0 if batches < 2 else min(4, os.cpu_count() or 1, batches)
    with progress("scoring", len(samples), minimum=2) as advance:
        records = score_cases(net, samples, name, threshold, batch_size=batch_size, device=device, workers=workers, on_batch=advance)
    if aggregate == "breast":
        add_breast_scores(records, samples)

    if fmt == "table":
        _table(records, output)
    else:
        emit(render_records([r.to_dict() for r in records], fmt), output)
        err_console.print(RESEARCH_NOTICE, style="dim", highlight=False)
    failed = [r for r in records if not r.ok]
    for r in failed:
        err_console.print(f"[red]failed:[/] {safe(r.path)}: {safe(r.error)}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(SOME_FAILED)


def _table(records: list[Prediction], output: Path | None) -> None:
    from rich.table import Table

    breast = bool(records) and records[0].per_breast
    table = Table(caption=_caption(records), caption_justify="left")
    table.add_column("file", overflow="fold")
    for name in ("probability", "prediction", *(["breast", "breast prob."] if breast else []), "clinical"):
        table.add_column(name)
    for r in records:
        given = ", ".join(f"{k}={v}" for k, v in r.clinical.items() if v) or "none"
        extra = [cell(r.breast or "?"), "" if r.breast_probability is None else f"{r.breast_probability:.3f}"] if breast else []
        if r.error:
            table.add_row(cell(r.path), "", "[red]failed[/]", *extra, cell(r.error, "red"))
        else:
            style = "bold red" if r.decision == MALIGNANT else "green"
            table.add_row(cell(r.path), f"{r.probability:.3f}", f"[{style}]{r.decision}[/]", *extra, cell(given))
    show(table, output)


def _caption(records: list[Prediction]) -> str:
    if not records:
        return RESEARCH_NOTICE
    r = records[0]
    return f"model {safe(r.model)}, threshold {r.threshold:.3f}. {RESEARCH_NOTICE}"


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
