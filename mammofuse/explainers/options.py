"""What ``explain`` computes: the methods chosen and their settings (torch-free, so the CLI shares the defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mammofuse.errors import MammofuseError
from mammofuse.explainers.methods import ExplanationMethod, default_selection, select_methods

DEFAULT_LAYER = "backbone.layer4"
DEFAULT_LIME_SAMPLES = 500


@dataclass(frozen=True)
class ExplainOptions:
    """What to compute and show.

    Attributes:
        methods: method names or groups (see :func:`~mammofuse.explainers.methods.available_methods`); all by default.
        lime_samples: perturbed samples for each LIME explanation (image and clinical).
        seed: seeds LIME (the other methods are deterministic).
        layer: the Grad-CAM layer, a dotted module name.
        include_identifiers: show the DICOM header's patient identifiers and dates in the report (left out by default).

    Raises:
        MammofuseError: an unknown method, or fewer than 10 LIME samples.
    """

    methods: tuple[str, ...] = field(default_factory=default_selection)
    lime_samples: int = DEFAULT_LIME_SAMPLES
    seed: int = 0
    layer: str = DEFAULT_LAYER
    include_identifiers: bool = False

    def __post_init__(self) -> None:
        self.selected()
        if self.lime_samples < 10:
            raise MammofuseError(f"--lime-samples must be at least 10, not {self.lime_samples}")

    def selected(self) -> list[ExplanationMethod]:
        """The chosen methods, in running order."""
        return select_methods(self.methods)

    def to_dict(self) -> dict[str, Any]:
        return {"methods": list(self.methods), "lime_samples": self.lime_samples, "seed": self.seed, "layer": self.layer,
                "include_identifiers": self.include_identifiers}
