"""One self-contained HTML page per case: prediction, inputs, every explanation, the notice.

Everything that came from the file or the user (paths, DICOM attributes, clinical values,
notes) goes through :func:`escape`; DICOM headers are untrusted input. Images are
embedded as base64 PNG; LIME's own HTML runs in a sandboxed ``iframe srcdoc`` (escaped as an
attribute) so its scripts cannot touch this page. A Content-Security-Policy forbids loading
anything from the network.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

from mammofuse import RESEARCH_NOTICE


def escape(text: str, quote: bool = True) -> str:
    """:func:`html.escape`, with the bytes of a file name that are not UTF-8 (held as surrogates) shown as ``\\xNN``:
    the page is UTF-8."""
    return html.escape(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), quote)


@dataclass
class ReportSection:
    """One explanation in the report.

    Attributes:
        title: heading.
        text: a sentence on how to read it.
        png: an image to embed.
        frame_html: a whole HTML document to embed in a sandboxed frame (LIME's export).
        table: (name, value) rows.
        files: the files this section also wrote, for reference.
    """

    title: str
    text: str
    png: bytes | None = None
    frame_html: str | None = None
    table: list[tuple[str, str]] | None = None
    files: list[str] = field(default_factory=list)


@dataclass
class ReportData:
    """What the report shows about one case (all text is escaped when rendered)."""

    source: str
    probability: float
    threshold: float
    decision: str
    model: str
    facts: list[tuple[str, str]]
    clinical: list[tuple[str, str]]
    sections: list[ReportSection]
    notes: list[str] = field(default_factory=list)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0 auto;padding:1.5em;max-width:1400px;color:#222}
h1{font-size:1.4em;word-break:break-all}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 12px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
.notice{background:#fff4d6;border:1px solid #e0c36a;padding:.6em 1em;border-radius:4px}
.decision{font-size:1.3em}.malignant{color:#b03a2e}.benign{color:#1f618d}
img{max-width:100%;height:auto}iframe{width:100%;height:520px;border:1px solid #ddd}
.note{color:#666}code{word-break:break-all}
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; frame-src 'self' about: data:"
"""Content-Security-Policy of the pages that frame LIME's export: nothing from the network; inline styles and scripts."""


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def sandboxed_frame(document: str, title: str) -> str:
    """``document`` (a whole HTML page, e.g. LIME's export) in a sandboxed ``iframe srcdoc``: its scripts run, but cannot touch the page."""
    return f'<iframe sandbox="allow-scripts" title="{escape(title)}" srcdoc="{escape(document, quote=True)}"></iframe>'


def _section(section: ReportSection) -> str:
    parts = [f"<h2>{escape(section.title)}</h2>", f"<p>{escape(section.text)}</p>"]
    if section.png is not None:
        data = base64.b64encode(section.png).decode("ascii")
        parts.append(f'<img alt="{escape(section.title)}" src="data:image/png;base64,{data}">')
    if section.frame_html is not None:
        parts.append(sandboxed_frame(section.frame_html, section.title))
    if section.table:
        parts.append(_table(section.table))
    if section.files:
        parts.append("<p class=note>Files: " + ", ".join(f"<code>{escape(f)}</code>" for f in section.files) + "</p>")
    return "\n".join(parts)


def render_report(data: ReportData) -> str:
    """The report as one HTML string."""
    from mammofuse import __version__  # importlib.metadata costs ~8 ms: not on the CLI's start-up path
    from mammofuse.results import shown_digits

    decision_class = "malignant" if data.decision == "malignant" else "benign"
    digits = shown_digits(data.probability, data.threshold)
    notes = "".join(f"<li>{escape(n)}</li>" for n in data.notes)
    sections = "\n".join(_section(s) for s in data.sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mammofuse explanation: {escape(data.source)}</title>
<style>{_STYLE}</style>
</head><body>
<p class="notice"><strong>{escape(RESEARCH_NOTICE)}</strong> These explanations describe what a research model
computed; they are not a diagnosis.</p>
<h1>{escape(data.source)}</h1>
<p class="decision">P(malignant) = <strong>{data.probability:.{digits}f}</strong> &rarr;
<strong class="{decision_class}">{escape(data.decision)}</strong> (threshold {data.threshold:.{digits}f})</p>
<p>Model: <code>{escape(data.model)}</code></p>
<h2>File</h2>
{_table(data.facts)}
<h2>Clinical findings given</h2>
{_table(data.clinical)}
{sections}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<hr><p class="note">mammofuse {escape(__version__)}. {escape(RESEARCH_NOTICE)}</p>
</body></html>
"""
