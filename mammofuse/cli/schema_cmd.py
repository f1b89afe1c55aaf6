"""``mammofuse schema``: the clinical fields and their values."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mammofuse.cli.common import Format, check_choice, guarded
from mammofuse.cli.output import console


@guarded
def schema(
    fmt: Format = "table",
    vocabulary: Annotated[str, typer.Option("--vocabulary", help="Vocabulary id.")] = "cbis-ddsm-v1",
) -> None:
    """List the clinical fields, their flags and accepted values.

    Example: mammofuse schema --format json
    """
    from mammofuse.clinical import load_schema

    check_choice("--format", fmt, ("table", "json"))
    spec = load_schema(vocabulary).as_dict()
    if fmt == "json":
        typer.echo(json.dumps(spec, indent=2))
        return
    from rich.table import Table

    table = Table("flag", "field", "values", "also accepted", title=f"{spec['vocabulary']} ({spec['dim']} values)")
    for f in spec["fields"]:
        table.add_row(
            "--" + f["name"].replace("_", "-"), f["label"], ", ".join(v.lower() for v in f["values"]),
            ", ".join(f"{k.lower()}={v.lower()}" for k, v in f["synonyms"].items()),
        )
    console.print(table)
    console.print("Compound values join terms with '-' (punctuate-pleomorphic). "
                    "BI-RADS assessment and subtlety are never model inputs (label leakage).")


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)
