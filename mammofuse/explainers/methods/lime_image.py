"""The image LIME plug-in: superpixel weights drawn in ``lime_image.html`` (:mod:`mammofuse.explainers.lime_explain`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mammofuse.explainers.methods.base import CaseContext, ExplanationMethod, MethodResult
from mammofuse.explainers.report import ReportSection

if TYPE_CHECKING:
    from mammofuse.model import MammoFuse


class ImageLimeMethod(ExplanationMethod):
    """LIME over superpixels of the model input, clinical findings held fixed; seeded."""

    name = "lime_image"
    title = "image LIME"
    group = "lime"
    outputs = {"lime_image": "lime_image.html"}

    def applies_to(self, model: MammoFuse) -> str | None:
        return None if model.config.uses_image else "the model is clinical-only"

    def run(self, case: CaseContext) -> MethodResult:
        from mammofuse.atomic import write_text
        from mammofuse.explainers.inputs import FixedClinicalScorer
        from mammofuse.explainers.lime_explain import fit_notes, lime_image, lime_image_html, plot_lime_image

        inputs, seed = case.inputs, case.options.seed
        explained = lime_image(FixedClinicalScorer(case.model, inputs), inputs.image[0, 0].cpu().numpy(), case.options.lime_samples, seed)
        png = plot_lime_image(explained, inputs.view)
        paths = self.paths(case.folder)
        write_text(paths["lime_image"], lime_image_html(png, explained, seed, inputs.source))
        return MethodResult(paths, ReportSection(
            "LIME (image superpixels)",
            f"Superpixels that raised (red) or lowered (blue) P(malignant) when switched off and on; clinical findings fixed. "
            f"{explained.num_samples} samples, seed {seed}, local model R\u00b2 {explained.score:.3f}.",
            png=png, files=list(self.outputs.values()),
        ), fit_notes("image LIME", explained.score))
