"""One case made ready for explaining: the model's exact inputs, the view it saw, the file's header.

Every method explains the same thing ``predict`` scores, so the tensors are built by
:func:`mammofuse.inference.model_input`, as ``load_input`` builds them, from the file decoded once, and the region the model saw is drawn at the
film's proportions for the overlays (a model with a canvas sees it stretched). A clinical-only
model's case reads no pixels, as ``predict`` reads none for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammofuse.clinical import load_schema
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError
from mammofuse.imaging.preprocess import PreprocessRecipe, crop_box, crop_pixels, model_space
from mammofuse.imaging.reader import Mammogram, MammogramInfo, read_dicom, read_mammogram
from mammofuse.model import MammoFuse

DISPLAY_SIDE = 768
"""Longest side, in pixels, of the view drawn under the heat maps."""


@dataclass
class CaseInputs:
    """A case as the model sees it.

    Attributes:
        sample: the case.
        image: (1, 1, S, S) normalised model input, or None for a clinical-only model.
        clinical: (1, D) multi-hot clinical vector.
        mask: (1, F) bool, True where the field is present.
        view: the region the model saw, in [0, 1], at the film's proportions (longest side
            at most ``DISPLAY_SIDE``): the background of every overlay; None for a clinical-only model.
        info: what the reader saw in the file; None for a clinical-only model (the file is not read).
        header: extra file attributes for the report (untrusted text from the file).
        radiomics: (1, N_RADIOMICS) texture statistics of the crop, for models with a radiomics token.
        lesion_radius: the lesion's radius in the model's pixels (None without a region), which the
            radiomics token holds beside the crop's texture.
        view_box: where ``view`` lies in the file: (top, bottom, left, right) in its own pixels and
            orientation (a lesion square may reach past the edges); mirrored when ``info.flipped``.
    """

    sample: Sample
    image: torch.Tensor | None
    clinical: torch.Tensor
    mask: torch.Tensor
    view: np.ndarray | None
    info: MammogramInfo | None
    header: dict[str, str] = field(default_factory=dict)
    radiomics: torch.Tensor | None = None
    lesion_radius: float | None = None
    view_box: tuple[float, ...] = ()

    @property
    def source(self) -> str:
        return self.sample.image_path or self.sample.roi_path or self.sample.id

    def extra(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """Further keyword inputs of the model for ``batch`` copies of this case (the radiomics token's)."""
        return {} if self.radiomics is None else {"radiomics": self.radiomics.expand(batch, -1)}

    def extra_for(self, images: torch.Tensor, recipe: PreprocessRecipe) -> dict[str, torch.Tensor]:
        """:meth:`extra` for other (N, 1, S, S) normalised images of this case: their own radiomics token."""
        from mammofuse.imaging.radiomics import radiomics_features

        if self.radiomics is None:
            return {}
        pixels = images[:, 0].float().cpu().numpy() * recipe.std + recipe.mean
        token = np.stack([radiomics_features(crop, self.lesion_radius) for crop in pixels])
        return {"radiomics": torch.from_numpy(token).to(self.radiomics.device)}


def model_view(sample: Sample, recipe: PreprocessRecipe) -> tuple[Mammogram, PreprocessRecipe, Any]:
    """The file, recipe and region the model reads for ``sample`` (as ``inference.load_input``)."""
    if recipe.input == "roi" and sample.roi_path and sample.region is None:
        return read_mammogram(sample.roi_path), replace(recipe, input="full", canvas=None), None
    if sample.image_path is None:
        raise MammofuseError(f"{sample.id}: no image")
    return read_mammogram(sample.image_path), recipe, sample.region


def prepare_inputs(model: MammoFuse, sample: Sample, device: str | torch.device = "cpu") -> CaseInputs:
    """Read the case's file once and build the model inputs and the display view (a clinical-only model reads no file).

    Raises:
        MammofuseError: unreadable file (the message names it) or unknown clinical value.
    """
    from mammofuse.inference import NOTHING_TO_SCORE, check_region, model_input, with_mask_region

    config = model.config
    vector, mask = load_schema(config.vocabulary).encode(sample.clinical)
    clinical, present = torch.from_numpy(vector)[None].to(device), torch.from_numpy(mask)[None].to(device)
    if not config.uses_image:
        if not mask.any():
            raise MammofuseError(f"{sample.image_path or sample.id}: {NOTHING_TO_SCORE} (a clinical-only model given no finding)")
        return CaseInputs(sample=sample, image=None, clinical=clinical, mask=present, view=None, info=None)
    sample = with_mask_region(sample, config.recipe)
    if config.recipe.needs_region() and sample.region is None and not sample.roi_path:
        raise MammofuseError(
            f"{sample.image_path or sample.id}: this model looks at lesion crops and no lesion region was given: "
            "give its region (--roi ROW,COL,RADIUS, roi= in Python, or roi_row, roi_col, roi_radius columns in --clinical)"
        )
    mammogram, recipe, region = model_view(sample, config.recipe)
    if region is not None:
        check_region(mammogram, region)
    shape, flipped = mammogram.pixels.shape, mammogram.info.flipped
    pixels, model_region = model_space(mammogram, recipe, region)
    crop = crop_pixels(pixels, recipe, model_region)
    array, extra = model_input(crop, recipe, model_region, config.radiomics)
    return CaseInputs(
        sample=sample,
        image=torch.from_numpy(array)[None].to(device),
        clinical=clinical,
        mask=present,
        view=display_view(crop, film_pixel(shape, recipe.canvas)),
        view_box=film_box(crop_box(pixels, recipe, model_region), shape, recipe.canvas, flipped),
        info=mammogram.info,
        header=dicom_header(Path(mammogram.info.path)) if mammogram.info.format == "dicom" else {},
        radiomics=torch.from_numpy(extra)[None].to(device) if config.radiomics else None,
        lesion_radius=model_region[2] if model_region else None,
    )


def film_pixel(shape: tuple[int, int], canvas: tuple[int, int] | None) -> tuple[float, float]:
    """(height, width) of one of the model's pixels in the film's pixels: a canvas stretches them unevenly."""
    return (shape[0] / canvas[0], shape[1] / canvas[1]) if canvas else (1.0, 1.0)


def film_box(box: tuple[int, int, int, int], shape: tuple[int, int], canvas: tuple[int, int] | None, flipped: bool) -> tuple[float, ...]:
    """A (top, bottom, left, right) window of the model's pixels in the file's own pixels and orientation."""
    height, width = film_pixel(shape, canvas)
    top, bottom, left, right = box[0] * height, box[1] * height, box[2] * width, box[3] * width
    if flipped:
        left, right = shape[1] - right, shape[1] - left
    return tuple(round(v, 1) for v in (top, bottom, left, right))


def display_view(crop: np.ndarray, pixel: tuple[float, float] = (1.0, 1.0), side: int = DISPLAY_SIDE) -> np.ndarray:
    """``crop`` resized so its longest side is ``side``, at the film's proportions (``pixel``: see
    :func:`film_pixel`), float32 in [0, 1]."""
    from PIL import Image

    height, width = crop.shape[0] * pixel[0], crop.shape[1] * pixel[1]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32), mode="F")
    return np.clip(np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32), 0.0, 1.0)


IDENTIFYING_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber", "StudyDate", "SeriesDate", "AcquisitionDate",
                    "StudyDescription", "SeriesDescription")
"""Direct identifiers, dates and free text that may hold them (PS3.15 Annex E removes them all): the report leaves them out
unless asked (``include_identifiers``)."""
HEADER_TAGS = (*IDENTIFYING_TAGS, "Manufacturer")


def dicom_header(path: Path) -> dict[str, str]:
    """A few DICOM attributes as text, identifiers (:data:`IDENTIFYING_TAGS`) included (header only, no pixels); {} if unreadable.

    These strings come from the file and are untrusted: the report escapes them.
    """
    try:
        ds = read_dicom(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
    except Exception:  # the pixels were readable; a header we cannot re-read is just not shown
        return {}
    return {tag: str(ds.get(tag, "")) for tag in HEADER_TAGS if str(ds.get(tag, "") or "")}


class FixedImageScorer:
    """Logits of clinical variations with the image held fixed (its features computed once).

    Example:
        >>> scorer = FixedImageScorer(model, inputs)  # doctest: +SKIP
        >>> scorer.logits(clinical_batch, mask_batch).shape  # doctest: +SKIP
        (32,)
    """

    def __init__(self, model: MammoFuse, inputs: CaseInputs, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = batch_size
        self.inputs = inputs
        self.features = None
        if model.config.uses_image:
            with torch.no_grad():
                self.features = model.image_features(inputs.image)

    @torch.no_grad()
    def logits(self, clinical: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits (N,) for clinical vectors (N, D) and presence masks (N, F)."""
        device = self.model.device
        clinical = torch.as_tensor(np.asarray(clinical, dtype=np.float32), device=device)
        mask = torch.as_tensor(np.asarray(mask, dtype=bool), device=device)
        out = []
        for start in range(0, len(clinical), self.batch_size):
            c, m = clinical[start : start + self.batch_size], mask[start : start + self.batch_size]
            features = None if self.features is None else self.features.expand(len(c), *self.features.shape[1:])
            out.append(self.model(None, c, m, features=features, **self.inputs.extra(len(c))).logits.float().cpu())
        return torch.cat(out).numpy().astype(np.float64)


class FixedClinicalScorer:
    """Logits of image variations with the clinical input held fixed (a radiomics token follows each image)."""

    def __init__(self, model: MammoFuse, inputs: CaseInputs, batch_size: int = 32) -> None:
        self.model = model
        self.inputs = inputs
        self.batch_size = batch_size

    @torch.inference_mode()
    def logits(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits (N,) for normalised images (N, 1, S, S)."""
        device = self.inputs.clinical.device
        images = torch.as_tensor(np.asarray(images, dtype=np.float32), device=device)
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            n = len(batch)
            clinical = self.inputs.clinical.expand(n, -1)
            mask = self.inputs.mask.expand(n, -1)
            extra = self.inputs.extra_for(batch, self.model.config.recipe)
            out.append(self.model(batch, clinical, mask, **extra).logits.float().cpu())
        return torch.cat(out).numpy().astype(np.float64)
