"""``--aggregate breast`` while streaming: a breast's records wait until all of its files are scored."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from mammofuse.cases import ListedFile
from mammofuse.scoring.predictions import IndexedPredictions


class BreastGroups:
    """Holds each breast's predictions until its last file is scored, then releases them with the breast's score.

    A breast's score is the mean probability of its scored images (files scored by an earlier run
    included, from ``done``; an image under several names counted once), and ``breast_views`` how many
    images that mean averages; a file without a known breast is released at once.
    """

    def __init__(self, files: Sequence[ListedFile], pending: Sequence[int], done: Mapping[int, float]) -> None:
        self._files = files
        self._waiting: dict[str, int] = {}
        self._scored: dict[str, list[tuple[str | None, float]]] = {}  # (image, probability) of each file of a breast
        self._held: dict[str, IndexedPredictions] = {}
        for i in pending:
            if files[i].breast is not None:
                self._waiting[files[i].breast] = self._waiting.get(files[i].breast, 0) + 1
        for i, probability in done.items():
            breast = files[i].breast
            if breast in self._waiting:
                self._scored.setdefault(breast, []).append((files[i].image, probability))

    def release(self, batch: IndexedPredictions) -> IndexedPredictions:
        """The predictions that are ready: those of this batch without a breast, and every breast now complete."""
        from mammofuse.evaluation.aggregate import aggregate

        ready: IndexedPredictions = []
        for i, prediction in batch:
            prediction.per_breast = True
            breast = prediction.breast = self._files[i].breast
            if breast is None:
                ready.append((i, prediction))
                continue
            self._held.setdefault(breast, []).append((i, prediction))
            probability = math.nan if prediction.probability is None else prediction.probability
            self._scored.setdefault(breast, []).append((self._files[i].image, probability))
            self._waiting[breast] -= 1
            if self._waiting[breast] == 0:
                del self._waiting[breast]
                images, scores = zip(*self._scored.pop(breast))
                mean = aggregate([breast] * len(scores), scores, images=images).get(breast)
                for j, held in self._held.pop(breast):
                    held.breast_probability = round(mean["probability"], 6) if mean else None
                    held.breast_views = mean["views"] if mean else 0
                    ready.append((j, held))
        return ready
