"""The cross-attention plug-in: one panel per clinical field given, ``attention.png`` (:mod:`mammofuse.explainers.attention`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mammofuse.explainers.methods.base import CaseContext, ExplanationMethod, MethodResult
from mammofuse.explainers.report import ReportSection
from mammofuse.fusion import Fusion

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
        given = int(case.inputs.mask.sum())
        if not given:
            return "no clinical finding given, so the image had nothing to attend to"
        if given == 1 and case.model.config.fusion != Fusion.CO:  # co-attention still draws the finding's attention to the image
            return "one clinical finding given, so every image region's attention went to it (a softmax over one): nothing to draw"
        return None

    def run(self, case: CaseContext) -> MethodResult:
        from mammofuse.atomic import write_bytes
        from mammofuse.explainers.attention import attention_maps, plot_attention

        maps = attention_maps(case.model, case.inputs, case.image_scorer)
        fields = case.schema.fields
        png = plot_attention(maps, case.inputs.view, [f.label for f in fields], [case.decoded[f.name] for f in fields])
        paths = self.paths(case.folder)
        write_bytes(paths["attention"], png)
        if len(maps.fields) == 1:  # a co model's (applies_to_case leaves a cross model out)
            text = ("How strongly the one clinical field given attended to each image region (co-attention; heads averaged). Every "
                    "region's attention over the findings went to it (a softmax over one), so that row is not drawn.")
        else:
            text = "How strongly each image region attended to each clinical field given (heads averaged); absent fields are masked out."
            if maps.clinical_to_image is not None:
                text += " Second row: how strongly each field attended to each region (co-attention)."
        return MethodResult(paths, ReportSection("Cross-attention", text, png=png, files=list(self.outputs.values())))
