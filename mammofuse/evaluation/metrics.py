"""Metric definitions, in one place: scikit-learn for every formula, patients for every interval.

All functions are pure (arrays in, plain dicts out). A metric that is undefined on the data
(ROC-AUC with one class present, precision with no positive call, ...) is ``None`` and the
reason is added to ``notes``; nothing here raises for a degenerate but valid evaluation set.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterator, Sequence

import numpy as np

from mammofuse.results import MALIGNANT, decide

METRIC_NAMES = ("auc", "pr_auc", "accuracy", "f1", "precision", "recall", "sensitivity", "specificity", "brier", "ece")
ECE_BINS = 10
MIN_BOOTSTRAP_PATIENTS = 5  # below this a patient bootstrap interval is noise, so none is given


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE with equal-width bins: sum over bins of (bin share) x |observed rate - mean probability|.

    Uses ``sklearn.calibration.calibration_curve`` for the per-bin rates and reproduces its
    binning only to weight each bin by its number of cases (which the function does not return).
    """
    from sklearn.calibration import calibration_curve

    labels, probs = np.asarray(labels), np.asarray(probs, dtype=float)
    observed, predicted = calibration_curve(labels, probs, n_bins=n_bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], probs), minlength=n_bins)
    counts = counts[counts > 0]
    return float(np.sum(counts / len(probs) * np.abs(observed - predicted)))


def auc_or_none(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC-AUC, or None when only one class is present."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probs)) if len(np.unique(labels)) == 2 else None


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The probability cut-off maximising sensitivity + specificity - 1 (Youden's J); 0.5 with one class."""
    from sklearn.metrics import roc_curve

    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, probs)
    finite = np.isfinite(thresholds)
    best = int(np.argmax(np.where(finite, tpr - fpr, -np.inf)))
    return float(np.clip(thresholds[best], 0.0, 1.0))


def binary_metrics(labels: Sequence[int], probs: Sequence[float], threshold: float) -> dict[str, Any]:
    """Ranking, threshold and calibration metrics of one set of predictions.

    Args:
        labels: 1 malignant, 0 benign.
        probs: predicted probabilities of malignancy.
        threshold: the model's stored operating point (chosen on validation data); a case is
            called malignant when its probability is >= threshold.

    Returns:
        ``n``, ``positives``, ``auc``, ``pr_auc``, ``accuracy``, ``f1``, ``precision``,
        ``recall`` (= ``sensitivity``), ``specificity``, ``brier``, ``ece``, ``threshold``,
        ``confusion`` ({tn, fp, fn, tp}) and ``notes`` (why a metric is None).

    Example:
        >>> binary_metrics([0, 1, 1], [0.2, 0.7, 0.4], threshold=0.5)["recall"]
        0.5
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        brier_score_loss,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
    )

    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    notes: list[str] = []
    out: dict[str, Any] = {"n": int(len(y)), "positives": int(y.sum()), "threshold": float(threshold)}
    if len(y) == 0:
        out.update({k: None for k in METRIC_NAMES})
        out["confusion"] = None
        out["notes"] = ["no cases to evaluate"]
        return out
    two_classes = len(np.unique(y)) == 2
    if two_classes:
        out["auc"] = auc_or_none(y, p)
        out["pr_auc"] = float(average_precision_score(y, p))
    else:
        out["auc"] = out["pr_auc"] = None
        notes.append(f"only {'malignant' if y[0] else 'benign'} cases: ROC-AUC and PR-AUC are undefined")
    called = np.array([decide(float(v), threshold) == MALIGNANT for v in p], dtype=int)  # the rule of every command
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, called, labels=[0, 1]).ravel())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["accuracy"] = float(accuracy_score(y, called))
        out["precision"] = _finite_or_none(precision_score(y, called, zero_division=np.nan))
        out["recall"] = _finite_or_none(recall_score(y, called, zero_division=np.nan))
        out["specificity"] = _finite_or_none(recall_score(y, called, pos_label=0, zero_division=np.nan))
        out["f1"] = _finite_or_none(f1_score(y, called, zero_division=np.nan))
    out["sensitivity"] = out["recall"]
    if out["precision"] is None:
        notes.append("no case called malignant at the threshold: precision is undefined")
    if out["recall"] is None:
        notes.append("no malignant case: recall/sensitivity is undefined")
    if out["specificity"] is None:
        notes.append("no benign case: specificity is undefined")
    if out["f1"] is None:
        notes.append("F1 is undefined (no malignant case and none called malignant)")
    out["brier"] = float(brier_score_loss(y, p, pos_label=1))
    out["ece"] = expected_calibration_error(y, p)
    out["confusion"] = {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    out["notes"] = notes
    return out


def _patient_index(groups: Sequence[str]) -> list[np.ndarray]:
    order: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(str(g), []).append(i)
    return [np.asarray(v) for v in order.values()]


def _patient_resamples(patients: list[np.ndarray], labels: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Case indices of ``n_boot`` patient-level bootstrap resamples; those with one class are skipped."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        idx = np.concatenate([patients[j] for j in rng.integers(0, len(patients), len(patients))])
        if labels[idx].min() != labels[idx].max():
            yield idx


def bootstrap_auc(
    labels: Sequence[int], probs: Sequence[float], groups: Sequence[str], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ROC-AUC, resampling *patients* (all of a patient's lesions together).

    Lesions of one patient are correlated; resampling lesions would give intervals that are
    too narrow. Resamples that hold a single class are skipped (rare unless the data is tiny).
    Returns None when fewer than ``MIN_BOOTSTRAP_PATIENTS`` patients, one class only, ``n_boot`` < 1, or fewer than half the resamples had both classes.
    """
    from sklearn.metrics import roc_auc_score

    y, p = np.asarray(labels, dtype=int), np.asarray(probs, dtype=float)
    patients = _patient_index(groups)
    if n_boot < 1 or len(patients) < MIN_BOOTSTRAP_PATIENTS or len(np.unique(y)) < 2:
        return None
    aucs = [roc_auc_score(y[idx], p[idx]) for idx in _patient_resamples(patients, y, n_boot, seed)]
    if len(aucs) < n_boot / 2:
        return None
    alpha = (1 - level) / 2
    low, high = np.quantile(aucs, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_auc_difference(
    labels: Sequence[int], probs_a: Sequence[float], probs_b: Sequence[float], groups: Sequence[str],
    n_boot: int = 1000, seed: int = 0, level: float = 0.95,
) -> dict[str, Any] | None:
    """AUC(a) - AUC(b) on the same cases, with a paired patient-bootstrap interval.

    Both models are scored on each resample of patients, so the interval reflects the
    difference itself, not two independent intervals (which overlap far more easily).
    Returns ``difference``, ``ci`` ([low, high] or None) and ``p_a_not_better`` (the share of
    resamples where a does not beat b), or None when AUC is undefined.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=int)
    a, b = np.asarray(probs_a, dtype=float), np.asarray(probs_b, dtype=float)
    if len(np.unique(y)) < 2:
        return None
    out: dict[str, Any] = {"difference": float(roc_auc_score(y, a) - roc_auc_score(y, b)), "ci": None, "p_a_not_better": None}
    patients = _patient_index(groups)
    if n_boot < 1 or len(patients) < MIN_BOOTSTRAP_PATIENTS:
        return out
    diffs = [
        roc_auc_score(y[idx], a[idx]) - roc_auc_score(y[idx], b[idx])
        for idx in _patient_resamples(patients, y, n_boot, seed)
    ]
    if len(diffs) >= n_boot / 2:
        alpha = (1 - level) / 2
        out["ci"] = [float(v) for v in np.quantile(diffs, [alpha, 1 - alpha])]
        out["p_a_not_better"] = float(np.mean(np.asarray(diffs) <= 0))
    return out


def evaluate_predictions(
    labels: Sequence[int],
    probs: Sequence[float],
    groups: Sequence[str],
    threshold: float,
    abnormality: Sequence[str | None] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of ``binary_metrics`` plus ``auc_ci`` (patient bootstrap), with per-type ``subsets``.

    ``subsets`` holds ``mass`` and ``calc`` results (same keys) only when the data has both.
    """
    y, p = np.asarray(labels, dtype=int), np.asarray(probs, dtype=float)
    groups = [str(g) for g in groups]
    result = binary_metrics(y, p, threshold)
    ci = bootstrap_auc(y, p, groups, n_boot, seed) if result["auc"] is not None else None
    result["auc_ci"] = list(ci) if ci else None
    result["patients"] = len(set(groups))
    if result["auc"] is not None and ci is None and n_boot > 0:
        result["notes"].append(f"no bootstrap interval: {result['patients']} patients is too few (needs >= {MIN_BOOTSTRAP_PATIENTS} and both classes in most resamples)")
    result["subsets"] = {}
    if abnormality is not None:
        kinds = np.asarray([a or "" for a in abnormality])
        if {"mass", "calc"} <= set(kinds.tolist()):
            for kind in ("mass", "calc"):
                keep = kinds == kind
                sub = evaluate_predictions(y[keep], p[keep], [g for g, k in zip(groups, keep) if k], threshold, None, n_boot, seed)
                sub.pop("subsets")
                result["subsets"][kind] = sub
    return result
