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


def _lightness_rises(cmap: object) -> bool:
    """The colour map's relative luminance (sRGB, linearised) never falls from its low end to its high end."""
    rgb = cmap(np.linspace(0.0, 1.0, 256))[:, :3]
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return bool(np.all(np.diff(linear @ [0.2126, 0.7152, 0.0722]) >= -1e-4))


def test_grad_cam_draws_its_map_in_colours_whose_lightness_rises_with_the_value() -> None:
    """Was jet, whose cyan (0.4) looks brighter than its red (0.9): false bands in greyscale and to colour-blind readers."""
    from mammofuse.explainers.gradcam import gradcam_figure

    figure = gradcam_figure(np.eye(4, dtype=np.float32), np.full((48, 32), 0.5, dtype=np.float32), "backbone.layer4")
    heat = figure.axes[1].get_images()[-1]
    assert _lightness_rises(heat.get_cmap()) and not _lightness_rises(matplotlib.colormaps["jet"])


def test_image_lime_numbers_on_its_figure_the_superpixels_its_table_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page listed superpixels "17", "22"... by numbers the figure did not show."""
    from mammofuse.explainers import render
    from mammofuse.explainers.lime_explain import ImageLime, lime_image_html, plot_lime_image, strongest_superpixels

    segments = np.repeat(np.repeat(np.arange(16).reshape(4, 4), 8, axis=0), 8, axis=1)  # 16 blocks of 8 x 8
    weights = np.linspace(-0.5, 0.3, 16)
    weights[15] = 0.46
    result = ImageLime(segments=segments, weights=weights, score=0.9, num_samples=10)
    figures: list[object] = []
    monkeypatch.setattr(render, "figure_png", lambda fig: figures.append(fig) or b"png")
    plot_lime_image(result, np.full((64, 64), 0.5, dtype=np.float32))
    listed = strongest_superpixels(result)
    assert listed[:3] == [0, 15, 1]  # |-0.5|, |0.46|, |-0.447|...
    numbered = {text.get_text(): text.get_position() for text in figures[0].axes[1].texts}
    assert list(numbered) == [str(i) for i in listed]
    for segment in listed:  # each number lies inside its block, drawn at twice the size
        row, col = divmod(segment, 4)
        assert 16 * col <= numbered[str(segment)][0] < 16 * (col + 1) and 16 * row <= numbered[str(segment)][1] < 16 * (row + 1)
    page = lime_image_html(b"png", result, 0, "scan.dcm")
    rows = [page.index(f"<tr><td>{i}</td><td>{weights[i]:+.4f}</td></tr>") for i in listed]
    assert rows == sorted(rows) and page.count("<tr><td>") == len(listed)


def test_evaluation_figures_state_the_threshold_to_the_tables_three_decimals(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A tuned 0.499 was drawn as "threshold 0.50", which reads as the default 0.5."""
    from mammofuse.evaluation import plots

    figures: list[object] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    result = evaluate_predictions(LABELS, PROBS, [f"p{i}" for i in range(10)], 0.498731, n_boot=20)
    plots.roc_figure(np.array(LABELS), np.array(PROBS), result, tmp_path / "roc.png", "test")
    plots.confusion_figure(result, tmp_path / "confusion.png", "test")
    legend = [text.get_text() for text in figures[0].axes[0].get_legend().get_texts()]
    assert "threshold 0.499" in legend and figures[1].axes[0].get_xlabel() == "Predicted (threshold 0.499)"


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
