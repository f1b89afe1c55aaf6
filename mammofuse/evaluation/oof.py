"""A final model's calibration and decision threshold from the out-of-fold predictions of its recipe's cross-validation.

``mammofuse ablate`` scores every training case once, by a model that never saw it. A model trained
on *all* of those cases (``train --val-fraction 0 --threshold-from RUN``) takes the Platt map of
those pooled predictions (hundreds of cases) as its calibration, and Youden's J on them, recalibrated,
as its threshold, instead of 0.5 or a validation part of a few dozen cases. The run must have
cross-validated the same recipe on exactly the cases the model trains on, so neither comes from
other data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mammofuse.cases import uses_every_modality
from mammofuse.errors import MammofuseError, reading
from mammofuse.evaluation.ablation import NOT_FINGERPRINTED
from mammofuse.evaluation.ablation_results import RESULT_NAME, rate_key, read_arm
from mammofuse.evaluation.calibration import Calibration, fit_platt
from mammofuse.evaluation.metrics import youden_threshold
from mammofuse.fusion import Fusion

if TYPE_CHECKING:
    from mammofuse.data.sample import Sample
    from mammofuse.model import ModelConfig
    from mammofuse.training.settings import TrainSettings

# Settings that may differ between the cross-validation and the final model without changing the recipe
# (``dataset`` is a label, e.g. "cbis-ddsm (train split)" in ablate: the cases themselves are checked).
_NOT_RECIPE = NOT_FINGERPRINTED | {"val_fraction", "seed", "patience", "dataset"}


@dataclass(frozen=True)
class OofThreshold:
    """A threshold (on the recalibrated scale), the calibration, and where they came from (recorded in the model's
    provenance and card; the calibration also goes into its config, which applies it)."""

    value: float
    arm_folder: str
    folds: int
    cases: int
    calibration: Calibration

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def arm_folder(path: Path, fusion: str) -> Path:
    """``path`` itself when it holds fold results, else the ``fusion`` arm of the ``ablate`` run in ``path``."""
    with reading(path):  # a name too long, a file where a folder should be
        try:
            path.stat()  # Path.glob says nothing of such errors (from Python 3.13)
        except (FileNotFoundError, NotADirectoryError):
            pass  # no results there, said below
        for folder in (path, path / "arms" / fusion):
            if any(folder.glob(f"fold-*/{RESULT_NAME}")):
                return folder
    raise MammofuseError(f"{path}: no cross-validation results (expected fold-*/result.json or arms/{fusion}/fold-*/result.json "
                         "of a `mammofuse ablate` run)")


def oof_threshold(path: str | Path, settings: TrainSettings, cases: Sequence[Sample], config: ModelConfig) -> OofThreshold:
    """The calibration and threshold of a model of ``config`` from the pooled held-out predictions of the
    cross-validation in ``path`` of ``settings``' recipe, which must have held out exactly ``cases`` (the cases
    the final model trains on: ids, labels and patients).

    The Platt map is fitted on the cases with every modality the model uses (those it will apply to); the
    threshold is Youden's J on the predictions as the model will give them: recalibrated where it applies, as
    they are elsewhere.
    """
    folder = arm_folder(Path(path), settings.fusion)
    folds = read_arm(folder)
    if len(folds) < 2:
        raise MammofuseError(f"{folder}: {len(folds)} fold; out-of-fold predictions need a k-fold cross-validation (ablate --folds 5)")
    mine = settings.as_dict()
    theirs = folds[0].settings
    ignored = _NOT_RECIPE | (set() if Fusion(settings.fusion).joint_head else {"modality_dropout"})  # used by joint heads only
    differ = sorted(k for k in mine if k not in ignored and (k not in theirs or theirs[k] != mine[k]))
    if differ:  # a setting the run did not record (made by an older mammofuse) had another default then
        shown = ", ".join(f"{k} {theirs[k]!r} there, {mine[k]!r} here" if k in theirs else f"{k} not recorded there" for k in differ)
        raise MammofuseError(f"{folder}: cross-validated another recipe ({shown}); its threshold does not fit this model")
    held_out = {(i, int(y), p) for f in folds for i, y, p in zip(f.ids, f.labels, f.patients)}
    wanted = {(s.id, int(s.label), s.patient_id) for s in cases}
    if held_out != wanted:
        raise MammofuseError(
            f"{folder}: held out {len(held_out)} cases, this run trains {len(wanted)} ({len(held_out - wanted)} not trained here, "
            f"{len(wanted - held_out)} never held out there, counting a case whose label or patient changed as both); "
            "the threshold must come from a cross-validation of exactly these cases"
        )
    scored = [(i, y, p) for f in folds for i, y, p in zip(f.ids, f.labels, f.scores[rate_key(0.0)]) if p is not None]
    ids, labels, probs = (list(column) for column in zip(*scored)) if scored else ([], [], [])
    if len(set(labels)) < 2:
        raise MammofuseError(f"{folder}: the scored out-of-fold cases hold one class; no threshold can be chosen")
    every_modality = {s.id for s in cases if uses_every_modality(config, s)}
    complete = np.array([i in every_modality for i in ids], dtype=bool)
    labels, probs = np.array(labels), np.array(probs, dtype=np.float64)
    try:
        calibration = fit_platt(labels[complete], probs[complete])
    except MammofuseError as exc:
        raise MammofuseError(f"{folder}: its out-of-fold cases with every modality the model uses: {exc}") from None
    threshold = youden_threshold(labels, np.where(complete, calibration.apply(probs), probs))
    return OofThreshold(threshold, str(folder), len(folds), len(labels), calibration)
