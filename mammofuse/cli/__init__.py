"""The ``mammofuse`` command line. Start-up imports only Typer and Rich: torch loads inside commands."""

from __future__ import annotations

import sys

import typer
import typer.core

from mammofuse import RESEARCH_NOTICE
from mammofuse.cli import (
    ablate_cmd,
    data_cmd,
    evaluate_cmd,
    explain_cmd,
    inspect_cmd,
    models_cmd,
    predict_cmd,
    pretrain_cmd,
    schema_cmd,
    train_cmd,
)
from mammofuse.cli.common import OUTPUT_ERROR, fail
from mammofuse.interrupts import handle_stop_signals

_display_type_rich = typer.core.TyperOption.display_type_rich


def _flag_without_type(self: typer.core.TyperOption, ctx: typer.Context) -> str | None:
    """Typer's help shows ``<bool>`` beside flags, which take no value: show nothing."""
    return None if self.is_flag else _display_type_rich(self, ctx)


typer.core.TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]

app = typer.Typer(
    name="mammofuse",
    help=f"Breast-lesion classification from a mammogram fused with clinical findings. {RESEARCH_NOTICE}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        from mammofuse import __version__

        typer.echo(f"mammofuse {__version__}")
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
    """Console-script entry point: SIGTERM stops a command the way Ctrl-C does, and help or the version that cannot be
    written (stdout on a full disk) is one line and exit 3, as a command's output is."""
    handle_stop_signals()
    try:
        app()
    except OSError as exc:  # Typer's --help and --version run before any command, outside `guarded`
        sys.exit(fail(exc.strerror or str(exc), OUTPUT_ERROR).exit_code)
