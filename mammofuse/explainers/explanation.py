"""The typed result of explaining one case; ``explanation.json`` is its :meth:`Explanation.to_dict`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammofuse import RESEARCH_NOTICE
from mammofuse.explainers.methods import Contribution
from mammofuse.explainers.options import ExplainOptions
from mammofuse.results import path_digest, record_path


@dataclass
class Explanation:
    """What explaining one case produced.

    Attributes:
        source: the file explained.
        folder: where its outputs went.
        probability: the model's P(malignant).
        logit: the model's raw score.
        threshold: the model's decision threshold.
        decision: ``malignant`` or ``benign`` (:func:`mammofuse.results.decide`).
        model: the model's name (registered name, folder or Hub id; may be empty).
        fusion: the model's fusion variant.
        backbone: its image backbone, or None for a clinical-only model.
        clinical: the findings as the model read them, by field (None where not given).
        options: what was asked for.
        outputs: output name -> file written (``report`` and ``summary`` included).
        notes: methods skipped and why, and other remarks, in running order.
        top_contributions: the given fields' SHAP values in probability, largest first (empty without SHAP).
        seconds: time per step (``read_and_predict``, each method's name, ``total``).
        view: where the region drawn under the maps (and ``gradcam.npy``) lies in the file: ``box``, its
            (top, bottom, left, right) in the file's own pixels, and ``mirrored``, True when it is drawn
            mirrored left to right (the reader turns every breast to face the same way); empty for a clinical-only
            model, which reads no pixels.

    Example:
        >>> result = explain_case(model, sample, Path("explanations/scan"))  # doctest: +SKIP
        >>> result.decision, round(result.probability, 3)  # doctest: +SKIP
        ('malignant', 0.912)
        >>> json.dumps(result.to_dict())  # doctest: +SKIP
    """

    source: str
    folder: Path
    probability: float
    logit: float
    threshold: float
    decision: str
    model: str
    fusion: str
    backbone: str | None
    weights_digest: str
    clinical: dict[str, str | None]
    options: ExplainOptions
    outputs: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    top_contributions: list[Contribution] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    view: dict[str, Any] = field(default_factory=dict)

    @property
    def model_description(self) -> str:
        """The model as the report names it: ``name (cross fusion, resnet50; weights 0123456789abcdef)``."""
        return f"{self.model or 'model'} ({self.fusion} fusion" + (f", {self.backbone}" if self.backbone else "") + f"; weights {self.weights_digest})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record: ``source`` as records carry a path (:func:`~mammofuse.results.record_path`) and
        ``source_digest``, its file's (:func:`~mammofuse.results.path_digest`, whatever the working folder), output files
        by name relative to ``folder``, seconds to the millisecond, the notice."""
        return {
            "source": record_path(self.source),
            "source_digest": path_digest(self.source),
            "probability": self.probability,
            "logit": self.logit,
            "threshold": self.threshold,
            "decision": self.decision,
            "model": self.model,
            "weights_digest": self.weights_digest,
            "fusion": self.fusion,
            "backbone": self.backbone,
            "clinical": dict(self.clinical),
            "options": self.options.to_dict(),
            "outputs": {name: path.name for name, path in self.outputs.items()},
            "top_clinical_contributions": [{"field": c.label, "value": c.value, "shap": c.shap} for c in self.top_contributions],
            "notes": list(self.notes),
            "seconds": {step: round(s, 3) for step, s in self.seconds.items()},
            "view": dict(self.view),
            "notice": RESEARCH_NOTICE,
        }
