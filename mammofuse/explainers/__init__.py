"""Explanations of single cases: Grad-CAM, clinical SHAP, LIME, cross-attention, an HTML report.

Each method is a plug-in (:class:`ExplanationMethod`, one module each under
:mod:`mammofuse.explainers.methods`) in a registry (:data:`METHODS`); :func:`explain_case` runs
those chosen that apply to the model and returns an :class:`Explanation`.

Importing this package is light (the CLI lists the methods at start-up); the names that need
torch (``explain_case``, ``explain_file``, ``check_options``, ``output_folders``, ``GradCAM``, ``grad_cam``)
load on first use.

Example:
    >>> sample = Sample(id="scan.dcm", patient_id="", label=-1, image_path="scan.dcm",
    ...                 clinical={"density": "3", "margin": "spiculated"})  # doctest: +SKIP
    >>> result = explain_file(model, sample, Path("explanations/scan"), ["gradcam", "shap"])  # doctest: +SKIP
    >>> result.to_dict()["decision"]  # doctest: +SKIP
    'malignant'

:func:`explain_file` is :func:`explain_case` with the options spelled out (what ``mammofuse.api.explain`` calls).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mammofuse.explainers.explanation import Explanation
from mammofuse.explainers.methods import (
    METHODS,
    CaseContext,
    Contribution,
    ExplanationMethod,
    MethodResult,
    available_methods,
    default_selection,
    describe_choices,
    get_method,
    select_methods,
)
from mammofuse.explainers.options import DEFAULT_LAYER, DEFAULT_LIME_SAMPLES, ExplainOptions

if TYPE_CHECKING:
    from mammofuse.explainers.gradcam import GradCAM, grad_cam
    from mammofuse.explainers.runner import check_options, explain_case, explain_file, output_folders

_LAZY = {
    "GradCAM": "mammofuse.explainers.gradcam",
    "grad_cam": "mammofuse.explainers.gradcam",
    "check_options": "mammofuse.explainers.runner",
    "explain_case": "mammofuse.explainers.runner",
    "explain_file": "mammofuse.explainers.runner",
    "output_folders": "mammofuse.explainers.runner",
}

__all__ = [
    "DEFAULT_LAYER", "DEFAULT_LIME_SAMPLES", "METHODS", "CaseContext", "Contribution", "ExplainOptions", "Explanation",
    "ExplanationMethod", "GradCAM", "MethodResult", "available_methods", "check_options", "default_selection", "describe_choices", "explain_case",
    "explain_file", "get_method", "grad_cam", "output_folders", "select_methods",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
