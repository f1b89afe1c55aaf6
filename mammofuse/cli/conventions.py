"""Typer held to the project's conventions: a usage error is one line, so is a Ctrl-C while the command line is
parsed, no type is shown beside a flag, and help wraps at any width rather than cut option names and defaults
(:mod:`mammofuse.cli.help_layout`)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NoReturn

import typer
import typer.core

from mammofuse.cli.common import CLICK_EXCEPTION, fail, interrupted
from mammofuse.interrupts import interrupted_status

_display_type_rich = typer.core.TyperOption.display_type_rich


def _flag_without_type(self: typer.core.TyperOption, ctx: typer.Context) -> str | None:
    """Typer's help shows ``<bool>`` beside flags, which take no value: show nothing."""
    return None if self.is_flag else _display_type_rich(self, ctx)


def _wrapping(format_help: Callable[..., None]) -> Callable[..., None]:
    def format_wrapping_help(self: Any, ctx: typer.Context, formatter: Any) -> None:
        from mammofuse.cli import help_layout

        help_layout.adapt()
        return format_help(self, ctx, formatter)

    return format_wrapping_help


class MammofuseGroup(typer.core.TyperGroup):
    """The ``mammofuse`` command group: Typer's, but a usage error that Typer finds (an unknown option, a value out of
    range, a missing argument) is one line on stderr, ``error: ... (see mammofuse predict --help)``, not a usage
    block and a boxed panel."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except CLICK_EXCEPTION as exc:
            _usage_error(exc)
        except typer.Abort:
            fail("aborted", 1)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # Typer returns an Exit's code, or the command's value (None)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _interruption_reported():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _interruption_reported():  # a subcommand's parsing; its own run is `guarded`
            return super().invoke(ctx)


@contextmanager
def _interruption_reported() -> Iterator[None]:
    """Ctrl-C (SIGTERM) outside a command's `guarded` run is one line and 130 (143), as inside it: Typer would end
    silently with 130 either way."""
    try:
        yield
    except KeyboardInterrupt as exc:
        raise interrupted(interrupted_status(exc) or 130) from None


def _usage_error(exc: Any) -> NoReturn:
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ != "NoArgsIsHelpError":  # that one's help is shown already
        hint = f" (see {ctx.command_path} --help)" if ctx is not None and ctx.command.get_help_option(ctx) is not None else ""
        fail(exc.format_message().rstrip(".") + hint, exc.exit_code)
    sys.exit(exc.exit_code)


typer.core.TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]
for _command in (typer.core.TyperCommand, typer.core.TyperGroup):
    _command.format_help = _wrapping(_command.format_help)  # type: ignore[method-assign]
