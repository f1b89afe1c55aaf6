"""The parts of a training run, each built on its own: device and process group, model,
optimisation (loss, optimiser, schedule, mixed precision), input tables and feature cache."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from mammofuse.cache import cache_dir
from mammofuse.clinical import load_schema
from mammofuse.data.sample import Sample
from mammofuse.device import resolve_device
from mammofuse.errors import MammofuseError
from mammofuse.imaging.reader import image_shape
from mammofuse.model import MammoFuse, ModelConfig
from mammofuse.training import checkpoint as ckpt
from mammofuse.training.distributed import Distributed, env_local_rank
from mammofuse.training.features import FEATURES_KEPT, FeatureCache
from mammofuse.training.schedule import lr_factor
from mammofuse.training.settings import TrainSettings

if TYPE_CHECKING:
    from mammofuse.imaging.preprocess import PreprocessRecipe

GRAD_CLIP = 1.0  # max global gradient norm


def check_samples(settings: TrainSettings, train_samples: Sequence[Sample], val_samples: Sequence[Sample]) -> None:
    """Refuse data a run cannot learn from, with a one-line reason."""
    if not train_samples:
        raise MammofuseError("no training samples")
    if not val_samples and settings.selection != "last":
        raise MammofuseError("no validation samples: selection best needs them (without a validation part, use selection last)")
    if len({s.label for s in train_samples}) < 2:
        raise MammofuseError("the training samples hold only one class (need benign and malignant)")
    if settings.uses_image and not any(s.has_image for s in train_samples):
        raise MammofuseError(
            f"--fusion {settings.fusion} needs images but no training sample has one "
            "(pass --images for CBIS-DDSM, or use --fusion clinical)"
        )
    if settings.fusion == "clinical" and not any(s.clinical for s in train_samples):
        raise MammofuseError("--fusion clinical reads the clinical findings, and no training sample gives one (density, shape, margin...: "
                             "`mammofuse schema` lists them): give them, or train on the images (--fusion image)")
    imaged = [s for s in train_samples if s.has_image]
    if settings.uses_image and imaged and crops_lesions(settings) and not any(s.has_lesion_region for s in imaged):
        raise MammofuseError(
            f"--input roi crops each lesion, and none of the {len(imaged)} training cases with an image gives its lesion region "
            "(roi_row, roi_col, roi_radius in a manifest): give the regions, or crop the whole breast (--input full, or --without-region breast)"
        )


def crops_lesions(settings: TrainSettings) -> bool:
    """Whether the model reads lesion crops and leaves out the image of a case without a lesion region."""
    return settings.input == "roi" and settings.without_region == "skip"


def join_run(device: str) -> tuple[torch.device, Distributed]:
    """This process's device (under torchrun, its local-rank GPU) and its place in the process group."""
    resolved = resolve_device(device, env_local_rank())
    dist = Distributed.from_env(resolved)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    return resolved, dist


def common_canvas(samples: Sequence[Sample]) -> tuple[int, int] | None:
    """The one (rows, columns) shared by every image file of ``samples`` (headers only), else None."""
    shapes = {image_shape(p) for p in {s.image_path for s in samples if s.image_path}}
    return shapes.pop() if len(shapes) == 1 and None not in shapes else None


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(settings: TrainSettings, recipe: PreprocessRecipe, device: torch.device) -> MammoFuse:
    """A freshly seeded model with the pretrained weights ``settings`` ask for, on ``device``."""
    config = ModelConfig(
        fusion=settings.fusion, backbone=settings.backbone, proj_dim=settings.proj_dim,
        modality_dropout=float(settings.modality_dropout), preprocessing=recipe.as_dict(),
        radiomics=bool(settings.radiomics) and settings.uses_image,
        aux_findings=settings.aux_findings > 0 and settings.uses_image,
    )
    seed_everything(settings.seed)
    model = MammoFuse(config, pretrained="imagenet" if settings.pretrained == "imagenet" else None)
    if settings.pretrained not in (None, "imagenet") and model.backbone is not None:
        from mammofuse.training.pretrain import load_backbone

        load_backbone(model.backbone, settings.pretrained, settings.backbone)
    return model.to(device)


@dataclass
class InputTables:
    """The non-image inputs of a split as tensors (clinical-only training never touches images)."""

    clinical: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    present: torch.Tensor  # image read and used; updated as images are read

    @classmethod
    def build(cls, samples: Sequence[Sample], vocabulary: str, uses_image: bool) -> InputTables:
        schema = load_schema(vocabulary)
        encoded = [schema.encode(s.clinical) for s in samples]
        return cls(
            clinical=torch.from_numpy(np.array([v for v, _ in encoded], dtype=np.float32).reshape(len(samples), schema.dim)),
            mask=torch.from_numpy(np.array([m for _, m in encoded], dtype=bool).reshape(len(samples), len(schema.fields))),
            labels=torch.tensor([float(s.label) for s in samples]),
            present=torch.tensor([uses_image and s.has_image for s in samples]),
        )


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type of ``device``: bfloat16 on a GPU that computes in it (Ampere and later), else float16
    (with a gradient scaler); None off CUDA. ``is_bf16_supported()`` alone also says yes where bfloat16 is only
    emulated (T4, V100), which would train slower than float16."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


@dataclass
class Optimisation:
    """How the weights move: class-weighted loss, AdamW, the per-epoch schedule, mixed precision on CUDA."""

    criterion: nn.BCEWithLogitsLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None  # float16 only

    @classmethod
    def build(cls, model: nn.Module, settings: TrainSettings, labels: torch.Tensor, device: torch.device) -> Optimisation:
        """``pos_weight`` balances the classes of the training ``labels``."""
        pos = float(labels.sum())
        criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(labels) - pos) / max(pos, 1.0), device=device))
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, settings))
        dtype = amp_dtype(device) if settings.amp else None
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return cls(criterion, optimizer, scheduler, dtype, scaler)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def autocast(self) -> AbstractContextManager[Any]:
        return nullcontext() if self.autocast_dtype is None else torch.autocast("cuda", dtype=self.autocast_dtype)

    def step(self, loss: torch.Tensor, params: list[nn.Parameter]) -> None:
        """Back-propagate ``loss``, clip the gradient norm, update the weights."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            self.optimizer.step()

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON scalars) of the optimiser, schedule and scaler, for the checkpoint."""
        tensors, optimizer = ckpt.optimizer_state(self.optimizer)
        scheduler = self.scheduler.state_dict()
        scheduler.pop("lr_lambdas", None)  # a closure: rebuilt from the settings
        scaler = self.scaler.state_dict() if self.scaler is not None else None
        return tensors, {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}

    def load_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        ckpt.load_optimizer_state(self.optimizer, tensors, scalars["optimizer"])
        self.scheduler.load_state_dict({**scalars["scheduler"], "lr_lambdas": [None]})
        if self.scaler is not None and scalars.get("scaler"):
            self.scaler.load_state_dict(scalars["scaler"])


def feature_cache(settings: TrainSettings, config: ModelConfig) -> FeatureCache | None:
    """Where frozen-backbone features are kept, or None when they cannot be reused."""
    # Cached features are exact only while every input is fixed: no augmentation, no radiomics token.
    if settings.feature_cache == "off" or not config.uses_image or settings.augment or config.radiomics:
        return None
    folder = cache_dir("features", keeps=FEATURES_KEPT) if settings.feature_cache == "disk" else None
    return FeatureCache("disk" if folder else "memory", folder)
