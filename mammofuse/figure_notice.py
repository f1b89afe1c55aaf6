"""The research-use notice on every figure mammofuse writes: a footer line, and the PNG's ``Disclaimer`` text."""

from __future__ import annotations

from typing import Any

from mammofuse import RESEARCH_NOTICE

PNG_METADATA = {"Disclaimer": RESEARCH_NOTICE}
"""``savefig(metadata=...)`` of every PNG: a text chunk a reader of the file (not only of the picture) finds."""
GAP_INCHES = 0.05


def add_notice(fig: Any) -> None:
    """A footer line with the research-use notice under everything drawn so far (saved with ``bbox_inches="tight"``,
    which takes in what lies below the figure's edge)."""
    fig.draw_without_rendering()  # lays the figure out: where its content ends is known
    bottom = min(fig.get_tightbbox().y0, 0.0) - GAP_INCHES
    fig.text(0.5, bottom / fig.get_figheight(), RESEARCH_NOTICE, ha="center", va="top", fontsize=8, color="0.35")
