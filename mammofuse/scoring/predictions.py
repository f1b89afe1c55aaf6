"""From scores to :class:`~mammofuse.results.Prediction` records, whatever engine scored them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

from mammofuse.cases import case_remarks
from mammofuse.clinical import load_schema
from mammofuse.data.sample import Sample
from mammofuse.results import DECIMALS, ErrorKind, Prediction, ScoringError, decide, joined_note
from mammofuse.validation import Rule, checked

if TYPE_CHECKING:  # torch stays out of import time
    from mammofuse.clinical.schema import ClinicalSchema
    from mammofuse.inference import ScoredBatch

IndexedPredictions = list[tuple[int, Prediction]]
"""Predictions with the position of their sample in the sequence scored."""


class Engine(Protocol):
    """Scores samples in batches: :class:`~mammofuse.scoring.LocalEngine` or :class:`~mammofuse.scoring.RayEngine`."""

    def run(self, model: Any, samples: Sequence[Sample]) -> Iterator[ScoredBatch]:
        """Scores of every sample, in batches, in any order."""
        ...


def score_files(
    model: Any,
    samples: Sequence[Sample],
    *,
    threshold: float | None = None,
    engine: Engine | None = None,
    on_batch: Callable[[int], None] | None = None,
    model_name: str | None = None,
) -> Iterator[Prediction]:
    """Score each sample's file: one :class:`Prediction` per sample, yielded as its batch is done.

    Args:
        model: a loaded :class:`~mammofuse.model.MammoFuse`.
        samples: the cases, e.g. from :func:`mammofuse.cases.cases_from_inputs`.
        threshold: the decision threshold (default: the model's stored one).
        engine: who scores (default: ``LocalEngine()``, this process); a file that fails is a
            prediction with its error, never an exception.
        on_batch: called with the number of files after each batch (progress).
        model_name: what the records call the model (default: ``model.name``).

    Predictions come in input order from the local engine and in the order they finish from Ray.

    Example:
        >>> model = MammoFuse.from_pretrained("runs/cross")  # doctest: +SKIP
        >>> for p in score_files(model, cases_from_inputs([Path("study/")], True, {"density": "3"}, None), engine=RayEngine()):  # doctest: +SKIP
        ...     print(p.path, p.probability)
    """
    batches = scored_batches(model, samples, threshold=threshold, engine=engine, on_batch=on_batch, model_name=model_name)
    return (prediction for batch in batches for _, prediction in batch)


def scored_batches(
    model: Any,
    samples: Sequence[Sample],
    *,
    threshold: float | None = None,
    engine: Engine | None = None,
    on_batch: Callable[[int], None] | None = None,
    model_name: str | None = None,
) -> Iterator[IndexedPredictions]:
    """:func:`score_files` batch by batch, each prediction with its sample's position; the threshold is checked now."""
    from mammofuse.scoring.local import LocalEngine

    cut = checked("threshold", model.config.threshold if threshold is None else threshold, Rule(float, 0, 1))
    schema = load_schema(model.config.vocabulary)
    engine = engine if engine is not None else LocalEngine()
    name = model_name or model.name

    def batches() -> Iterator[IndexedPredictions]:
        if not samples:  # an empty shard: no engine to start
            return
        for scored in engine.run(model, samples):
            yield [
                (i, prediction_of(samples[i], float(p), error, note, cut, name, schema, case_remarks(model, samples[i])))
                for i, p, error, note in zip(scored.indices, scored.probabilities, scored.errors, scored.notes)
            ]
            if on_batch:
                on_batch(len(scored.indices))

    return batches()


def prediction_of(
    sample: Sample, probability: float, error: str, note: str, cut: float, model_name: str, schema: ClinicalSchema,
    score_remarks: Sequence[str] = (),
) -> Prediction:
    """The record of one scored sample: a probability and a decision, or nulls and its error.

    The record holds both numbers to 6 decimals, and the decision is taken on those, so a reader
    of the record can check it. ``score_remarks`` (on what the score means) join the ``note`` of a scored sample.
    """
    ok = not error and not math.isnan(probability)
    path = sample.image_path or sample.id
    used = schema.display(*schema.encode(sample.clinical))
    shown, threshold = round(probability, DECIMALS), round(cut, DECIMALS)
    return Prediction(
        path=path,
        probability=shown if ok else None,
        decision=decide(shown, threshold) if ok else None,
        threshold=threshold,
        model=model_name,
        clinical=used,
        region=tuple(sample.region) if sample.region else None,
        note=joined_note(note, *(score_remarks if ok else ())) or None,
        error=None if ok else ScoringError(ErrorKind.INPUT if error else ErrorKind.NOT_SCORED, error or "not scored"),
    )
