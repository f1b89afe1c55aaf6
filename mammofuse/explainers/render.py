"""Figures for the explanations: matplotlib's Agg backend, PNG bytes, no global pyplot state."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from mammofuse.figure_notice import PNG_METADATA, add_notice


def new_figure(figsize: tuple[float, float], ncols: int = 1, nrows: int = 1) -> tuple[Any, Any]:
    """A figure on its own Agg canvas (thread-safe, never opens a window) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=True)
    return fig, axes


def figure_png(fig: Any) -> bytes:
    """A Matplotlib figure as PNG bytes (100 dpi), with the research-use notice below it and in its text."""
    add_notice(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", pad_inches=0.05, metadata=PNG_METADATA)
    return buffer.getvalue()


def overlay_axes(ax: Any, view: np.ndarray, heat: np.ndarray | None = None, cmap: str = "inferno", alpha: float = 0.45, vmin: float = 0.0, vmax: float = 1.0) -> Any:
    """Draw the grayscale view and, optionally, a heat map over it; returns the heat image. The default colour map's
    lightness rises with the value (unlike jet's, whose cyan looks brighter than its red), so the map reads alike in
    greyscale and to colour-blind readers."""
    ax.imshow(view, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    if heat is None:
        return None
    return ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, interpolation="bilinear")


def view_figsize(view: np.ndarray, panels: int, height: float = 8.0, min_panel: float = 3.6) -> tuple[float, float]:
    """Figure size for ``panels`` side-by-side copies of ``view`` at ``height`` inches (titles fit)."""
    aspect = view.shape[1] / view.shape[0]
    return (min(24.0, panels * max(height * aspect, min_panel) + 1.2), height + 0.8)


def mirror_label(flipped: bool, laterality: str | None) -> str | None:
    """What a panel of a view says of its orientation: the reader mirrors an image so that the breast lies on
    the left; None when this one was not mirrored."""
    if not flipped:
        return None
    return "mirrored: right breast shown as left" if laterality == "R" else "mirrored left to right (breast turned to the left)"
