"""The training loop: end-to-end training with augmentation, or a frozen pretrained backbone first.

A randomly initialised backbone trains end to end from the first epoch at ``lr``. With
pretrained weights, the first ``freeze_epochs`` epochs may keep the backbone frozen (eval
mode, no gradients; its features come from a cache when nothing is augmented), training only
the heads at ``lr``; then the whole model trains at ``finetune_lr``. The rate follows
``schedule`` over the whole run (cosine by default; ``step`` decays by ``LR_DECAY`` per epoch
within each phase). ``selection: last`` keeps the last epoch (a fixed epoch count, the
threshold from validation at that epoch); ``best`` keeps the epoch of best validation AUC.

Exactness: shuffling is a pure function of (seed, epoch); dropout draws from the global
torch RNG, whose state is checkpointed with the weights, optimiser and scheduler. On CPU a
run of 4 epochs and a run of 2 epochs resumed to 4 give identical weights.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from mammofuse.atomic import write_text
from mammofuse.data.sample import Sample, patient_digest
from mammofuse.device import resolve_device
from mammofuse.errors import MammofuseError
from mammofuse.imaging.preprocess import PreprocessRecipe
from mammofuse.training import checkpoint as ckpt
from mammofuse.training.distributed import Distributed, padded_shard
from mammofuse.training.features import FeatureCache, extract_features
from mammofuse.training.settings import TrainSettings, resumable_changes

LR_DECAY = 0.9  # per epoch, within a phase
GRAD_CLIP = 1.0  # max global gradient norm
HISTORY_NAME = "history.jsonl"
SETTINGS_NAME = "train_config.yaml"


@dataclass
class TrainResult:
    """What a run produced: the folder and the best epoch's validation figures."""

    out: Path
    best_epoch: int
    best_val_auc: float
    threshold: float
    history: list[dict] = field(default_factory=list)


@dataclass
class _Tables:
    """The non-image inputs of a split as tensors (clinical-only training never touches images)."""

    clinical: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    present: torch.Tensor

    @classmethod
    def build(cls, samples: Sequence[Sample], vocabulary: str, uses_image: bool) -> "_Tables":
        from mammofuse.clinical import load_schema

        schema = load_schema(vocabulary)
        encoded = [schema.encode(s.clinical) for s in samples]
        return cls(
            clinical=torch.from_numpy(np.stack([v for v, _ in encoded]).astype(np.float32)),
            mask=torch.from_numpy(np.stack([m for _, m in encoded]).astype(bool)),
            labels=torch.tensor([float(s.label) for s in samples]),
            present=torch.tensor([uses_image and s.has_image for s in samples]),
        )


def common_canvas(samples: Sequence[Sample]) -> tuple[int, int] | None:
    """The one (rows, columns) shared by every image file of ``samples`` (headers only), else None."""
    from mammofuse.imaging.reader import image_shape

    shapes = {image_shape(p) for p in {s.image_path for s in samples if s.image_path}}
    return shapes.pop() if len(shapes) == 1 and None not in shapes else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(epoch_index: int, settings: TrainSettings) -> float:
    """Multiplier of ``settings.lr`` for the 0-based epoch ``epoch_index``."""
    freeze = settings.freeze_epochs if settings.uses_image else 0
    base = settings.finetune_lr / settings.lr if 0 < freeze <= epoch_index else 1.0
    if settings.schedule == "step":
        return base * LR_DECAY ** (epoch_index - (freeze if epoch_index >= freeze else 0))
    last = max(settings.epochs - 1, 1)
    if settings.schedule == "onecycle":
        peak = max(1, round(0.3 * settings.epochs))
        if epoch_index < peak - 1:
            return base * (0.1 + 0.9 * (epoch_index + 1) / peak)
        start = peak - 1
    else:
        if epoch_index < settings.warmup_epochs:
            return base * (epoch_index + 1) / (settings.warmup_epochs + 1)
        start = settings.warmup_epochs
    progress = min(1.0, (epoch_index - start) / max(last - start, 1))
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def epoch_batches(n: int, epoch: int, settings: TrainSettings, dist: Distributed) -> list[list[int]]:
    """This rank's batches for ``epoch``: a seeded permutation, sharded, a lone last sample merged."""
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
    order = padded_shard(torch.randperm(n, generator=generator).tolist(), dist.rank, dist.world)
    batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:  # BatchNorm cannot train on one sample
        batches[-2].extend(batches.pop())
    return batches


def _chunks(items: Sequence[int], size: int) -> list[list[int]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _roc_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, probs))


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The probability cut-off maximising sensitivity + specificity - 1 (0.5 when undefined)."""
    from sklearn.metrics import roc_curve

    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, probs)
    finite = np.isfinite(thresholds)
    best = int(np.argmax(np.where(finite, tpr - fpr, -np.inf)))
    return float(np.clip(thresholds[best], 0.0, 1.0))


class _Trainer:
    """One run's state; ``train`` below is the public entry point."""

    def __init__(self, settings: TrainSettings, train_samples: list[Sample], val_samples: list[Sample], out: Path, progress: bool) -> None:
        from mammofuse.inference import LesionDataset
        from mammofuse.model import MammoFuse, ModelConfig

        self.settings, self.out = settings, Path(out)
        self.train_samples, self.val_samples = list(train_samples), list(val_samples)
        _check_samples(settings, self.train_samples, self.val_samples)
        device_type = "cuda" if settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist = Distributed.from_env(device_type)
        self.device = resolve_device(settings.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.progress = progress and self.dist.main
        self.recipe: PreprocessRecipe = settings.recipe(common_canvas(self.train_samples + self.val_samples))
        config = ModelConfig(
            fusion=settings.fusion, backbone=settings.backbone, proj_dim=settings.proj_dim,
            modality_dropout=float(settings.modality_dropout), preprocessing=self.recipe.as_dict(),
            radiomics=bool(settings.radiomics) and settings.uses_image,
        )
        seed_everything(settings.seed)
        self.model = MammoFuse(config, pretrained="imagenet" if settings.pretrained == "imagenet" else None)
        if settings.pretrained not in (None, "imagenet") and self.model.backbone is not None:
            from mammofuse.training.pretrain import load_backbone

            load_backbone(self.model.backbone, settings.pretrained, settings.backbone)
        self.model.to(self.device)
        self.uses_image = config.uses_image
        self.tables = {
            "train": _Tables.build(self.train_samples, config.vocabulary, self.uses_image),
            "val": _Tables.build(self.val_samples, config.vocabulary, self.uses_image),
        }
        self.datasets = {
            split: LesionDataset(
                samples, self.recipe, config.vocabulary, use_images=self.uses_image, radiomics=config.radiomics,
                cache=settings.workers == 0,
            )
            for split, samples in (("train", self.train_samples), ("val", self.val_samples))
        }
        if config.radiomics:
            self._standardise_radiomics()
        labels = self.tables["train"].labels
        pos = float(labels.sum())
        self.pos_weight = torch.tensor((len(labels) - pos) / max(pos, 1.0), device=self.device)
        self.criterion = nn.BCEWithLogitsLoss(pos_weight=self.pos_weight)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: lr_factor(e, settings))
        self.autocast_dtype = None
        if self.device.type == "cuda" and settings.amp:
            self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        cache_mode = settings.feature_cache
        self.cache = None
        # Cached features are exact only while every input is fixed: no augmentation, no radiomics token.
        if cache_mode != "off" and self.uses_image and not settings.augment and not config.radiomics:
            from mammofuse.cache import cache_dir

            self.cache = FeatureCache(cache_mode, cache_dir("features") if cache_mode == "disk" else None)
        self.features: dict[str, dict[int, torch.Tensor]] = {}
        self.wrapped: nn.Module = self.model
        self.wrapped_frozen: bool | None = None
        # What the run has done so far (restored by --resume).
        self.epoch = 0
        self.best = {"score": -math.inf, "auc": float("nan"), "epoch": 0, "threshold": 0.5}
        self.bad_epochs = 0
        self.stopped = False
        self.history: list[dict[str, Any]] = []
        self._feature_shape: tuple[int, ...] | None = None
        self.unreadable: dict[str, str] = {}  # "split:index" -> why its image could not be read
        self.warned = 0

    # ------------------------------------------------------------------ phases
    def frozen(self, epoch: int) -> bool:
        return self.uses_image and epoch <= self.settings.freeze_epochs

    def _set_phase(self, frozen: bool) -> None:
        if self.uses_image:
            for p in self.model.backbone.parameters():
                p.requires_grad_(not frozen)
        if not frozen:
            self.features.clear()
            if self.cache is not None:
                self.cache.clear_memory()
        if self.dist.enabled and self.wrapped_frozen != frozen:
            # DDP registers only parameters that need gradients: rebuild it when that changes.
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.model, device_ids=ids)
        self.wrapped_frozen = frozen

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    # ------------------------------------------------------------------ inputs
    def _standardise_radiomics(self) -> None:
        """Set the model's radiomics mean/std from the training cases with an image (read once, cached)."""
        dataset = self.datasets["train"]
        rows = [item["radiomics"] for item in map(dataset.__getitem__, range(len(dataset))) if bool(item["image_present"])]
        if len(rows) >= 2:
            stacked = torch.stack(rows).double()
            self.model.radiomics_mean.copy_(stacked.mean(0).float())
            self.model.radiomics_std.copy_(stacked.std(0).clamp(min=1e-6).float())

    def _load_image(self, split: str, index: int) -> tuple[torch.Tensor, bool]:
        item = self.datasets[split][index]
        if item["error"]:
            self.unreadable.setdefault(f"{split}:{index}", item["error"])
        return item["image"], bool(item["image_present"])

    def _ensure_features(self, split: str) -> None:
        """Fill ``self.features[split]`` from the cache (computing misses), shared across ranks."""
        if split in self.features or self.cache is None:
            return
        samples = self.train_samples if split == "train" else self.val_samples
        mine = self.dist.shard(range(len(samples)))  # validation only ever needs this rank's share
        with self._bar(f"caching {split} features", len(mine)) as step:
            feats, present = extract_features(
                self.model.backbone, samples, mine, lambda i: self._load_image(split, i), self.recipe,
                self.cache, self.settings.batch_size, self.device, on_step=step,
            )
        if split == "train" and self.dist.enabled:  # each rank computed a share; every rank needs all
            merged_f: dict[int, torch.Tensor] = {}
            merged_p: dict[int, bool] = {}
            for part_f, part_p in self.dist.gather((feats, present)):
                merged_f.update(part_f)
                merged_p.update(part_p)
            feats, present = merged_f, merged_p
        table = self.tables[split]
        for i, ok in present.items():
            table.present[i] = bool(ok)
        self.features[split] = feats

    def _batches(self, split: str, batches: list[list[int]], frozen: bool) -> Iterator[tuple[list[int], dict[str, torch.Tensor], torch.Tensor]]:
        """(indices, model kwargs, labels) per batch; images are read only when needed."""
        table = self.tables[split]
        if not self.uses_image or (frozen and self.cache is not None):
            for idx in batches:
                kwargs = {
                    "image": None,
                    "clinical": table.clinical[idx].to(self.device),
                    "clinical_mask": table.mask[idx].to(self.device),
                    "image_present": table.present[idx].to(self.device),
                }
                if self.uses_image:
                    kwargs["features"] = torch.stack([self.features[split][i] for i in idx]).to(self.device)
                yield idx, kwargs, table.labels[idx].to(self.device)
            return
        from torch.utils.data import DataLoader

        from mammofuse.inference import model_inputs

        loader = DataLoader(
            self.datasets[split], batch_sampler=batches, num_workers=self.settings.workers,
            generator=torch.Generator().manual_seed(self.settings.seed),
        )
        for batch in loader:
            idx = batch["index"].tolist()
            for i, ok, error in zip(idx, batch["image_present"].tolist(), batch["error"]):
                table.present[i] = bool(ok)
                if error:
                    self.unreadable.setdefault(f"{split}:{i}", error)
            kwargs = model_inputs(batch, self.device)
            if self.settings.augment and split == "train":
                from mammofuse.imaging.augment import augment_batch

                kwargs["image"] = augment_batch(kwargs["image"])
            present = kwargs["image_present"]
            n_present = int(present.sum())
            if frozen:  # cache off: the frozen backbone still runs in eval mode, without gradients
                with torch.no_grad():
                    kwargs["features"] = self._present_features(kwargs.pop("image"), present)
                kwargs["image"] = None
            elif n_present < len(idx) and (
                n_present >= 2 or not self.model.training or (n_present == 0 and not self.dist.enabled)
            ):
                # Image-less cases must not reach the backbone: zero images would skew BatchNorm's
                # batch statistics (and cost a forward pass each). A training batch with a single
                # image goes through whole (BatchNorm needs two samples), and so does an image-less
                # one under DDP, which expects every parameter to take part in each step.
                kwargs["features"] = self._present_features(kwargs.pop("image"), present)
                kwargs["image"] = None
            yield idx, kwargs, batch["label"].to(self.device)

    def _present_features(self, image: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Backbone features of the rows with an image; zeros for the others (never looked at)."""
        if self._feature_shape is None:
            from mammofuse.training.features import feature_shape

            self._feature_shape = feature_shape(self.model.backbone, self.settings.image_size, self.device)
        features = torch.zeros((len(present), *self._feature_shape), device=self.device)
        if bool(present.any()):
            with self._autocast():
                computed = self.model.backbone(image[present]).float()
            features = features.index_put((present,), computed)
        return features

    # ------------------------------------------------------------------ epochs
    def _train_epoch(self, epoch: int, frozen: bool) -> float:
        self.wrapped.train()
        if frozen:
            self.model.backbone.eval()
        batches = epoch_batches(len(self.train_samples), epoch, self.settings, self.dist)
        params = [p for p in self.model.parameters() if p.requires_grad]
        total, count = 0.0, 0
        with self._bar(f"epoch {epoch}/{self.settings.epochs}" + (" (frozen)" if frozen else ""), len(batches)) as step:
            for idx, kwargs, labels in self._batches("train", batches, frozen):
                self.optimizer.zero_grad(set_to_none=True)
                with self._autocast():
                    out = self.wrapped(**kwargs)
                loss = self._loss(out, labels, kwargs)
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
                total += float(loss.detach()) * len(idx)
                count += len(idx)
                step(1, f" loss {total / count:.4f}")
        total, count = self.dist.sum(total, count)
        return total / max(count, 1)

    def _loss(self, out: Any, labels: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """The class-weighted loss; late fusion supervises each branch on the cases that have its modality."""
        if out.branch_logits is None:
            return self.criterion(out.logits.float(), labels)
        branches = out.branch_logits.float()
        image, clinical = kwargs["image_present"].bool(), kwargs["clinical_mask"].bool().any(dim=1)
        loss = branches.sum() * 0.0  # keeps every parameter in the graph (DDP) when a branch has no case
        for column, has in ((0, image), (1, clinical)):
            if bool(has.any()):
                loss = loss + self.criterion(branches[has, column], labels[has])
        return loss

    @torch.no_grad()
    def _validate(self, frozen: bool) -> tuple[float, float, np.ndarray]:
        """(val_loss, val_auc, probabilities) over the whole validation set, on every rank."""
        self.model.eval()
        mine = self.dist.shard(range(len(self.val_samples)))
        pairs: list[tuple[int, float]] = []
        for idx, kwargs, _ in self._batches("val", _chunks(mine, self.settings.batch_size), frozen):
            with self._autocast():
                logits = self.model(**kwargs).logits.float().cpu().tolist()
            pairs.extend(zip(idx, logits))
        merged = dict(p for part in self.dist.gather(pairs) for p in part)
        logits = torch.tensor([merged[i] for i in range(len(self.val_samples))], dtype=torch.float32)
        labels = self.tables["val"].labels
        loss = float(self.criterion(logits.to(self.device), labels.to(self.device)))
        probs = torch.sigmoid(logits).double().numpy()
        return loss, _roc_auc(labels.numpy(), probs), probs

    def run(self, resume: bool) -> TrainResult:
        if resume:
            self._resume()
        elif ckpt.has_checkpoint(self.out):
            raise MammofuseError(f"{self.out} already holds a training run: add --resume to continue it, or choose another --out")
        if self.dist.main:
            write_text(self.out / SETTINGS_NAME, self.settings.to_yaml())
        if resume and self.dist.main and self.progress and (self.stopped or self.epoch >= self.settings.epochs):
            why = f"stopped early after {self.bad_epochs} epochs without improvement" if self.stopped else f"reached --epochs {self.settings.epochs}"
            _stderr().print(f"nothing to train: the run in {self.out} is at epoch {self.epoch} ({why})", highlight=False, soft_wrap=True)
        while self.epoch < self.settings.epochs and not self.stopped:
            self._one_epoch(self.epoch + 1)
        if self.dist.main:
            from mammofuse.training.card import write_model_card

            write_model_card(self.out, self.settings, self._provenance(), self.history, self.best)
        result = TrainResult(self.out, int(self.best["epoch"]), float(self.best["auc"]), float(self.best["threshold"]), list(self.history))
        self.dist.close()
        return result

    def _one_epoch(self, epoch: int) -> None:
        start = time.perf_counter()
        frozen = self.frozen(epoch)
        self._set_phase(frozen)
        lr = self.optimizer.param_groups[0]["lr"]
        if frozen:
            self._ensure_features("train")
            self._ensure_features("val")
        train_loss = self._train_epoch(epoch, frozen)
        self.scheduler.step()
        val_loss, val_auc, probs = self._validate(frozen)
        score = val_auc if math.isfinite(val_auc) else -val_loss
        improved = self.settings.selection == "last" or score > self.best["score"]
        if improved:
            threshold = youden_threshold(self.tables["val"].labels.numpy(), probs)
            self.best = {"score": score, "auc": val_auc, "epoch": epoch, "threshold": threshold}
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        self.stopped = self.settings.selection == "best" and self.bad_epochs >= self.settings.patience
        row = {
            "epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
            "val_auc": None if math.isnan(val_auc) else round(val_auc, 6), "lr": float(f"{lr:.6g}"),
            "seconds": round(time.perf_counter() - start, 3), "frozen": frozen,
        }
        self.history.append(row)
        self.epoch = epoch
        if self.dist.main:
            if improved:
                self._save_best()
            self._save_checkpoint()
            write_text(self.out / HISTORY_NAME, "".join(json.dumps(r) + "\n" for r in self.history))
            if self.progress:
                self._log(row, improved)
        if len(self.unreadable) > self.warned and self.dist.main:
            example = next(iter(self.unreadable.values()))
            _stderr().print(
                f"warning: {len(self.unreadable)} image(s) could not be read and were trained/validated as image-absent "
                f"(e.g. {example})", highlight=False, soft_wrap=True, markup=False,
            )
            self.warned = len(self.unreadable)

    # ------------------------------------------------------------------ outputs
    def _provenance(self) -> dict[str, Any]:
        from mammofuse import __version__

        return {
            "dataset": self.settings.dataset,
            "n_train": len(self.train_samples),
            "n_val": len(self.val_samples),
            "val_auc": None if math.isnan(self.best["auc"]) else round(float(self.best["auc"]), 6),
            "best_epoch": int(self.best["epoch"]),
            "seed": self.settings.seed,
            "settings": self.settings.as_dict(),
            "recipe": self.recipe.as_dict(),
            "mammofuse": __version__,
            "train_patients": sorted({patient_digest(s.patient_id) for s in self.train_samples}),
            "val_patients": sorted({patient_digest(s.patient_id) for s in self.val_samples}),
        }

    def _save_best(self) -> None:
        from mammofuse.model import save_model

        self.model.config.threshold = float(self.best["threshold"])
        self.model.config.provenance = self._provenance()
        save_model(self.model, self.out)

    def _save_checkpoint(self) -> None:
        opt_tensors, opt_scalars = ckpt.optimizer_state(self.optimizer)
        rng_tensors, rng_scalars = ckpt.rng_state()
        scalars = {
            "settings": self.settings.as_dict(),
            "data": _data_digest(self.train_samples, self.val_samples),
            "best": {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.best.items()},
            "bad_epochs": self.bad_epochs,
            "stopped": self.stopped,
            "history": self.history,
            "optimizer": opt_scalars,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_scalars,
        }
        scalars["scheduler"].pop("lr_lambdas", None)
        ckpt.save_checkpoint(self.out, self.epoch, self.model.state_dict(), {**opt_tensors, **rng_tensors}, scalars)

    def _resume(self) -> None:
        tensors, scalars = ckpt.load_checkpoint(self.out)
        saved = scalars["settings"]
        now = self.settings.as_dict()
        allowed = resumable_changes(self.settings)
        changed = sorted(k for k in now if k not in allowed and saved.get(k) != now[k])
        if changed:
            detail = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
            raise MammofuseError(f"--resume: settings differ from the run in {self.out} ({detail}); only {', '.join(sorted(allowed))} may change")
        if scalars["data"] != _data_digest(self.train_samples, self.val_samples):
            raise MammofuseError(f"--resume: the training/validation samples differ from the run in {self.out}")
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(model_state, strict=True)
        epoch = int(scalars["epoch"])
        # Parameters must need gradients exactly as when the optimiser state was saved.
        self._set_phase(self.frozen(epoch))
        ckpt.load_optimizer_state(self.optimizer, tensors, scalars["optimizer"])
        self.scheduler.load_state_dict({**scalars["scheduler"], "lr_lambdas": [None]})
        if self.scaler is not None and scalars.get("scaler"):
            self.scaler.load_state_dict(scalars["scaler"])
        best = scalars["best"]
        self.best = {
            "score": -math.inf if best["score"] is None else best["score"],
            "auc": float("nan") if best["auc"] is None else best["auc"],
            "epoch": best["epoch"], "threshold": best["threshold"],
        }
        self.bad_epochs, self.stopped = scalars["bad_epochs"], scalars["stopped"]
        self.history, self.epoch = scalars["history"], epoch
        # a larger --patience reopens a stopped run
        self.stopped = self.settings.selection == "best" and self.bad_epochs >= self.settings.patience
        ckpt.set_rng_state(tensors, scalars["rng"])

    # ------------------------------------------------------------------ display
    def _bar(self, label: str, total: int):
        return _progress_bar(label, total, enabled=self.progress)

    def _log(self, row: dict[str, Any], improved: bool) -> None:
        auc = "n/a" if row["val_auc"] is None else f"{row['val_auc']:.3f}"
        _stderr().print(
            f"epoch {row['epoch']}/{self.settings.epochs}{' frozen' if row['frozen'] else ''}: "
            f"train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  val_auc {auc}  "
            f"lr {row['lr']:.2e}  {row['seconds']:.1f}s{'  best' if improved else ''}",
            highlight=False, soft_wrap=True,
        )


class _progress_bar:
    """A Rich progress bar on stderr, only when it is a terminal; yields an ``advance(n)``."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.label, self.total = label, total

    def __enter__(self):
        if not self.enabled:
            return lambda n=1, note="": None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=_stderr(), transient=True)
        self._progress.start()
        task = self._progress.add_task(self.label, total=self.total)
        def advance(n: int = 1, note: str = "") -> None:
            self._progress.update(task, advance=n, description=f"{self.label}{note}")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


def _data_digest(train_samples: Sequence[Sample], val_samples: Sequence[Sample]) -> str:
    import hashlib

    text = json.dumps([[s.id for s in train_samples], [s.id for s in val_samples]])
    return hashlib.sha256(text.encode()).hexdigest()


def _check_samples(settings: TrainSettings, train_samples: Sequence[Sample], val_samples: Sequence[Sample]) -> None:
    if not train_samples:
        raise MammofuseError("no training samples")
    if not val_samples:
        raise MammofuseError("no validation samples")
    if len({s.label for s in train_samples}) < 2:
        raise MammofuseError("the training samples hold only one class (need benign and malignant)")
    if settings.uses_image and not any(s.has_image for s in train_samples):
        raise MammofuseError(
            f"--fusion {settings.fusion} needs images but no training sample has one "
            "(pass --images for CBIS-DDSM, or use --fusion clinical)"
        )


def train(
    settings: TrainSettings,
    train_samples: list[Sample],
    val_samples: list[Sample],
    out: Path,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a MammoFuse model and write it to ``out``.

    ``out`` receives the best epoch's ``model.safetensors`` + ``config.json`` (loadable with
    ``mammofuse.model.load_model``), ``last/`` (the exact-resume checkpoint), ``history.jsonl``,
    ``train_config.yaml`` and a model card ``README.md``. Under torchrun every rank calls this;
    rank 0 writes.

    Example:
        >>> from mammofuse.data import load_dataset, train_val_split
        >>> samples = load_dataset("mini-mias", "../shared/data/mini-mias")
        >>> tr, va = train_val_split(samples, 0.2, seed=0)
        >>> settings = TrainSettings(fusion="cross", backbone="resnet18", image_size=64, epochs=2)
        >>> result = train(settings, tr, va, Path("runs/mias"))  # doctest: +SKIP
    """
    settings.validate()
    return _Trainer(settings, train_samples, val_samples, Path(out), progress).run(resume)
