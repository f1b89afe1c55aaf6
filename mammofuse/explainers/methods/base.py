"""The plug-in contract of an explanation method, and the case every method is handed.

A method says whether it applies to a model (and why not), checks its options before any
work, then runs: it computes, draws its own figure, writes its files into the case's folder
and returns them by name with its section of the report. Torch-free at import (the CLI lists
the methods): a method imports its computation inside :meth:`ExplanationMethod.run`.

Example:
    >>> class Saliency(ExplanationMethod):  # doctest: +SKIP
    ...     name, title, outputs = "saliency", "saliency", {"saliency": "saliency.png"}
    ...     def applies_to(self, model):
    ...         return None if model.config.uses_image else "the model is clinical-only"
    ...     def run(self, case):
    ...         write_bytes(case.folder / "saliency.png", draw(case))
    ...         return MethodResult(self.paths(case.folder), ReportSection("Saliency", "..."))

    An instance added to :data:`mammofuse.explainers.methods.METHODS` is chosen, run and reported like the others.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from mammofuse.explainers.report import ReportSection

if TYPE_CHECKING:
    from mammofuse.clinical.schema import ClinicalSchema
    from mammofuse.explainers.inputs import CaseInputs, FixedImageScorer
    from mammofuse.explainers.options import ExplainOptions
    from mammofuse.model import MammoFuse


class Contribution(NamedTuple):
    """How much one given clinical field moved P(malignant) (its SHAP value in probability)."""

    label: str
    value: str | None
    shap: float


@dataclass
class CaseContext:
    """One case as every method sees it: the model, its inputs, the findings, where files go.

    Attributes:
        model: the model explained (in eval mode).
        inputs: the model's exact inputs and the view drawn under overlays.
        schema: the model's clinical vocabulary.
        decoded: the findings as the model read them, by field (None where not given).
        folder: where the method writes its files.
        options: what the user asked for (LIME samples, seed, Grad-CAM layer).
    """

    model: MammoFuse
    inputs: CaseInputs
    schema: ClinicalSchema
    decoded: dict[str, str | None]
    folder: Path
    options: ExplainOptions

    @cached_property
    def image_scorer(self) -> FixedImageScorer:
        """Scores of clinical variations with the image fixed; its features computed once, for every method."""
        from mammofuse.explainers.inputs import FixedImageScorer

        return FixedImageScorer(self.model, self.inputs)


@dataclass
class MethodResult:
    """What a method produced for one case.

    Attributes:
        outputs: output name -> file written.
        section: its part of the report.
        notes: remarks for the reader (e.g. a map that is zero everywhere).
        contributions: per-field attributions for the summary (SHAP only), largest first.
    """

    outputs: dict[str, Path]
    section: ReportSection
    notes: list[str] = field(default_factory=list)
    contributions: list[Contribution] | None = None


class ExplanationMethod(ABC):
    """One explanation method: a name, when it applies, and how it runs.

    Attributes:
        name: the registry key, the ``--methods`` name and the step name reported while it runs.
        title: how notes name it (``"Grad-CAM skipped: ..."``).
        group: a ``--methods`` shorthand that selects it with its siblings (``lime``), or None.
        outputs: output name -> file name of everything it writes.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    group: ClassVar[str | None] = None
    outputs: ClassVar[dict[str, str]]

    def applies_to(self, model: MammoFuse) -> str | None:
        """None when the method can explain ``model``, else why not (a clause, e.g. "the model is image-only")."""
        return None

    def applies_to_case(self, case: CaseContext) -> str | None:
        """None when the method can explain this case, else why not (e.g. no finding to attend to)."""
        return None

    def check(self, model: MammoFuse, options: ExplainOptions) -> None:
        """Raise :class:`~mammofuse.errors.MammofuseError` for options it cannot use with ``model``, before any work (none by default)."""
        return None

    @abstractmethod
    def run(self, case: CaseContext) -> MethodResult:
        """Compute, draw, write its files into ``case.folder`` and return them with its report section.

        Files are written with :mod:`mammofuse.atomic` (which creates the folder), so a failure leaves no partial file.
        """

    def paths(self, folder: Path) -> dict[str, Path]:
        """Its outputs by name, as files in ``folder``."""
        return {name: folder / file for name, file in self.outputs.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
