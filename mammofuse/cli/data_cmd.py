"""``mammofuse data summary``: lesion, patient and image counts per split."""

from __future__ import annotations

import json

import typer

from mammofuse.cli.common import Abnormality, DataDir, DatasetName, Format, ImageDirs, check_choice, guarded
from mammofuse.cli.output import console

data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)


@data_app.command("summary")
@guarded
def summary(dataset: DatasetName, data: DataDir, images: ImageDirs = None, abnormality: Abnormality = "all", fmt: Format = "table") -> None:
    """Count lesions, malignant/benign, patients and images per split, and how image files matched the rows.

    Examples:

        mammofuse data summary --dataset mini-mias --data ../shared/data/mini-mias

        mammofuse data summary --dataset cbis-ddsm --data ../shared/data/cbis-ddsm --images ../shared/data/cbis-ddsm-mass-800/train --abnormality mass
    """
    from mammofuse.data import load_dataset, summarize

    check_choice("--format", fmt, ("table", "json"))
    report: dict = {}
    result = summarize(dataset, load_dataset(dataset, data, images, abnormality, report), report)
    if fmt == "json":
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.table import Table

    table = Table("split", "lesions", "malignant", "benign", "patients", "images", title=f"{dataset} ({data})")
    for split, c in result["splits"].items():
        table.add_row(split, *(str(c[k]) for k in ("lesions", "malignant", "benign", "patients", "images")))
    console.print(table)
    if "matching" in result:
        images_, lesions = result["matching"]["images"], result["matching"]["lesions"]
        console.print(
            f"images: {images_['matched']} matched, {images_['missing']} not found, {images_['unused_files']} files unused; "
            f"lesions: {lesions['matched']} matched to a box, {lesions['ambiguous']} boxes on multi-lesion images, "
            f"{lesions['left_out']} left out (mixed pathology or box count), {lesions['without_region']} without a region"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
