"""Exact Shapley values of the clinical fields, with the image held fixed.

Players are whole fields (a field's multi-hot block and its presence flag move together);
a field "leaves" the coalition by becoming absent, exactly as when a user does not give it,
so the baseline is the model's own answer without clinical findings. ``shap.KernelExplainer``
computes the values over the fields' membership switches (1 = the field as given, 0 = absent;
the all-absent row is its only background) from every one of the 2^5 = 32 coalitions, where
Kernel SHAP's weighted regression is exact (no sampling): they equal the Shapley formula over all
orderings (tested) and add up to ``model output - expected value``. shap's Exact explainer gives
the same numbers but compiles numba code for about 5 s in every new process; the kernel needs none.
shap is imported on first use (its import is slow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mammofuse import RESEARCH_NOTICE
from mammofuse.clinical.schema import ClinicalSchema
from mammofuse.explainers.inputs import FixedImageScorer
from mammofuse.explainers.methods.base import Contribution
from mammofuse.results import sigmoid


@dataclass
class ClinicalShapley:
    """Per-field attributions of one case.

    Attributes:
        fields: field names, in schema order.
        labels: readable field labels.
        values: the case's value of each field (None when not given).
        logit: attributions in logit space; ``logit.sum() == logit_output - logit_expected``.
        probability: attributions in probability space; sum to ``output - expected_value``.
        expected_value: probability with every field absent (the baseline).
        output: the model's probability for the case.
    """

    fields: list[str]
    labels: list[str]
    values: list[str | None]
    logit: np.ndarray
    logit_expected: float
    logit_output: float
    probability: np.ndarray
    expected_value: float
    output: float

    def ranked(self) -> list[Contribution]:
        """The given fields' probability attributions by decreasing magnitude."""
        rows = [Contribution(label, value, float(a)) for label, value, a in zip(self.labels, self.values, self.probability) if value is not None]
        return sorted(rows, key=lambda r: -abs(r.shap))

    def captions(self) -> list[str]:
        """Each field as the chart and the report name it: ``margin = spiculated`` or ``margin (not given)``."""
        return [f"{label} = {value}" if value else f"{label} (not given)" for label, value in zip(self.labels, self.values)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "exact Shapley values over whole clinical fields; absent field = masked (as not given)",
            "expected_value": self.expected_value,
            "output": self.output,
            "logit_expected_value": self.logit_expected,
            "logit_output": self.logit_output,
            "fields": [
                {"field": f, "label": label, "value": v, "shap": float(p), "shap_logit": float(g)}
                for f, label, v, p, g in zip(self.fields, self.labels, self.values, self.probability, self.logit)
            ],
            "notice": RESEARCH_NOTICE,
        }


def clinical_shapley(scorer: FixedImageScorer, clinical: np.ndarray, mask: np.ndarray, schema: ClinicalSchema) -> ClinicalShapley:
    """Exact per-field Shapley values of one case (clinical (D,), mask (F,)) with its image fixed, by ``shap.KernelExplainer``."""
    import shap

    clinical = np.asarray(clinical, dtype=np.float32).reshape(-1)
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    n = len(schema.fields)
    widths = [block.stop - block.start for block in schema.slices().values()]

    def scores(switches: np.ndarray) -> np.ndarray:
        """(N, 2) logit and probability of each row of field switches (N, F): 1 keeps the field as given, 0 makes it absent."""
        keep = np.asarray(switches) > 0.5
        logits = scorer.logits(clinical[None] * np.repeat(keep, widths, axis=1), mask[None] & keep)
        return np.stack([logits, sigmoid(logits)], axis=1)

    explainer = shap.KernelExplainer(scores, np.zeros((1, n)))
    values = np.asarray(explainer.shap_values(np.ones((1, n)), nsamples=2**n, silent=True), dtype=float)[0]  # (F, 2)
    base = np.asarray(explainer.expected_value, dtype=float)
    values[~mask] = 0.0  # a field not given is the same in and out of a coalition: exactly 0, not rounding noise
    output = base + values.sum(axis=0)
    decoded = schema.display(clinical, mask)
    return ClinicalShapley(
        fields=list(schema.field_names),
        labels=[f.label for f in schema.fields],
        values=[decoded[name] for name in schema.field_names],
        logit=values[:, 0],
        logit_expected=float(base[0]),
        logit_output=float(output[0]),
        probability=values[:, 1],
        expected_value=float(base[1]),
        output=float(output[1]),
    )


def plot_shapley(result: ClinicalShapley) -> bytes:
    """A horizontal bar chart (PNG bytes): red raises, blue lowers the malignancy probability."""
    from mammofuse.explainers.render import figure_png, new_figure

    names = result.captions()
    values = result.probability
    fig, ax = new_figure(figsize=(7.5, 0.55 * len(names) + 1.6))
    y = np.arange(len(names))[::-1]
    colours = ["#c0392b" if v > 0 else "#2e6da4" for v in values]
    ax.barh(y, values, color=colours)
    ax.set_yticks(y, names)
    ax.axvline(0, color="black", linewidth=0.8)
    span = max(float(np.abs(values).max()), 1e-3)
    for yi, v in zip(y, values):
        ax.text(v + (0.02 * span if v >= 0 else -0.02 * span), yi, f"{v:+.3f}", va="center", ha="left" if v >= 0 else "right", fontsize=9)
    ax.set_xlim(-1.35 * span, 1.35 * span)
    ax.set_xlabel("contribution to the malignancy probability")
    ax.set_title(f"Clinical fields (SHAP): baseline {result.expected_value:.3f} \u2192 {result.output:.3f}", fontsize=11)
    return figure_png(fig)
