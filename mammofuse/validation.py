"""Table-driven checks for settings read from files a user may not have written (config.json, YAML).

Each setting has a :class:`Rule`; :func:`checked` returns the value (ints widened to floats, NumPy scalars made
Python numbers and, with ``text_numbers``, YAML's ``1e-3`` strings read as numbers) or raises a one-line
:class:`MammofuseError`.

Example:
    >>> checked("threshold", 0.4, Rule(float, 0, 1))
    0.4
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Mapping

from mammofuse.errors import MammofuseError

# Upper bounds shared by the CLI's flags and the Python API's arguments.
MAX_SEED = 2**32 - 1  # NumPy's and LIME's seeds are 32-bit
MAX_BOOTSTRAP = 100_000
MAX_LIME_SAMPLES = 100_000
MAX_BATCH_SIZE = 65_536
MAX_AWAY_PATCHES = 1_000
MIN_IMAGE_SIZE = 32  # the smallest model input side: cnn4 pools it 16-fold, ResNets 32-fold


@dataclass(frozen=True)
class Rule:
    """What one setting may hold.

    Attributes:
        kind: int, float, str, bool, dict or list.
        low, high: inclusive bounds for numbers (None: unbounded on that side).
        high_open: the upper bound is excluded ([low, high)).
        choices: the allowed values, for strings.
        optional: None is allowed.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices)) + (" or empty" if self.optional else "")
        noun = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping", list: "a list"}[self.kind]
        if self.low is not None and self.high is not None:
            return f"{noun} in [{self._bound(self.low)}, {self._bound(self.high)}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{noun} >= {self._bound(self.low)}"
        return noun

    def _bound(self, value: float) -> str:
        """A bound as the user would write it: every digit of an integer's (2**32 - 1, not 4.29497e+09)."""
        return str(int(value)) if self.kind is int else f"{value:g}"


def checked(name: str, value: Any, rule: Rule, text_numbers: bool = False) -> Any:
    """``value`` if it obeys ``rule`` (numbers normalised), else a MammofuseError naming ``name``.

    ``text_numbers``: a number may be given as text, as YAML 1.1 reads ``1e-3`` (JSON never needs it).
    """
    if value is None and rule.optional:
        return None
    coerced = _coerce(value, rule.kind, text_numbers)
    if coerced is None or not _within(coerced, rule):
        raise MammofuseError(f"{name} must be {rule.describe()}, not {_show(value)}")
    return coerced


def check_all(values: Mapping[str, Any], rules: Mapping[str, Rule], text_numbers: bool = False) -> dict[str, Any]:
    """Every value with a rule, checked (see :func:`checked`); returns the checked values."""
    return {name: checked(name, values[name], rule, text_numbers) for name, rule in rules.items() if name in values}


def _coerce(value: Any, kind: type, text_numbers: bool) -> Any:
    if isinstance(value, bool):
        return value if kind is bool else None
    if kind is float and isinstance(value, Real):  # numpy's scalars too (np.float32 is no float)
        return float(value)
    if kind is int and isinstance(value, Integral):
        return int(value)
    if kind is float and text_numbers and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-3 as a string
        except ValueError:
            return None
    return value if isinstance(value, kind) else None


def _within(value: Any, rule: Rule) -> bool:
    if rule.choices is not None:
        return value in rule.choices
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return False
        if rule.low is not None and value < rule.low:
            return False
        if rule.high is not None and (value >= rule.high if rule.high_open else value > rule.high):
            return False
    return True


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


REGION_COLUMNS = ("roi_row", "roi_col", "roi_radius")


def region_cells(values: Mapping[str, str], where: str) -> tuple[float, float, float] | None:
    """The lesion circle of a CSV row's ``roi_row``, ``roi_col`` and ``roi_radius`` cells (None when all three are empty).

    Raises:
        MammofuseError: naming ``where`` (file and line), for a circle with only some of its cells, a value
            that is not a finite number, or a radius that is not positive.
    """
    given = [c for c in REGION_COLUMNS if values.get(c)]
    if not given:
        return None
    if len(given) < len(REGION_COLUMNS):
        empty = [c for c in REGION_COLUMNS if c not in given]
        raise MammofuseError(f"{where}: {' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty: "
                             "a lesion circle needs roi_row, roi_col and roi_radius (or none of them)")
    try:
        row, col, radius = (float(values[c]) for c in REGION_COLUMNS)
    except ValueError:
        raise MammofuseError(f"{where}: roi_row, roi_col and roi_radius must be numbers") from None
    not_finite = [f"{c} {values[c].strip()[:20]!r}" for c, v in zip(REGION_COLUMNS, (row, col, radius)) if not math.isfinite(v)]
    if not_finite:
        raise MammofuseError(f"{where}: {' and '.join(not_finite)}: roi_row, roi_col and roi_radius must be finite numbers of pixels")
    if radius <= 0:
        raise MammofuseError(f"{where}: roi_radius {values['roi_radius'].strip()[:20]!r} must be more than 0 pixels")
    return row, col, radius
