"""The clinical SHAP plug-in: a bar chart ``shap_clinical.png`` and the values ``shap_clinical.json`` (:mod:`mammofuse.explainers.shap_clinical`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mammofuse.explainers.methods.base import CaseContext, ExplanationMethod, MethodResult
from mammofuse.explainers.report import ReportSection
from mammofuse.jsontext import json_text

if TYPE_CHECKING:
    from mammofuse.model import MammoFuse


class ShapMethod(ExplanationMethod):
    """Exact Shapley values of the clinical fields, image held fixed; its ranking fills the summary's top contributions."""

    name = "shap"
    title = "SHAP"
    outputs = {"shap_png": "shap_clinical.png", "shap_json": "shap_clinical.json"}

    def applies_to(self, model: MammoFuse) -> str | None:
        return None if model.config.uses_clinical else "the model is image-only (it ignores clinical findings)"

    def run(self, case: CaseContext) -> MethodResult:
        from mammofuse.atomic import write_bytes, write_text
        from mammofuse.explainers.shap_clinical import clinical_shapley, plot_shapley

        inputs = case.inputs
        values = clinical_shapley(case.image_scorer, inputs.clinical[0].cpu().numpy(), inputs.mask[0].cpu().numpy(), case.schema)
        png = plot_shapley(values)
        paths = self.paths(case.folder)
        write_bytes(paths["shap_png"], png)
        write_text(paths["shap_json"], json_text(values.as_dict(), indent=2) + "\n")
        notes = [] if inputs.mask.any() else ["SHAP: no clinical finding given, so every field contributes 0"]
        text = (
            f"Exact Shapley values of each clinical field with the image held fixed; a field 'absent' is masked as if not given. "
            f"Baseline (no findings) {values.expected_value:.3f} + contributions = {values.output:.3f}."
        )
        table = [(caption, f"{a:+.4f}") for caption, a in zip(values.captions(), values.probability)]
        section = ReportSection("SHAP (clinical fields)", text, png=png, table=table, files=list(self.outputs.values()))
        return MethodResult(paths, section, notes, contributions=values.ranked())
