"""How a training run reports: hooks that a caller implements. The trainer itself never prints.

A run calls, in order: ``on_train_start`` once; per epoch, one or more phases
(``on_phase_start``, ``on_phase_advance`` per step, ``on_phase_end``: caching features, the
epoch's batches) and then ``on_epoch_end``; ``on_log`` whenever there is a note for the user
(an unreadable image, a resumed run with nothing left to do). Under torchrun only rank 0
reports. The CLI renders these with Rich (:mod:`mammofuse.cli.train_progress`).

Example:
    >>> class Losses(TrainCallback):
    ...     def __init__(self) -> None:
    ...         self.losses: list[float] = []
    ...     def on_epoch_end(self, row: EpochRow, improved: bool) -> None:
    ...         self.losses.append(row["train_loss"])
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence, TypedDict

if TYPE_CHECKING:
    from mammofuse.training.settings import TrainSettings


class EpochRow(TypedDict):
    """One epoch's figures, as written to ``history.jsonl``."""

    epoch: int
    train_loss: float
    val_loss: float | None  # None without a validation part
    val_auc: float | None  # None when the validation set holds one class
    lr: float
    seconds: float
    frozen: bool


class Advance(Protocol):
    """What :meth:`Reporter.phase` yields: ``advance(steps)`` or ``advance(steps, note)``."""

    def __call__(self, steps: int, note: str = "") -> None: ...


class TrainCallback:
    """The hooks of a training run; each does nothing unless overridden."""

    def on_train_start(self, settings: TrainSettings) -> None:
        """The run begins (or resumes) with these settings."""

    def on_phase_start(self, description: str, total: int) -> None:
        """A phase of ``total`` steps begins, e.g. ``epoch 3/20`` or ``caching train features``."""

    def on_phase_advance(self, steps: int, note: str) -> None:
        """``steps`` more steps of the phase are done; ``note`` is e.g. the running loss (may be empty)."""

    def on_phase_end(self) -> None:
        """The phase is over (also when it was interrupted)."""

    def on_epoch_end(self, row: EpochRow, improved: bool) -> None:
        """An epoch finished; ``improved``: it is now the kept epoch."""

    def on_log(self, message: str) -> None:
        """A one-line note for the user (a warning, or why nothing was trained)."""


class Reporter:
    """Every hook fanned out to a list of callbacks (the trainer's side of the interface)."""

    def __init__(self, callbacks: Sequence[TrainCallback] = ()) -> None:
        self.callbacks = list(callbacks)

    def train_start(self, settings: TrainSettings) -> None:
        for callback in self.callbacks:
            callback.on_train_start(settings)

    @contextmanager
    def phase(self, description: str, total: int) -> Iterator[Advance]:
        """A phase as a context; yields ``advance(steps, note="")``."""
        for callback in self.callbacks:
            callback.on_phase_start(description, total)

        def advance(steps: int, note: str = "") -> None:
            for callback in self.callbacks:
                callback.on_phase_advance(steps, note)

        try:
            yield advance
        finally:
            for callback in self.callbacks:
                callback.on_phase_end()

    def epoch_end(self, row: EpochRow, improved: bool) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(row, improved)

    def log(self, message: str) -> None:
        for callback in self.callbacks:
            callback.on_log(message)
