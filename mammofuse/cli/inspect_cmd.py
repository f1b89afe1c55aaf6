"""``mammofuse inspect``: what the reader sees in each file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mammofuse.cli.common import (
    SOME_FAILED,
    Format,
    Output,
    check_choice,
    emit,
    err_console,
    guarded,
    render_records,
)

FIELDS = ("path", "rows", "columns", "bits_stored", "photometric", "modality", "laterality", "view", "patient_id")


@guarded
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="DICOM or image files, or folders of them.", show_default=False)],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    fmt: Format = "table",
    output: Output = None,
) -> None:
    """Show size, bit depth, photometry, laterality and view of mammograms as read.

    Examples:

        mammofuse inspect scan.dcm

        mammofuse inspect studies/ --recursive --format json
    """
    import warnings

    from mammofuse.cases import find_image_files
    from mammofuse.errors import InputFileError
    from mammofuse.imaging.reader import read_mammogram

    check_choice("--format", fmt, ("table", "json", "jsonl", "csv"))
    records = []
    for path in find_image_files(paths, recursive):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = read_mammogram(path).info
            record = {k: getattr(info, k) for k in FIELDS} | {"flipped": info.flipped, "warnings": info.warnings, "error": None}
        except InputFileError as exc:
            record = {"path": str(path), "error": exc.problem}
        records.append(record)
    failed = [r for r in records if r.get("error")]
    if fmt == "table":
        _table(records)
    else:
        emit(render_records(records, fmt), output)
    for r in failed:
        err_console.print(f"[red]failed:[/] {escape(r['path'])}: {escape(r['error'])}", highlight=False)
    if failed:
        raise typer.Exit(SOME_FAILED)


def _table(records: list[dict]) -> None:
    from rich.table import Table

    from mammofuse.cli.common import Console

    table = Table("file", "size", "bits", "photometric", "modality", "side", "view", "patient", "note")
    for r in records:
        if r.get("error"):
            table.add_row(Path(r["path"]).name, "", "", "", "", "", "", "", f"[red]{r['error']}[/]")
        else:
            note = "; ".join(r["warnings"]) + ("" if not r["flipped"] else (" " if r["warnings"] else "") + "flipped")
            table.add_row(
                Path(r["path"]).name, f"{r['rows']}x{r['columns']}", str(r["bits_stored"]), r["photometric"], r["modality"] or "",
                r["laterality"] or "?", r["view"] or "?", r["patient_id"] or "", note,
            )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
