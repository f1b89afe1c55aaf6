"""Typer held to the project's conventions: no type shown beside a flag, and help that wraps at any width rather
than cut option names and defaults (:mod:`mammofuse.cli.help_layout`)."""

from __future__ import annotations

from typing import Any, Callable

import typer
import typer.core

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


typer.core.TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]
for _command in (typer.core.TyperCommand, typer.core.TyperGroup):
    _command.format_help = _wrapping(_command.format_help)  # type: ignore[method-assign]
