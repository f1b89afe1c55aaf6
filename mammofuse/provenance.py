"""Words on a trained model's provenance (``config.json``), shared by its model card and ``evaluate``'s report."""

from __future__ import annotations

import math
from typing import Any, Mapping


def fmt(value: Any, digits: int = 3) -> str:
    """A figure as the card writes it: ``digits`` decimals for a float, ``n/a`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _signed(value: Any) -> str:
    """``+ 0.073`` or ``- 0.073``: a term added to an expression."""
    return "+ n/a" if not isinstance(value, float) else f"{'-' if value < 0 else '+'} {abs(value):.3f}"


UNTUNED_ONE_CLASS = "not tuned (validation part of one class)"


def validation_class(provenance: Mapping[str, Any]) -> str | None:
    """``benign`` or ``malignant`` when the validation part held cases of that class alone, else None (none, both, or not recorded)."""
    n, malignant = provenance.get("n_val"), provenance.get("n_val_malignant")
    if not isinstance(n, int) or not isinstance(malignant, int) or not n or 0 < malignant < n:
        return None
    return "malignant" if malignant else "benign"


UNFINISHED = "unfinished"  # provenance key of a model whose training has not finished: {"epochs_run": N, "epochs": M}


def unfinished_remark(provenance: Mapping[str, Any]) -> str | None:
    """``trained N of M epochs (...)`` where the provenance marks the model's training unfinished (a run interrupted,
    whose kept model is of an epoch before the last); None for a finished run."""
    mark = provenance.get(UNFINISHED)
    if not isinstance(mark, dict):
        return None
    return f"trained {mark.get('epochs_run')} of {mark.get('epochs')} epochs (an interrupted run: continue it with train --resume)"


def threshold_source(provenance: Mapping[str, Any]) -> str:
    """Where a model's stored decision threshold came from, as its provenance records it (the card and ``evaluate`` say it)."""
    if oof := provenance.get("threshold_from"):
        source = (f"the pooled out-of-fold predictions of `{oof['arm_folder']}` "
                  f"({oof['folds']}-fold cross-validation of this recipe on these {oof['cases']} cases)")
        if not isinstance(calibration := oof.get("calibration"), dict):  # a model trained before calibration
            return f"Youden's J on {source}"
        return (f"Youden's J on {source}, recalibrated; the scores of cases with every modality the model uses are "
                f"recalibrated by the Platt map fitted on those predictions (logit x {fmt(calibration.get('slope'))} "
                f"{_signed(calibration.get('intercept'))})")
    if "n_val" not in provenance:
        return "unknown: the model records no training provenance"
    if not provenance["n_val"]:
        return "not tuned: no validation part (val_fraction 0)"
    if only := validation_class(provenance):
        return f"{UNTUNED_ONE_CLASS}: its {provenance['n_val']} cases are all {only}, so Youden's J is undefined and 0.5 stands"
    return "chosen on validation by Youden's J"
