"""Figures leave matplotlib's global backend alone (switching it breaks notebooks)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import matplotlib
import numpy as np
import pytest

from mammofuse.evaluation.metrics import evaluate_predictions

LABELS = [0, 0, 0, 1, 1, 0, 1, 1, 0, 1]
PROBS = [0.1, 0.3, 0.2, 0.8, 0.6, 0.4, 0.9, 0.35, 0.05, 0.7]


@pytest.fixture
def notebook_backend() -> Iterator[str]:
    """A backend other than Agg, as a notebook would have, restored afterwards."""
    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        yield matplotlib.get_backend()
    finally:
        matplotlib.use(previous)


def test_evaluation_figures_keep_the_backend(notebook_backend: str, tmp_path: Path) -> None:
    from mammofuse.evaluation.plots import ablation_figure, evaluation_figures

    result = evaluate_predictions(LABELS, PROBS, [f"p{i}" for i in range(10)], 0.5, n_boot=20)
    written = evaluation_figures(LABELS, PROBS, result, tmp_path, "test")
    written.append(ablation_figure({"image": {"auc": 0.6, "auc_sd": 0.05, "auc_folds": [0.55, 0.65]}}, tmp_path / "ablation.png"))
    assert len(written) == 5 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    assert matplotlib.get_backend() == notebook_backend


def test_explanation_figures_keep_the_backend(notebook_backend: str) -> None:
    from mammofuse.explainers.gradcam import plot_gradcam

    png = plot_gradcam(np.eye(4, dtype=np.float32), np.full((48, 32), 0.5, dtype=np.float32), "backbone.layer4")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == notebook_backend
