"""Shortcut controls: score a case without its lesion, to see what a model really reads.

``masked`` fills the lesion's square (1.5 times its diameter) with the neighbouring tissue of
the same size (for a whole-breast model, every lesion square of the film); ``away`` moves the
lesion crop to a patch of the same image, the same size, away from every lesion of the film
(lesion-crop models only: a whole-breast model's input has no lesion crop to move). Each away
patch is a fixed draw per case (:func:`away_key`); averaging the scores of several draws makes the
control depend less on where one patch fell.
A model that still separates benign from malignant on these inputs is reading something other
than the lesion (scanner, film, breast).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from mammofuse.errors import MammofuseError
from mammofuse.imaging.preprocess import TISSUE, Region

CONTROLS = ("masked", "away")
MASK_SCALE = 1.5
AWAY_NEEDS_ROI = "the 'away' control moves a lesion crop, and this model looks at the whole breast: use 'masked'"


def controls_for(input_mode: str, controls: Sequence[str]) -> list[str]:
    """The controls in ``controls`` that apply to a model of this input mode (``roi`` or ``full``)."""
    return [c for c in controls if c != "away" or input_mode == "roi"]


def _square(region: Region, scale: float) -> tuple[int, int, int]:
    row, col, radius = region
    side = max(4, int(round(2 * radius * scale)))
    return int(round(row)) - side // 2, int(round(col)) - side // 2, side


def mask_lesion(pixels: np.ndarray, region: Region, scale: float = MASK_SCALE) -> np.ndarray:
    """A copy of ``pixels`` with the lesion's square filled from the adjacent square holding most tissue."""
    height, width = pixels.shape
    top, left, side = _square(region, scale)
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + side, height), min(left + side, width)
    out = pixels.copy()
    if t1 <= t0 or l1 <= l0:
        return out
    best, source = -1.0, None
    for dr, dc in ((-side, 0), (side, 0), (0, -side), (0, side)):
        if t0 + dr < 0 or l0 + dc < 0 or t1 + dr > height or l1 + dc > width:
            continue
        patch = pixels[t0 + dr : t1 + dr, l0 + dc : l1 + dc]
        tissue = float((patch > TISSUE).mean())
        if tissue > best:
            best, source = tissue, patch
    out[t0:t1, l0:l1] = source if source is not None else float(np.median(pixels[pixels > TISSUE]))
    return out


def away_key(case_id: str, draw: int = 0) -> str:
    """The key of a case's away patch number ``draw``; draw 0 is keyed by the case id alone."""
    return case_id if draw == 0 else f"{case_id}#draw{draw}"


NO_AWAY_PATCH = "no breast tissue away from the lesion for the 'away' control"


def away_region(pixels: np.ndarray, region: Region, avoid: Sequence[Region], key: str, crop_half: float = 0.0) -> Region:
    """A region of the same radius inside the breast, clear of every lesion in ``avoid``.

    A candidate centre lies at more than twice the two radii from each lesion's centre, and the crop the model reads
    there (``crop_half`` on each side of it) does not reach into any lesion's circle. The choice is a pure function of
    ``key`` (e.g. the sample id), so reruns score the same patch: a draw whose crop would reach a lesion is drawn
    again from the same stream, so the patch of every other key is the one the first rule alone gave.

    Raises:
        MammofuseError: when the breast has no such patch.
    """
    row, col, radius = region
    height, width = pixels.shape
    tissue = (pixels > TISSUE).astype(np.float64)
    integral = np.pad(tissue.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    half = max(2, int(round(radius)))
    step = max(2, half // 2)
    rows = np.arange(half, height - half, step)
    cols = np.arange(half, width - half, step)
    if len(rows) == 0 or len(cols) == 0:
        raise MammofuseError(NO_AWAY_PATCH)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    top, bottom, left, right = rr - half, rr + half, cc - half, cc + half
    share = (integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]) / float((2 * half) ** 2)
    ok = share >= 0.9
    clear = np.ones_like(ok)
    for lr, lc, lrad in [region, *avoid]:
        ok &= np.hypot(rr - lr, cc - lc) > 2 * (radius + lrad)
        clear &= np.hypot(np.maximum(np.abs(rr - lr) - crop_half, 0), np.maximum(np.abs(cc - lc) - crop_half, 0)) > lrad
    candidates = np.flatnonzero(ok)
    if not clear.flat[candidates].any():
        raise MammofuseError(NO_AWAY_PATCH)
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    draws = np.random.default_rng(seed)
    while not clear.flat[pick := candidates[draws.integers(len(candidates))]]:
        pass
    return (float(rr.flat[pick]), float(cc.flat[pick]), float(radius))
