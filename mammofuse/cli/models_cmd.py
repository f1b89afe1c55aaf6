"""``mammofuse models``: the registered model names ``--model`` accepts and backbone names ``--pretrained`` accepts
(which also takes a model name, for that model's image branch)."""

from __future__ import annotations

from typing import Any

import typer

from mammofuse import RESEARCH_NOTICE
from mammofuse.cli.common import Output, ReportFormatOption, check_output, guarded, report_format, write_report


@guarded
def models(fmt: ReportFormatOption = None, output: Output = None) -> None:
    """List the registered models (names for --model) with their recipe and threshold, and the shipped backbones (names for `train --pretrained`; kind "backbone" in JSON).

    --model also takes a model folder (config.json + model.safetensors) or a Hugging Face Hub id owner/name\\[@revision] (cached; HF_HUB_OFFLINE=1 uses the cache only). `train --pretrained` also takes a model name or folder: it starts from that model's image branch.

    Examples:

        mammofuse models

        mammofuse models --format json
    """
    from mammofuse.backbones import registered_backbones
    from mammofuse.hub import registered_models

    fmt = report_format(fmt, output)
    check_output(output)
    records = registered_models() + registered_backbones()
    write_report(records, fmt, output, lambda: _tables(records))


def _tables(records: list[dict[str, Any]]) -> Any:
    from rich.console import Group
    from rich.table import Table

    missing = "[red]missing from this installation[/] ({})"
    models = Table("model", "fusion", "backbone", "input", "size", "threshold", "MB", "description")
    backbones = Table("backbone (--pretrained)", "architecture", "default", "MB", "description", caption=RESEARCH_NOTICE, caption_justify="left")
    for r in records:
        if r["kind"] == "backbone":
            cells = [r["backbone"], "yes" if r["default"] else "", str(r["size_mb"]), r["description"]]
            backbones.add_row(r["name"], *(cells if r["available"] else ["", "", "", missing.format(r["path"])]))
        elif r["available"]:
            models.add_row(
                r["name"], r["fusion"], r["backbone"] or "-", r["input"], str(r["image_size"]), f"{r['threshold']:.3f}",
                str(r["size_mb"]), r["description"],
            )
        else:
            models.add_row(r["name"], "", "", "", "", "", "", missing.format(r["path"]))
    return Group(models, backbones)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
