"""Helpers shared by the commands: clinical flags, error handling, output writing."""

from __future__ import annotations

import csv
import functools
import io
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Sequence, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mammofuse.errors import MammofuseError

err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

USAGE_ERROR = 2
SOME_FAILED = 1

Density = Annotated[str | None, typer.Option("--density", help="Breast density: 1-4 or A-D.", rich_help_panel="Clinical findings")]
Shape = Annotated[str | None, typer.Option("--shape", help="Mass shape, e.g. oval, irregular.", rich_help_panel="Clinical findings")]
Margin = Annotated[str | None, typer.Option("--margin", help="Mass margins, e.g. circumscribed, spiculated.", rich_help_panel="Clinical findings")]
CalcType = Annotated[str | None, typer.Option("--calc-type", help="Calcification type, e.g. pleomorphic.", rich_help_panel="Clinical findings")]
CalcDistribution = Annotated[str | None, typer.Option("--calc-distribution", help="Calcification distribution, e.g. clustered.", rich_help_panel="Clinical findings")]
Format = Annotated[str, typer.Option("--format", "-f", help="Output format.")]
InputPaths = Annotated[list[Path], typer.Argument(help="DICOM or image files, or folders of them.", show_default=False)]
ModelSpec = Annotated[str, typer.Option("--model", "-m", help="Registered name (see `mammofuse models`), model folder, or Hub id owner/name\\[@revision].")]
ClinicalCsv = Annotated[Path | None, typer.Option("--clinical", help="CSV of findings per file: a path (or file name, stem, SOPInstanceUID) column and clinical fields; its values win over the flags.", rich_help_panel="Clinical findings")]
Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (atomically) instead of stdout.")]
Roi = Annotated[str | None, typer.Option("--roi", help="Lesion circle ROW,COL,RADIUS in the file's pixels, for every file without one in --clinical.", rich_help_panel="Clinical findings")]
DatasetName = Annotated[str, typer.Option("--dataset", help="cbis-ddsm, mini-mias or manifest.")]
DataDir = Annotated[Path, typer.Option("--data", help="Folder with the dataset's CSVs / Info.txt, or a manifest CSV.")]
ImageDirs = Annotated[
    list[Path] | None,
    typer.Option("--images", help="CBIS-DDSM images: a TCIA DICOM tree, or a folder of full-field images named by image key "
                 "(00001_LEFT_CC.jpg) with COCO lesion boxes; repeat for several (e.g. training and test images).", show_default=False),
]
Abnormality = Annotated[str, typer.Option("--abnormality", help="Lesion types: mass, calc or all.")]


def clinical_flags(density: str | None, shape: str | None, margin: str | None, calc_type: str | None, calc_distribution: str | None) -> dict[str, str]:
    """The clinical flags given, keyed by schema field name, validated against the schema."""
    from mammofuse.clinical import load_schema

    values = {"density": density, "shape": shape, "margin": margin, "calc_type": calc_type, "calc_distribution": calc_distribution}
    values = {k: v for k, v in values.items() if v is not None}
    load_schema().normalise(values)  # raises ClinicalValueError with the valid values
    return values


def fail(message: str, code: int = USAGE_ERROR) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def guarded(func: F) -> F:
    """Turn MammofuseError (and Ctrl-C) into a one-line message and exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MammofuseError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise MammofuseError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def render_records(records: Sequence[dict[str, Any]], fmt: str) -> str:
    """Records as JSON (a list), JSONL or CSV (nested values JSON-encoded)."""
    if fmt == "json":
        return json.dumps(list(records), indent=2, default=str) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r, default=str) + "\n" for r in records)
    if fmt == "csv":
        buffer = io.StringIO()
        columns = list(dict.fromkeys(k for r in records for k in r))
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})
        return buffer.getvalue()
    raise MammofuseError(f"unknown format {fmt!r}")


def emit(text: str, output: Path | None) -> None:
    """Machine-readable output to stdout, or atomically to ``output``."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        from mammofuse.atomic import write_text

        write_text(output, text)
        err_console.print(f"wrote {output}", highlight=False)


def parse_roi(text: str | None) -> tuple[float, float, float] | None:
    """``--roi ROW,COL,RADIUS`` (the lesion circle in the file's pixels) as numbers; None when not given."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(v == v and abs(v) < 1e6 for v in values) or values[2] <= 0 or min(values[:2]) < 0:
        raise MammofuseError(f"--roi: expected ROW,COL,RADIUS in pixels (radius > 0), got {text!r}")
    return values  # type: ignore[return-value]


def cases_and_model(
    paths: list[Path], recursive: bool, flags: dict[str, str], clinical_csv: Path | None, model: str, device: str,
    region: tuple[float, float, float] | None = None,
) -> tuple[list[Any], Any, str, Any]:
    """What ``predict`` and ``explain`` share: (cases, model, model name, torch device); notes printed."""
    from mammofuse.cases import cases_from_inputs
    from mammofuse.device import resolve_device
    from mammofuse.hub import describe_model, resolve_model
    from mammofuse.model import load_model

    notes: list[str] = []
    samples = cases_from_inputs(paths, recursive, flags, clinical_csv, notes=notes, region=region)
    torch_device = resolve_device(device)
    folder = resolve_model(model)
    net = load_model(folder, device=torch_device)
    name = describe_model(model, folder)
    if not net.config.uses_clinical and (flags or clinical_csv):
        notes.append(f"model {name} is image-only (fusion {net.config.fusion}): clinical findings are not used")
    if not net.config.uses_image:
        notes.append(f"model {name} is clinical-only: images are not read")
    elif net.config.recipe.input == "roi" and any(s.region is None for s in samples):
        without = sum(s.region is None for s in samples)
        how = "their image is not used: the clinical findings are scored" if net.config.recipe.needs_region() else "the whole breast is scored instead"
        notes.append(
            f"model {name} looks at lesion crops, and {without} of {len(samples)} files have no lesion region: {how}. "
            "Give --roi ROW,COL,RADIUS (or roi_row, roi_col, roi_radius columns in --clinical)"
        )
    for note in notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    return samples, net, name, torch_device
