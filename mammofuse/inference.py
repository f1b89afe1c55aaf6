"""Turning samples into model inputs, and scoring them in batches."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mammofuse.cache import FileIdentity, file_identity
from mammofuse.clinical import load_schema
from mammofuse.data.sample import Sample
from mammofuse.errors import InputFileError, MammofuseError
from mammofuse.imaging.preprocess import (
    TISSUE,
    PreprocessRecipe,
    Region,
    crop_for_model,
    crop_pixels,
    lesion_side,
    normalise,
    region_in_model_space,
    to_canvas,
)
from mammofuse.imaging.radiomics import N_RADIOMICS, radiomics_features
from mammofuse.imaging.reader import Mammogram, ReaderWarning, check_header, image_shape, read_mammogram, remarks_kept
from mammofuse.interrupts import loader_batches
from mammofuse.results import joined_note, sigmoid

NO_REGION = "no lesion region given: this model looks at lesion crops, so the image was not used"
NOTHING_TO_SCORE = "nothing to score: the model got neither an image it uses nor a clinical finding it reads"
OFF_BREAST = "the lesion circle lies mostly on background, outside the breast: check it (row first, then column, in the file's own pixels)"


def control_needs_region(control: str) -> str:
    """The error of a case a shortcut control cannot be made for: it has no lesion region."""
    return f"the {control!r} control needs the lesion region"


def load_input(
    sample: Sample, recipe: PreprocessRecipe, radiomics: bool = False, control: str | None = None, avoid: Sequence[Region] = (),
    draw: int = 0, films: FilmReader | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The preprocessed (1, S, S) input of a sample and its radiomics vector (empty unless asked).

    Uses the sample's ROI crop file when the recipe wants the ROI and there is one. ``control``
    (``masked`` or ``away``, see :mod:`mammofuse.imaging.controls`) replaces the lesion first;
    ``draw`` picks which of the case's away patches; ``avoid`` holds the regions of every lesion of
    the film (in the file's own pixels), which the away patch keeps clear of and a whole-breast
    model's ``masked`` control fills. ``films`` reads the film (one kept from the lesion before).
    """
    sample = with_mask_region(sample, recipe)
    if recipe.input == "roi" and sample.roi_path and sample.region is None and control is None:
        return model_input(crop_for_model(read_mammogram(sample.roi_path), replace(recipe, input="full", canvas=None)), recipe, None, radiomics)
    if sample.image_path is None:
        raise MammofuseError(f"{sample.id}: no image")
    mammogram, pixels = (films or FilmReader()).read(sample.image_path, recipe.canvas)
    region = None
    if sample.region is not None:
        check_region(mammogram, sample.region)
        region = region_in_model_space(sample.region, mammogram.pixels.shape, mammogram.info.flipped, recipe.canvas)
    if control is not None:
        others = [region_in_model_space(r, mammogram.pixels.shape, mammogram.info.flipped, recipe.canvas) for r in avoid]
        pixels, region = _apply_control(pixels, region, others, recipe, control, sample.id, draw)
    return model_input(crop_pixels(pixels, recipe, region), recipe, region, radiomics)


def model_input(crop: np.ndarray, recipe: PreprocessRecipe, region: Region | None, radiomics: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_input`'s result from the crop the model looks at and the lesion region in model space."""
    image = normalise(crop, recipe)
    extra = radiomics_features(image[0] * recipe.std + recipe.mean, region[2] if region else None) if radiomics else np.zeros(0, np.float32)
    return image, extra


class FilmReader:
    """Reads films into model space (the canvas, if any), keeping the last one while :attr:`keep` is set, so that
    the lesions of one film, scored one after the other, decode it once. A kept film is read-only, and its
    reader's remarks are issued again on each reuse (every lesion's record carries them)."""

    def __init__(self) -> None:
        self.keep = False
        self._kept: tuple[str, tuple[int, int] | None, Mammogram, np.ndarray] | None = None

    def read(self, path: str, canvas: tuple[int, int] | None) -> tuple[Mammogram, np.ndarray]:
        """The film at ``path`` and its pixels in model space."""
        kept, self._kept = self._kept, None  # a film not asked for again is freed before the next one is decoded
        if kept is not None and kept[:2] == (path, canvas):
            mammogram, pixels = kept[2], kept[3]
            for remark in mammogram.info.warnings:
                warnings.warn(ReaderWarning(path, remark), stacklevel=2)
        else:
            mammogram = read_mammogram(path)
            pixels = to_canvas(mammogram.pixels, canvas) if canvas else mammogram.pixels
        if self.keep:
            mammogram.pixels.flags.writeable = pixels.flags.writeable = False
            self._kept = (path, canvas, mammogram, pixels)
        return mammogram, pixels


def _apply_control(pixels: np.ndarray, region: Region | None, others: Sequence[Region], recipe: PreprocessRecipe, control: str,
                   case_id: str, draw: int) -> tuple[np.ndarray, Region]:
    """The model-space pixels and crop region of a shortcut control: ``masked`` fills the lesion (every lesion of the
    film, ``others``, for a whole-breast model); ``away`` moves the crop to a patch clear of them, fixed by the case and draw."""
    from mammofuse.imaging.controls import AWAY_NEEDS_ROI, away_key, away_region, mask_lesion

    if region is None:
        raise MammofuseError(control_needs_region(control))
    if control == "masked":
        for lesion in dict.fromkeys([region, *others]) if recipe.input == "full" else [region]:
            pixels = mask_lesion(pixels, lesion)
        return pixels, region
    if recipe.input == "full":
        raise MammofuseError(AWAY_NEEDS_ROI)
    return pixels, away_region(pixels, region, others, away_key(case_id, draw), lesion_side(region[2], recipe) / 2)


def with_mask_region(sample: Sample, recipe: PreprocessRecipe) -> Sample:
    """The one ROI override: a sample without a lesion region gets its ROI mask's (the cropped ROI file
    is used only where there is no mask, so plain scores and shortcut controls crop the same way)."""
    if sample.region is None and sample.roi_mask_path:
        return replace(sample, region=mask_region(sample.roi_mask_path, recipe.canvas, _image_shape(sample.image_path)))
    return sample


def _image_shape(path: str | None) -> tuple[int, int] | None:
    """(rows, columns) of a sample's image from its header, for its ROI mask's region."""
    return _image_shape_of(path, file_identity(path)) if path else None


@lru_cache(maxsize=4096)
def _image_shape_of(path: str, identity: FileIdentity | None) -> tuple[int, int] | None:
    """:func:`_image_shape` of this version of the file (``identity``: a file rewritten in place is read again)."""
    return image_shape(path)


def mask_region(path: str, canvas: tuple[int, int] | None = None, image: tuple[int, int] | None = None) -> Region:
    """:func:`_mask_region_of` this version of the ROI mask file (one rewritten in place is read again)."""
    return _mask_region_of(path, file_identity(path), canvas, image)


@lru_cache(maxsize=4096)
def _mask_region_of(path: str, identity: FileIdentity | None, canvas: tuple[int, int] | None, image: tuple[int, int] | None) -> Region:
    """The lesion circle (row, column, radius) covering the bounding box of a binary ROI mask file.

    ``image``: the (rows, columns) of the mask's image, when known. Some CBIS-DDSM masks were saved
    at another size than their image (several Mass-Test films: 0.87 times it); their box is scaled
    onto the image. On a ``canvas`` the image is stretched unevenly, so the radius is chosen to map
    (see :func:`~mammofuse.imaging.preprocess.region_in_model_space`) onto half the longer side of
    the stretched box, as the boxes of canvas-sized training images are.
    """
    pixels = read_mammogram(path, canonical=False).pixels
    rows, cols = np.nonzero(pixels > 0.5)
    if len(rows) == 0:
        raise MammofuseError(f"{path}: the ROI mask is empty")
    height, width = image or pixels.shape
    fy, fx = height / pixels.shape[0], width / pixels.shape[1]
    top, bottom, left, right = rows.min() * fy, (rows.max() + 1) * fy, cols.min() * fx, (cols.max() + 1) * fx
    sy, sx = (canvas[0] / height, canvas[1] / width) if canvas else (1.0, 1.0)
    radius = max((bottom - top) * sy, (right - left) * sx) / (2 * max(sy, sx))
    return (float(top + bottom) / 2, float(left + right) / 2, float(radius))


def lesion_regions(samples: Sequence[Sample], canvas: tuple[int, int] | None) -> list[Region]:
    """The known lesion regions of ``samples``, their own or their ROI mask's; an unreadable mask is
    skipped (its sample reports it when scored)."""
    regions = []
    for sample in samples:
        try:
            mask = sample.roi_mask_path
            region = sample.region or (mask_region(mask, canvas, _image_shape(sample.image_path)) if mask else None)
        except MammofuseError:
            continue
        if region is not None:
            regions.append(region)
    return regions


def on_background(image: np.ndarray, recipe: PreprocessRecipe) -> bool:
    """Whether most of the lesion's circle in a lesion crop (``load_input``'s image: the circle is centred, its
    diameter the side over ``roi_context``) is background, as a swapped row and column put it."""
    pixels = image[0] * recipe.std + recipe.mean
    side = pixels.shape[0]
    rows, cols = np.ogrid[:side, :side]
    circle = (rows - side / 2 + 0.5) ** 2 + (cols - side / 2 + 0.5) ** 2 <= (side / (2 * recipe.roi_context)) ** 2
    return float((pixels[circle] <= TISSUE).mean()) > 0.5


def check_region(mammogram: Mammogram, region: tuple[float, float, float]) -> None:
    """Raise InputFileError unless the lesion circle's radius is positive and at most the image's longer side
    (a larger one would crop beyond memory), and its centre lies inside the image."""
    row, col, radius = region
    rows, cols = mammogram.pixels.shape
    if not (np.isfinite(radius) and radius > 0):
        raise InputFileError(mammogram.info.path, f"lesion circle roi_radius={radius:g}: the radius must be a positive finite number of pixels")
    if radius > max(rows, cols):
        raise InputFileError(mammogram.info.path, f"lesion circle roi_radius={radius:g} is larger than the {rows}x{cols} image")
    if not (np.isfinite(row) and np.isfinite(col) and 0 <= row < rows and 0 <= col < cols):
        raise InputFileError(
            mammogram.info.path,
            f"lesion circle roi_row={row:g}, roi_col={col:g}, roi_radius={radius:g} is not inside the {rows}x{cols} image",
        )


class LesionDataset(Dataset):
    """Samples as tensors: image (zeros where absent), image_present, radiomics, clinical, clinical_mask, label.

    A sample whose image fails, for whatever reason, gets ``error`` set instead of raising, so
    batch work goes on past a bad file. A ``roi`` recipe that skips cases without a region leaves
    their image out (``image_present`` False, a note in ``note``); under a shortcut ``control`` such a
    case fails (it has no lesion to replace). ``cache`` keeps each prepared
    image in memory (preparation is deterministic).
    """

    def __init__(
        self, samples: Sequence[Sample], recipe: PreprocessRecipe, vocabulary: str, use_images: bool = True, *,
        radiomics: bool = False, control: str | None = None, draw: int = 0, cache: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.recipe = recipe
        self.schema = load_schema(vocabulary)
        self.use_images = use_images
        self.radiomics, self.control, self.draw = radiomics, control, draw
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, bool, str, str]] | None = {} if cache else None
        self._encoded = [self.schema.encode(s.clinical) for s in self.samples]
        self._reader = FilmReader()
        self._films: dict[str, list[Sample]] = {}
        for s in self.samples:
            if s.image_id:
                self._films.setdefault(s.image_id, []).append(s)

    def __len__(self) -> int:
        return len(self.samples)

    def _prepare(self, index: int) -> tuple[np.ndarray, np.ndarray, bool, str, str]:
        """(image, radiomics, image read, error, note): the error is the problem alone (the record names the file); the
        note holds the reader's remarks on the file too, for a file that fails as well."""
        sample = self.samples[index]
        size = self.recipe.image_size
        empty = (np.zeros((1, size, size), np.float32), np.zeros(N_RADIOMICS if self.radiomics else 0, np.float32), False)
        if not (self.use_images and sample.has_image):
            return (*empty, "", "")
        remarks: list[str] = []
        following = self.samples[index + 1] if index + 1 < len(self.samples) else None
        self._reader.keep = following is not None and following.image_path == sample.image_path
        try:
            with remarks_kept() as remarks:
                loaded = self._load(sample)
        except InputFileError as exc:
            return (*empty, exc.problem, joined_note(*remarks))
        except MammofuseError as exc:
            return (*empty, str(exc), joined_note(*remarks))
        except Exception as exc:  # any failure is this file's, never the batch's
            return (*empty, f"cannot read ({type(exc).__name__}: {exc})", joined_note(*remarks))
        if loaded is None:
            if self.control:  # scored on its findings alone, its "control" score would be its plain score
                return (*empty, control_needs_region(self.control), joined_note(*remarks))
            return (*empty, "", joined_note(NO_REGION, *remarks))
        image, extra = loaded
        off = self.recipe.input == "roi" and sample.region is not None and self.control is None and on_background(image, self.recipe)
        return image, extra, True, "", joined_note(OFF_BREAST if off else "", *remarks)

    def _load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray] | None:
        """The image input and radiomics of a sample; None when the recipe needs a lesion region the sample lacks
        (the file's header is still checked: a file that is no mammogram is reported)."""
        if self.recipe.needs_region() and not sample.has_lesion_region:
            check_header(sample.image_path)
            return None
        if self.control and sample.region is None and not sample.roi_mask_path:
            # No lesion region, so no control can be made: say so without decoding the image (a full-field DICOM
            # takes a second), after the header check, so a file that is no mammogram is still reported as such.
            check_header(sample.image_path)
            raise MammofuseError(control_needs_region(self.control))
        avoid = lesion_regions(self._films.get(sample.image_id or "", []), self.recipe.canvas) if self.control else []
        return load_input(sample, self.recipe, self.radiomics, self.control, avoid, self.draw, self._reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._cache is not None and index in self._cache:
            image, extra, read, error, note = self._cache[index]
        else:
            image, extra, read, error, note = self._prepare(index)
            if self._cache is not None:
                self._cache[index] = (image, extra, read, error, note)
        vector, mask = self._encoded[index]
        return {
            "index": index,
            "image": torch.from_numpy(image),
            "image_present": torch.tensor(read),
            "radiomics": torch.from_numpy(extra),
            "clinical": torch.from_numpy(vector),
            "clinical_mask": torch.from_numpy(mask),
            "label": torch.tensor(float(self.samples[index].label)),
            "error": error,
            "note": note,
        }


def model_inputs(batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
    """The keyword arguments of ``MammoFuse.forward`` from a collated batch."""
    return {
        "image": batch["image"].to(device, non_blocking=True),
        "clinical": batch["clinical"].to(device),
        "clinical_mask": batch["clinical_mask"].to(device),
        "image_present": batch["image_present"].to(device),
        "radiomics": batch["radiomics"].to(device) if batch["radiomics"].shape[-1] else None,
    }


@dataclass(frozen=True)
class ScoredBatch:
    """Scores of some samples, by their position in the sequence scored.

    ``probabilities`` is NaN where ``errors`` holds the sample's error ('' when fine); ``notes``
    holds a remark per sample ('' when none).
    """

    indices: list[int]
    probabilities: np.ndarray
    errors: list[str]
    notes: list[str]


def batch_scores(indices: list[int], logits: np.ndarray, errors: list[str], notes: list[str], had_input: np.ndarray) -> ScoredBatch:
    """The one rule from logits to scores: the sigmoid where the sample was read, NaN where it failed.

    A sample without any input the model uses (``had_input`` False, see :func:`had_input`) fails with
    :data:`NOTHING_TO_SCORE`: its logit would be the model's prior, not a score of the case.
    """
    errors = [e or ("" if had else NOTHING_TO_SCORE) for e, had in zip(errors, np.asarray(had_input, bool))]
    probabilities = np.where([not e for e in errors], sigmoid(logits.reshape(len(indices))), np.nan)
    return ScoredBatch(list(indices), probabilities, errors, list(notes))


def had_input(model: torch.nn.Module, image_present: torch.Tensor, clinical_mask: torch.Tensor) -> np.ndarray:
    """Per sample of a batch: whether ``model`` got an image it uses or a clinical finding it reads."""
    config = model.config
    image = image_present.bool().cpu().numpy() & config.uses_image
    clinical = clinical_mask.bool().any(dim=1).cpu().numpy() & config.uses_clinical
    return image | clinical


def iter_scores(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    batch_size: int = 16,
    workers: int = 0,
    control: str | None = None,
    draw: int = 0,
) -> Iterator[ScoredBatch]:
    """Score ``samples`` batch by batch in their order on the model's device, reading images in ``workers`` processes.

    A sample whose image fails gets its error, never the batch. ``control`` scores the shortcut
    control of that name instead of the lesion (:mod:`mammofuse.imaging.controls`), on away patch ``draw``.
    The model scores in eval mode and gets its own mode back when the scores end.
    """
    config = model.config
    dataset = LesionDataset(
        samples, config.recipe, config.vocabulary, use_images=config.uses_image, radiomics=config.radiomics, control=control, draw=draw,
    )
    was_training = model.training
    model.eval()
    try:  # a generator of its own: scoring draws nothing from torch's global random stream
        for batch in loader_batches(dataset, batch_size=batch_size, num_workers=workers, generator=torch.Generator()):
            with torch.inference_mode():
                logits = model(**model_inputs(batch, model.device)).logits.float().cpu().numpy()
            used = had_input(model, batch["image_present"], batch["clinical_mask"])
            yield batch_scores(batch["index"].tolist(), logits, batch["error"], batch["note"], used)
    finally:
        model.train(was_training)


def predict_proba(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    batch_size: int = 16,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
    control: str | None = None,
    notes: list[str] | None = None,
    draw: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """Probabilities of malignancy for ``samples`` and an error string per sample ('' when fine).

    A sample whose image could not be read gets NaN and its error (see :func:`iter_scores`).
    ``notes``, if given, receives one remark per sample ('' when none), e.g. that a lesion-crop
    model got no region and scored the clinical findings only.
    """
    probs = np.full(len(samples), np.nan, dtype=np.float64)
    errors = [""] * len(samples)
    remarks = [""] * len(samples)
    for scored in iter_scores(model, samples, batch_size, workers, control, draw):
        probs[scored.indices] = scored.probabilities
        for i, error, note in zip(scored.indices, scored.errors, scored.notes):
            errors[i], remarks[i] = error, note
        if on_batch:
            on_batch(len(scored.indices))
    if notes is not None:
        notes[:] = remarks
    return probs, errors
