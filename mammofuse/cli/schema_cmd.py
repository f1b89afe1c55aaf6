"""``mammofuse schema``: the clinical fields and their values."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mammofuse.cli.common import Output, ReportFormatOption, check_output, guarded, report_format, write_report

COMPOUND_EXAMPLE = "--calc-type punctate-pleomorphic"


@guarded
def schema(
    fmt: ReportFormatOption = None,
    output: Output = None,
    vocabulary: Annotated[str, typer.Option("--vocabulary", help="Vocabulary id.")] = "cbis-ddsm-v1",
) -> None:
    """List the clinical fields, their flags and accepted values.

    Example: mammofuse schema --format json
    """
    from mammofuse.clinical import load_schema

    fmt = report_format(fmt, output)
    check_output(output)
    spec = load_schema(vocabulary).as_dict()
    write_report(spec, fmt, output, lambda: _table(spec))


def _table(spec: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"{spec['vocabulary']} ({spec['dim']} values)",
                  caption=f"Compound values join terms with '-' ({COMPOUND_EXAMPLE}), except in "
                          f"{', '.join('--' + f['name'].replace('_', '-') for f in spec['fields'] if not f['compound'])}. "
                          "BI-RADS assessment and subtlety are never model inputs (label leakage).", caption_justify="left")
    table.add_column("flag", no_wrap=True)
    for name in ("field", "values", "also accepted"):  # a reference of accepted values: folded, never cut
        table.add_column(name, overflow="fold")
    for f in spec["fields"]:
        table.add_row(
            "--" + f["name"].replace("_", "-"), f["label"], ", ".join(v.lower() for v in f["values"]),
            ", ".join(f"{k.lower()}={v.lower()}" for k, v in f["synonyms"].items()),
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)
