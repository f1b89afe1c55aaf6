"""The training loop: end-to-end training with augmentation, or a frozen pretrained backbone first.

A randomly initialised backbone trains end to end from the first epoch at ``lr``. With
pretrained weights, the first ``freeze_epochs`` epochs may keep the backbone frozen (eval
mode, no gradients; its features come from a cache when nothing is augmented), training only
the heads at ``lr``; then the whole model trains at ``finetune_lr``, the rate following
``schedule`` (:mod:`mammofuse.training.schedule`). ``selection: last`` keeps the last epoch (a
fixed epoch count, the threshold from validation at that epoch, or from the out-of-fold
predictions of an ``ablate`` run with ``threshold_from``); ``best`` keeps the epoch of best
validation AUC. The run reports through callbacks (:mod:`mammofuse.training.callbacks`)
and prints nothing itself.

Exactness: shuffling is a pure function of (seed, epoch); dropout draws from the global
torch RNG, whose state is checkpointed with the weights, optimiser and scheduler. On CPU a
run of 4 epochs and a run of 2 epochs resumed to 4 give identical weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from mammofuse import __version__
from mammofuse.atomic import folder_lock, write_text, write_together
from mammofuse.clinical.schema import load_schema
from mammofuse.data.sample import Sample, case_digest, patient_digest
from mammofuse.errors import MammofuseError, OutputError, ResumeMismatch
from mammofuse.evaluation.leakage import pretrained_patients, withheld_patients
from mammofuse.evaluation.metrics import auc_or_none, youden_threshold
from mammofuse.hub import CONFIG_NAME
from mammofuse.imaging.augment import augment_batch
from mammofuse.imaging.radiomics import RADIOMICS_MIN_STD
from mammofuse.inference import LesionDataset, model_inputs
from mammofuse.interrupts import loader_batches
from mammofuse.model.io import config_files, config_text, model_files, read_config
from mammofuse.provenance import UNFINISHED
from mammofuse.results import sigmoid
from mammofuse.training import checkpoint as ckpt
from mammofuse.training.build import (
    InputTables,
    Optimisation,
    build_model,
    check_samples,
    common_canvas,
    crops_lesions,
    feature_cache,
    join_run,
)
from mammofuse.training.callbacks import EpochRow, Reporter, TrainCallback
from mammofuse.training.features import extract_features
from mammofuse.training.schedule import chunks, epoch_batches
from mammofuse.training.settings import PATH_SETTINGS, TrainSettings, resumable_changes, setting_path
from mammofuse.training.state import BestEpoch, RunState

if TYPE_CHECKING:
    from mammofuse.evaluation.oof import OofThreshold

HISTORY_NAME = "history.jsonl"
SETTINGS_NAME = "train_config.yaml"
SPLITS = ("train", "val")
DIVERGING_RATIO = 10  # an epoch's training loss this many times the first epoch's is a run diverging
DIGEST_KEYS = ("train_patients", "val_patients", "init_patients", "init_patients_unknown")  # provenance under patient_digests


@dataclass
class TrainResult:
    """What a run produced: the folder and the kept epoch's validation figures."""

    out: Path
    best_epoch: int
    best_val_auc: float  # NaN when the validation set holds one class
    threshold: float
    history: list[EpochRow] = field(default_factory=list)


def findings_loss(
    logits: torch.Tensor, rows: torch.Tensor, clinical: torch.Tensor, mask: torch.Tensor, dim_fields: torch.Tensor, lesion_dims: torch.Tensor,
) -> torch.Tensor:
    """Binary cross-entropy of the findings predicted from the image (``aux_findings``), over the
    dimensions of the lesion fields each case has, in the rows whose image was seen (0 where none).

    Args:
        logits: (B, D) the image branch's findings. rows: (B,) bool. clinical: (B, D) multi-hot
            findings. mask: (B, fields) bool, a field present. dim_fields: (D,) the field of each
            dimension. lesion_dims: (D,) 1 for dimensions of lesion fields, 0 for the breast's.
    """
    weights = mask.bool()[:, dim_fields].float() * lesion_dims * rows[:, None].float()
    summed = nn.functional.binary_cross_entropy_with_logits(logits.float(), clinical.float(), weight=weights, reduction="sum")
    return summed / weights.sum().clamp(min=1.0)


class _Trainer:
    """One run's parts and state; ``train`` below is the public entry point."""

    def __init__(
        self, settings: TrainSettings, train_samples: list[Sample], val_samples: list[Sample], out: Path,
        callbacks: Sequence[TrainCallback],
    ) -> None:
        self.settings, self.out = settings, Path(out)
        self.samples = {"train": list(train_samples), "val": list(val_samples)}
        check_samples(settings, self.samples["train"], self.samples["val"])
        self.device, self.dist = join_run(settings.device)
        self.report = Reporter(callbacks if self.dist.main else ())
        self.recipe = settings.recipe(common_canvas(self.samples["train"] + self.samples["val"]))
        self.model = build_model(settings, self.recipe, self.device)
        config = self.model.config
        self.oof: OofThreshold | None = None
        if settings.threshold_from:
            from mammofuse.evaluation.oof import oof_threshold  # here: the ablation module imports the trainer

            self.oof = oof_threshold(settings.threshold_from, settings, [s for split in SPLITS for s in self.samples[split]], config)
            config.calibration = self.oof.calibration.as_dict()  # from the start: validation scores as the model will (training sees raw logits)
        self.uses_image = config.uses_image
        self.tables = {split: InputTables.build(self.samples[split], config.vocabulary, self.uses_image) for split in SPLITS}
        self.datasets = self._image_datasets() if self.uses_image else {}
        if config.radiomics:
            self._standardise_radiomics()
        self.optim = Optimisation.build(self.model, settings, self.tables["train"].labels, self.device)
        self.findings_targets: int | None = None  # training cases the findings loss can learn from (aux_findings)
        if config.aux_findings:  # each clinical dimension's field, and whether it describes the lesion
            describes_lesion = load_schema(config.vocabulary).lesion_fields
            self.findings_targets = self._cases_with_lesion_findings(describes_lesion)
            fields = [i for i, size in enumerate(config.field_sizes) for _ in range(size)]
            lesion = [float(describes_lesion[i]) for i in fields]
            self.finding_dims = (torch.tensor(fields, device=self.device), torch.tensor(lesion, device=self.device))
        self.cache = feature_cache(settings, config)
        self.state = RunState()
        self.features: dict[str, dict[int, torch.Tensor]] = {}
        self.wrapped: nn.Module = self.model
        self.wrapped_frozen: bool | None = None
        self.unreadable: dict[str, str] = {}  # "split:index" -> why its image could not be read
        self.warned = 0
        self.diverging_warned = False
        self.images_checked = False

    def _cases_with_lesion_findings(self, describes_lesion: Sequence[bool]) -> int:
        """How many training cases give an image and a finding of their lesion: the targets of the findings loss."""
        table = self.tables["train"]
        has_image = torch.tensor([s.has_image for s in self.samples["train"]])
        return int((table.mask[:, torch.tensor(describes_lesion)].any(dim=1) & has_image).sum())

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

    # ------------------------------------------------------------------ inputs
    def _image_datasets(self) -> dict[str, Any]:
        """Image readers of each split (kept in memory when read in this process)."""
        config = self.model.config
        return {
            split: LesionDataset(
                self.samples[split], self.recipe, config.vocabulary, use_images=True, radiomics=config.radiomics,
                cache=self.settings.workers == 0,
            )
            for split in SPLITS
        }

    def _standardise_radiomics(self) -> None:
        """Set the model's radiomics mean/std from the training cases with an image (read once, cached)."""
        dataset = self.datasets["train"]
        rows = [item["radiomics"] for item in map(dataset.__getitem__, range(len(dataset))) if bool(item["image_present"])]
        if len(rows) >= 2:
            stacked = torch.stack(rows).double()
            self.model.radiomics_mean.copy_(stacked.mean(0).float())
            std = stacked.std(0)  # a feature constant in training (lesion size known for every case) is centred, not scaled
            self.model.radiomics_std.copy_(torch.where(std < RADIOMICS_MIN_STD, torch.ones_like(std), std).float())

    def _unreadable(self, split: str, index: int, problem: str) -> None:
        sample = self.samples[split][index]
        self.unreadable.setdefault(f"{split}:{index}", f"{sample.image_path or sample.id}: {problem}")

    def _load_image(self, split: str, index: int) -> tuple[torch.Tensor, bool]:
        item = self.datasets[split][index]
        if item["error"]:
            self._unreadable(split, index, item["error"])
        return item["image"], bool(item["image_present"])

    def _ensure_features(self, split: str) -> None:
        """Fill ``self.features[split]`` from the cache (computing misses), shared across ranks."""
        if split in self.features or self.cache is None:
            return
        samples = self.samples[split]
        mine = self.dist.shard(range(len(samples)))  # validation only ever needs this rank's share
        with self.report.phase(f"caching {split} features", len(mine)) as advance:
            feats, present = extract_features(
                self.model, samples, mine, lambda i: self._load_image(split, i), self.recipe,
                self.cache, self.settings.batch_size, self.device, on_step=advance,
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
        if not self.uses_image or (frozen and self.cache is not None):
            return self._cached_batches(split, batches)
        return self._loader_batches(split, batches, frozen)

    def _cached_batches(self, split: str, batches: list[list[int]]) -> Iterator[tuple[list[int], dict[str, torch.Tensor], torch.Tensor]]:
        """Batches from the input tables, with the cached backbone features of a model that uses images: no image is read."""
        table = self.tables[split]
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

    def _loader_batches(self, split: str, batches: list[list[int]], frozen: bool) -> Iterator[tuple[list[int], dict[str, torch.Tensor], torch.Tensor]]:
        """Batches read by the data loader (augmented in training); the rows without an image are kept out of the
        backbone where that is possible."""
        table = self.tables[split]
        for batch in loader_batches(
            self.datasets[split], batch_sampler=batches, num_workers=self.settings.workers,
            generator=torch.Generator().manual_seed(self.settings.seed),
        ):
            idx = batch["index"].tolist()
            for i, ok, error in zip(idx, batch["image_present"].tolist(), batch["error"]):
                table.present[i] = bool(ok)
                if error:
                    self._unreadable(split, i, error)
            kwargs = model_inputs(batch, self.device)
            if self.settings.augment and split == "train":
                kwargs["image"] = augment_batch(kwargs["image"])
            present = kwargs["image_present"]
            n_present = int(present.sum())
            if frozen:  # cache off: the frozen backbone still runs in eval mode, without gradients, in float32 as
                with torch.no_grad():  # extract_features computes the cached features, so --feature-cache changes no number
                    kwargs["features"] = self.model.present_features(kwargs.pop("image"), present).float()
                kwargs["image"] = None
            elif n_present < len(idx) and (
                n_present >= 2 or not self.model.training or (n_present == 0 and not self.dist.enabled)
            ):
                # Image-less cases must not reach the backbone: zero images would skew BatchNorm's
                # batch statistics (and cost a forward pass each). A training batch with a single
                # image goes through whole (BatchNorm needs two samples), and so does an image-less
                # one under DDP, which expects every parameter to take part in each step.
                with self.optim.autocast():  # as the rest of the training forward runs
                    kwargs["features"] = self.model.present_features(kwargs.pop("image"), present).float()
                kwargs["image"] = None
            yield idx, kwargs, batch["label"].to(self.device)

    # ------------------------------------------------------------------ epochs
    def _train_epoch(self, epoch: int, frozen: bool) -> float:
        self.wrapped.train()
        if frozen:
            self.model.backbone.eval()
        batches = epoch_batches(len(self.samples["train"]), epoch, self.settings, self.dist)
        params = [p for p in self.model.parameters() if p.requires_grad]
        total, count = 0.0, 0
        with self.report.phase(f"epoch {epoch}/{self.settings.epochs}" + (" (frozen)" if frozen else ""), len(batches)) as advance:
            for idx, kwargs, labels in self._batches("train", batches, frozen):
                self.optim.optimizer.zero_grad(set_to_none=True)
                with self.optim.autocast():
                    out = self.wrapped(**kwargs)
                loss = self._loss(out, labels, kwargs)
                self.optim.step(loss, params)
                total += float(loss.detach()) * len(idx)
                count += len(idx)
                advance(1, f" loss {total / count:.4f}")
        total, count = self.dist.sum(total, count)
        return total / max(count, 1)

    def _loss(self, out: Any, labels: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """The class-weighted loss; late fusion supervises each branch on the cases that have its modality;
        with ``aux_findings``, plus the image branch's loss at naming the lesion's findings."""
        criterion = self.optim.criterion
        if out.branch_logits is None:
            loss = criterion(out.logits.float(), labels)
        else:
            branches = out.branch_logits.float()
            image, clinical = kwargs["image_present"].bool(), kwargs["clinical_mask"].bool().any(dim=1)
            loss = branches.sum() * 0.0  # keeps every parameter in the graph (DDP) when a branch has no case
            for column, has in ((0, image), (1, clinical)):
                if bool(has.any()):
                    loss = loss + criterion(branches[has, column], labels[has])
        if out.findings_logits is not None:
            findings = findings_loss(out.findings_logits, out.findings_rows, kwargs["clinical"], kwargs["clinical_mask"], *self.finding_dims)
            loss = loss + self.settings.aux_findings * findings
        return loss

    @torch.no_grad()
    def _validate(self, frozen: bool) -> tuple[float, float | None, np.ndarray]:
        """(val_loss, val_auc or None, probabilities) over the whole validation set, on every rank (NaN loss when there is none)."""
        n = len(self.samples["val"])
        if not n:
            return math.nan, None, np.empty(0)
        self.dist.sync_buffers(self.model)  # every rank scores the model rank 0 saves
        self.model.eval()
        mine = self.dist.shard(range(n))
        pairs: list[tuple[int, float]] = []
        for idx, kwargs, _ in self._batches("val", chunks(mine, self.settings.batch_size), frozen):
            # In float32, without the run's mixed precision: as predict and evaluate score, so that the threshold and the
            # validation AUC are those of the probabilities the saved model gives.
            logits = self.model(**kwargs).logits.float().cpu().tolist()
            pairs.extend(zip(idx, logits))
        merged = dict(p for part in self.dist.gather(pairs) for p in part)
        logits = torch.tensor([merged[i] for i in range(n)], dtype=torch.float32)
        labels = self.tables["val"].labels
        loss = float(self.optim.criterion(logits.to(self.device), labels.to(self.device)))
        probs = sigmoid(logits.numpy())  # as scoring computes them: the threshold is one of the probabilities it gives
        return loss, auc_or_none(labels.numpy(), probs), probs

    def run(self, resume: bool) -> TrainResult:
        """Train (or, with ``resume``, continue) the run, holding ``out`` throughout."""
        with self._holding_out(resume):
            return self._run(resume)

    @contextmanager
    def _holding_out(self, resume: bool) -> Iterator[None]:
        """Hold ``out`` for this run alone (:func:`~mammofuse.atomic.folder_lock`); when resuming, clear the temporaries
        the interrupted run left there (a fresh run leaves files it did not write alone).

        Only rank 0, which writes, takes the lock; every rank learns whether it could, so that under torchrun all fail
        alike when another process holds the folder, rather than the others waiting for rank 0.
        """
        with ExitStack() as held:
            problem = None
            if self.dist.main:
                try:
                    held.enter_context(folder_lock(self.out))
                    if resume:
                        ckpt.remove_temporaries(self.out)
                except OutputError as exc:
                    problem = exc.problem
            problem = self.dist.gather(problem)[0]
            if problem is not None:
                raise OutputError(self.out, problem)
            yield

    def _run(self, resume: bool) -> TrainResult:
        if resume:
            self._resume()
            if self.dist.main:
                self._sync_patient_digests()
        elif ckpt.has_checkpoint(self.out):
            raise MammofuseError(f"{self.out} already holds a training run: add --resume to continue it, or choose another --out")
        if self.dist.main:
            write_text(self.out / SETTINGS_NAME, self.settings.to_yaml())
        self.report.train_start(self.settings)
        self._warn_regionless()
        self._warn_one_class_validation()
        if self.findings_targets == 0:
            self.report.log("note: no training case with an image has a lesion finding (shape, margin, calcification...), "
                            "so the findings loss (--aux-findings) is off")
        if resume and (self.state.stopped or self.state.epoch >= self.settings.epochs):
            self.report.log(f"nothing to train: the run in {self.out} is at epoch {self.state.epoch} ({self._why_done()})")
        while self.state.epoch < self.settings.epochs and not self.state.stopped:
            self._one_epoch(self.state.epoch + 1)
        best = self.state.best
        if self.dist.main:
            from mammofuse.training.card import write_model_card

            write_model_card(self.out, self.settings, self._provenance(), self.state.history, best)
        result = TrainResult(self.out, best.epoch, float(best.val_auc), float(best.threshold), list(self.state.history))
        self.dist.close()
        return result

    def _why_done(self) -> str:
        if self.state.stopped:
            return f"stopped early after {self.state.bad_epochs} epochs without improvement"
        return f"reached --epochs {self.settings.epochs}"

    def _one_epoch(self, epoch: int) -> None:
        start = time.perf_counter()
        frozen = self.frozen(epoch)
        self._set_phase(frozen)
        lr = self.optim.lr
        if frozen:
            self._ensure_features("train")
            self._ensure_features("val")
        train_loss = self._train_epoch(epoch, frozen)
        if not self.images_checked:  # every training image is read in this process's first epoch
            self._check_some_train_image_read()
            self.images_checked = True
        self._check_converging(epoch, train_loss)
        self._warn_diverging(epoch, train_loss)
        self.optim.scheduler.step()
        val_loss, val_auc, probs = self._validate(frozen)
        score = val_auc if val_auc is not None else -val_loss
        improved = self.settings.selection == "last" or score > self.state.best.score
        best = None
        if improved:
            threshold = self.oof.value if self.oof else youden_threshold(self.tables["val"].labels.numpy(), probs)  # 0.5 without either
            best = BestEpoch(epoch, math.nan if val_auc is None else val_auc, score, threshold)
        row: EpochRow = {
            "epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": None if math.isnan(val_loss) else round(val_loss, 6),
            "val_auc": None if val_auc is None else round(val_auc, 6), "lr": float(f"{lr:.6g}"),
            "seconds": round(time.perf_counter() - start, 3), "frozen": frozen,
        }
        self.state.record(row, best, self.settings.selection, self.settings.patience)
        if self.dist.main:
            self._save_epoch(improved)
        self.report.epoch_end(row, improved)
        unreadable = {k: v for part in self.dist.gather(self.unreadable) for k, v in part.items()}  # every process's share
        if len(unreadable) > self.warned:
            example = next(iter(unreadable.values()))
            self.report.log(
                f"warning: {len(unreadable)} image(s) could not be read and were trained/validated as image-absent "
                f"(e.g. {example})"
            )
            self.warned = len(unreadable)

    def _warn_regionless(self) -> None:
        """Say how many cases with an image a lesion-crop model trains or validates on their findings alone, for want of a region."""
        if not (self.uses_image and crops_lesions(self.settings)):
            return
        for split in SPLITS:
            imaged = [s for s in self.samples[split] if s.has_image]
            if missing := sum(not s.has_lesion_region for s in imaged):
                self.report.log(f"warning: {missing} of the {len(imaged)} {split} cases with an image give no lesion region: "
                                "a lesion-crop model leaves their image out")

    def _warn_one_class_validation(self) -> None:
        """Say what a validation part of one class cannot choose: the threshold (0.5 stands) and, for ``selection: best``,
        the epoch by its AUC (the validation loss chooses it)."""
        labels = {int(s.label) for s in self.samples["val"]}
        if len(labels) != 1:
            return
        lost = [*([] if self.oof else ["the threshold is 0.5, not tuned"]),
                *(["--selection best chooses the epoch by validation loss"] if self.settings.selection == "best" else [])]
        if lost:
            only = "malignant" if labels == {1} else "benign"
            self.report.log(f"warning: the validation part has only {only} cases (no AUC): {'; '.join(lost)}")

    def _check_converging(self, epoch: int, loss: float) -> None:
        """Raise MammofuseError, before the epoch is saved, when its training loss is no longer a finite number:
        the weights are lost (the model and checkpoint of the epoch before stay as they were)."""
        if math.isfinite(loss):
            return
        flag, lr = self._lr_flag(epoch)
        raise MammofuseError(f"training diverged in epoch {epoch} (training loss {loss}); epoch {epoch} was not saved: lower {flag} (now {lr:g})")

    def _warn_diverging(self, epoch: int, loss: float) -> None:
        """Warn, once a run, when an epoch's training loss is over :data:`DIVERGING_RATIO` times the first epoch's, or
        times what a constant guess scores (the bound that holds in a first epoch already diverging): the weights are
        finite but have left what the data teaches (every score drifts to 0 or 1)."""
        if self.diverging_warned:
            return
        # logit 0: ln 2 per case, at most twice that with the class weights, plus the findings loss's ln 2
        guess = math.log(2) * (2 + (self.settings.aux_findings if self.uses_image else 0))
        first = self.state.history[0]["train_loss"] if self.state.history else math.inf
        reference, what = (first, "the first epoch's") if first <= guess else (guess, "a constant guess's")
        if loss > DIVERGING_RATIO * reference:
            flag, lr = self._lr_flag(epoch)
            self.report.log(f"warning: training loss {loss:.3g} in epoch {epoch} is over {DIVERGING_RATIO}x {what} ({reference:.3g}): "
                            f"the run is diverging; train again with a lower {flag} (now {lr:g})")
            self.diverging_warned = True

    def _lr_flag(self, epoch: int) -> tuple[str, float]:
        """The flag of the learning rate ``epoch`` trains at, and its value."""
        settings = self.settings
        return ("--finetune-lr", settings.finetune_lr) if self.uses_image and 0 < settings.freeze_epochs < epoch else ("--lr", settings.lr)

    def _check_some_train_image_read(self) -> None:
        """Raise MammofuseError, before anything is saved, when the model uses images and not one training
        image could be read: a few unreadable ones train as image-absent (with a warning), all of them is no image model."""
        with_image = {i for i, s in enumerate(self.samples["train"]) if s.has_image} if self.uses_image else set()
        mine = [(key, why) for key, why in self.unreadable.items() if key.startswith("train:")]
        failed = dict(pair for part in self.dist.gather(mine) for pair in part)  # every rank read a share
        if with_image and with_image <= {int(key.split(":")[1]) for key in failed}:
            raise MammofuseError(
                f"none of the {len(with_image)} training images could be read (e.g. {next(iter(failed.values()))}): "
                "fix them, or train without images (--fusion clinical)"
            )

    # ------------------------------------------------------------------ outputs
    def _provenance(self) -> dict[str, Any]:
        best = self.state.best
        return {
            "dataset": self.settings.dataset,
            "n_train": len(self.samples["train"]),
            "n_train_malignant": sum(int(s.label) for s in self.samples["train"]),  # the case mix scores are conditional on
            "abnormality": sorted({s.abnormality for s in self.samples["train"] if s.abnormality}),  # lesion types trained on; [] unknown
            "n_val": len(self.samples["val"]),
            "n_val_malignant": sum(int(s.label) for s in self.samples["val"]),  # one class: the threshold is not tuned
            "val_auc": None if math.isnan(best.val_auc) else round(float(best.val_auc), 6),
            "best_epoch": int(best.epoch),
            "seed": self.settings.seed,
            "settings": self.settings.as_dict(),
            "recipe": self.recipe.as_dict(),
            "mammofuse": __version__,
            "n_train_patients": len({s.patient_id for s in self.samples["train"]}),
            "n_val_patients": len({s.patient_id for s in self.samples["val"]}),
            **(self._patient_digests() if self.settings.patient_digests else {}),
            **({"threshold_from": self.oof.as_dict()} if self.oof else {}),
            **({"aux_findings_targets": self.findings_targets} if self.findings_targets is not None else {}),  # 0: the findings loss was off
            **self._unfinished(),
        }

    def _unfinished(self) -> dict[str, dict[str, int]]:
        """The provenance mark of a run that has epochs left to train (none once it reached --epochs or stopped early)."""
        if self.state.stopped or self.state.epoch >= self.settings.epochs:
            return {}
        return {UNFINISHED: {"epochs_run": self.state.epoch, "epochs": self.settings.epochs}}

    def _patient_digests(self) -> dict[str, list[str] | bool]:
        """The digests of the training, validation and ``--pretrained`` model's patients (``evaluate``'s overlap check)."""
        return {
            "train_patients": sorted({patient_digest(s.patient_id) for s in self.samples["train"]}),
            "val_patients": sorted({patient_digest(s.patient_id) for s in self.samples["val"]}),
            **({"init_patients": sorted(seen)} if (seen := pretrained_patients(self.settings.pretrained)) else {}),
            **({"init_patients_unknown": True} if withheld_patients(self.settings.pretrained) else {}),
        }

    def _sync_patient_digests(self) -> None:
        """Add or remove the kept model's patient digests when ``--resume`` changed ``patient_digests``: its
        config.json is rewritten only when a later epoch is kept, which a finished run or ``selection: best`` may never do."""
        if not (self.out / CONFIG_NAME).is_file():
            return
        config = read_config(self.out)
        if ("train_patients" in config.provenance) == self.settings.patient_digests:
            return
        provenance = {k: v for k, v in config.provenance.items() if k not in DIGEST_KEYS}
        if self.settings.patient_digests:
            provenance.update(self._patient_digests())
        if isinstance(provenance.get("settings"), dict):
            provenance["settings"] = {**provenance["settings"], "patient_digests": self.settings.patient_digests}
        config.provenance = provenance
        write_text(self.out / CONFIG_NAME, config_text(config))

    def _save_epoch(self, improved: bool) -> None:
        """Write the epoch's files as one (:func:`~mammofuse.atomic.write_together`): the model where it is kept, the
        history and the checkpoint, whose JSON goes in last; when one cannot be written, the previous epoch's stay."""
        files = self._model_files() if improved else self._kept_config_files()
        history = "".join(json.dumps(r) + "\n" for r in self.state.history)
        files[self.out / HISTORY_NAME] = history.encode()
        files.update(self._checkpoint_files())
        write_together(files)
        ckpt.remove_older_tensors(self.out, self.state.epoch)

    def _model_files(self) -> dict[Path, bytes]:
        """The kept model's files, its threshold and provenance those of this epoch."""
        self.model.config.threshold = float(self.state.best.threshold)
        self.model.config.provenance = self._provenance()
        return model_files(self.model, self.out)

    def _kept_config_files(self) -> dict[Path, bytes]:
        """The config of the model an earlier epoch kept, with this epoch's unfinished mark (or none, the run done)."""
        if not (self.out / CONFIG_NAME).is_file():
            return {}
        config = read_config(self.out)
        config.provenance = {**{k: v for k, v in config.provenance.items() if k != UNFINISHED}, **self._unfinished()}
        return config_files(config, self.out)

    def _checkpoint_files(self) -> dict[Path, bytes]:
        """The ``last/`` checkpoint of this epoch: everything an exact ``--resume`` needs."""
        optim_tensors, optim_scalars = self.optim.state()
        rng_tensors, rng_scalars = ckpt.rng_state(self.device)
        scalars = {
            "settings": self.settings.as_dict(),
            "data": _data_digest(self.samples["train"], self.samples["val"]),
            "processes": self.dist.world,  # each process takes batch_size cases a step: another count trains otherwise
            "workdir": os.getcwd(),  # where relative paths in the settings start
            **self.state.to_json(),
            **optim_scalars,
            "rng": rng_scalars,
        }
        return ckpt.checkpoint_files(self.out, self.state.epoch, self.model.state_dict(), {**optim_tensors, **rng_tensors}, scalars)

    def _resume(self) -> None:
        tensors, scalars = ckpt.load_checkpoint(self.out)
        try:
            self._restore(tensors, scalars)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:  # a checkpoint edited or damaged by hand
            where = self.out / ckpt.LAST_DIR
            raise MammofuseError(f"{where / ckpt.STATE_NAME}: damaged checkpoint ({type(exc).__name__}: {str(exc)[:100]}); delete {where} and train again") from None

    def _restore(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        """Continue from a checkpoint: same settings and samples, then weights, optimiser, schedule, RNGs."""
        saved = scalars["settings"]
        now = self.settings.as_dict()
        if unknown := sorted(now.keys() - saved.keys()):  # a setting added since: what the run used is not known
            raise ResumeMismatch(f"resume (--resume): {self.out / ckpt.LAST_DIR / ckpt.STATE_NAME} records no {', '.join(unknown)} setting "
                                 "(written by another mammofuse version?), so the run cannot be continued as it was: train again",
                                 f"settings this mammofuse cannot compare ({', '.join(unknown)})")
        allowed = resumable_changes(self.settings)
        # Paths compare by the files they name, each from the folder its run was started in.
        named = {**saved, **{k: setting_path(saved[k], scalars["workdir"]) for k in PATH_SETTINGS}}
        named_now = {**now, **{k: setting_path(now[k], os.getcwd()) for k in PATH_SETTINGS}}
        changed = sorted(k for k in now if k not in allowed and named[k] != named_now[k])
        if changed:
            detail = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
            raise ResumeMismatch(f"resume (--resume): settings differ from the run in {self.out} ({detail}); only {', '.join(sorted(allowed))} may change",
                                 f"other settings ({detail})")
        if scalars["data"] != _data_digest(self.samples["train"], self.samples["val"]):
            raise ResumeMismatch(f"resume (--resume): the training/validation samples differ from the run in {self.out}", "other training/validation samples")
        if (processes := scalars.get("processes", 1)) != self.dist.world:
            raise ResumeMismatch(f"resume (--resume): the run in {self.out} trained in {processes} process(es), this one has {self.dist.world}; "
                                 "each process takes --batch-size cases a step, so resume with the same number (torchrun --nproc-per-node)",
                                 f"{processes} training process(es), not {self.dist.world}")
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(model_state, strict=True)
        epoch = int(scalars["epoch"])
        # Parameters must need gradients exactly as when the optimiser state was saved.
        self._set_phase(self.frozen(epoch))
        self.optim.load_state(tensors, scalars)
        self.state = RunState.from_json(epoch, scalars)
        self.state.check_patience(self.settings.selection, self.settings.patience)  # a larger --patience reopens a stopped run
        ckpt.set_rng_state(tensors, scalars["rng"], self.device)


def _data_digest(train_samples: Sequence[Sample], val_samples: Sequence[Sample]) -> str:
    """The training and validation cases in order, each by its data (:func:`case_digest`: label, patient, findings,
    region, image), not only its id: a manifest's ids are its row numbers, so ids alone miss relabelled cases."""
    text = json.dumps([[case_digest(s) for s in train_samples], [case_digest(s) for s in val_samples]])
    return hashlib.sha256(text.encode()).hexdigest()


def train(
    settings: TrainSettings,
    train_samples: list[Sample],
    val_samples: list[Sample],
    out: Path,
    resume: bool = False,
    callbacks: Sequence[TrainCallback] = (),
) -> TrainResult:
    """Train a MammoFuse model and write it to ``out``.

    ``out`` receives the kept epoch's ``model.safetensors`` + ``config.json`` (loadable with
    ``mammofuse.model.load_model``), ``last/`` (the exact-resume checkpoint), ``history.jsonl``,
    ``train_config.yaml`` and a model card ``README.md``. Progress, per-epoch figures and notes
    go to ``callbacks`` (:class:`~mammofuse.training.callbacks.TrainCallback`); with none the run
    is silent. Under torchrun every rank calls this; rank 0 writes and reports. The run holds ``out``
    throughout: another process given the same folder (a ``train`` or ``ablate`` still running there) is refused.

    Example:
        >>> from mammofuse.data import load_dataset, train_val_split
        >>> samples = load_dataset("mini-mias", "../shared/data/mini-mias")
        >>> tr, va = train_val_split(samples, 0.2, seed=0)
        >>> settings = TrainSettings(fusion="cross", backbone="resnet18", image_size=64, epochs=2)
        >>> result = train(settings, tr, va, Path("runs/mias"))  # doctest: +SKIP

    Raises:
        OutputError: ``out`` cannot be written, or another mammofuse process holds it.
    """
    settings.validate()
    return _Trainer(settings, train_samples, val_samples, Path(out), callbacks).run(resume)
