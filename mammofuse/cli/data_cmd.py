"""``mammofuse data summary``: lesion, patient and image counts per split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mammofuse.cli.common import Format, check_choice, guarded

data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)

DatasetName = Annotated[str, typer.Option("--dataset", help="cbis-ddsm, mini-mias or manifest.")]
DataDir = Annotated[Path, typer.Option("--data", help="Folder with the dataset's CSVs / Info.txt, or a manifest CSV.")]
ImagesDir = Annotated[Path | None, typer.Option("--images", help="CBIS-DDSM: root of the DICOM download (optional).")]


@data_app.command("summary")
@guarded
def summary(dataset: DatasetName, data: DataDir, images: ImagesDir = None, fmt: Format = "table") -> None:
    """Count lesions, malignant/benign, patients and images per split.

    Example: mammofuse data summary --dataset mini-mias --data ../shared/data/mini-mias
    """
    from mammofuse.data import load_dataset, summarize

    check_choice("--format", fmt, ("table", "json"))
    result = summarize(dataset, load_dataset(dataset, data, images))
    if fmt == "json":
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("split", "lesions", "malignant", "benign", "patients", "images", title=f"{dataset} ({data})")
    for split, c in result["splits"].items():
        table.add_row(split, *(str(c[k]) for k in ("lesions", "malignant", "benign", "patients", "images")))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
