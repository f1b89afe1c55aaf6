"""Cross-attention weights of ``cross``/``co`` models: which clinical field each image region attended to.

``image_to_clinical`` (heads averaged) gives, for every image token (a position of the last
feature map), a distribution over the present clinical fields. Drawn as one panel per field:
bright where that region's attention went to that field. ``co`` models also attend back
(fields to image regions): a second row. Absent fields are masked out by the model and not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mammofuse.errors import MammofuseError
from mammofuse.explainers.inputs import CaseInputs, FixedImageScorer
from mammofuse.model import MammoFuse


@dataclass
class AttentionMaps:
    """Attention of one case on the feature-map grid.

    Attributes:
        fields: indices of the fields drawn (present ones).
        image_to_clinical: (F, h, w): weight each image region gave each field (rows sum to 1 over fields).
        clinical_to_image: (F, h, w) for ``co`` models: weight each field gave each region, else None.
    """

    fields: list[int]
    image_to_clinical: np.ndarray
    clinical_to_image: np.ndarray | None


def attention_maps(model: MammoFuse, inputs: CaseInputs, scorer: FixedImageScorer | None = None) -> AttentionMaps:
    """The attention weights of one case, reshaped to the feature-map grid.

    Raises:
        MammofuseError: the model has no cross-attention, or no clinical field was given.
    """
    if not model.config.kind.uses_attention:
        raise MammofuseError(f"{model.config.fusion!r} fusion has no cross-attention")
    present = np.flatnonzero(inputs.mask[0].cpu().numpy()).tolist()
    if not present:
        raise MammofuseError("no clinical field given: the image had nothing to attend to")
    scorer = scorer or FixedImageScorer(model, inputs)
    features = scorer.features
    with torch.no_grad():
        out = model(None, inputs.clinical, inputs.mask, features=features, **inputs.extra())
    h, w = features.shape[-2:]  # a radiomics token, when the model has one, follows the h*w feature-map tokens
    forward = out.image_to_clinical[0, : h * w].float().cpu().numpy().T.reshape(-1, h, w)
    back = None
    if out.clinical_to_image is not None:
        back = out.clinical_to_image[0, :, : h * w].float().cpu().numpy().reshape(-1, h, w)
    return AttentionMaps(fields=present, image_to_clinical=forward, clinical_to_image=back)


def plot_attention(maps: AttentionMaps, view: np.ndarray, labels: list[str], values: list[str | None]) -> bytes:
    """PNG: a panel per present field over the view; a second row for ``co`` models. With one field, the first row (every
    region's attention over the fields, which is 1 for a lone field) is left out."""
    from mammofuse.explainers.gradcam import upsample
    from mammofuse.explainers.render import (
        figure_png,
        new_figure,
        overlay_axes,
        view_figsize,
    )

    rows = [("image regions \u2192 field", maps.image_to_clinical)] if len(maps.fields) > 1 else []
    if maps.clinical_to_image is not None:
        rows.append(("field \u2192 image regions", maps.clinical_to_image))
    n = len(maps.fields)
    width, height = view_figsize(view, n, height=5.0, min_panel=2.6)
    fig, axes = new_figure((max(width, 4.5), height * len(rows) + 0.3), ncols=n, nrows=len(rows))
    axes = np.asarray(axes).reshape(len(rows), n)
    for r, (title, weights) in enumerate(rows):
        # One colour scale per row, spanning the weights drawn, so differences between fields show.
        low, high = float(weights[maps.fields].min()), float(weights[maps.fields].max())
        high = max(high, low + 1e-6)
        for c, field in enumerate(maps.fields):
            shown = overlay_axes(axes[r, c], view, upsample(weights[field], view.shape), cmap="magma", alpha=0.55, vmin=low, vmax=high)
            value = (values[field] or "").replace("-", "-\n")
            axes[r, c].set_title(f"{labels[field]}\n{value}\n({title})", fontsize=8)
        fig.colorbar(shown, ax=list(axes[r]), fraction=0.03, pad=0.01, label="attention weight")
    return figure_png(fig)
