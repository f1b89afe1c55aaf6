"""``mammofuse inspect``: what the reader sees in each file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mammofuse.atomic import check_not_input
from mammofuse.cli.common import (
    SOME_FAILED,
    InputPaths,
    Output,
    RecordFormatOption,
    cell,
    check_output,
    emit,
    err_console,
    guarded,
    output_format,
    render_records,
    safe,
)
from mammofuse.cli.output import show

FIELDS = ("path", "rows", "columns", "bits_stored", "photometric", "modality", "laterality", "view", "patient_id")


@guarded
def inspect(
    paths: InputPaths,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    fmt: RecordFormatOption = None,
    output: Output = None,
) -> None:
    """Show size, bit depth, photometry, laterality and view of mammograms as read.

    A DICOM of another modality than MG (which predict refuses where it is no mammogram: CT, MR, US...), FOR PROCESSING data and spot or magnification views are read, with a warning.

    Exit status: 0 all read, 1 some files failed or a sub-folder could not be read (each reported), 2 usage error, 3 output not writable (stdout closed: >&-), 4 internal error (a bug: please report it), 141 stdout's reader went away before all was written (| head).

    Examples:

        mammofuse inspect scan.dcm

        mammofuse inspect studies/ --recursive --format json
    """
    from mammofuse.cases import find_image_files
    from mammofuse.results import record_path

    fmt = output_format(fmt, output)
    check_output(output)
    unread: list[tuple[str, str]] = []
    files = find_image_files(paths, recursive, unread=unread)
    check_not_input([output], files)
    records = [_inspect(path) for path in files]
    failed = [r for r in records if r.get("error")]
    if fmt == "table":
        _table(records, output)
    else:
        emit(render_records([{**r, "path": record_path(r["path"])} for r in records], fmt), output)
    for path, error in [(r["path"], r["error"]) for r in failed] + unread:
        err_console.print(f"[red]failed:[/] {safe(path)}: {safe(error)}", highlight=False, soft_wrap=True)
    if failed or unread:
        raise typer.Exit(SOME_FAILED)


def _inspect(path: Path) -> dict[str, Any]:
    """The record of one file; any failure reading it is that file's error, never the batch's."""
    import warnings

    from mammofuse.errors import InputFileError
    from mammofuse.imaging.reader import read_mammogram

    try:
        with warnings.catch_warnings():  # the record carries them
            warnings.simplefilter("ignore")
            info = read_mammogram(path, any_modality=True).info
    except InputFileError as exc:
        return {"path": str(path), "error": exc.problem}
    except Exception as exc:  # any reader failure belongs to this file only
        return {"path": str(path), "error": f"cannot read ({type(exc).__name__}: {exc})"}
    return {k: getattr(info, k) for k in FIELDS} | {"flipped": info.flipped, "warnings": info.warnings, "error": None}


def _table(records: list[dict], output: Path | None) -> None:
    from rich.table import Table

    table = Table()
    for name in ("file", "size", "bits", "photometric", "modality", "side", "view", "patient", "note"):  # values folded, never cut
        table.add_column(name, overflow="fold")
    for r in records:
        if r.get("error"):
            table.add_row(cell(r["path"]), "", "", "", "", "", "", "", cell(r["error"], "red"))
        else:
            note = "; ".join(r["warnings"] + (["flipped"] if r["flipped"] else []))
            table.add_row(
                cell(r["path"]), f"{r['rows']}x{r['columns']}", str(r["bits_stored"]), cell(r["photometric"]),
                cell(r["modality"] or ""), cell(r["laterality"] or "?"), cell(r["view"] or "?"), cell(r["patient_id"] or ""), cell(note),
            )
    show(table, output)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
