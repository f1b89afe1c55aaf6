"""The ``mammofuse`` command line. Start-up imports only Typer and Rich: torch loads inside commands."""

from __future__ import annotations

import sys

import typer

from mammofuse import RESEARCH_NOTICE
from mammofuse.cli import (
    ablate_cmd,
    conventions,
    data_cmd,
    evaluate_cmd,
    explain_cmd,
    inspect_cmd,
    models_cmd,
    predict_cmd,
    pretrain_cmd,
    schema_cmd,
    streams,
    train_cmd,
)
from mammofuse.cli.common import OUTPUT_ERROR, fail, interrupted
from mammofuse.cli.output import console, stdout_closed
from mammofuse.errors import STDOUT, OutputError
from mammofuse.figure_notice import quiet_matplotlib
from mammofuse.interrupts import handle_stop_signals, interrupted_status

app = typer.Typer(
    name="mammofuse",
    help=f"Breast-lesion classification from a mammogram fused with clinical findings. {RESEARCH_NOTICE}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=conventions.MammofuseGroup,
)


def _version(value: bool) -> None:
    if value:
        from mammofuse import __version__

        console.print(f"mammofuse {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Breast-lesion classification from a mammogram fused with clinical findings."""


train_cmd.register(app)
pretrain_cmd.register(app)
evaluate_cmd.register(app)
predict_cmd.register(app)
explain_cmd.register(app)
ablate_cmd.register(app)
inspect_cmd.register(app)
schema_cmd.register(app)
data_cmd.register(app)
models_cmd.register(app)


def main() -> None:
    """Console-script entry point. SIGTERM stops a command the way Ctrl-C does. stdout and stderr are prepared
    (:mod:`mammofuse.cli.streams`): records go to stdout as UTF-8 bytes, as to an ``--output`` file (``common.emit``);
    other text on stdout holding a file name's undecodable byte writes it back (what people read is escaped, see
    ``common.clean``), and text the locale's encoding cannot show falls back to look-alikes; stderr is best effort.
    Help or the version that cannot be written (stdout on a full disk, or closed: ``>&-``) is one line and exit 3, as
    a command's output is; a reader of stdout gone (``| head``) ends it
    silently (141). Matplotlib's remarks on a config folder it cannot write are left out (:func:`quiet_matplotlib`)."""
    handle_stop_signals()
    quiet_matplotlib()
    try:
        streams.prepare()
        app()
    except KeyboardInterrupt as exc:  # Ctrl-C (SIGTERM) while Typer builds the command line, before Click's own handling
        sys.exit(interrupted(interrupted_status(exc) or 130).exit_code)
    except BrokenPipeError:
        stdout_closed()
    except OutputError as exc:  # --version (through `console`), run before any command, outside `guarded`
        sys.exit(fail(str(exc), OUTPUT_ERROR).exit_code)
    except OSError as exc:  # Typer's --help, run before any command, outside `guarded`
        problem = exc.strerror or str(exc)
        sys.exit(fail(problem if problem == streams.STDOUT_IS_CLOSED else str(OutputError(STDOUT, problem)), OUTPUT_ERROR).exit_code)
    finally:
        streams.settle_stdout()
