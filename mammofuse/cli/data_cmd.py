"""``mammofuse data summary``: lesion, patient and image counts per split."""

from __future__ import annotations

from typing import Any

import typer

from mammofuse.atomic import check_not_input
from mammofuse.cli.common import (
    Abnormality,
    DataDir,
    DatasetName,
    ImageDirs,
    Output,
    ReportFormatOption,
    cell,
    check_output,
    dataset_files,
    guarded,
    report_format,
    safe,
    write_report,
)

data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)


@data_app.command("summary")
@guarded
def summary(
    dataset: DatasetName, data: DataDir, images: ImageDirs = None, abnormality: Abnormality = "all",
    fmt: ReportFormatOption = None, output: Output = None,
) -> None:
    """Count lesions, malignant/benign, patients and images per split, and how image files matched the rows.

    Examples:

        mammofuse data summary --dataset mini-mias --data ../shared/data/mini-mias

        mammofuse data summary --dataset cbis-ddsm --data ../shared/data/cbis-ddsm --images ../shared/data/cbis-ddsm-mass-800/train --abnormality mass
    """
    from mammofuse.data import load_dataset, summarize

    fmt = report_format(fmt, output)
    check_output(output)
    report: dict = {}
    samples = load_dataset(dataset, data, images, abnormality, report)
    check_not_input([output], dataset_files(data, images, samples))
    result = summarize(dataset, samples, report)
    write_report(result, fmt, output, lambda: _table(result, safe(f"{dataset} ({data})")))


def _table(result: dict[str, Any], title: str) -> Any:
    """The counts per split as a Rich table; ``title`` is markup, split names are shown as text."""
    from rich.table import Table

    caption = None
    if "matching" in result and result["matching"]["images"] is None:
        caption = "images: not given (--images FOLDER matches image files to the rows and lesion regions to the lesions)"
    elif "matching" in result:
        images_, lesions = result["matching"]["images"], result["matching"]["lesions"]
        caption = (
            f"images: {images_['matched']} matched, {images_['missing']} not found, {images_['unused_files']} files unused; "
            f"lesions: {lesions['matched']} matched to a box, {lesions['ambiguous']} boxes on multi-lesion images, "
            f"{lesions['left_out']} left out ({lesions['mixed_pathology']} mixed pathology, {lesions['box_count']} box count), "
            f"{lesions['without_region']} without a region"
        )
    table = Table("split", "lesions", "malignant", "benign", "patients", "images", title=title, caption=caption, caption_justify="left")
    for split, c in result["splits"].items():
        table.add_row(cell(split), *(str(c[k]) for k in ("lesions", "malignant", "benign", "patients", "images")))
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
