"""The one output layer of the CLI: its two consoles, its progress bar, and tables to stdout or a file.

Only ``mammofuse.cli`` imports Rich; the library reports through callbacks that these render.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NoReturn

from rich.console import Console

from mammofuse.cli.streams import STDOUT_IS_CLOSED, to_null_device
from mammofuse.errors import STDOUT, OutputError

if TYPE_CHECKING:
    from rich.console import RenderableType

STDOUT_CLOSED = 141
"""The exit status when the reader of stdout went away (``| head -1``): 128 + SIGPIPE, as for a program the signal ended."""

MIN_WIDTH = 20
"""A console narrower than this (``COLUMNS=0``) would print nothing, errors included, or a word per line: its width is
taken as unknown, :data:`DEFAULT_WIDTH`."""
DEFAULT_WIDTH = 80


def console_width(variable: str = "COLUMNS") -> int | None:
    """The width the environment ``variable`` sets for a console, :data:`DEFAULT_WIDTH` for one under
    :data:`MIN_WIDTH`; None when it sets none (the terminal's width is used, else 80)."""
    text = os.environ.get(variable, "")
    if not text.isdigit():
        return None
    return int(text) if int(text) >= MIN_WIDTH else DEFAULT_WIDTH


class _Stdout(io.TextIOBase):
    """The file of :data:`console`: ``sys.stdout`` as it is when written (a prepared one, a test's). A write that fails
    names stdout (a full disk: "stdout: cannot write (...)", exit 3), as records' writes do; a reader gone
    (BrokenPipeError) is left to Rich's hook, a stdout closed from the start (``>&-``) to its own message."""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(sys.stdout, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return sys.stdout is not None and sys.stdout.isatty()  # None: started with stdout closed, before streams.prepare

    def fileno(self) -> int:
        return sys.stdout.fileno()

    def write(self, text: str) -> int:
        with _naming_stdout():
            return sys.stdout.write(text)

    def flush(self) -> None:
        with _naming_stdout():
            sys.stdout.flush()


@contextmanager
def _naming_stdout() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.strerror == STDOUT_IS_CLOSED:
            raise
        raise OutputError(STDOUT, exc.strerror or str(exc)) from exc


# emoji=False: a ":name:" in untrusted text (a file named bad:-1:x.dcm) stays text, never an emoji
console = Console(file=_Stdout(), width=console_width(), highlight=False, emoji=False)  # results for people: stdout
err_console = Console(stderr=True, width=console_width(), highlight=False, emoji=False)  # progress, notes, errors: stderr


def stdout_closed() -> NoReturn:
    """End the command, silently, because the reader of stdout went away: exit :data:`STDOUT_CLOSED`.

    stdout then points at the null device, so that flushing it at exit cannot fail again ("Exception ignored").
    """
    to_null_device(sys.stdout)
    raise SystemExit(STDOUT_CLOSED)


def _on_broken_pipe(self: Console) -> NoReturn:
    self.quiet = True
    stdout_closed()


# Rich's hook for a closed stdout (it exits 1) serves every console of the CLI, Typer's help included.
Console.on_broken_pipe = _on_broken_pipe  # type: ignore[method-assign]


@contextmanager
def progress(description: str, total: int | None, minimum: int = 1) -> Iterator[Callable[..., None]]:
    """The one progress bar: transient, on stderr; yields ``advance(n, note="")``, where a note (a
    running loss) replaces the end of the description.

    Drawn only when stderr is a terminal and there are at least ``minimum`` steps, so pipes and
    logs stay clean; otherwise ``advance`` does nothing. stdout is never redirected: records written
    while the bar is drawn go where stdout goes (``> scores.csv``), not to the terminal.
    """
    if not err_console.is_terminal or (total is not None and total < minimum):
        yield lambda n, note="": None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=err_console, transient=True, redirect_stdout=False, redirect_stderr=False)
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n, note="": bar.update(task, advance=n, description=description + note)


@contextmanager
def status(description: str) -> Iterator[Callable[[str], None]]:
    """A transient spinner on stderr; yields ``update(text)``. Drawn only when stderr is a terminal; stdout is
    never redirected (see :func:`progress`)."""
    if not err_console.is_terminal:
        yield lambda text: None
        return
    from rich.live import Live
    from rich.spinner import Spinner

    spinner = Spinner("dots" if err_console.encoding.startswith("utf") else "line", description)  # "line" is ASCII
    with Live(spinner, console=err_console, transient=True, refresh_per_second=12.5, redirect_stdout=False, redirect_stderr=False):
        yield lambda text: spinner.update(text=text)


def show(renderable: "RenderableType", output: Path | None = None) -> None:
    """Print a table (or any renderable) to stdout, or as plain text (160 columns) to ``output``."""
    if output is None:
        console.print(renderable)
        return
    from mammofuse.cli.common import emit

    buffer = io.StringIO()
    Console(file=buffer, width=160, no_color=True, highlight=False, emoji=False).print(renderable)
    emit(buffer.getvalue(), output)
