"""Helpers shared by the commands: clinical flags, error handling, output writing."""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Iterator, Sequence, TypeVar

import typer
from rich.markup import escape
from rich.text import Text

from mammofuse.cli.output import err_console, stdout_closed
from mammofuse.cli.streams import ClosedStdout, closed_stdout_error
from mammofuse.errors import MammofuseError, OutputError
from mammofuse.interrupts import first_report, held_back, interrupted_status
from mammofuse.jsontext import json_text
from mammofuse.validation import MAX_AWAY_PATCHES, MAX_BATCH_SIZE, check_region  # noqa: F401 (the commands' bounds, with those of the API)

F = TypeVar("F", bound=Callable[..., Any])

SOME_FAILED = 1
USAGE_ERROR = 2
OUTPUT_ERROR = 3
INTERNAL_ERROR = 4
RECORD_FORMATS = ("json", "jsonl", "csv")
DEBUG_VARIABLE = "MAMMOFUSE_DEBUG"
# Upper bounds of numeric flags: a mistyped huge value is a usage error, never an overflow or a run that cannot end
# (those the Python API shares are in mammofuse.validation).
MAX_WORKERS = 256
# C0 and C1 control characters (ESC starts terminal escape sequences), DEL, the Unicode
# bidirectional overrides that can make text read backwards, and surrogates (a file name's undecodable bytes).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _given_path(text: str) -> Path:
    """The path an option or argument names; an empty one (an unset shell variable) is a usage error, for ``Path("")`` is the current folder."""
    if not text:
        raise typer.BadParameter("an empty path; name a file or folder (. for the current one)")
    return Path(text)


def _written_path(text: str) -> Path:
    """A path to write: refusing ``-``, which names stdout, for an output that is a folder or binary."""
    if text == "-":
        raise typer.BadParameter("- is stdout, which cannot take this output; name a file or folder (./- for one named -)")
    return _given_path(text)


def _output_file(text: str) -> Path | None:
    """The file ``--output`` names; ``-`` is stdout (None, as if no ``--output`` were given)."""
    return None if text == "-" else _given_path(text)


def path_option(*names: str, **kwargs: Any) -> Any:
    """A Typer option naming a file or folder to read, refusing an empty path."""
    return typer.Option(*names, parser=_given_path, metavar="<path>", **kwargs)


def output_option(*names: str, **kwargs: Any) -> Any:
    """A Typer option naming a folder or binary file to write, refusing an empty path and ``-``."""
    return typer.Option(*names, parser=_written_path, metavar="<path>", **kwargs)


def output_file_option(*names: str, **kwargs: Any) -> Any:
    """A Typer option naming the file a command writes instead of stdout; ``-`` is stdout."""
    return typer.Option(*names, parser=_output_file, metavar="<path>", **kwargs)


input_option = path_option  # the name says which way the file goes


Density = Annotated[str | None, typer.Option("--density", help="Breast density: 1-4 or A-D.", rich_help_panel="Clinical findings")]
Shape = Annotated[str | None, typer.Option("--shape", help="Mass shape, e.g. oval, irregular.", rich_help_panel="Clinical findings")]
Margin = Annotated[str | None, typer.Option("--margin", help="Mass margins, e.g. circumscribed, spiculated.", rich_help_panel="Clinical findings")]
CalcType = Annotated[str | None, typer.Option("--calc-type", help="Calcification type, e.g. pleomorphic.", rich_help_panel="Clinical findings")]
CalcDistribution = Annotated[str | None, typer.Option("--calc-distribution", help="Calcification distribution, e.g. clustered.", rich_help_panel="Clinical findings")]
InputPaths = Annotated[list[Path], typer.Argument(metavar="PATHS", parser=_given_path, help="DICOM or image files, or folders of them.", show_default=False)]
ModelSpec = Annotated[str, typer.Option("--model", "-m", help="Registered name (see `mammofuse models`), model folder, or Hub id owner/name\\[@revision].")]
ClinicalCsv = Annotated[Path | None, input_option("--clinical", help="CSV of findings per file: a path (or file name, stem, SOPInstanceUID) column and clinical fields; its values win over the flags. predict scores the rows of one file (named by path or SOPInstanceUID), each with its own roi_row, roi_col, roi_radius (or predict's region column), as its lesions.", rich_help_panel="Clinical findings")]
Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
AwayPatches = Annotated[int, typer.Option("--away-patches", min=1, max=MAX_AWAY_PATCHES, help="The away control scores each case on this many patches away from its lesion and averages them (logits): one patch's AUC moves with where it fell, by up to 0.14 on a hundred cases. 8 or more for small datasets.")]
Output = Annotated[Path | None, output_file_option("--output", "-o", help="Write to this file (atomically) instead of stdout (- is stdout).")]
Roi = Annotated[str | None, typer.Option("--roi", help="Lesion circle ROW,COL,RADIUS in the file's pixels, for every file without one in --clinical: the centre of the lesion's bounding box and half its longer side, as the models were trained (the crop is 1.5x that diameter; a larger circle takes in more surrounding tissue and changes the score).", rich_help_panel="Clinical findings")]
DatasetName = Annotated[str, typer.Option("--dataset", help="cbis-ddsm, mini-mias or manifest.")]
DataDir = Annotated[Path, input_option("--data", help="Folder with the dataset's CSVs / Info.txt, or a manifest CSV.")]
ImageDirs = Annotated[
    list[Path] | None,
    input_option("--images", help="CBIS-DDSM images: a TCIA DICOM tree, or a folder of full-field images named by image key "
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


class ReportFormat(StrEnum):
    """How a command that reports one result writes it."""

    TABLE = "table"
    JSON = "json"


class EngineKind(StrEnum):
    """Who scores: this machine, or a Ray cluster."""

    LOCAL = "local"
    RAY = "ray"


class RecordFormat(StrEnum):
    """How a command that writes one record per file writes them."""

    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"


Format = Annotated[ReportFormat, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)]
ReportFormatOption = Annotated[
    ReportFormat | None,
    typer.Option("--format", "-f", help="Output format \\[default: table, or json for an --output ending .json].", case_sensitive=False, show_default=False),
]
RecordFormatOption = Annotated[
    RecordFormat | None,
    typer.Option("--format", "-f", help="Output format \\[default: table, or from the --output suffix].", case_sensitive=False, show_default=False),
]


EngineName = Annotated[EngineKind, typer.Option("--engine", help="local: this machine; ray: a Ray Data pipeline on --ray-address or a local Ray (pip install \"mammofuse\\[ray]\").", case_sensitive=False, rich_help_panel="Scale")]
RayAddress = Annotated[str | None, typer.Option("--ray-address", help="The Ray cluster for --engine ray: auto, HOST:6379 or ray://HOST:10001 \\[default: RAY_ADDRESS, else a local Ray].", rich_help_panel="Scale", show_default=False)]
GpusPerWorker = Annotated[float, typer.Option("--gpus-per-worker", min=0.0, help="GPUs per scoring actor of --engine ray (a fraction shares a GPU); 0 scores on CPUs.", rich_help_panel="Scale")]
ShardOption = Annotated[str | None, typer.Option("--shard", metavar="I/N", help="Score only part I of N (0 <= I < N), by a stable hash of each path (of each breast with --aggregate breast): N jobs cover every file once.", rich_help_panel="Scale", show_default=False)]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the --output file (jsonl or csv): score only the files it lacks, matched by path, size and modification time.", rich_help_panel="Scale")]


def clean(text: object) -> str:
    """Untrusted text (file names, DICOM attributes, error messages) made safe for a terminal.

    Control characters (escape sequences, bell, carriage return...) become visible ``\\xNN``, as does a
    byte of a file name that is not UTF-8 (Python holds it as a surrogate, U+DC80 to U+DCFF).
    """
    return _CONTROL.sub(_visible, str(text))


def _visible(match: re.Match[str]) -> str:
    code = ord(match[0])
    if 0xDC80 <= code <= 0xDCFF:
        code -= 0xDC00  # the byte itself
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object) -> str:
    """Untrusted text for a Rich markup string: control characters shown, markup escaped."""
    return escape(clean(text))


def cell(text: object, style: str = "") -> Text:
    """Untrusted text as a table cell: never parsed as markup, control characters shown."""
    return Text(clean(text), style=style)


def note(message: str) -> None:
    """A one-line note on stderr; ``message`` is untrusted text."""
    err_console.print(f"[yellow]note:[/] {safe(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = USAGE_ERROR) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {safe(message)}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def interrupted(status: int) -> typer.Exit:
    """The Exit of a command Ctrl-C or SIGTERM ended, ``error: interrupted`` printed once however many signals came
    (:func:`mammofuse.interrupts.first_report`). Stop signals are held back from the decision to the printed line: one
    landing in between (a second SIGTERM passed on by a reader) would leave the report marked made and never printed."""
    with held_back():
        if first_report():
            return fail("interrupted", status)
    return typer.Exit(status)


def _notes_once() -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints each warning as a note, once a run: a file's remark is raised again for each
    of its lesions, read in turn."""
    shown: set[str] = set()

    def show_warning_as_note(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if str(message) not in shown:
            shown.add(str(message))
            note(str(message))

    return show_warning_as_note


# Typer's own exits and usage errors pass through `guarded` to Typer. Click's exception base is named through
# Typer: Typer 0.29 vendors Click (typer._click), and click itself is no dependency of mammofuse.
CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_TYPER_FLOW = (typer.Exit, typer.Abort, CLICK_EXCEPTION)


def guarded(func: F) -> F:
    """Errors become a one-line message and an exit code, never a traceback.

    ``MammofuseError``: 2 (3 for an output that cannot be written); any other ``OSError`` (disk
    full, permissions) is an output's, since inputs raise theirs as ``MammofuseError``
    (:func:`mammofuse.errors.reading`), a stdout closed from the start (``>&-``) included: 3; Ctrl-C: 130, SIGTERM: 143;
    stdout's reader gone (``| head``): 141, silently; anything else is a bug: 4. Warnings print as one-line notes.
    ``MAMMOFUSE_DEBUG=1`` shows the traceback as well.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _notes_once()
                return func(*args, **kwargs)
        except _TYPER_FLOW:
            raise
        except OutputError as exc:
            if isinstance(exc.__cause__, BrokenPipeError):  # -o /dev/stdout, or a FIFO, whose reader went away
                stdout_closed()
            raise _fail_with_trace(str(exc), OUTPUT_ERROR) from None
        except MammofuseError as exc:
            raise _fail_with_trace(str(exc), USAGE_ERROR) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (mammofuse.interrupts)
            raise interrupted(interrupted_status(exc) or 130) from None
        except BrokenPipeError:
            stdout_closed()
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise _fail_with_trace(f"{where}{exc.strerror or exc}", OUTPUT_ERROR) from None
        except Exception as exc:  # a bug: still one line, the traceback on request
            if status := interrupted_status(exc):  # unless a Ctrl-C came first, which C code may turn into another error
                raise interrupted(status) from None
            raise _fail_with_trace(f"internal error ({type(exc).__name__}: {exc}); {DEBUG_VARIABLE}=1 shows the traceback", INTERNAL_ERROR) from None

    return wrapper


def _fail_with_trace(message: str, code: int) -> typer.Exit:
    if os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0"):
        traceback.print_exc(file=sys.stderr)
    return fail(message, code)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """``value`` when it is one of ``choices``, else a MammofuseError naming the option ``name`` and the choices."""
    if value not in choices:
        raise MammofuseError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def output_format(fmt: RecordFormat | None, output: Path | None, default: RecordFormat = RecordFormat.TABLE) -> RecordFormat:
    """The format to write: ``--format``, else the ``--output`` suffix, else ``default``.

    Raises:
        MammofuseError: an ``--output`` suffix that names another machine-readable format.
    """
    suffix = output.suffix.lower().lstrip(".") if output else ""
    implied = RecordFormat(suffix) if suffix in RECORD_FORMATS else None
    if fmt is None:
        return implied or default
    if implied and implied != fmt:
        raise MammofuseError(f"--output {output} looks like {suffix} but --format is {fmt}; make them agree")
    return fmt


def report_format(fmt: ReportFormat | None, output: Path | None) -> ReportFormat:
    """The format of a report (table or JSON), by the rule of :func:`output_format`.

    Raises:
        MammofuseError: the ``--output`` suffix contradicts ``--format`` or names a format reports are not written in.
    """
    chosen = output_format(None if fmt is None else RecordFormat(fmt), output)
    if chosen not in tuple(ReportFormat):
        raise MammofuseError(f"--output {output} looks like {chosen}, but this command writes a table or json; name the file .json or .txt")
    return ReportFormat(chosen)


def render_records(records: Sequence[dict[str, Any]], fmt: str) -> str:
    """Records as JSON (a list), JSONL or CSV.

    CSV: a nested mapping (``clinical``) gives one column per key; ``error`` is the last column;
    cells that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@`` first) or that start
    with ``'`` get a ``'``; cells holding a line break (``\\r`` too) are quoted.

    Raises:
        ValueError: JSON of a record holding NaN or infinity (a bug: JSON has no such numbers).
    """
    from mammofuse.scoring.sink import csv_text, flat_row, json_record

    if fmt == "json":
        return json_record(list(records), indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json_record(r) + "\n" for r in records)
    if fmt == "csv":
        rows = [flat_row(r) for r in records]
        columns = list(dict.fromkeys(k for r in rows for k in r if k != "error"))
        if any("error" in r for r in rows):
            columns.append("error")
        return csv_text(columns, rows, header=True)
    raise MammofuseError(f"unknown format {fmt!r}")


STDOUT_PATHS = frozenset({"/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})


def check_output(output: Path | None) -> None:
    """Fail before any work when ``--output``, or stdout when there is none (or it names stdout), cannot be written."""
    if output is None or str(output) in STDOUT_PATHS:
        check_stdout()
    if output is not None:
        from mammofuse.atomic import check_writable

        check_writable(output)


def check_stdout() -> None:
    """Fail before any work when stdout, where a command's records, tables or summary go, is closed (``>&-``)."""
    if isinstance(sys.stdout, ClosedStdout):
        raise closed_stdout_error()


def dataset_files(data: Path, images: list[Path] | None, samples: Iterable[Any]) -> Iterator[Path | str | None]:
    """The files a dataset was read from, for :func:`check_not_input`: its manifest or ``Info.txt``, the COCO boxes of
    ``images``, each sample's image, lesion crop and mask (CBIS-DDSM's CSVs need no check: no report is written as CSV)."""
    from mammofuse.data.cbis_images import COCO_NAME

    yield from (data, data / "manifest.csv", data / "Info.txt", *(folder / COCO_NAME for folder in images or []))
    for s in samples:
        yield from (s.image_path, s.roi_path, s.roi_mask_path)


def emit(text: str, output: Path | None) -> None:
    """Machine-readable output to stdout, or atomically to ``output``: UTF-8 either way, whatever the locale, a file
    name's bytes as they are."""
    if output is None:
        from mammofuse.scoring.sink import encoded, write_stdout

        write_stdout(encoded(text))
    else:
        from mammofuse.atomic import write_text

        write_text(output, text, follow_symlink=True)
        err_console.print(f"wrote {safe(output)}", highlight=False, soft_wrap=True)


def write_report(data: Any, fmt: str, output: Path | None, table: Callable[[], Any]) -> None:
    """A report as JSON, or as the table ``table()`` builds, to stdout or ``output`` (atomically)."""
    if fmt == ReportFormat.JSON:
        emit(json_text(data, indent=2) + "\n", output)
    else:
        from mammofuse.cli.output import show

        show(table(), output)


def parse_roi(text: str | None) -> tuple[float, float, float] | None:
    """``--roi ROW,COL,RADIUS`` (the lesion circle in the file's pixels) as numbers; None when not given."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 3:
        raise MammofuseError(f"--roi: expected ROW,COL,RADIUS in pixels, got {text!r}")
    row, col, radius = parts
    return check_region(row, col, radius, "--roi", ("ROW", "COL", "RADIUS"))


def cases_and_model(
    paths: list[Path], recursive: bool, flags: dict[str, str], clinical_csv: Path | None, model: str, device: str,
    region: tuple[float, float, float] | None = None, unread: list[tuple[str, str]] | None = None,
) -> tuple[list[Any], Any, str, Any]:
    """The cases ``explain`` explains: (cases, model, model name, torch device); remarks become notes, and the
    sub-folders that cannot be listed go into ``unread`` (see :func:`mammofuse.cases.find_image_files`)."""
    from mammofuse.api import as_model, cases

    net = as_model(model, device)
    samples = cases(paths, net, flags, clinical_csv, region, recursive, explaining=True, unread=unread)
    return samples, net, net.name, net.device
