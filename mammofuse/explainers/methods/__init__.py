"""The explanation methods, one plug-in module each, by name in the order they run and appear in the report.

Torch-free at import, so the CLI lists them in ``--help``; each method loads its computation
when it runs.

Example:
    >>> available_methods()
    ('gradcam', 'shap', 'lime_clinical', 'lime_image', 'attention')
    >>> [m.name for m in select_methods(["lime"])]
    ['lime_clinical', 'lime_image']
    >>> get_method("gradcam").applies_to(clinical_only_model)  # doctest: +SKIP
    'the model is clinical-only (no image branch)'
"""

from __future__ import annotations

from typing import Iterable

from mammofuse.errors import MammofuseError
from mammofuse.explainers.methods.attention import AttentionMethod
from mammofuse.explainers.methods.base import CaseContext, Contribution, ExplanationMethod, MethodResult
from mammofuse.explainers.methods.gradcam import GradCAMMethod
from mammofuse.explainers.methods.lime_image import ImageLimeMethod
from mammofuse.explainers.methods.lime_tabular import ClinicalLimeMethod
from mammofuse.explainers.methods.shap import ShapMethod

METHODS: dict[str, ExplanationMethod] = {
    m.name: m for m in (GradCAMMethod(), ShapMethod(), ClinicalLimeMethod(), ImageLimeMethod(), AttentionMethod())
}

__all__ = [
    "METHODS", "CaseContext", "Contribution", "ExplanationMethod", "MethodResult", "available_methods", "default_selection",
    "describe_choices", "get_method", "method_groups", "select_methods",
]


def available_methods() -> tuple[str, ...]:
    """Every method's name, in running order."""
    return tuple(METHODS)


def method_groups() -> dict[str, tuple[str, ...]]:
    """Shorthands for several methods (``lime``: both LIMEs)."""
    groups: dict[str, tuple[str, ...]] = {}
    for method in METHODS.values():
        if method.group:
            groups[method.group] = (*groups.get(method.group, ()), method.name)
    return groups


def default_selection() -> tuple[str, ...]:
    """Every method, siblings named by their group: ``("gradcam", "shap", "lime", "attention")``."""
    return tuple(dict.fromkeys(m.group or m.name for m in METHODS.values()))


def get_method(name: str) -> ExplanationMethod:
    """The method called ``name``.

    Raises:
        MammofuseError: no such method (the message lists them).
    """
    if name not in METHODS:
        raise MammofuseError(f"unknown explanation method {name!r}; choose from {describe_choices()}")
    return METHODS[name]


def select_methods(names: Iterable[str]) -> list[ExplanationMethod]:
    """The methods that ``names`` (method names or groups) choose, in running order.

    Raises:
        MammofuseError: an unknown name (all unknown names are listed).
    """
    names = list(names)
    groups = method_groups()
    unknown = [n for n in names if n not in METHODS and n not in groups]
    if unknown:
        raise MammofuseError(f"unknown explanation method {', '.join(map(repr, unknown))}; choose from {describe_choices()}")
    chosen = {member for n in names for member in groups.get(n, (n,))}
    return [m for name, m in METHODS.items() if name in chosen]


def describe_choices() -> str:
    """The names ``--methods`` accepts, for help and error messages."""
    shorthands = "; ".join(f"{group} = {', '.join(members)}" for group, members in method_groups().items())
    return ", ".join(METHODS) + (f" ({shorthands})" if shorthands else "")
