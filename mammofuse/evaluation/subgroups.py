"""Performance by subgroup of the cases: breast density and view.

Reporting guidelines for medical-imaging models (CLAIM, TRIPOD+AI) ask for it, and with reason: a model may rank the
lesions of dense breasts, where tissue hides them, worse than those of fatty ones. Each subgroup gets its size, its
AUC with a patient-bootstrap interval, and sensitivity and specificity at the threshold each case was called at. A kind
of subgroup is reported only where the cases fall into two or more of its groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from mammofuse.evaluation.metrics import auc_or_none, bootstrap_auc
from mammofuse.results import MALIGNANT, decide

if TYPE_CHECKING:
    from mammofuse.data.sample import Sample

SUBGROUPS = ("density", "view")
"""The kinds of subgroup reported: the breast density as recorded (BI-RADS 1-4 or a-d) and the view (CC, MLO)."""
NOT_RECORDED = "not recorded"


def case_subgroups(sample: Sample) -> dict[str, str]:
    """The groups a case belongs to: its recorded breast density and, for a CBIS-DDSM image key, its view."""
    from mammofuse.data.cbis_images import parse_key

    groups = {}
    if density := sample.clinical.get("density"):
        groups["density"] = str(density)
    if parsed := parse_key(sample.image_id or ""):
        groups["view"] = parsed[2]
    return groups


def subgroup_metrics(
    labels: Sequence[int], probs: Sequence[float], patients: Sequence[str], thresholds: Sequence[float],
    groups: Sequence[Mapping[str, str]], n_boot: int, seed: int,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Metrics of each group of each kind in :data:`SUBGROUPS` (kind -> group -> metrics), for cases with ``labels``,
    ``probs``, ``patients``, the threshold each was called at, and the groups each belongs to (:func:`case_subgroups`).

    Each group: ``n``, ``positives``, ``auc`` and ``auc_ci`` (None with one class), ``sensitivity`` and ``specificity``
    (None without malignant, or benign, cases); cases without a group of a reported kind are counted under
    :data:`NOT_RECORDED`.
    """
    y, p = np.asarray(labels, dtype=int), np.asarray(probs, dtype=float)
    called = np.array([decide(prob, cut) == MALIGNANT for prob, cut in zip(p, thresholds)], dtype=bool)
    who = np.asarray([str(g) for g in patients])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in SUBGROUPS:
        values = [g.get(kind) for g in groups]
        known = sorted({v for v in values if v is not None})
        if len(known) < 2:
            continue
        table: dict[str, dict[str, Any]] = {}
        for value in known:
            keep = np.array([v == value for v in values])
            table[value] = _group(y[keep], p[keep], who[keep], called[keep], n_boot, seed)
        if unknown := sum(v is None for v in values):
            table[NOT_RECORDED] = {"n": unknown}
        out[kind] = table
    return out


def _group(y: np.ndarray, p: np.ndarray, patients: np.ndarray, called: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    malignant = y == 1
    auc = auc_or_none(y, p)
    ci = bootstrap_auc(y, p, list(patients), n_boot, seed) if auc is not None and n_boot else None
    return {
        "n": int(len(y)), "positives": int(malignant.sum()), "auc": auc, "auc_ci": list(ci) if ci else None,
        "sensitivity": float(called[malignant].mean()) if malignant.any() else None,
        "specificity": float((~called[~malignant]).mean()) if (~malignant).any() else None,
    }


def subgroup_lines(subgroups: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """One line per kind of subgroup: ``breast density: 1 0.920 [0.87, 0.96] (n 281, 120 malignant); 2 ...``."""
    names = {"density": "breast density", "view": "view"}
    lines = []
    for kind, table in subgroups.items():
        parts = []
        for value, m in table.items():
            if value == NOT_RECORDED:
                parts.append(f"{value}: n {m['n']}")
                continue
            auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
            ci = f" [{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]" if m.get("auc_ci") else ""
            parts.append(f"{value}: AUC {auc}{ci} (n {m['n']}, {m['positives']} malignant)")
        lines.append(f"{names.get(kind, kind)}: " + "; ".join(parts))
    return lines
