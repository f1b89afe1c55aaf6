"""What ``explain`` computes: the methods chosen and their settings (torch-free, so the CLI shares the defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from mammofuse.errors import MammofuseError
from mammofuse.explainers.methods import ExplanationMethod, default_selection, describe_choices, select_methods
from mammofuse.validation import MAX_LIME_SAMPLES, MAX_SEED, Rule, checked

DEFAULT_LAYER = "backbone.layer4"
DEFAULT_LIME_SAMPLES = 500
_RULES = {"lime_samples": Rule(int, 10, MAX_LIME_SAMPLES), "seed": Rule(int, 0, MAX_SEED), "layer": Rule(str), "include_identifiers": Rule(bool)}


def chosen_methods(methods: str | Iterable[str] | None) -> tuple[str, ...]:
    """The method names or groups a user gave, as ``--methods`` and ``methods=`` take them: one comma-separated string
    or a list of names, in any case, spaces and repeats dropped (None: :func:`default_selection`).

    Raises:
        MammofuseError: no name at all (an empty list or string).
        TypeError: a name that is not a string.
    """
    if methods is None:
        return default_selection()
    names = list(methods) if isinstance(methods, Iterable) and not isinstance(methods, str) else [methods]
    wrong = [n for n in names if not isinstance(n, str)]
    if wrong:
        raise TypeError(f"methods must be a method name (str) or a list of them, not {type(wrong[0]).__name__}")
    chosen = tuple(dict.fromkeys(part.strip().lower() for name in names for part in name.split(",") if part.strip()))
    if not chosen:
        raise MammofuseError(f"methods (--methods) is empty; choose from {describe_choices()}")
    return chosen


@dataclass(frozen=True)
class ExplainOptions:
    """What to compute and show.

    Attributes:
        methods: method names or groups (see :func:`~mammofuse.explainers.methods.available_methods`); all by default.
        lime_samples: perturbed samples for each LIME explanation (image and clinical).
        seed: seeds LIME (the other methods are deterministic).
        layer: the Grad-CAM layer, a dotted module name.
        include_identifiers: show the DICOM header's patient identifiers, dates and free-text descriptions in the report (left out by default).

    Raises:
        MammofuseError: an unknown method, a setting out of its bounds (10 to 100,000 LIME samples, a 32-bit seed).
    """

    methods: tuple[str, ...] = field(default_factory=default_selection)
    lime_samples: int = DEFAULT_LIME_SAMPLES
    seed: int = 0
    layer: str = DEFAULT_LAYER
    include_identifiers: bool = False

    def __post_init__(self) -> None:
        self.selected()
        for name, rule in _RULES.items():
            object.__setattr__(self, name, checked(name, getattr(self, name), rule))  # NumPy integers as ints

    def selected(self) -> list[ExplanationMethod]:
        """The chosen methods, in running order."""
        return select_methods(self.methods)

    def to_dict(self) -> dict[str, Any]:
        return {"methods": list(self.methods), "lime_samples": self.lime_samples, "seed": self.seed, "layer": self.layer,
                "include_identifiers": self.include_identifiers}
