"""The cross-attention plug-in: one panel per clinical field given, ``attention.png`` (:mod:`mammofuse.explainers.attention`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mammofuse.explainers.methods.base import CaseContext, ExplanationMethod, MethodResult
from mammofuse.explainers.report import ReportSection

if TYPE_CHECKING:
    from mammofuse.model import MammoFuse


class AttentionMethod(ExplanationMethod):
    """Which clinical field each image region attended to (and back, for ``co`` models)."""

    name = "attention"
    title = "attention"
    outputs = {"attention": "attention.png"}

    def applies_to(self, model: MammoFuse) -> str | None:
        return None if model.config.kind.uses_attention else f"{model.config.fusion!r} fusion has no cross-attention"

    def applies_to_case(self, case: CaseContext) -> str | None:
        return None if case.inputs.mask.any() else "no clinical finding given, so the image had nothing to attend to"

    def run(self, case: CaseContext) -> MethodResult:
        from mammofuse.atomic import write_bytes
        from mammofuse.explainers.attention import attention_maps, plot_attention

        maps = attention_maps(case.model, case.inputs, case.image_scorer)
        fields = case.schema.fields
        png = plot_attention(maps, case.inputs.view, [f.label for f in fields], [case.decoded[f.name] for f in fields])
        paths = self.paths(case.folder)
        write_bytes(paths["attention"], png)
        text = "How strongly each image region attended to each clinical field given (heads averaged); absent fields are masked out."
        if maps.clinical_to_image is not None:
            text += " Second row: how strongly each field attended to each region (co-attention)."
        return MethodResult(paths, ReportSection("Cross-attention", text, png=png, files=list(self.outputs.values())))
