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
from typing import Any, Mapping, Sequence, cast

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
        raise MammofuseError(f"{name} must be {rule.describe()}, not {shown(value)}")
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


def shown(value: Any) -> str:
    """``repr(value)``, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


REGION_COLUMNS = ("roi_row", "roi_col", "roi_radius")
MAX_REGION_TEXT = "1e6"  # a lesion circle's row, column and radius stay below this many pixels: no image is that large
MAX_REGION_PIXELS = float(MAX_REGION_TEXT)


def region_rule(names: Sequence[str] = REGION_COLUMNS) -> str:
    """What a lesion circle's three parts, called ``names`` (row, column, radius), must hold."""
    row, col, radius = names
    return f"{row}, {col} and {radius} must be finite numbers of pixels, {row} and {col} in [0, {MAX_REGION_TEXT}), {radius} in (0, {MAX_REGION_TEXT})"


def check_region(row: Any, col: Any, radius: Any, where: str, names: Sequence[str] = REGION_COLUMNS) -> tuple[float, float, float]:
    """The lesion circle (row, column, radius) as floats, from numbers or their text (a CSV cell, a flag's part).

    One rule for every source (see :func:`region_rule`): the centre is counted from the image's top-left corner,
    so a negative row or column is outside the image.

    Raises:
        MammofuseError: ``{where}: {each bad part and its value}: {the rule}``, the parts called ``names``.
    """
    values = (row, col, radius)
    numbers = [_pixels(value) for value in values]
    bad = [f"{name} {_given(value)}" for name, value, number, low_open in zip(names, values, numbers, (False, False, True))
           if number is None or number < 0 or (low_open and number == 0)]
    if bad:
        raise MammofuseError(f"{where}: {' and '.join(bad)}: {region_rule(names)}")
    return cast("tuple[float, float, float]", tuple(numbers))  # none is None past the check


def region_cells(values: Mapping[str, str], where: str) -> tuple[float, float, float] | None:
    """The lesion circle of a CSV row's ``roi_row``, ``roi_col`` and ``roi_radius`` cells (None when all three are empty).

    Raises:
        MammofuseError: naming ``where`` (file and line), for a circle with only some of its cells, or one that
            :func:`check_region` refuses.
    """
    given = [c for c in REGION_COLUMNS if values.get(c)]
    if not given:
        return None
    if len(given) < len(REGION_COLUMNS):
        empty = [c for c in REGION_COLUMNS if c not in given]
        raise MammofuseError(f"{where}: {' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty: "
                             "a lesion circle needs roi_row, roi_col and roi_radius (or none of them)")
    return check_region(values["roi_row"], values["roi_col"], values["roi_radius"], where)


def circle_of_text(text: str, where: str) -> tuple[float, float, float]:
    """The lesion circle of predict's ``region`` cell, ``ROW; COL; RADIUS``.

    Raises:
        MammofuseError: naming ``where``, for a cell of another form, or a circle :func:`check_region` refuses.
    """
    parts = text.split(";")
    if len(parts) != 3:
        raise MammofuseError(f"{where}: region {shown(text)} is not ROW; COL; RADIUS (as predict writes it)")
    return check_region(*parts, where, names=("region row", "region column", "region radius"))


def _pixels(value: Any) -> float | None:
    """``value`` (a number, or its text) as a float when it is finite and below MAX_REGION_PIXELS in size, else None."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    elif isinstance(value, Real) and not isinstance(value, bool):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) and abs(number) < MAX_REGION_PIXELS else None


def _given(value: Any) -> str:
    """A circle's part as given: text quoted (its first 20 characters), a number as written (-5.0, not np.float64(-5.0))."""
    if isinstance(value, str):
        return repr(value.strip()[:20])
    return str(value)[:20] if isinstance(value, Real) else shown(value)
