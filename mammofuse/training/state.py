"""What a run has done so far: the kept epoch, the history, early stopping; saved in ``last/checkpoint.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mammofuse.training.callbacks import EpochRow


@dataclass
class BestEpoch:
    """The kept epoch: the one whose weights are ``model.safetensors``.

    Attributes:
        epoch: 1-based epoch number (0 before the first epoch).
        val_auc: its validation ROC-AUC (NaN when the validation set holds one class).
        score: what selection compares: the AUC, else minus the validation loss.
        threshold: its validation Youden threshold, stored with the model.
    """

    epoch: int = 0
    val_auc: float = math.nan
    score: float = -math.inf
    threshold: float = 0.5

    def to_json(self) -> dict[str, Any]:
        """The checkpoint's ``best`` entry (non-finite numbers as null)."""
        finite = lambda v: v if math.isfinite(v) else None  # noqa: E731
        return {"score": finite(self.score), "auc": finite(self.val_auc), "epoch": self.epoch, "threshold": self.threshold}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BestEpoch:
        return cls(
            epoch=data["epoch"], threshold=data["threshold"],
            val_auc=math.nan if data["auc"] is None else data["auc"],
            score=-math.inf if data["score"] is None else data["score"],
        )


@dataclass
class RunState:
    """Progress of a run, restored by ``--resume``."""

    epoch: int = 0
    best: BestEpoch = field(default_factory=BestEpoch)
    bad_epochs: int = 0  # epochs since the kept one improved (early stopping)
    stopped: bool = False
    history: list[EpochRow] = field(default_factory=list)

    def record(self, row: EpochRow, best: BestEpoch | None, selection: str, patience: int) -> None:
        """Add an epoch; ``best`` is its figures when it becomes the kept epoch, else None."""
        self.history.append(row)
        self.epoch = row["epoch"]
        if best is not None:
            self.best, self.bad_epochs = best, 0
        else:
            self.bad_epochs += 1
        self.check_patience(selection, patience)

    def check_patience(self, selection: str, patience: int) -> None:
        """Stop when selecting the best epoch and ``patience`` epochs in a row did not improve it."""
        self.stopped = selection == "best" and self.bad_epochs >= patience

    def to_json(self) -> dict[str, Any]:
        """The checkpoint entries of this state (the epoch is saved by the checkpoint itself)."""
        return {"best": self.best.to_json(), "bad_epochs": self.bad_epochs, "stopped": self.stopped, "history": self.history}

    @classmethod
    def from_json(cls, epoch: int, data: dict[str, Any]) -> RunState:
        return cls(epoch=epoch, best=BestEpoch.from_json(data["best"]), bad_epochs=data["bad_epochs"],
                   stopped=data["stopped"], history=data["history"])
