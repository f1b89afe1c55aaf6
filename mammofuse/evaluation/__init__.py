"""Honest evaluation: metrics with patient-bootstrap intervals, leakage guards, plots and the ablation.

Importing this package does not import torch; the modules that score models (``evaluate``, ``ablation``) do.
"""

from mammofuse.evaluation.ablation_results import AblationResult, ArmSummary, FoldResult
from mammofuse.evaluation.leakage import (
    LEAKAGE_CHECKLIST,
    SUSPICIOUS_AUC,
    overlap_warning,
    patient_overlap,
)
from mammofuse.evaluation.metrics import (
    binary_metrics,
    bootstrap_auc,
    evaluate_predictions,
    expected_calibration_error,
)
from mammofuse.evaluation.reference import PAPER_CLAIM, comparison

__all__ = [
    "LEAKAGE_CHECKLIST", "PAPER_CLAIM", "SUSPICIOUS_AUC", "AblationResult", "ArmSummary", "FoldResult", "binary_metrics", "bootstrap_auc",
    "comparison", "evaluate_predictions", "expected_calibration_error", "overlap_warning", "patient_overlap",
]

