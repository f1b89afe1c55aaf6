"""The clinical (tabular) LIME plug-in: LIME's own page, framed with the case and the notice, ``lime_clinical.html``
(:mod:`mammofuse.explainers.lime_explain`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mammofuse.explainers.methods.base import CaseContext, ExplanationMethod, MethodResult
from mammofuse.explainers.report import ReportSection

if TYPE_CHECKING:
    from mammofuse.model import MammoFuse


class ClinicalLimeMethod(ExplanationMethod):
    """Tabular LIME over the label-encoded clinical fields, image held fixed; seeded."""

    name = "lime_clinical"
    title = "clinical LIME"
    group = "lime"
    outputs = {"lime_clinical": "lime_clinical.html"}

    def applies_to(self, model: MammoFuse) -> str | None:
        return None if model.config.uses_clinical else "the model is image-only"

    def run(self, case: CaseContext) -> MethodResult:
        from mammofuse.atomic import write_text
        from mammofuse.explainers.lime_explain import fit_notes, lime_clinical, lime_clinical_html

        samples, seed = case.options.lime_samples, case.options.seed
        tabular = lime_clinical(case.image_scorer, case.schema, case.inputs.sample.clinical, samples, seed)
        paths = self.paths(case.folder)
        write_text(paths["lime_clinical"], lime_clinical_html(tabular, samples, seed, case.inputs.source))
        return MethodResult(paths, ReportSection(
            "LIME (clinical fields)",
            f"LIME's local linear model over the label-encoded clinical fields (image fixed); {samples} samples, seed {seed}, "
            f"local model R\u00b2 {tabular.score:.3f}.",
            frame_html=tabular.html, table=[(n, f"{w:+.4f}") for n, w in tabular.weights], files=list(self.outputs.values()),
        ), fit_notes("clinical LIME", tabular.score))
