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
    from mammofuse.evaluation.plots import ablation_png, evaluation_figures

    result = evaluate_predictions(LABELS, PROBS, [f"p{i}" for i in range(10)], 0.5, n_boot=20)
    written = evaluation_figures(LABELS, PROBS, result, tmp_path, "test")
    pngs = [p.read_bytes() for p in written] + [ablation_png({"image": {"auc": 0.6, "auc_sd": 0.05, "auc_folds": [0.55, 0.65]}})]
    assert len(pngs) == 5 and all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in pngs)
    assert matplotlib.get_backend() == notebook_backend


def test_explanation_figures_keep_the_backend(notebook_backend: str) -> None:
    from mammofuse.explainers.gradcam import plot_gradcam

    png = plot_gradcam(np.eye(4, dtype=np.float32), np.full((48, 32), 0.5, dtype=np.float32), "backbone.layer4")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == notebook_backend


def _notice_of(png: bytes) -> str | None:
    """The PNG's Disclaimer text chunk."""
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png)).text.get("Disclaimer")


def test_every_figure_carries_the_research_use_notice_in_its_text(tmp_path: Path) -> None:
    """gradcam.png, shap_clinical.png and evaluate --plots' PNGs showed no notice, unlike every record and report."""
    from mammofuse import RESEARCH_NOTICE
    from mammofuse.evaluation.plots import ablation_png, evaluation_figures
    from mammofuse.explainers.gradcam import plot_gradcam
    from mammofuse.explainers.shap_clinical import ClinicalShapley, plot_shapley

    result = evaluate_predictions(LABELS, PROBS, [f"p{i}" for i in range(10)], 0.5, n_boot=20)
    written = evaluation_figures(LABELS, PROBS, result, tmp_path, "test")
    shapley = ClinicalShapley(fields=["density", "margin"], labels=["breast density", "mass margins"], values=["2", None],
                              logit=np.array([0.3, 0.0]), logit_expected=0.0, logit_output=0.3, probability=np.array([0.07, 0.0]),
                              expected_value=0.5, output=0.57)
    pngs = [p.read_bytes() for p in written] + [
        ablation_png({"image": {"auc": 0.6, "auc_sd": 0.05, "auc_folds": [0.55, 0.65]}}),
        plot_gradcam(np.eye(4, dtype=np.float32), np.full((48, 32), 0.5, dtype=np.float32), "backbone.layer4"), plot_shapley(shapley),
    ]
    assert [_notice_of(png) for png in pngs] == [RESEARCH_NOTICE] * 7


def test_the_notice_is_a_footer_below_the_figure_content() -> None:
    from mammofuse import RESEARCH_NOTICE
    from mammofuse.explainers.render import new_figure
    from mammofuse.figure_notice import add_notice

    fig, ax = new_figure((3.0, 3.0))
    ax.set_xlabel("probability")
    add_notice(fig)
    footer = next(t for t in fig.texts if t.get_text() == RESEARCH_NOTICE)
    renderer = fig.canvas.get_renderer()
    assert footer.get_window_extent(renderer).y1 < ax.xaxis.label.get_window_extent(renderer).y0  # nothing drawn over it


def test_grad_cam_names_what_its_map_shows_and_says_when_the_view_is_mirrored() -> None:
    from mammofuse.explainers.gradcam import gradcam_figure
    from mammofuse.explainers.render import mirror_label

    cam, view = np.eye(4, dtype=np.float32), np.full((48, 32), 0.5, dtype=np.float32)
    right = gradcam_figure(cam, view, "backbone.layer4", mirror_label(True, "R"))
    titles = [ax.get_title() for ax in right.axes[:2]]
    assert titles[0] == "region the model saw\nmirrored: right breast shown as left"
    assert titles[1] == "Grad-CAM at backbone.layer4: evidence for malignancy\nwhere its features raised the score, not a lesion localisation"
    flat = gradcam_figure(np.full((1, 1), 0.2, np.float32), view, "backbone.layer4").axes[1].get_title()
    assert flat.endswith("\none value everywhere (1 x 1 map): no location at this layer")
    zero = gradcam_figure(np.zeros((4, 4), np.float32), view, "backbone.layer4").axes[1].get_title()
    assert zero.endswith("\nzero everywhere: no region at this layer raised the score")
    left = gradcam_figure(cam, view, "backbone.layer4", mirror_label(False, "L"))
    assert left.axes[0].get_title() == "region the model saw"
    assert mirror_label(True, None) == "mirrored left to right (breast turned to the left)"


def test_explain_labels_a_right_breast_mirrored(real_dicoms: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from mammofuse import explain
    from mammofuse.explainers import gradcam

    drawn: list[str | None] = []
    plot = gradcam.plot_gradcam
    monkeypatch.setattr(gradcam, "plot_gradcam", lambda *args: drawn.append(args[3]) or plot(*args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for view in ("P_00173_rcc", "P_00173_lcc"):
            explain(real_dicoms[view], tmp_path / view, roi=(2000, 1000, 100), density=2, methods="gradcam")
    assert drawn == ["mirrored: right breast shown as left", None]
