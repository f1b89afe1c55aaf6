"""The training-settings flags that ``train`` and ``ablate`` share, and how they become settings.

Every flag defaults to None: a setting not given comes from ``--config`` YAML, else from
:class:`mammofuse.training.TrainSettings`, whose defaults are the best recipe measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mammofuse.cli.common import input_option

MODEL = "Model and schedule"
MACHINE = "Machine"


def option(*names: str, help: str, panel: str = MODEL) -> Any:
    """A Typer option in help panel ``panel``, its default (None) not shown."""
    return typer.Option(*names, help=help, rich_help_panel=panel, show_default=False)


Backbone = Annotated[str | None, option("--backbone", help="cnn4 (small CNN), resnet18, resnet34 or resnet50 (default cnn4).")]
ImageSize = Annotated[int | None, option("--image-size", help="Side of the square input (default 64).")]
InputMode = Annotated[str | None, option("--input", help="roi (lesion crop) or full (breast crop) (default roi).")]
RoiContext = Annotated[float | None, option("--roi-context", help="Lesion crop side as a multiple of the lesion's diameter (default 1.5).")]
WithoutRegion = Annotated[str | None, option("--without-region", help="roi cases with no lesion region: skip (image left out) or breast (crop the breast) (default skip).")]
Canvas = Annotated[str | None, option("--canvas", help="auto, none or HxW: images are min-max scaled and stretched to this size before cropping (default auto: the training images' size when they share one).")]
Pretrained = Annotated[str | None, option("--pretrained", help="auto (default: the backbone shipped for --backbone, cbis-texture-cnn4 for cnn4; random weights where none ships), none (random weights), a registered backbone (`mammofuse models`), imagenet (torchvision weights in the local cache), a .safetensors backbone from `mammofuse pretrain`, or a trained model: a folder or a registered model such as default (its image branch: staged training).")]
ProjDim = Annotated[int | None, option("--proj-dim", help="Shared token dimension d (default 100).")]
ModalityDropout = Annotated[float | None, option("--modality-dropout", help="Chance of dropping a whole modality per training case (default 0.3).")]
Radiomics = Annotated[bool | None, option("--radiomics/--no-radiomics", help="Add a texture-statistics and lesion-size token to the image branch (default off).")]
AuxFindings = Annotated[float | None, option("--aux-findings", help="Weight of an auxiliary training loss: the image branch alone predicts each training lesion's findings (shape, margin, calcification type and distribution), so that it learns what radiologists look at; unused at inference (default 1; 0 turns it off).")]
Epochs = Annotated[int | None, option("--epochs", help="Total epochs (default 20).")]
FreezeEpochs = Annotated[int | None, option("--freeze-epochs", help="First epochs with a pretrained backbone frozen (default 0; needs pretrained weights, as cnn4 has by default).")]
BatchSize = Annotated[int | None, option("--batch-size", help="Samples per step (per process under torchrun) (default 32).")]
Lr = Annotated[float | None, option("--lr", help="Peak learning rate (default 1e-3).")]
FinetuneLr = Annotated[float | None, option("--finetune-lr", help="Peak learning rate after a frozen phase, scaled by the run's schedule from where it then stands (default 1e-4).")]
Schedule = Annotated[str | None, option("--schedule", help="cosine, onecycle or step (default cosine).")]
WarmupEpochs = Annotated[int | None, option("--warmup-epochs", help="Warm-up epochs of the cosine schedule (default 1).")]
Augment = Annotated[bool | None, option("--augment/--no-augment", help="Flip, rotate, scale and intensity-jitter training images (default on).")]
Selection = Annotated[str | None, option("--selection", help="last (fixed epoch count) or best (best validation AUC, early stopping) (default last).")]
WeightDecay = Annotated[float | None, option("--weight-decay", help="AdamW weight decay (default 1e-4).")]
Patience = Annotated[int | None, option("--patience", help="With --selection best: stop after this many epochs without a better validation AUC (default 5).")]
ValFraction = Annotated[float | None, option("--val-fraction", help="Share of patients held out for validation, as one of round(1/F) patient-grouped folds (0.2: a fifth, 0.3: a third, above 0.5: half); 0: none, every patient trains (with --selection last; threshold 0.5 unless --threshold-from). Default 0.2 (ablate: 0 under k-fold CV, unless --threshold-from validation or --selection best).")]
ThresholdFrom = Annotated[str | None, option("--threshold-from", help="A `mammofuse ablate` run that cross-validated this recipe on exactly these training cases (its --out, or one arm's folder): the model recalibrates its scores of complete cases by the Platt map of its pooled out-of-fold predictions, and its threshold is Youden's J on them, recalibrated (default: the validation part's threshold, no calibration; 0.5 without one). For a final model trained on every patient (--val-fraction 0).")]
PatientDigests = Annotated[bool | None, option("--patient-digests/--no-patient-digests", help="Record digests of the training and validation patients in config.json, so that evaluate can warn of patient overlap (default on). They are pseudonymous, not anonymous: whoever holds a patient's id can test whether the patient trained the model. Off for a model to publish.")]
Seed = Annotated[int | None, option("--seed", help="Seed of weights, splits, shuffling, augmentation and dropout (default 0).")]
DeviceFlag = Annotated[str | None, option("--device", help="auto, cpu, cuda, cuda:N or mps (default auto).", panel=MACHINE)]
Workers = Annotated[int | None, option("--workers", help="Image-reading worker processes (default 0: images are read once and kept in memory).", panel=MACHINE)]
FeatureCache = Annotated[str | None, option("--feature-cache", help="Frozen-backbone features in memory, on disk (the user cache's features/ folder: never pruned, delete it at will) or off (default memory).", panel=MACHINE)]
Amp = Annotated[bool | None, option("--amp/--no-amp", help="Mixed precision on CUDA (default on).", panel=MACHINE)]
ConfigFile = Annotated[Path | None, input_option("--config", help="YAML file with any training settings; flags override it.")]


def settings_values(config: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The settings mapping: ``--config`` YAML, then every flag that was given."""
    from mammofuse.training.settings import read_settings_yaml

    values: dict[str, Any] = {str(k).replace("-", "_"): v for k, v in (read_settings_yaml(config) if config else {}).items()}
    flags = dict(flags)
    if "input_mode" in flags:
        flags["input"] = flags.pop("input_mode")
    values.update({k: v for k, v in flags.items() if v is not None})  # canvas text (800x800, none) becomes a setting in TrainSettings
    return values
