"""The local engine: this process scores, a torch DataLoader's worker processes read and preprocess."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from mammofuse.data.sample import Sample

if TYPE_CHECKING:
    from mammofuse.inference import ScoredBatch


@dataclass(frozen=True)
class LocalEngine:
    """Score on the model's device in batches of ``batch_size``, reading images in ``workers`` processes (0: this one)."""

    batch_size: int = 16
    workers: int = 0

    def run(self, model: Any, samples: Sequence[Sample]) -> Iterator[ScoredBatch]:
        """Scores batch by batch, in input order."""
        from mammofuse.inference import iter_scores

        return iter_scores(model, samples, self.batch_size, self.workers)
