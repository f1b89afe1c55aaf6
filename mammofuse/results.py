"""Typed results of scoring: the decision rule, the sigmoid, and one :class:`Prediction` per file.

Torch- and numpy-free at import: records serialise to the JSON that ``mammofuse predict --format json`` has always written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from mammofuse import RESEARCH_NOTICE

if TYPE_CHECKING:  # numpy stays out of import time (the CLI imports this module)
    import numpy as np

MALIGNANT, BENIGN = "malignant", "benign"


def sigmoid(logits: "np.ndarray | float") -> "np.ndarray":
    """Probabilities from logits, in float64 (the one sigmoid of the package outside the network)."""
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


DECIMALS = 6  # what records show of a probability and a threshold
NOTE_SEPARATOR = "; "


def joined_note(*remarks: str) -> str:
    """A record's ``note``: its remarks, each once, in order, joined by :data:`NOTE_SEPARATOR` ('' when none)."""
    return NOTE_SEPARATOR.join(dict.fromkeys(r for r in remarks if r))


def record_path(path: str | os.PathLike[str]) -> str:
    """A file's path as records carry it, the same under any locale: its bytes read as UTF-8, a byte that is not UTF-8
    held as a surrogate (``\\udce9``), so that records written as UTF-8 with ``surrogateescape`` hold the name's bytes as
    they are. A path the file-system encoding cannot represent (text, not a name read from disk) is kept as it is."""
    try:
        return os.fsencode(path).decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return os.fspath(path)


def path_digest(path: str | os.PathLike[str]) -> str:
    """A short digest of a file's absolute path as records carry it: the same for any spelling of the path from any
    working folder, under any locale (it names ``explain``'s folders apart and records whose file an explanation is)."""
    import hashlib

    key = record_path(os.path.abspath(path))
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=5).hexdigest()


def decide(probability: float, threshold: float) -> str:
    """The decision rule of every command: ``malignant`` when the probability reaches the threshold, both to the
    :data:`DECIMALS` records show (so that a record's decision can be checked from its own numbers), else ``benign``."""
    return MALIGNANT if round(probability, DECIMALS) >= round(threshold, DECIMALS) else BENIGN


def shown_digits(probability: float, threshold: float) -> int:
    """Decimals to show a probability and its threshold with: 3, or :data:`DECIMALS` where 3 would show them equal
    (``0.307 benign`` beside ``threshold 0.307`` reads as a wrong decision)."""
    return 3 if f"{probability:.3f}" != f"{threshold:.3f}" else DECIMALS


class ErrorKind(StrEnum):
    """Why a file has no score."""

    INPUT = "input"  # the file cannot be read or used (corrupt, too large, not an image...)
    NOT_SCORED = "not_scored"  # the run stopped before this file (or an unexpected failure)


@dataclass(frozen=True)
class ScoringError:
    """A per-file failure: a value with a kind and a one-line message (the file is named by the record)."""

    kind: ErrorKind
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Prediction:
    """One scored file.

    Attributes:
        path: the file scored.
        probability: P(malignant), or None when the file failed.
        decision: ``malignant`` / ``benign`` by the threshold, or None when the file failed.
        threshold: the decision threshold used.
        model: the model's name (registered name, folder or Hub id).
        clinical: the findings the model used, by field (None where missing).
        region: the lesion circle (row, column, radius) in the file's pixels, if one was given.
        note: a remark, e.g. that a lesion-crop model had no region and scored the findings only.
        error: why the file has no score, or None.
        per_breast: views were combined per breast (the record then carries the next three).
        breast: ``patient/L|R``, or None when the laterality is unknown.
        breast_probability: the mean probability over that breast's scored views (an image under several names once).
        breast_views: how many views that mean averages (0 when none was scored; None without a breast).
    """

    path: str
    probability: float | None
    decision: str | None
    threshold: float
    model: str
    clinical: dict[str, str | None] = field(default_factory=dict)
    region: tuple[float, float, float] | None = None
    note: str | None = None
    error: ScoringError | None = None
    per_breast: bool = False
    breast: str | None = None
    breast_probability: float | None = None
    breast_views: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``prediction`` is the decision; ``error`` its message; ``notice`` the research-use notice,
        so that a record copied out of its file still carries it)."""
        record: dict[str, Any] = {
            "path": record_path(self.path),
            "probability": self.probability,
            "prediction": self.decision,
            "threshold": self.threshold,
            "model": self.model,
            "clinical": dict(self.clinical),
            "region": list(self.region) if self.region else None,
            "note": self.note,
            "error": None if self.error is None else self.error.message,
            "notice": RESEARCH_NOTICE,
        }
        if self.per_breast:
            record["breast"] = self.breast
            record["breast_probability"] = self.breast_probability
            record["breast_views"] = self.breast_views
        return record
