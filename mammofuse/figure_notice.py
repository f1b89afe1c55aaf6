"""The research-use notice on every figure mammofuse writes: a footer line, and the PNG's ``Disclaimer`` text."""

from __future__ import annotations

import logging
import os
from typing import Any

from mammofuse import RESEARCH_NOTICE

PNG_METADATA = {"Disclaimer": RESEARCH_NOTICE}
"""``savefig(metadata=...)`` of every PNG: a text chunk a reader of the file (not only of the picture) finds."""
GAP_INCHES = 0.05
_CONFIG_DIR_REMARKS = ("mkdir -p failed for path ", "%s is not a writable directory", "Matplotlib created a temporary cache directory")
"""How matplotlib's remarks on a config folder it cannot write begin (logged as it is first imported)."""


def quiet_matplotlib() -> None:
    """Leave out matplotlib's remarks on a config folder it cannot write (a read-only or missing HOME): it takes a
    temporary one, and the figures are the same. Kept where the user set ``MPLCONFIGDIR``: that folder is theirs to fix.
    Call it before matplotlib is first imported (``shap`` imports it)."""
    if not os.environ.get("MPLCONFIGDIR"):
        logging.getLogger("matplotlib").addFilter(_not_a_config_dir_remark)


def _not_a_config_dir_remark(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_CONFIG_DIR_REMARKS)


def add_notice(fig: Any) -> None:
    """A footer line with the research-use notice under everything drawn so far (saved with ``bbox_inches="tight"``,
    which takes in what lies below the figure's edge)."""
    fig.draw_without_rendering()  # lays the figure out: where its content ends is known
    bottom = min(fig.get_tightbbox().y0, 0.0) - GAP_INCHES
    fig.text(0.5, bottom / fig.get_figheight(), RESEARCH_NOTICE, ha="center", va="top", fontsize=8, color="0.35")
