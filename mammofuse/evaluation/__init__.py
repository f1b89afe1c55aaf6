"""Honest evaluation: metrics with patient-bootstrap intervals, leakage guards, plots and the ablation.

Torch is only imported by the functions that score models (``evaluate_model``, ``run_ablation``); the
ablation's result types are imported lazily (PEP 562) because their module imports the trainer.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from mammofuse.evaluation.ablation import AblationResult, ArmSummary, FoldResult

_LAZY = {"AblationResult": "mammofuse.evaluation.ablation", "ArmSummary": "mammofuse.evaluation.ablation", "FoldResult": "mammofuse.evaluation.ablation"}

__all__ = [
    "LEAKAGE_CHECKLIST", "PAPER_CLAIM", "SUSPICIOUS_AUC", "AblationResult", "ArmSummary", "FoldResult", "binary_metrics", "bootstrap_auc",
    "comparison", "evaluate_predictions", "expected_calibration_error", "overlap_warning", "patient_overlap",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'mammofuse.evaluation' has no attribute {name!r}")
