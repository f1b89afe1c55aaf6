"""JSON that other programs can read: NaN and infinity, which JSON has no words for, are written as null."""

from __future__ import annotations

import json
import math
from typing import Any


def json_text(data: Any, indent: int | None = None) -> str:
    """``data`` as strict JSON, a non-finite float (an undefined AUC, say) as ``null``."""
    return json.dumps(_finite(data), indent=indent, allow_nan=False, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
