"""Turning samples into model inputs, and scoring them in batches."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mammofuse.clinical import load_schema
from mammofuse.data.sample import Sample
from mammofuse.errors import InputFileError, MammofuseError
from mammofuse.imaging.preprocess import PreprocessRecipe, preprocess
from mammofuse.imaging.reader import Mammogram, read_mammogram


def load_image(sample: Sample, recipe: PreprocessRecipe) -> np.ndarray:
    """The preprocessed (1, S, S) input of a sample; its ROI crop file when the recipe wants the ROI."""
    if recipe.input == "roi" and sample.roi_path:
        return preprocess(read_mammogram(sample.roi_path), PreprocessRecipe(**{**recipe.as_dict(), "input": "full"}))
    if sample.image_path is None:
        raise MammofuseError(f"{sample.id}: no image")
    mammogram = read_mammogram(sample.image_path)
    if sample.region is not None and recipe.input == "roi":
        check_region(mammogram, sample.region)
    return preprocess(mammogram, recipe, sample.region)


def check_region(mammogram: Mammogram, region: tuple[float, float, float]) -> None:
    """Raise InputFileError unless the lesion circle is finite, its radius positive and its centre inside the image."""
    row, col, radius = region
    rows, cols = mammogram.pixels.shape
    if not (np.isfinite(region).all() and radius > 0 and 0 <= row < rows and 0 <= col < cols):
        raise InputFileError(
            mammogram.info.path,
            f"lesion circle roi_row={row:g}, roi_col={col:g}, roi_radius={radius:g} is not inside the {rows}x{cols} image",
        )


class LesionDataset(Dataset):
    """Samples as tensors: image (zeros where absent), image_present, clinical, clinical_mask, label.

    A sample whose image fails, for whatever reason, gets ``error`` set instead of raising, so
    batch work goes on past a bad file.
    """

    def __init__(self, samples: Sequence[Sample], recipe: PreprocessRecipe, vocabulary: str, use_images: bool = True) -> None:
        self.samples = list(samples)
        self.recipe = recipe
        self.schema = load_schema(vocabulary)
        self.use_images = use_images
        self._encoded = [self.schema.encode(s.clinical) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        vector, mask = self._encoded[index]
        size = self.recipe.image_size
        image, present, error = np.zeros((1, size, size), np.float32), False, ""
        if self.use_images and sample.has_image:
            try:
                image, present = load_image(sample, self.recipe), True
            except MammofuseError as exc:
                error = str(exc)
            except Exception as exc:  # any failure is this file's, never the batch's
                error = f"{sample.image_path or sample.id}: cannot read ({type(exc).__name__}: {exc})"
        return {
            "index": index,
            "image": torch.from_numpy(image),
            "image_present": torch.tensor(present),
            "clinical": torch.from_numpy(vector),
            "clinical_mask": torch.from_numpy(mask),
            "label": torch.tensor(float(sample.label)),
            "error": error,
        }


def model_inputs(batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
    """The keyword arguments of ``MammoFuse.forward`` from a collated batch."""
    return {
        "image": batch["image"].to(device, non_blocking=True),
        "clinical": batch["clinical"].to(device),
        "clinical_mask": batch["clinical_mask"].to(device),
        "image_present": batch["image_present"].to(device),
    }


@torch.inference_mode()
def predict_proba(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Probabilities of malignancy for ``samples`` and an error string per sample ('' when fine).

    A sample whose image could not be read gets NaN and its error.
    """
    config = model.config
    dataset = LesionDataset(samples, config.recipe, config.vocabulary, use_images=config.uses_image)
    probs = np.full(len(dataset), np.nan, dtype=np.float64)
    errors = [""] * len(dataset)
    model.eval()
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        logits = model(**model_inputs(batch, device)).logits.float().cpu().numpy()
        for i, logit, err in zip(batch["index"].tolist(), logits, batch["error"]):
            errors[i] = err
            if not err:
                probs[i] = 1.0 / (1.0 + np.exp(-logit))
        if on_batch:
            on_batch(len(batch["index"]))
    return probs, errors
