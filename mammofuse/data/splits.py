"""Patient-grouped, label-stratified splits: no patient is ever on two sides."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError


def _folds(samples: Sequence[Sample], k: int, seed: int, fewer: str) -> list[tuple[list[int], list[int]]]:
    """Patient-grouped stratified folds; too few patients is a one-line MammofuseError; ``fewer``: how to ask for fewer folds."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.array([s.label for s in samples])
    groups = np.array([s.patient_id for s in samples])
    patients = len(set(groups.tolist()))
    if patients < k:
        raise MammofuseError(f"{k} patient-grouped folds need at least {k} patients; the data has {patients}")
    malignant = int(labels.sum())
    if max(malignant, len(labels) - malignant) < k:  # scikit-learn's own rule; fewer of one class only makes uneven folds
        raise MammofuseError(f"{k} patient-grouped stratified folds need at least {k} cases of one class; the data has {malignant} "
                             f"malignant and {len(labels) - malignant} benign: {fewer}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    try:
        return [(list(a), list(b)) for a, b in splitter.split(np.zeros(len(samples)), labels, groups)]
    except ValueError as exc:
        raise MammofuseError(f"cannot make {k} patient-grouped folds ({exc})") from None


def validation_folds(val_fraction: float) -> int:
    """The patient folds :func:`train_val_split` makes to keep one as validation: ``round(1 / val_fraction)``, at
    least 2 (0.3 gives a third, anything above 0.5 a half); 1 when ``val_fraction`` is 0 (no validation part)."""
    return max(2, round(1 / val_fraction)) if val_fraction else 1


def train_val_split(samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Carve validation out of training, grouped by patient and stratified by label (none when ``val_fraction`` is 0):
    one of :func:`validation_folds` patient folds."""
    if not val_fraction:
        return list(samples), []
    k = validation_folds(val_fraction)
    fewer = "give a larger --val-fraction (0.5 at most)" if k > 2 else "give more cases, or --val-fraction 0 (no validation part)"
    train_idx, val_idx = _folds(samples, k, seed, fewer)[0]
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def kfold_splits(samples: Sequence[Sample], k: int = 5, seed: int = 0) -> list[tuple[list[Sample], list[Sample]]]:
    """k patient-grouped, stratified folds as (train, held-out) pairs."""
    return [([samples[i] for i in a], [samples[i] for i in b]) for a, b in _folds(samples, k, seed, "make fewer folds (--folds)")]


def training_split(samples: Sequence[Sample], split: str | None, data: Path, dataset: str) -> tuple[list[Sample], str]:
    """The samples of the split that trains, and its name: ``split`` (any case; ``all``: every sample), or by default
    ``train`` where the data has one and every sample where it has no splits (never a test split by default).

    Raises:
        MammofuseError: no default (splits, none of them ``train``), or a ``split`` the data does not have.
    """
    splits = sorted({s.split for s in samples})
    if split is None:
        if "train" not in splits and splits != ["all"]:
            raise MammofuseError(f"{data}: its splits are {', '.join(splits)}, none of them 'train': choose one with --split (all: every case)")
        split = "train" if "train" in splits else "all"
    split = split.lower()
    if split == "all":
        return list(samples), split
    if split not in splits:
        raise MammofuseError(f"--split {split}: {dataset} has {', '.join(splits)}")
    return [s for s in samples if s.split == split], split
