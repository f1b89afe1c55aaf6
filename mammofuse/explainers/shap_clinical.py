"""Exact Shapley values of the clinical fields, with the image held fixed.

Players are whole fields (a field's multi-hot block and its presence flag move together);
a field "leaves" the coalition by becoming absent, exactly as when a user does not give it,
so the baseline is the model's own answer without clinical findings. With five fields all
2^5 = 32 coalitions are scored in one batch, so the values are exact (no sampling) and add
up to ``model output - expected value`` by construction. ``shap.KernelExplainer`` with the
"absent" row as background gives the same numbers (tested); this is its exact, fast case.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

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
        }


def coalition_inputs(clinical: np.ndarray, mask: np.ndarray, schema: ClinicalSchema) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every coalition of fields as model inputs: (2^F, F) membership, (2^F, D) vectors, (2^F, F) masks."""
    n = len(schema.fields)
    members = np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)
    vectors = np.zeros((len(members), clinical.shape[-1]), dtype=np.float32)
    for i, block in enumerate(schema.slices().values()):
        vectors[members[:, i], block] = clinical[block]
    return members, vectors, members & mask[None, :]


def shapley_from_values(members: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Exact Shapley values (F,) from the value of every coalition (rows of ``members``)."""
    n = members.shape[1]
    index = {tuple(row): v for row, v in zip(members.tolist(), values)}
    phi = np.zeros(n)
    for row, v in zip(members.tolist(), values):
        size = sum(row)
        for i in range(n):
            if not row[i]:
                continue
            without = tuple(False if j == i else b for j, b in enumerate(row))
            weight = math.factorial(size - 1) * math.factorial(n - size) / math.factorial(n)
            phi[i] += weight * (v - index[without])
    return phi


def clinical_shapley(scorer: FixedImageScorer, clinical: np.ndarray, mask: np.ndarray, schema: ClinicalSchema) -> ClinicalShapley:
    """Exact per-field Shapley values of one case (clinical (D,), mask (F,)) with its image fixed."""
    clinical = np.asarray(clinical, dtype=np.float32).reshape(-1)
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    members, vectors, masks = coalition_inputs(clinical, mask, schema)
    logits = scorer.logits(vectors, masks)
    probs = sigmoid(logits)
    decoded = schema.display(clinical, mask)
    return ClinicalShapley(
        fields=list(schema.field_names),
        labels=[f.label for f in schema.fields],
        values=[decoded[name] for name in schema.field_names],
        logit=shapley_from_values(members, logits),
        logit_expected=float(logits[0]),
        logit_output=float(logits[-1]),
        probability=shapley_from_values(members, probs),
        expected_value=float(probs[0]),
        output=float(probs[-1]),
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
