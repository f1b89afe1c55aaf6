"""How the CLI shows a training run: a bar per phase on a terminal, one line per epoch, notes."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Callable

from mammofuse.cli.common import clean
from mammofuse.cli.output import err_console, progress
from mammofuse.training.callbacks import EpochRow, TrainCallback
from mammofuse.training.settings import TrainSettings


def epoch_line(row: EpochRow, epochs: int, best: bool) -> str:
    """``epoch 3/20: train_loss 0.5123  val_loss 0.6012  val_auc 0.712  lr 1.00e-03  4.2s  best``; ``best``: the
    epoch improved on the kept one (selection ``best``)."""
    auc = "n/a" if row["val_auc"] is None else f"{row['val_auc']:.3f}"
    loss = "n/a" if row["val_loss"] is None else f"{row['val_loss']:.4f}"
    return (
        f"epoch {row['epoch']}/{epochs}{' frozen' if row['frozen'] else ''}: "
        f"train_loss {row['train_loss']:.4f}  val_loss {loss}  val_auc {auc}  "
        f"lr {row['lr']:.2e}  {row['seconds']:.1f}s{'  best' if best else ''}"
    )


class TrainProgress(TrainCallback):
    """Renders a run on stderr: bars only when stderr is a terminal; epoch lines unless ``epoch_lines`` is off; notes always.

    An epoch line ends with ``best`` only under selection ``best``, when the epoch beat the kept one: under
    ``last`` every epoch replaces the kept one, whatever its validation figures.
    """

    def __init__(self, epoch_lines: bool = True) -> None:
        self._epoch_lines = epoch_lines
        self._epochs = 0
        self._selects_best = False
        self._phase = ExitStack()
        self._advance: Callable[[int, str], None] = lambda n, note: None

    def on_train_start(self, settings: TrainSettings) -> None:
        self._epochs = settings.epochs
        self._selects_best = settings.selection == "best"

    def on_phase_start(self, description: str, total: int) -> None:
        self._advance = self._phase.enter_context(progress(description, total))

    def on_phase_advance(self, steps: int, note: str) -> None:
        self._advance(steps, note)

    def on_phase_end(self) -> None:
        self._phase.close()

    def on_epoch_end(self, row: EpochRow, improved: bool) -> None:
        if self._epoch_lines:
            _print(epoch_line(row, self._epochs, improved and self._selects_best))

    def on_log(self, message: str) -> None:
        _print(message)


def _print(line: str) -> None:
    """A line on stderr; it may name files, so control characters are shown."""
    err_console.print(clean(line), highlight=False, soft_wrap=True, markup=False)
