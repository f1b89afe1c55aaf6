"""``mammofuse models``: the registered model names ``--model`` accepts."""

from __future__ import annotations

import json

import typer

from mammofuse.cli.common import Format, check_choice, guarded
from mammofuse.cli.output import console


@guarded
def models(fmt: Format = "table") -> None:
    """List the registered models (names for --model) with their recipe and threshold.

    --model also takes a model folder (config.json + model.safetensors) or a Hugging Face Hub
    id owner/name[@revision] (cached; HF_HUB_OFFLINE=1 uses the cache only).

    Examples:

        mammofuse models

        mammofuse models --format json
    """
    from mammofuse.hub import registered_models

    check_choice("--format", fmt, ("table", "json"))
    records = registered_models()
    if fmt == "json":
        typer.echo(json.dumps(records, indent=2))
        return
    from rich.table import Table

    table = Table("name", "fusion", "backbone", "input", "size", "threshold", "MB", "description")
    for r in records:
        if not r["available"]:
            table.add_row(r["name"], "", "", "", "", "", "", f"[red]missing from this installation[/] ({r['path']})")
            continue
        table.add_row(
            r["name"], r["fusion"], r["backbone"] or "-", r["input"], str(r["image_size"]), f"{r['threshold']:.3f}",
            str(r["size_mb"]), r["description"],
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
