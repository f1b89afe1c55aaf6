"""``mammofuse models``: the registered model names ``--model`` accepts."""

from __future__ import annotations

from typing import Any

import typer

from mammofuse import RESEARCH_NOTICE
from mammofuse.cli.common import Format, Output, ReportFormat, check_output, guarded, write_report


@guarded
def models(fmt: Format = ReportFormat.TABLE, output: Output = None) -> None:
    """List the registered models (names for --model) with their recipe and threshold.

    --model also takes a model folder (config.json + model.safetensors) or a Hugging Face Hub
    id owner/name[@revision] (cached; HF_HUB_OFFLINE=1 uses the cache only).

    Examples:

        mammofuse models

        mammofuse models --format json
    """
    from mammofuse.hub import registered_models

    check_output(output)
    records = registered_models()
    write_report(records, fmt, output, lambda: _table(records))


def _table(records: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table("name", "fusion", "backbone", "input", "size", "threshold", "MB", "description", caption=RESEARCH_NOTICE, caption_justify="left")
    for r in records:
        if not r["available"]:
            table.add_row(r["name"], "", "", "", "", "", "", f"[red]missing from this installation[/] ({r['path']})")
            continue
        table.add_row(
            r["name"], r["fusion"], r["backbone"] or "-", r["input"], str(r["image_size"]), f"{r['threshold']:.3f}",
            str(r["size_mb"]), r["description"],
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("models")(models)
