"""Explanations of single cases: Grad-CAM, clinical SHAP, LIME, cross-attention, an HTML report.

One module per method, a runner that applies those that fit the model, and the report.
Imports torch: the CLI loads this package inside the command only.
"""

from mammofuse.explain.gradcam import DEFAULT_LAYER, GradCAM, grad_cam
from mammofuse.explain.runner import (
    METHODS,
    CaseExplanation,
    ExplainOptions,
    explain_case,
    output_folders,
)

__all__ = ["DEFAULT_LAYER", "METHODS", "CaseExplanation", "ExplainOptions", "GradCAM", "explain_case", "grad_cam", "output_folders"]
