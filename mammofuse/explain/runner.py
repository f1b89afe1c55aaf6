"""Explain one case with every method that applies and write its folder of outputs.

Each method writes its own files atomically (``mammofuse.atomic``); ``report.html`` gathers
them. A method that does not apply to the model (Grad-CAM for a clinical-only model,
attention for a model without cross-attention) is skipped with a note, not an error.

Example:
    >>> from mammofuse.hub import load_pretrained  # doctest: +SKIP
    >>> model = load_pretrained()  # doctest: +SKIP
    >>> sample = Sample(id="scan", patient_id="", label=-1, clinical={"margin": "spiculated"}, image_path="scan.dcm")
    >>> result = explain_case(model, sample, Path("explanations/scan"))  # doctest: +SKIP
    >>> sorted(result.outputs)  # doctest: +SKIP
    ['attention', 'gradcam', 'gradcam_npy', 'lime_clinical', 'lime_image', 'report', 'shap_json', 'shap_png', 'summary']
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mammofuse import RESEARCH_NOTICE
from mammofuse.atomic import write_bytes, write_text
from mammofuse.clinical import load_schema
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError
from mammofuse.explain.gradcam import DEFAULT_LAYER
from mammofuse.explain.inputs import (
    CaseInputs,
    FixedClinicalScorer,
    FixedImageScorer,
    prepare_inputs,
    sigmoid,
)
from mammofuse.explain.report import ReportData, ReportSection, render_report
from mammofuse.model import MammoFuse

METHODS = ("gradcam", "shap", "lime", "attention")
DEFAULT_LIME_SAMPLES = 500


@dataclass(frozen=True)
class ExplainOptions:
    """What to compute.

    Attributes:
        methods: any of ``METHODS``.
        lime_samples: perturbed samples for each LIME explanation (image and clinical).
        seed: seeds LIME (the other methods are deterministic).
        layer: the Grad-CAM layer, a dotted module name.
    """

    methods: tuple[str, ...] = METHODS
    lime_samples: int = DEFAULT_LIME_SAMPLES
    seed: int = 0
    layer: str = DEFAULT_LAYER

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise MammofuseError(f"unknown explanation method {', '.join(map(repr, unknown))}; choose from {', '.join(METHODS)}")
        if self.lime_samples < 10:
            raise MammofuseError(f"--lime-samples must be at least 10, not {self.lime_samples}")


@dataclass
class CaseExplanation:
    """What explaining one case produced.

    Attributes:
        source: the file explained.
        folder: where its outputs went.
        probability, decision: the model's answer (decision at the model's threshold).
        outputs: output name -> file written.
        notes: methods skipped and why, and other remarks.
        top_contributions: (field label, value, SHAP in probability) of the given fields, largest first.
        seconds: time per method.
    """

    source: str
    folder: Path
    probability: float
    decision: str
    outputs: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    top_contributions: list[tuple[str, str | None, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes(path, buffer.getvalue())


def explain_case(
    model: MammoFuse,
    sample: Sample,
    folder: Path,
    options: ExplainOptions = ExplainOptions(),
    model_name: str = "",
    on_step: Callable[[str], None] | None = None,
) -> CaseExplanation:
    """Explain ``sample`` with ``model`` and write every output into ``folder``.

    Raises:
        MammofuseError: the file cannot be read, or the Grad-CAM layer is invalid.
    """
    model.eval()
    device = next(model.parameters()).device
    started = time.perf_counter()
    inputs = prepare_inputs(model, sample, device)
    with torch.no_grad():
        logit = float(model(inputs.image, inputs.clinical, inputs.mask, **inputs.extra()).logits[0])
    probability = float(sigmoid(logit))
    threshold = float(model.config.threshold)
    result = CaseExplanation(
        source=inputs.source, folder=folder, probability=probability,
        decision="malignant" if probability >= threshold else "benign",
    )
    result.seconds["read_and_predict"] = time.perf_counter() - started
    schema = load_schema(model.config.vocabulary)
    decoded = schema.decode(inputs.clinical[0].cpu().numpy(), inputs.mask[0].cpu().numpy())
    scorer = FixedImageScorer(model, inputs)
    sections: list[ReportSection] = []

    def step(name: str, run: Callable[[], list[ReportSection]]) -> None:
        if on_step:
            on_step(name)
        t = time.perf_counter()
        sections.extend(run())
        result.seconds[name] = time.perf_counter() - t

    if "gradcam" in options.methods:
        if model.config.uses_image:
            step("gradcam", lambda: _gradcam(model, inputs, folder, options, result))
        else:
            result.notes.append("Grad-CAM skipped: the model is clinical-only (no image branch)")
    if "shap" in options.methods:
        if model.config.uses_clinical:
            step("shap", lambda: _shap(scorer, inputs, schema, folder, result))
        else:
            result.notes.append("SHAP skipped: the model is image-only (it ignores clinical findings)")
    if "lime" in options.methods:
        if model.config.uses_clinical:
            step("lime_clinical", lambda: _lime_clinical(scorer, inputs, schema, folder, options, result))
        else:
            result.notes.append("clinical LIME skipped: the model is image-only")
        if model.config.uses_image:
            step("lime_image", lambda: _lime_image(model, inputs, folder, options, result))
        else:
            result.notes.append("image LIME skipped: the model is clinical-only")
    if "attention" in options.methods:
        if not model.config.kind.uses_attention:
            result.notes.append(f"attention skipped: {model.config.fusion!r} fusion has no cross-attention")
        elif not inputs.mask.any():
            result.notes.append("attention skipped: no clinical finding given, so the image had nothing to attend to")
        else:
            step("attention", lambda: _attention(model, scorer, inputs, schema, decoded, folder, result))

    summary = {
        "source": result.source,
        "probability": probability,
        "logit": logit,
        "threshold": threshold,
        "decision": result.decision,
        "model": model_name,
        "fusion": model.config.fusion,
        "backbone": model.config.backbone if model.config.uses_image else None,
        "clinical": {name: decoded[name] for name in schema.field_names},
        "options": {"methods": list(options.methods), "lime_samples": options.lime_samples, "seed": options.seed, "layer": options.layer},
        "outputs": {k: v.name for k, v in result.outputs.items()},
        "top_clinical_contributions": [{"field": l, "value": v, "shap": a} for l, v, a in result.top_contributions],
        "notes": result.notes,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "notice": RESEARCH_NOTICE,
    }
    write_text(folder / "explanation.json", json.dumps(summary, indent=2) + "\n")
    result.outputs["summary"] = folder / "explanation.json"
    report = ReportData(
        source=result.source,
        probability=probability,
        threshold=threshold,
        decision=result.decision,
        model=f"{model_name or 'model'} ({model.config.fusion} fusion"
        + (f", {model.config.backbone})" if model.config.uses_image else ")"),
        facts=_facts(inputs),
        clinical=[(f.label, decoded[f.name] or "not given") for f in schema.fields],
        sections=sections,
        notes=result.notes,
    )
    write_text(folder / "report.html", render_report(report))
    result.outputs["report"] = folder / "report.html"
    _remove_stale(folder, result.outputs.values())
    result.seconds["total"] = time.perf_counter() - started
    return result


OUTPUT_NAMES = (
    "gradcam.png", "gradcam.npy", "shap_clinical.png", "shap_clinical.json", "lime_clinical.html",
    "lime_image.html", "attention.png", "report.html", "explanation.json",
)


def _remove_stale(folder: Path, written: Any) -> None:
    """Delete outputs of an earlier run into the same folder that this run did not write (so the folder matches its report)."""
    keep = {Path(p).name for p in written}
    for name in OUTPUT_NAMES:
        if name not in keep:
            (folder / name).unlink(missing_ok=True)


def _facts(inputs: CaseInputs) -> list[tuple[str, str]]:
    info = inputs.info
    facts = [("file", inputs.source), ("format", info.format), ("size", f"{info.rows} x {info.columns}, {info.bits_stored} bits")]
    for tag, value in inputs.header.items():
        facts.append((tag, value))
    for name in ("patient_id", "laterality", "view", "modality"):
        value = getattr(info, name)
        if value and not (name == "patient_id" and "PatientID" in inputs.header):
            facts.append((name.replace("_", " "), str(value)))
    if info.flipped:
        facts.append(("orientation", "flipped so the breast lies on the left"))
    facts.extend(("warning", w) for w in info.warnings)
    return facts


def _gradcam(model: MammoFuse, inputs: CaseInputs, folder: Path, options: ExplainOptions, result: CaseExplanation) -> list[ReportSection]:
    from mammofuse.explain.gradcam import grad_cam, upsample
    from mammofuse.explain.render import (
        figure_png,
        new_figure,
        overlay_axes,
        view_figsize,
    )

    cam = grad_cam(model, inputs.image, inputs.clinical, inputs.mask, options.layer, **inputs.extra())
    _save_npy(folder / "gradcam.npy", cam.astype(np.float32))
    peak = float(cam.max())
    heat = upsample(cam / peak if peak > 0 else cam, inputs.view.shape)
    fig, axes = new_figure(view_figsize(inputs.view, 2), ncols=2)
    overlay_axes(axes[0], inputs.view)
    axes[0].set_title("region the model saw", fontsize=10)
    shown = overlay_axes(axes[1], inputs.view, heat)
    axes[1].set_title(f"Grad-CAM at {options.layer}\nevidence for malignancy", fontsize=10)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.02, label="relative strength")
    png = figure_png(fig)
    write_bytes(folder / "gradcam.png", png)
    result.outputs["gradcam"] = folder / "gradcam.png"
    result.outputs["gradcam_npy"] = folder / "gradcam.npy"
    text = (
        f"Where the image features at {options.layer} pushed the malignancy score up (clinical findings held fixed). "
        f"Raw map {cam.shape[0]} x {cam.shape[1]} in gradcam.npy, normalised to its maximum here."
    )
    if peak <= 0:
        text += " The map is zero everywhere: no region of this layer raised the score."
        result.notes.append("Grad-CAM is zero everywhere: no positive evidence at this layer")
    return [ReportSection("Grad-CAM (image)", text, png=png, files=["gradcam.png", "gradcam.npy"])]


def _shap(scorer: FixedImageScorer, inputs: CaseInputs, schema: Any, folder: Path, result: CaseExplanation) -> list[ReportSection]:
    from mammofuse.explain.shap_clinical import clinical_shapley, plot_shapley

    values = clinical_shapley(scorer, inputs.clinical[0].cpu().numpy(), inputs.mask[0].cpu().numpy(), schema)
    png = plot_shapley(values)
    write_bytes(folder / "shap_clinical.png", png)
    write_text(folder / "shap_clinical.json", json.dumps(values.as_dict(), indent=2) + "\n")
    result.outputs["shap_png"] = folder / "shap_clinical.png"
    result.outputs["shap_json"] = folder / "shap_clinical.json"
    result.top_contributions = values.ranked()
    if not inputs.mask.any():
        result.notes.append("SHAP: no clinical finding given, so every field contributes 0")
    text = (
        f"Exact Shapley values of each clinical field with the image held fixed; a field 'absent' is masked as if not given. "
        f"Baseline (no findings) {values.expected_value:.3f} + contributions = {values.output:.3f}."
    )
    table = [(f"{l} = {v}" if v else f"{l} (not given)", f"{a:+.4f}") for l, v, a in zip(values.labels, values.values, values.probability)]
    return [ReportSection("SHAP (clinical fields)", text, png=png, table=table, files=["shap_clinical.png", "shap_clinical.json"])]


def _lime_clinical(scorer: FixedImageScorer, inputs: CaseInputs, schema: Any, folder: Path, options: ExplainOptions, result: CaseExplanation) -> list[ReportSection]:
    from mammofuse.explain.lime_explain import lime_clinical

    tabular = lime_clinical(scorer, schema, inputs.sample.clinical, options.lime_samples, options.seed)
    write_text(folder / "lime_clinical.html", tabular.html)
    result.outputs["lime_clinical"] = folder / "lime_clinical.html"
    return [ReportSection(
        "LIME (clinical fields)",
        f"LIME's local linear model over the label-encoded clinical fields (image fixed); {options.lime_samples} samples, seed {options.seed}.",
        frame_html=tabular.html, table=[(n, f"{w:+.4f}") for n, w in tabular.weights], files=["lime_clinical.html"],
    )]


def _lime_image(model: MammoFuse, inputs: CaseInputs, folder: Path, options: ExplainOptions, result: CaseExplanation) -> list[ReportSection]:
    from mammofuse.explain.lime_explain import (
        lime_image,
        lime_image_html,
        plot_lime_image,
    )

    explained = lime_image(FixedClinicalScorer(model, inputs), inputs.image[0, 0].cpu().numpy(), options.lime_samples, options.seed)
    png = plot_lime_image(explained, inputs.view)
    write_text(folder / "lime_image.html", lime_image_html(png, explained, options.seed, inputs.source))
    result.outputs["lime_image"] = folder / "lime_image.html"
    return [ReportSection(
        "LIME (image superpixels)",
        f"Superpixels that raised (red) or lowered (blue) P(malignant) when switched off and on; clinical findings fixed. "
        f"{explained.num_samples} samples, seed {options.seed}, local model R\u00b2 {explained.score:.3f}.",
        png=png, files=["lime_image.html"],
    )]


def _attention(model: MammoFuse, scorer: FixedImageScorer, inputs: CaseInputs, schema: Any, decoded: dict, folder: Path, result: CaseExplanation) -> list[ReportSection]:
    from mammofuse.explain.attention import attention_maps, plot_attention

    maps = attention_maps(model, inputs, scorer)
    png = plot_attention(maps, inputs.view, [f.label for f in schema.fields], [decoded[n] for n in schema.field_names])
    write_bytes(folder / "attention.png", png)
    result.outputs["attention"] = folder / "attention.png"
    text = "How strongly each image region attended to each clinical field given (heads averaged); absent fields are masked out."
    if maps.clinical_to_image is not None:
        text += " Second row: how strongly each field attended to each region (co-attention)."
    return [ReportSection("Cross-attention", text, png=png, files=["attention.png"])]


def output_folders(sources: Sequence[str], out: Path) -> list[Path]:
    """One folder per input under ``out``, named by the file's stem (made unique, filesystem-safe)."""
    import re

    folders: list[Path] = []
    used: set[str] = set()
    for source in sources:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).stem).strip("._") or "case"
        name, n = stem, 2
        while name in used:
            name, n = f"{stem}_{n}", n + 1
        used.add(name)
        folders.append(out / name)
    return folders
