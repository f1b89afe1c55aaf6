"""How Typer's Rich help is laid out at any width: the descriptions wrap to make room, rather than option names and
defaults being cut with "…". Imported only when help is shown (Typer's Rich help costs about 30 ms to import)."""

from __future__ import annotations

from typing import Any

from rich.columns import Columns
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from mammofuse.cli.output import console_width


class HelpTable(Table):
    """Typer's table of options, whose rows are (a required mark,) option names, their type and their description:
    the names are never narrowed, so that the description and the type wrap instead."""

    def add_row(self, *renderables: RenderableType | None, **kwargs: Any) -> None:
        super().add_row(*renderables, **kwargs)
        for column in self.columns[:-2]:
            column.no_wrap = True


def folding_columns(items: list[RenderableType]) -> Columns:
    """An option's description, default and required mark, where a word wider than the column (a long default)
    folds onto the next line rather than being cut."""
    for item in items:
        if isinstance(item, Text):
            item.overflow = "fold"
    return Columns(items)


def adapt() -> None:
    """Lay out Typer's help tables so, as wide as the CLI's consoles (:func:`mammofuse.cli.output.console_width`)."""
    from typer import rich_utils

    rich_utils.Table, rich_utils.Columns = HelpTable, folding_columns  # type: ignore[misc, assignment]
    rich_utils.MAX_WIDTH = console_width("TERMINAL_WIDTH") or console_width()
