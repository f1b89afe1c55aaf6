"""One scoring run over listed files: what ``--resume`` finds done, the rest scored by an engine, records as they are done."""

from __future__ import annotations

import math
from contextlib import closing
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mammofuse.cases import ListedFile
from mammofuse.clinical import load_schema
from mammofuse.data.sample import Sample
from mammofuse.results import Prediction
from mammofuse.scoring.predictions import Engine, IndexedPredictions, prediction_of, scored_batches
from mammofuse.scoring.resume import Inputs, Resumed, resume_output
from mammofuse.scoring.sink import RecordLayout, file_record, record_writer
from mammofuse.validation import Rule, checked


@dataclass
class Summary:
    """How a run's files ended, those an earlier run scored included.

    Attributes:
        files: the cases of this run: its files, a file counted once per lesion where the clinical CSV gives it several.
        before: of those, already in the output (``--resume``).
        failed: (path, error) of every file that failed, earlier ones included.
        foreign: records in the output for files not in this run (kept).
        dropped: records dropped from the output: files changed since, or scored twice.
    """

    files: int
    before: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    foreign: int = 0
    dropped: int = 0


class ScoringRun:
    """Score listed files with one model: all of them, or (after :meth:`resume`) those an output lacks.

    Example:
        >>> run = ScoringRun(model, list_cases([Path("study/")], True, {}, None))  # doctest: +SKIP
        >>> run.resume(Path("scores.jsonl"), "jsonl")  # doctest: +SKIP
        >>> summary = run.write(Path("scores.jsonl"), "jsonl", LocalEngine(batch_size=8))  # doctest: +SKIP
    """

    def __init__(
        self, model: Any, files: Sequence[ListedFile], *, threshold: float | None = None, per_breast: bool = False, model_name: str | None = None,
    ) -> None:
        self.model, self.files, self.threshold, self.per_breast = model, files, threshold, per_breast
        self.model_name = model_name or model.name
        self.resumed = Resumed()
        self._append = False
        self._nothing = Sample(id="", patient_id="", label=-1)
        cut = checked("threshold", model.config.threshold if threshold is None else threshold, Rule(float, 0, 1))
        self._schema = load_schema(model.config.vocabulary)
        self._example = prediction_of(self._nothing, math.nan, "", "", cut, self.model_name, self._schema)
        self._example.per_breast = per_breast

    @cached_property
    def weights(self) -> str:
        """The digest of the model's weights that records carry (hashed only when asked for)."""
        return self.model.weights_digest()

    @cached_property
    def layout(self) -> RecordLayout:
        """What each streamed record holds (its fields, columns, model, weights and threshold)."""
        return RecordLayout.of(file_record(self._example, ListedFile(self._nothing, 0, 0), self.weights))

    @property
    def pending(self) -> list[int]:
        """Positions of the files to score, a breast's files together when scoring per breast."""
        pending = [i for i in range(len(self.files)) if i not in self.resumed.done]
        if self.per_breast:  # a breast's records wait for its last file: score its files together
            pending.sort(key=lambda i: (self.files[i].breast or "", i))
        return pending

    def resume(self, output: Path, fmt: str) -> Resumed:
        """Take what ``output`` already holds as done, after checking and repairing it (see :mod:`mammofuse.scoring.resume`)."""
        self.resumed = resume_output(output, fmt, self.files, self.layout, self._inputs, self.per_breast)
        self._append = True
        return self.resumed

    def _inputs(self, file: ListedFile) -> Inputs:
        """What this run scores a file with, as its record will say: the findings used and the lesion region."""
        record = prediction_of(file.sample, math.nan, "", "", 0.0, self.model_name, self._schema)
        return record.clinical, record.region

    def batches(self, engine: Engine | None = None, on_batch: Callable[[int], None] | None = None) -> Iterator[IndexedPredictions]:
        """Predictions of the pending files as they are ready, each with its file's position."""
        from mammofuse.scoring.breasts import BreastGroups

        pending = self.pending
        groups = BreastGroups(self.files, pending, self.resumed.done) if self.per_breast else None
        for batch in scored_batches(self.model, [self.files[i].sample for i in pending], threshold=self.threshold, engine=engine,
                                    on_batch=on_batch, model_name=self.model_name):
            ready = [(pending[k], prediction) for k, prediction in batch]
            if groups is not None:
                ready = groups.release(ready)
            if ready:
                yield ready

    def collect(self, engine: Engine | None = None, on_batch: Callable[[int], None] | None = None) -> list[Prediction]:
        """Predictions of the pending files, in the files' order."""
        found = sorted((item for batch in self.batches(engine, on_batch) for item in batch), key=lambda item: item[0])
        return [p for _, p in found]

    def write(self, output: Path | None, fmt: str, engine: Engine | None = None, on_batch: Callable[[int], None] | None = None) -> Summary:
        """Score the pending files into ``output`` (stdout when None) as ``jsonl`` or ``csv``, records as they are ready.

        Appends to the output taken by :meth:`resume`; otherwise writes a new one, once the first records are ready: a run
        whose engine cannot start (its readers, Ray) leaves a file of an earlier run as it was.
        """
        summary = Summary(len(self.files), len(self.resumed.done), list(self.resumed.failed), self.resumed.foreign, self.resumed.dropped)
        with closing(self.batches(engine, on_batch)) as batches:
            first = next(batches, None)
            with record_writer(output, fmt, self.layout, append=self._append) as writer:
                for batch in chain([first] if first else [], batches):
                    writer.write([file_record(p, self.files[i], self.weights) for i, p in batch])
                    summary.failed.extend((p.path, p.error.message) for _, p in batch if p.error is not None)
        return summary

