"""The paper's claim and the reference points of the evaluation protocol, for ``--compare paper``."""

from __future__ import annotations

from typing import Any

from mammofuse.evaluation.metrics import MIN_BOOTSTRAP_PATIENTS

PAPER = "arXiv 2508.16000 (cross-attention fusion, CBIS-DDSM)"
PAPER_CLAIM = {"auc": 0.98, "accuracy": 0.96, "f1": 0.94, "precision": 0.92, "recall": 0.95}

# From docs/evaluation.md: orientation, not targets to tune to.
REFERENCE_POINTS: tuple[tuple[str, str, str], ...] = (
    ("CBIS-DDSM whole image, official split, ResNet-50", "0.86 (0.88 with flip TTA)", "Shen et al. 2019, Sci Rep"),
    ("CBIS-DDSM two-view, official split", "0.848 (0.934 under 5-fold CV)", "Petrini et al. 2022"),
    ("CBIS-DDSM image only / image + BI-RADS descriptors", "0.711 / 0.872", "Ben-Artzi et al., ICPR 2024"),
    ("image + clinical, cross/co-attention", "0.89 -> 0.94", "Vo et al. 2021"),
    ("claimed: cross-attention fusion", "0.98 (concat 0.81, image only 0.87)", "arXiv 2508.16000"),
    ("CBIS-DDSM mass, clinical descriptors only, LR, full official test split (no assessment)", "0.835",
     "the project's issue (its investigator's run; not re-measured here: the test split is held out)"),
    ("mini-MIAS 5-fold patient-grouped CV: clinical LR / texture LR / small CNN", "0.52 / 0.68 / 0.62",
     "the evaluation notes; rebuilt on this tool's folds the texture LR averages 0.63-0.64 over eight fold seeds (docs/benchmarks.md)"),
)

MIN_CASES = 30
"""Fewer evaluated cases (or fewer patients than a bootstrap interval needs) are too few to set beside the claim."""


def comparison(result: dict[str, Any]) -> dict[str, Any]:
    """This result beside the paper's claim, metric by metric, plus the reference points; ``note`` when the sample is too small."""
    rows = []
    for metric, claimed in PAPER_CLAIM.items():
        value = result.get(metric)
        rows.append({
            "metric": metric,
            "this": value,
            "ci": result.get("auc_ci") if metric == "auc" else None,
            "paper": claimed,
            "difference": None if value is None else round(value - claimed, 4),
        })
    too_small = result["n"] < MIN_CASES or result["patients"] < MIN_BOOTSTRAP_PATIENTS
    return {
        **({"note": f"too few to compare: {result['n']} cases of {result['patients']} patients (needs >= {MIN_CASES} cases of "
                    f">= {MIN_BOOTSTRAP_PATIENTS} patients); the differences below mean nothing"} if too_small else {}),
        "paper": PAPER,
        "metrics": rows,
        "references": [{"setting": s, "auc": a, "source": src} for s, a, src in REFERENCE_POINTS],
    }
