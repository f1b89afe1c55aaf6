"""Self-supervised pretraining offline: a backbone learns to predict texture statistics of patches.

No labels and no lesion pixels: patches are drawn at random from the breast tissue of
unlabelled mammograms, away from every known lesion region, at the sizes lesion crops have,
and the backbone (with a linear head) regresses their standardised GLCM and first-order
statistics (:func:`mammofuse.imaging.radiomics.texture_features`). A randomly initialised
backbone's features hardly differ between cases; these targets make it see texture first.

The result is ``backbone.safetensors``: the backbone's weights, with metadata naming its
architecture, loadable by ``mammofuse train --pretrained PATH`` (or a registered name).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from mammofuse.atomic import write_bytes
from mammofuse.backbones import REGISTERED_BACKBONES, backbone_path
from mammofuse.cache import file_identity
from mammofuse.errors import MammofuseError, check_openable, reading
from mammofuse.hub import REGISTRY, WEIGHTS_NAME, staged_model_folder
from mammofuse.imaging.augment import augment_batch
from mammofuse.imaging.preprocess import PreprocessRecipe, Region, region_in_model_space, resize, to_canvas
from mammofuse.imaging.radiomics import texture_features
from mammofuse.imaging.reader import read_mammogram
from mammofuse.model import MammoFuse
from mammofuse.model.encoders import image_backbone
from mammofuse.model.io import check_weights

BACKBONE_FORMAT = "mammofuse-backbone-1"


@dataclass
class PretrainSettings:
    """How patches are drawn and the backbone is trained."""

    backbone: str = "cnn4"
    image_size: int = 64
    canvas: tuple[int, int] | None = (800, 800)
    patches_per_image: int = 8
    patch_sides: tuple[int, int] = (64, 256)
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    holdout: float = 0.1
    seed: int = 0


def _model_backbone(spec: str, folder: Path, backbone: str) -> dict[str, torch.Tensor]:
    """The image backbone's weights of a trained mammofuse model (e.g. an image-only model)."""
    model = MammoFuse.from_pretrained(folder)
    if model.backbone is None or model.config.backbone != backbone:
        raise MammofuseError(f"pretrained (--pretrained) {spec}: a {model.config.fusion} model with backbone {model.config.backbone}, not a {backbone} image branch")
    return model.backbone.state_dict()


def weights_file_digest(spec: str | None) -> str | None:
    """SHA-256 of the file of weights a resolved ``pretrained`` setting names (a backbone file, or a trained
    model's weights); None for random or torchvision weights and for a name that is no file."""
    if spec in (None, "imagenet"):
        return None
    folder = staged_model_folder(spec)
    path = folder / WEIGHTS_NAME if folder else _backbone_file(spec)
    with reading(path):  # no permission
        if not path.is_file():
            return None
        return _file_digest(str(path.resolve()), file_identity(path))


def _backbone_file(spec: str) -> Path:
    """The file of a backbone ``pretrained`` names: a registered backbone's, else the path itself (``~`` expanded)."""
    return backbone_path(spec) or Path(spec).expanduser()


@lru_cache(maxsize=64)
def _file_digest(path: str, identity: tuple[int, ...] | None) -> str:
    """The file's SHA-256; ``identity`` (:func:`~mammofuse.cache.file_identity`) only keys the cache."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def load_backbone(module: nn.Module, spec: str, backbone: str) -> dict[str, str]:
    """Load pretrained backbone weights into ``module``: a registered backbone, a .safetensors file from
    ``mammofuse pretrain``, or a trained model (a folder or a registered model such as ``default``)
    whose image branch is taken (staged training: e.g. an image-only model first, then a fusion model
    starting from its backbone).

    Raises:
        MammofuseError: unknown name, unreadable file, another architecture, mismatched keys, tensors of the
            wrong type, NaN or infinite weights.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if (folder := staged_model_folder(spec)) is not None:
        module.load_state_dict(_model_backbone(spec, folder, backbone), strict=True)
        return {"format": "mammofuse-model", "backbone": backbone, "source": spec}
    path = _backbone_file(spec)
    with reading(path):  # a folder on the way that cannot be searched
        found = path.is_file()
    if not found:
        what = "a registered backbone missing from this installation" if spec in REGISTERED_BACKBONES else "no such file, model folder or registered name"
        raise MammofuseError(
            f"pretrained (--pretrained) {spec}: {what} (backbones: {', '.join(REGISTERED_BACKBONES)}; models: {', '.join(REGISTRY)}; or 'imagenet', 'auto', 'none')"
        )
    try:
        check_openable(path)
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise MammofuseError(f"{path}: not a valid safetensors file ({exc})") from None
    if meta.get("format") != BACKBONE_FORMAT:
        raise MammofuseError(f"{path}: not a mammofuse backbone (made by `mammofuse pretrain`)")
    if meta.get("backbone") != backbone:
        raise MammofuseError(f"{path}: weights of a {meta.get('backbone')} backbone, but the model uses {backbone} (--backbone)")
    check_weights(state, module, path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MammofuseError(f"{path}: weights do not fit the {backbone} backbone ({str(exc).splitlines()[0]})") from None
    return meta


def pretraining_patients(spec: str | None) -> set[str] | None:
    """The patient digests a ``mammofuse pretrain`` backbone (a registered name or a file) records: the patients
    whose films its patches came from (no labels). None for anything else, and for a file that records none."""
    from safetensors import SafetensorError, safe_open

    if spec in (None, "imagenet") or staged_model_folder(spec) is not None:
        return None
    path = _backbone_file(spec)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        patients = json.loads(meta["patients"]) if meta.get("format") == BACKBONE_FORMAT and "patients" in meta else None
    except (SafetensorError, OSError, ValueError):
        return None  # loading the weights reports what is wrong with the file
    return {str(p) for p in patients} if isinstance(patients, list) else None


def draw_patches(
    pixels: np.ndarray, count: int, sides: tuple[int, int], avoid: Sequence[Region], rng: np.random.Generator,
) -> list[np.ndarray]:
    """Up to ``count`` square patches of random side inside the breast, clear of every region in ``avoid``."""
    tissue = pixels > 0.08
    integral = np.pad(tissue.cumsum(0).cumsum(1), ((1, 0), (1, 0))).astype(np.float64)
    height, width = pixels.shape
    patches: list[np.ndarray] = []
    for _ in range(count * 20):
        if len(patches) == count:
            break
        side = int(rng.integers(sides[0], sides[1] + 1))
        if side >= min(height, width):
            continue
        top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
        share = (integral[top + side, left + side] - integral[top, left + side] - integral[top + side, left] + integral[top, left]) / side**2
        centre = (top + side / 2, left + side / 2)
        if share < 0.9 or any(math.hypot(centre[0] - r, centre[1] - c) < rad + side / math.sqrt(2) for r, c, rad in avoid):
            continue
        patches.append(pixels[top : top + side, left : left + side])
    return patches


def build_patch_set(
    images: Sequence[str], avoid: dict[str, list[Region]], settings: PretrainSettings, on_image: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(inputs (N, 1, S, S) in [0, 1], texture targets (N, F), image index per patch, errors)."""
    rng = np.random.default_rng(settings.seed)
    inputs, targets, owners, errors = [], [], [], []
    for k, path in enumerate(images):
        try:
            mammogram = read_mammogram(path)
        except MammofuseError as exc:
            errors.append(str(exc))
            continue
        pixels = mammogram.pixels
        regions = [region_in_model_space(r, pixels.shape, mammogram.info.flipped, settings.canvas) for r in avoid.get(path, [])]
        if settings.canvas:
            pixels = to_canvas(pixels, settings.canvas)
        for patch in draw_patches(pixels, settings.patches_per_image, settings.patch_sides, regions, rng):
            small = resize(patch, settings.image_size)
            inputs.append(small[None])
            targets.append(texture_features(small))
            owners.append(k)
        if on_image:
            on_image()
    if not inputs:
        raise MammofuseError("no patches could be drawn: no readable image with enough breast tissue")
    return np.stack(inputs).astype(np.float32), np.stack(targets).astype(np.float32), np.asarray(owners), errors


class _Regressor(nn.Module):
    def __init__(self, backbone: nn.Module, channels: int, outputs: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def pretrain_backbone(
    inputs: np.ndarray, targets: np.ndarray, owners: np.ndarray, settings: PretrainSettings,
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[nn.Module, dict]:
    """Train ``settings.backbone`` to regress standardised texture targets; returns (backbone, report).

    A share ``holdout`` of the images (all their patches) is kept out to report R^2 per epoch.
    """
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    images = np.unique(owners)
    held = set(rng.choice(images, size=max(1, int(round(settings.holdout * len(images)))), replace=False).tolist())
    test = np.array([o in held for o in owners])
    train_idx = np.flatnonzero(~test)
    _check_trainable(len(train_idx), len(held), len(images), len(owners))
    mean, std = targets[~test].mean(0), targets[~test].std(0) + 1e-6
    y = torch.from_numpy((targets - mean) / std)
    recipe = PreprocessRecipe()
    x = torch.from_numpy((inputs - recipe.mean) / recipe.std)
    backbone, channels = image_backbone(settings.backbone)
    model = _Regressor(backbone, channels, targets.shape[1])
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    steps = settings.epochs * math.ceil(len(train_idx) / settings.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=settings.lr, total_steps=max(steps, 1))
    history = []
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = rng.permutation(train_idx)
        total = 0.0
        for i in range(0, len(order), settings.batch_size):
            batch = order[i : i + settings.batch_size]
            if len(batch) < 2:
                continue
            xb = augment_batch(x[batch])
            loss = nn.functional.mse_loss(model(xb), y[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            total += float(loss.detach()) * len(batch)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(x[test][i : i + 256]) for i in range(0, int(test.sum()), 256)])
        residual = float(((pred - y[test]) ** 2).mean())
        _check_converging(total, residual, epoch, settings.lr)
        row = {"epoch": epoch, "train_mse": round(total / max(len(order), 1), 4), "holdout_r2": round(1.0 - residual, 4),
               "seconds": round(time.perf_counter() - start, 1)}
        history.append(row)
        if on_epoch:
            on_epoch(row)
    report = {"patches": int(len(owners)), "images": int(len(images)), "holdout_images": len(held), "holdout_patches": int(test.sum()),
              "history": history}
    return backbone, report


def _check_trainable(training_patches: int, held_images: int, images: int, patches: int) -> None:
    """Raise MammofuseError when no training step can run: a step takes a batch of at least 2 patches of images
    other than those held out."""
    if training_patches < 2:
        remedy = "add images or raise --patches-per-image" if images > held_images else "add images (every one is held out)"
        raise MammofuseError(f"pretraining needs at least 2 patches to train on besides the {held_images} image(s) held out to measure it; "
                             f"{images} image(s) gave {patches} patch(es), {training_patches} to train on: {remedy}")


def _check_converging(loss: float, residual: float, epoch: int, lr: float) -> None:
    """Raise MammofuseError when the training loss or the held-out error is no longer a finite number: the weights are lost."""
    if not (math.isfinite(loss) and math.isfinite(residual)):
        raise MammofuseError(f"pretraining diverged in epoch {epoch} (training loss {loss}, held-out error {residual}); nothing was written: "
                             f"lower --lr (now {lr:g})")


def save_backbone(backbone: nn.Module, path: Path, settings: PretrainSettings, report: dict, patients: Iterable[str] = ()) -> Path:
    """Write the backbone's weights as safetensors (atomically), with what made them as metadata.

    ``patients``: the digests (:func:`~mammofuse.data.sample.patient_digest`) of the patients whose films
    patches were drawn from, recorded so that ``ablate`` can say whose held-out films the backbone has seen.
    The same training writes the same bytes (``ablate`` fingerprints the file): the metadata keys are
    sorted and the report's wall-clock timings (each epoch's ``seconds``) are left out.
    """
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    meta = {
        "format": BACKBONE_FORMAT, "backbone": settings.backbone, "task": "texture-statistics regression",
        "image_size": str(settings.image_size), "report": json.dumps(_without_timings(report)),
    }
    if digests := sorted(set(patients)):
        meta["patients"] = json.dumps(digests)
    write_bytes(path, _sorted_metadata(save(state, metadata=meta)), follow_symlink=True)
    return path


def _without_timings(report: dict) -> dict:
    """``report`` without the wall-clock seconds of each epoch, which differ between runs of the same training."""
    if "history" not in report:
        return report
    return {**report, "history": [{k: v for k, v in row.items() if k != "seconds"} for row in report["history"]]}


def _sorted_metadata(data: bytes) -> bytes:
    """safetensors bytes with the header's metadata in sorted key order: safetensors writes it in hash order,
    which differs between processes. The tensors, and so their offsets, are untouched."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header so that the tensors start 8-byte aligned
    return len(text).to_bytes(8, "little") + text + data[8 + size :]
