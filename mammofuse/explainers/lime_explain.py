"""LIME for one case: tabular LIME over the label-encoded clinical fields, image LIME over superpixels.

Tabular: each field is one categorical feature whose categories are "absent", every value of
the vocabulary and, for a compound finding (``PUNCTATE-PLEOMORPHIC``), the case's own
combination. No training distribution ships with a model, so perturbations draw every
category of a field equally often. The image is held fixed (its features computed once).

Image: SLIC superpixels computed on the model input downsampled to ``SEGMENT_SIDE`` pixels
(then scaled back up), so segmentation is cheap; LIME switches superpixels off (filled with
the normalised mean, 0) and fits a weighted linear model of the malignancy probability. The
clinical input is held fixed. LIME has no HTML for images: the PNG is wrapped in a page; the
tabular export is framed in a page of the same form (title, case, research-use notice).

Both are seeded: the same seed gives the same explanation and the same HTML (NumPy's global random state is left alone).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammofuse import RESEARCH_NOTICE
from mammofuse.clinical.schema import ClinicalSchema
from mammofuse.explainers.inputs import FixedClinicalScorer, FixedImageScorer
from mammofuse.explainers.report import escape
from mammofuse.results import sigmoid

CLASS_NAMES = ["benign", "malignant"]
ABSENT = "(absent)"
SEGMENT_SIDE = 112
N_SEGMENTS = 40
LOW_FIT = 0.5
"""Below this R² of LIME's local linear model on its samples, its weights describe the model's scores poorly."""


def fit_notes(method: str, score: float) -> list[str]:
    """A note when a LIME explanation's local model fits the scores it explains poorly (R² below :data:`LOW_FIT`)."""
    if score >= LOW_FIT:
        return []
    return [f"{method}'s local linear model fits the model's scores poorly here (R² {score:.2f}, below {LOW_FIT}): read its weights with care"]


@dataclass
class ClinicalLime:
    """Tabular LIME of one case: its HTML export and (feature, weight) pairs for the malignant class."""

    html: str
    weights: list[tuple[str, float]]
    score: float


def field_categories(schema: ClinicalSchema, normalised: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Categories per field: absent, each value, and the case's compound value if it has one."""
    out = []
    for f in schema.fields:
        cats = [ABSENT, *f.values]
        if len(normalised.get(f.name, ())) > 1:
            cats.append(_joined(f, normalised[f.name]))
        out.append(cats)
    return out


def _joined(f: Any, terms: tuple[str, ...]) -> str:
    """A compound finding as one category, terms in vocabulary order (as ``ClinicalSchema.decode``)."""
    return "-".join(sorted(terms, key=f.values.index))


def _encode_rows(rows: np.ndarray, schema: ClinicalSchema, categories: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Label-encoded rows (N, F) -> multi-hot vectors (N, D) and masks (N, F)."""
    rows = np.rint(rows).astype(int)
    vectors = np.zeros((len(rows), schema.dim), dtype=np.float32)
    masks = np.zeros((len(rows), len(schema.fields)), dtype=bool)
    for i, (f, block) in enumerate(zip(schema.fields, schema.slices().values())):
        for r, code in enumerate(rows[:, i]):
            if code <= 0:
                continue
            for term in categories[i][code].split("-"):
                vectors[r, block.start + f.values.index(term)] = 1.0
            masks[r, i] = True
    return vectors, masks


def lime_clinical(scorer: FixedImageScorer, schema: ClinicalSchema, clinical_values: dict[str, Any], num_samples: int, seed: int) -> ClinicalLime:
    """Tabular LIME of the clinical fields of one case (image fixed)."""
    from lime.lime_tabular import LimeTabularExplainer

    normalised = schema.normalise(clinical_values)
    categories = field_categories(schema, normalised)
    row = np.array(
        [categories[i].index(_joined(f, normalised[f.name])) if f.name in normalised else 0 for i, f in enumerate(schema.fields)],
        dtype=float,
    )
    # Every category of every field equally often: LIME samples categories by these frequencies.
    rows = int(np.lcm.reduce([len(c) for c in categories]))
    background = np.stack([np.arange(rows) % len(c) for c in categories], axis=1).astype(float)

    def predict(rows: np.ndarray) -> np.ndarray:
        p = sigmoid(scorer.logits(*_encode_rows(rows, schema, categories)))
        return np.stack([1.0 - p, p], axis=1)

    explainer = LimeTabularExplainer(
        background,
        mode="classification",
        feature_names=[f.label for f in schema.fields],
        categorical_features=list(range(len(schema.fields))),
        categorical_names={i: [c.lower() for c in cats] for i, cats in enumerate(categories)},  # as predict shows findings
        class_names=CLASS_NAMES,
        discretize_continuous=False,
        random_state=seed,
    )
    explanation = explainer.explain_instance(row, predict, labels=(1,), num_features=len(schema.fields), num_samples=num_samples)
    explanation.random_state = np.random.RandomState(seed)  # the page's element id: seeded, not drawn from NumPy's global state
    return ClinicalLime(html=explanation.as_html(labels=(1,)), weights=[(str(n), float(w)) for n, w in explanation.as_list(label=1)], score=float(explanation.score))


def lime_clinical_html(result: ClinicalLime, num_samples: int, seed: int, source: str) -> str:
    """A self-contained page around LIME's own tabular export (framed, so its scripts cannot touch the page)
    with a title, the case and the research-use notice, as :func:`lime_image_html`."""
    from mammofuse.explainers.report import CSP, sandboxed_frame

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>Clinical LIME: {escape(source)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em;max-width:1400px}}iframe{{width:100%;height:520px;border:1px solid #ddd}}</style>
</head><body>
<h1>Clinical LIME</h1>
<p>{escape(source)}</p>
<p>LIME's local linear model of the predicted probability of malignancy over the label-encoded clinical fields, image
held fixed. {num_samples} perturbed samples, seed {seed}, local model R&sup2; {result.score:.3f}.</p>
{sandboxed_frame(result.html, "LIME (clinical fields)")}
<p><em>{escape(RESEARCH_NOTICE)}</em></p>
</body></html>
"""


@dataclass
class ImageLime:
    """Image LIME of one case.

    Attributes:
        segments: (S, S) superpixel label per model-input pixel.
        weights: (n_segments,) linear weight of each superpixel for the malignancy probability.
        score: R^2 of LIME's local linear model on its samples.
        num_samples: perturbed images scored.
    """

    segments: np.ndarray
    weights: np.ndarray
    score: float
    num_samples: int


def superpixels(image: np.ndarray, n_segments: int = N_SEGMENTS, side: int = SEGMENT_SIDE) -> np.ndarray:
    """SLIC superpixels of a (S, S) image, computed at ``side`` pixels and scaled back (labels from 0)."""
    import torch
    from skimage.segmentation import slic

    side = min(side, *image.shape)
    small = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None], size=(side, side), mode="area")[0, 0].numpy()
    low, high = float(small.min()), float(small.max())
    small = (small - low) / max(high - low, 1e-6)
    labels = slic(small, n_segments=n_segments, compactness=0.1, channel_axis=None, start_label=0, enforce_connectivity=True)
    big = torch.nn.functional.interpolate(torch.from_numpy(labels.astype(np.float32))[None, None], size=image.shape, mode="nearest")[0, 0]
    _, relabelled = np.unique(big.numpy().astype(int), return_inverse=True)
    return relabelled.reshape(image.shape)


def lime_image(scorer: FixedClinicalScorer, image: np.ndarray, num_samples: int, seed: int, n_segments: int = N_SEGMENTS) -> ImageLime:
    """Image LIME of a normalised (S, S) model input (clinical input fixed)."""
    segments = superpixels(image, n_segments)

    def classify(images: np.ndarray) -> np.ndarray:
        p = sigmoid(scorer.logits(images[..., :1].transpose(0, 3, 1, 2)))
        return np.stack([1.0 - p, p], axis=1)

    explainer = _quiet_image_explainer()(random_state=seed)
    explanation = explainer.explain_instance(
        np.repeat(image[..., None].astype(np.float64), 3, axis=2),
        classify,
        labels=(1,),
        top_labels=None,
        hide_color=0.0,
        num_features=int(segments.max()) + 1,
        num_samples=num_samples,
        batch_size=32,
        segmentation_fn=lambda _: segments,
        random_seed=seed,
    )
    weights = np.zeros(int(segments.max()) + 1)
    for segment, weight in explanation.local_exp[1]:
        weights[segment] = weight
    return ImageLime(segments=segments, weights=weights, score=float(explanation.score[1] if isinstance(explanation.score, dict) else explanation.score), num_samples=num_samples)


def _quiet_image_explainer() -> type:
    """LIME's image explainer with the same sampling but no tqdm bar on stderr, batched without deep copies."""
    from lime.lime_image import LimeImageExplainer

    class QuietLimeImageExplainer(LimeImageExplainer):
        def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):  # type: ignore[override]
            n_features = np.unique(segments).shape[0]
            data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
            data[0, :] = 1  # the first sample is the unperturbed image, as in LIME
            labels = []
            for start in range(0, num_samples, batch_size):
                rows = data[start : start + batch_size]
                keep = rows[:, segments].astype(bool)[..., None]  # (n, H, W, 1): superpixel switched on
                labels.extend(classifier_fn(np.where(keep, image[None], fudged_image[None])))
            return data, np.array(labels)

    return QuietLimeImageExplainer


def strongest_superpixels(result: ImageLime, count: int = 10) -> list[int]:
    """The ``count`` superpixels of largest absolute weight, strongest first: those the page lists and the figure numbers."""
    return [int(i) for i in np.argsort(-np.abs(result.weights), kind="stable")[:count]]


def plot_lime_image(result: ImageLime, view: np.ndarray) -> bytes:
    """PNG: the view, and the superpixels that raised (red) or lowered (blue) the probability."""
    import torch
    from matplotlib import patheffects
    from matplotlib.colors import ListedColormap
    from skimage.segmentation import find_boundaries

    from mammofuse.explainers.render import (
        figure_png,
        new_figure,
        overlay_axes,
        view_figsize,
    )

    labels = torch.nn.functional.interpolate(torch.from_numpy(result.segments.astype(np.float32))[None, None], size=view.shape, mode="nearest")[0, 0].numpy().astype(int)
    span = max(float(np.abs(result.weights).max()), 1e-9)
    heat = result.weights[labels] / span
    fig, axes = new_figure(view_figsize(view, 2), ncols=2)
    overlay_axes(axes[0], view)
    axes[0].set_title("region the model saw", fontsize=10)
    shown = overlay_axes(axes[1], view, np.ma.masked_where(np.abs(heat) < 0.05, heat), cmap="RdBu_r", alpha=0.55, vmin=-1.0, vmax=1.0)
    edges = find_boundaries(labels, mode="inner")
    axes[1].imshow(np.ma.masked_where(~edges, edges), cmap=ListedColormap(["#f1c40f"]), alpha=0.7, interpolation="nearest")
    for segment in strongest_superpixels(result):  # numbered as in the page's table
        rows, cols = np.nonzero(labels == segment)
        if not rows.size:  # too small to survive the resize to the view
            continue
        at = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)  # a pixel of it nearest its centre
        axes[1].text(cols[at], rows[at], str(segment), color="white", fontsize=7, ha="center", va="center",
                     path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    axes[1].set_title("LIME superpixels, the strongest numbered\nred raised, blue lowered P(malignant)", fontsize=10)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.02, label=f"relative weight (max |w| = {span:.3g})")
    return figure_png(fig)


def lime_image_html(png: bytes, result: ImageLime, seed: int, source: str) -> str:
    """A small self-contained page around the image-LIME PNG (LIME has no HTML for images)."""
    rows = "".join(f"<tr><td>{i}</td><td>{result.weights[i]:+.4f}</td></tr>" for i in strongest_superpixels(result))
    encoded = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>Image LIME: {escape(source)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em;max-width:1400px}}img{{max-width:100%}}td,th{{padding:2px 10px;text-align:right}}</style>
</head><body>
<h1>Image LIME</h1>
<p>{escape(source)}</p>
<p>Superpixels of the model input that raised (red) or lowered (blue) the predicted probability of malignancy,
clinical findings held fixed. {result.num_samples} perturbed images, seed {seed}, local model R&sup2; {result.score:.3f}.</p>
<img alt="image LIME superpixels" src="data:image/png;base64,{encoded}">
<h2>Strongest superpixels (numbered on the figure)</h2>
<table><tr><th>superpixel</th><th>weight</th></tr>{rows}</table>
<p><em>{escape(RESEARCH_NOTICE)}</em></p>
</body></html>
"""
