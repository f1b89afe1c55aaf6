"""The Grad-CAM plug-in: the raw map as ``gradcam.npy`` and an overlay ``gradcam.png`` (:mod:`mammofuse.explainers.gradcam`)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from mammofuse.explainers.methods.base import CaseContext, ExplanationMethod, MethodResult
from mammofuse.explainers.report import ReportSection

if TYPE_CHECKING:
    from mammofuse.explainers.options import ExplainOptions
    from mammofuse.model import MammoFuse


class GradCAMMethod(ExplanationMethod):
    """Grad-CAM of the malignancy logit at ``options.layer``, clinical findings held fixed."""

    name = "gradcam"
    title = "Grad-CAM"
    outputs = {"gradcam": "gradcam.png", "gradcam_npy": "gradcam.npy"}

    def applies_to(self, model: MammoFuse) -> str | None:
        return None if model.config.uses_image else "the model is clinical-only (no image branch)"

    def check(self, model: MammoFuse, options: ExplainOptions) -> None:
        from mammofuse.explainers.gradcam import resolve_layer

        resolve_layer(model, options.layer)

    def run(self, case: CaseContext) -> MethodResult:
        import numpy as np

        from mammofuse.atomic import write_bytes
        from mammofuse.explainers.gradcam import grad_cam, is_flat, plot_gradcam
        from mammofuse.explainers.render import mirror_label

        inputs, layer = case.inputs, case.options.layer
        cam = grad_cam(case.model, inputs.image, inputs.clinical, inputs.mask, layer, **inputs.extra())
        raw = io.BytesIO()
        np.save(raw, cam.astype(np.float32))
        info = inputs.info
        png = plot_gradcam(cam, inputs.view, layer, mirror_label(info.flipped, info.laterality) if info else None)
        paths = self.paths(case.folder)
        write_bytes(paths["gradcam_npy"], raw.getvalue())
        write_bytes(paths["gradcam"], png)
        text = (
            f"Where the image features at {layer} pushed the malignancy score up (clinical findings held fixed): "
            "regions whose features raised the score, not a localisation of the lesion. "
            f"Raw map {cam.shape[0]} x {cam.shape[1]} in gradcam.npy, normalised to its maximum here."
        )
        notes = []
        if cam.max() <= 0:
            text += " The map is zero everywhere: no region of this layer raised the score."
            notes.append("Grad-CAM is zero everywhere: no positive evidence at this layer")
        elif is_flat(cam):
            text += " The map holds one value everywhere, so it shows no location and is not drawn."
            notes.append(f"Grad-CAM at {layer} is a {cam.shape[0]} x {cam.shape[1]} map of one value: no location at this layer "
                         "for this input size; explain at an earlier layer (--layer, e.g. backbone.layer3 for a ResNet)")
        return MethodResult(paths, ReportSection("Grad-CAM (image)", text, png=png, files=list(self.outputs.values())), notes)
