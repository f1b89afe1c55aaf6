"""Frozen-backbone feature cache: while the backbone is frozen its outputs never change.

A frozen backbone runs in eval mode (BatchNorm uses its running statistics) and the
training pipeline has no random augmentation, so one feature map per sample is exact for
every frozen epoch. Entries are keyed by each file read (its path and
:func:`~mammofuse.cache.file_identity`: device, inode, size, modification and change times), the lesion
region, the preprocessing recipe and a hash of the backbone weights; a change to any of them is a different
key. A file given new bytes is a new key even when its size and modification time are kept (``cp -p``,
``tar -x``, same-size DICOMs); what :func:`~mammofuse.cache.file_identity` cannot see is its limit.

Features are always computed in the same order and batch size (sample order, chunks of
``batch_size``), so a resumed run sees bit-identical features to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from mammofuse.cache import file_identity
from mammofuse.data.sample import Sample
from mammofuse.errors import OutputError
from mammofuse.imaging.preprocess import PreprocessRecipe
from mammofuse.model.io import state_digest

if TYPE_CHECKING:
    from mammofuse.model.mammofuse import MammoFuse

CACHE_VERSION = 1
FEATURES_KEPT = "the frozen backbone's features"
"""What a feature cache keeps, as warnings name it."""


def _file_identity(path: str | None) -> list[object] | None:
    """A file's part of a sample's key: its absolute path and :func:`~mammofuse.cache.file_identity`."""
    if path is None:
        return None
    return [os.path.abspath(path), file_identity(path)]


def sample_key(sample: Sample, recipe: PreprocessRecipe) -> str:
    """What decides a sample's model input: its files, region and the preprocessing recipe."""
    ident = {
        "v": CACHE_VERSION,
        "image": _file_identity(sample.image_path),
        "roi": _file_identity(sample.roi_path) if recipe.input == "roi" else None,
        "mask": _file_identity(sample.roi_mask_path) if sample.region is None else None,  # its box is the region then
        "region": list(sample.region) if sample.region else None,
        "recipe": recipe.as_dict(),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """Backbone features of a fixed list of samples, in memory or on disk.

    Args:
        mode: ``memory`` (a dict of tensors) or ``disk`` (one safetensors file per sample under
            ``folder``, shared between runs that use the same backbone weights and recipe). A disk cache that
            cannot be written (a full disk) keeps the rest of the run's features in memory, after a warning.
        folder: the disk cache root (``cache_dir("features")`` by default).
    """

    def __init__(self, mode: str, folder: Path | None = None) -> None:
        assert mode in ("memory", "disk"), mode
        self.mode = mode
        self.folder = folder
        self._memory: dict[str, torch.Tensor] = {}
        self._writable = mode == "disk"

    def _path(self, weights: str, key: str) -> Path:
        assert self.folder is not None
        return self.folder / weights[:24] / key[:2] / f"{key}.safetensors"

    def get(self, weights: str, key: str) -> torch.Tensor | None:
        kept = self._memory.get(f"{weights}:{key}")
        if kept is not None or self.mode == "memory":
            return kept
        from safetensors.torch import load_file

        try:
            return load_file(str(self._path(weights, key)))["features"]
        except Exception:  # missing, unreadable (another user's folder), torn or foreign: a miss, written again by put
            return None

    def put(self, weights: str, key: str, features: torch.Tensor) -> None:
        features = features.detach().cpu().contiguous()
        if self._writable:
            from safetensors.torch import save

            from mammofuse.atomic import write_bytes
            from mammofuse.cache import warn_uncached

            try:
                write_bytes(self._path(weights, key), save({"features": features}))
                return
            except OutputError as exc:  # a full disk: a cache must not end the run
                warn_uncached(exc, FEATURES_KEPT)
                self._writable = False
        self._memory[f"{weights}:{key}"] = features

    def clear_memory(self) -> None:
        self._memory.clear()


@torch.no_grad()
def extract_features(
    model: MammoFuse,
    samples: Sequence[Sample],
    indices: Sequence[int],
    load: Callable[[int], tuple[torch.Tensor, bool]],
    recipe: PreprocessRecipe,
    cache: FeatureCache,
    batch_size: int,
    device: torch.device,
    on_step: Callable[[int], None] | None = None,
) -> tuple[dict[int, torch.Tensor], dict[int, bool]]:
    """Features (C, h, w) of ``model``'s backbone and image-present flags for ``indices``, reading the cache first.

    ``load(i)`` returns sample i's input image (1, S, S) and whether it was read. The backbone
    never runs for a sample without a readable image: it gets zero features (the model swaps in
    its learned missing-image token anyway). Misses are computed in order, in chunks of
    ``batch_size``, so the same samples always give bit-identical features.
    """
    backbone = model.backbone
    backbone.eval()
    weights = state_digest(backbone)
    out: dict[int, torch.Tensor] = {}
    present: dict[int, bool] = {}
    todo: list[int] = []
    absent: list[int] = []
    keys: dict[int, str] = {}
    for i in indices:
        if not samples[i].has_image:
            absent.append(i)
            continue
        keys[i] = sample_key(samples[i], recipe)
        cached = cache.get(weights, keys[i])
        if cached is not None:
            out[i], present[i] = cached, True
        else:
            todo.append(i)
    if on_step and out:
        on_step(len(out))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        loaded = []
        for i in chunk:
            image, ok = load(i)
            if ok:
                loaded.append((i, image))
            else:
                absent.append(i)
        if loaded:
            feats = backbone(torch.stack([image for _, image in loaded]).to(device)).float().cpu()
            for (i, _), f in zip(loaded, feats):
                out[i], present[i] = f.clone(), True
                cache.put(weights, keys[i], out[i])
        if on_step:
            on_step(len(chunk))
    if absent:
        blank = torch.zeros(model.feature_shape((1, recipe.image_size, recipe.image_size)))
        for i in absent:
            out[i], present[i] = blank, False
        if on_step:
            on_step(sum(not samples[i].has_image for i in absent))
    return out, present
