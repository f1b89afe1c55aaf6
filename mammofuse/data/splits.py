"""Patient-grouped, label-stratified splits: no patient is ever on two sides."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mammofuse.data.sample import Sample


def _folds(samples: Sequence[Sample], k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.array([s.label for s in samples])
    groups = np.array([s.patient_id for s in samples])
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(list(a), list(b)) for a, b in splitter.split(np.zeros(len(samples)), labels, groups)]


def train_val_split(samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Carve validation out of training, grouped by patient and stratified by label."""
    k = max(2, round(1 / val_fraction))
    train_idx, val_idx = _folds(samples, k, seed)[0]
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def kfold_splits(samples: Sequence[Sample], k: int = 5, seed: int = 0) -> list[tuple[list[Sample], list[Sample]]]:
    """k patient-grouped, stratified folds as (train, held-out) pairs."""
    return [([samples[i] for i in a], [samples[i] for i in b]) for a, b in _folds(samples, k, seed)]
