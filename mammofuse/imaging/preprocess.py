"""Turn a read mammogram into the model's input tensor, following a saved recipe."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from mammofuse.errors import MammofuseError
from mammofuse.imaging.reader import Mammogram

InputMode = Literal["roi", "full"]
NoRegion = Literal["breast", "skip"]


@dataclass(frozen=True)
class PreprocessRecipe:
    """How pixels become the model input; saved in ``config.json`` with the weights.

    Attributes:
        image_size: side of the square input.
        input: ``roi`` crops a square around the lesion (``roi_context`` times its diameter)
            when the lesion region is known and otherwise falls back to the breast crop;
            ``full`` always uses the whole breast region.
        roi_context: side of the lesion crop as a multiple of the lesion's diameter.
        roi_min_size: smallest lesion crop side, in pixels (of the canvas when there is one).
        mean, std: intensity normalisation after scaling to [0, 1].
        canvas: (height, width) every image is min-max scaled and stretched to before cropping,
            as the training images were made (CBIS-DDSM at 800x800); None keeps the file's pixels.
        without_region: what ``roi`` does for a case with no lesion region: ``breast`` crops the
            breast instead, ``skip`` leaves the image out (the model scores the clinical findings).
    """

    image_size: int = 224
    input: InputMode = "roi"
    roi_context: float = 1.5
    roi_min_size: int = 64
    mean: float = 0.5
    std: float = 0.25
    canvas: tuple[int, int] | None = None
    without_region: NoRegion = "breast"

    def __post_init__(self) -> None:
        if self.canvas is not None:
            object.__setattr__(self, "canvas", tuple(int(v) for v in self.canvas))

    def needs_region(self) -> bool:
        """Whether a case without a lesion region is scored without its image."""
        return self.input == "roi" and self.without_region == "skip"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["canvas"] = list(self.canvas) if self.canvas else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessRecipe":
        """The recipe ``data`` describes; missing keys take their defaults.

        Raises:
            MammofuseError: an unknown key (a newer mammofuse's step, which this one would silently skip).
        """
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise MammofuseError(f"preprocessing has unknown keys {sorted(map(str, unknown))[:5]}: made by a newer mammofuse?")
        return cls(**data)


Region = tuple[float, float, float]
"""A lesion circle (row, column, radius) in the file's original pixel coordinates."""
TISSUE = 0.08
"""Pixels above this (of [0, 1]) count as breast; at or below it, background."""


def breast_bbox(pixels: np.ndarray, threshold: float = TISSUE) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of the largest bright component: the breast."""
    from scipy import ndimage

    step = max(1, min(pixels.shape) // 256)
    small = pixels[::step, ::step]
    labels, count = ndimage.label(ndimage.binary_opening(small > threshold, iterations=2))
    if count == 0:
        return 0, pixels.shape[0], 0, pixels.shape[1]
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    breast = labels == int(np.argmax(sizes)) + 1
    # Rows where the component is only a thin strip (a film edge along the chest wall) are not breast.
    profile = breast.sum(axis=1)
    rows = np.flatnonzero(profile >= 0.15 * profile.max())
    cols = np.flatnonzero(breast[rows.min() : rows.max() + 1].any(axis=0))
    top, bottom = rows.min() * step, min(pixels.shape[0], (rows.max() + 1) * step)
    left, right = cols.min() * step, min(pixels.shape[1], (cols.max() + 1) * step)
    return int(top), int(bottom), int(left), int(right)


def _square_crop(pixels: np.ndarray, row: float, col: float, side: int) -> np.ndarray:
    """A side x side window centred on (row, col), zero-padded past the edges."""
    half = side // 2
    top, left = int(round(row)) - half, int(round(col)) - half
    out = np.zeros((side, side), dtype=np.float32)
    src = pixels[max(top, 0) : top + side, max(left, 0) : left + side]
    out[max(-top, 0) : max(-top, 0) + src.shape[0], max(-left, 0) : max(-left, 0) + src.shape[1]] = src
    return out


def resize(pixels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize to ``size`` (a square side, or (height, width))."""
    from PIL import Image

    height, width = (size, size) if isinstance(size, int) else size
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def to_canvas(pixels: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    """Pixels min-max scaled and stretched to ``canvas`` (height, width); ``pixels`` are not changed.

    Stretched first, then scaled: the scaling works on the canvas, not on a full-size copy of the film
    (bilinear weights sum to one, so the order changes the result by float rounding only).
    """
    low, high = float(pixels.min()), float(pixels.max())
    stretched = pixels if pixels.shape == tuple(canvas) else resize(pixels, canvas)
    if (low, high) == (0.0, 1.0):  # already min-max scaled
        return stretched.astype(np.float32, copy=False)
    scaled = stretched.astype(np.float32)  # a copy of the canvas (Pillow's array is read-only)
    scaled -= low
    scaled /= max(high - low, 1e-6)
    return scaled


def region_in_model_space(region: Region, shape: tuple[int, int], flipped: bool, canvas: tuple[int, int] | None) -> Region:
    """A region given in a file's own pixels (``shape``), in the canonically flipped, canvas-stretched pixels.

    The circle's bounding square becomes a rectangle on an uneven canvas; the radius is half its longer
    side, as a lesion box of a canvas-sized image gives (:func:`mammofuse.data.cbis_images.box_region`).
    A flipped column is mirrored as a pixel index (``W - 1 - col``) while box centres are edge-based
    (``x + w / 2``), so on flipped films the crop sits one model pixel left of the box's centre; every
    model was trained with this same mapping, so scoring matches training exactly.
    """
    row, col, radius = region
    if flipped:
        col = shape[1] - 1 - col
    if not canvas:
        return (row, col, radius)
    sy, sx = canvas[0] / shape[0], canvas[1] / shape[1]
    return (row * sy, col * sx, radius * max(sy, sx))


def model_space(mammogram: Mammogram, recipe: PreprocessRecipe, region: Region | None = None) -> tuple[np.ndarray, Region | None]:
    """The pixels crops are taken from (the canvas, if any) and the lesion region in them."""
    pixels = mammogram.pixels
    if region is not None:
        region = region_in_model_space(region, pixels.shape, mammogram.info.flipped, recipe.canvas)
    return (to_canvas(pixels, recipe.canvas) if recipe.canvas else pixels), region


def lesion_crop(pixels: np.ndarray, region: Region, recipe: PreprocessRecipe) -> np.ndarray:
    """The square around a lesion that ``roi`` models look at."""
    row, col, radius = region
    return _square_crop(pixels, row, col, lesion_side(radius, recipe))


def lesion_side(radius: float, recipe: PreprocessRecipe) -> int:
    """The side of the square a lesion crop of ``radius`` takes (before resizing to the input size)."""
    return max(recipe.roi_min_size, int(round(2 * radius * recipe.roi_context)))


def crop_box(pixels: np.ndarray, recipe: PreprocessRecipe, region: Region | None) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of :func:`crop_pixels`' window in ``pixels`` (a lesion square may reach past the edges)."""
    if recipe.input == "roi" and region is not None:
        side = lesion_side(region[2], recipe)
        top, left = int(round(region[0])) - side // 2, int(round(region[1])) - side // 2
        return top, top + side, left, left + side
    return breast_bbox(pixels)


def crop_for_model(mammogram: Mammogram, recipe: PreprocessRecipe, region: Region | None = None) -> np.ndarray:
    """The region the model looks at, before resizing (float32 in [0, 1]).

    ``roi`` with a known region: a square around the lesion. Otherwise the breast's bounding
    box, which the resize then stretches to a square (as whole-image pipelines usually do).
    """
    pixels, region = model_space(mammogram, recipe, region)
    return crop_pixels(pixels, recipe, region)


def crop_pixels(pixels: np.ndarray, recipe: PreprocessRecipe, region: Region | None) -> np.ndarray:
    """:func:`crop_for_model` on pixels already in model space."""
    if recipe.input == "roi" and region is not None:
        return lesion_crop(pixels, region, recipe)
    top, bottom, left, right = crop_box(pixels, recipe, region)
    return pixels[top:bottom, left:right]  # resized to a square: aspect is not kept


def normalise(crop: np.ndarray, recipe: PreprocessRecipe) -> np.ndarray:
    """A crop resized to the model input (1, S, S) float32, normalised with the recipe's mean and std."""
    crop = resize(crop, recipe.image_size)
    return ((crop - recipe.mean) / recipe.std)[None].astype(np.float32)


def preprocess(mammogram: Mammogram, recipe: PreprocessRecipe, region: Region | None = None) -> np.ndarray:
    """Model input (1, S, S) float32, normalised with the recipe's mean and std."""
    return normalise(crop_for_model(mammogram, recipe, region), recipe)
