"""Platt recalibration of a model's scores from out-of-fold predictions.

A late-fusion model averages two branches' logits, which pulls its scores towards 0.5: on the
bundled default's cross-validation 17% of its scores 0.3-0.4 were malignant, and 91% of those 0.7-0.8
(calibration slope 1.55). Logistic regression of the label on the score's logit (Platt scaling,
``sklearn.linear_model.LogisticRegression`` without penalty) fitted on predictions of cases no
model saw in training maps the logit ``z`` to ``slope * z + intercept``. It keeps the ranking
(AUC), and the decisions where it applies (the threshold is chosen on the recalibrated scores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from mammofuse.errors import MammofuseError
from mammofuse.validation import Rule, checked

EPS = 1e-6  # scores are clipped to [EPS, 1 - EPS] before their logit
RULES: dict[str, Rule] = {"slope": Rule(float, 1e-3, 1e3), "intercept": Rule(float, -1e3, 1e3)}


@dataclass(frozen=True)
class Calibration:
    """``logit -> slope * logit + intercept``, the map a model's config stores as ``calibration``."""

    slope: float
    intercept: float

    @classmethod
    def from_dict(cls, data: Any) -> "Calibration":
        """From a config's ``calibration`` mapping, checked (it can come from anyone's Hub repository)."""
        checked("calibration", data, Rule(dict))
        if set(data) != set(RULES):
            raise MammofuseError(f"calibration must have exactly the keys {', '.join(RULES)}, not {sorted(map(str, data))[:5]}")
        return cls(**{k: checked(f"calibration.{k}", data[k], rule) for k, rule in RULES.items()})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def apply(self, probs: Sequence[float] | np.ndarray) -> np.ndarray:
        """Recalibrated probabilities of ``probs``."""
        from mammofuse.results import sigmoid

        return sigmoid(self.slope * _logit(probs) + self.intercept)


def _logit(probs: Sequence[float] | np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def fit_platt(labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray) -> Calibration:
    """The Platt map of ``probs`` to ``labels``.

    Raises:
        MammofuseError: one class only, or scores that rank the classes backwards or separate them perfectly
            (a slope outside :data:`RULES`).
    """
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        raise MammofuseError("calibration needs cases of both classes")
    fitted = LogisticRegression(C=np.inf).fit(_logit(probs)[:, None], labels)
    slope, intercept = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
    if not RULES["slope"].low <= slope <= RULES["slope"].high or not abs(intercept) <= RULES["intercept"].high:
        why = "they rank the cases backwards" if slope <= 0 else "they separate the classes perfectly"
        raise MammofuseError(f"no calibration fits these scores (Platt slope {slope:.3g}: {why})")
    return Calibration(slope, intercept)


def calibration_summary(folds: Sequence[tuple[Sequence[int], Sequence[float]]]) -> dict[str, float] | None:
    """How calibrated pooled out-of-fold predictions are, and what Platt recalibration does to them.

    ``folds``: each fold's (labels, probabilities). ``slope``/``intercept``: the Platt map of all of them (slope 1,
    intercept 0: calibrated; above 1: under-confident). ``brier``/``ece``: of the pooled predictions as they are;
    ``brier_recalibrated``/``ece_recalibrated``: with each fold recalibrated by the map fitted on the *other* folds,
    so that no case's recalibration saw its label. None with fewer than two folds or one class in a fold's complement.
    """
    from sklearn.metrics import brier_score_loss

    from mammofuse.evaluation.metrics import expected_calibration_error

    if len(folds) < 2:
        return None
    labels = np.concatenate([np.asarray(y, dtype=int) for y, _ in folds])
    probs = np.concatenate([np.asarray(p, dtype=np.float64) for _, p in folds])
    try:
        pooled = fit_platt(labels, probs)
        recalibrated = np.concatenate([
            fit_platt(*_others(folds, k)).apply(p) for k, (_, p) in enumerate(folds)
        ])
    except MammofuseError:
        return None
    return {
        **pooled.as_dict(),
        "brier": float(brier_score_loss(labels, probs, pos_label=1)),
        "ece": expected_calibration_error(labels, probs),
        "brier_recalibrated": float(brier_score_loss(labels, recalibrated, pos_label=1)),
        "ece_recalibrated": expected_calibration_error(labels, recalibrated),
    }


def _others(folds: Sequence[tuple[Sequence[int], Sequence[float]]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The labels and probabilities of every fold but ``k``."""
    rest = [fold for j, fold in enumerate(folds) if j != k]
    return np.concatenate([np.asarray(y, dtype=int) for y, _ in rest]), np.concatenate([np.asarray(p, dtype=np.float64) for _, p in rest])
