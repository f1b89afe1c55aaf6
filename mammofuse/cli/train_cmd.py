"""``mammofuse train``: fit a model on a dataset, write it with its history and model card."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mammofuse.cli.common import guarded

EPILOG = """[bold]Examples[/]

  Clinical findings only, from the CBIS-DDSM CSVs (no images needed):
  [cyan]mammofuse train --dataset cbis-ddsm --data ../shared/data/cbis-ddsm --fusion clinical --out runs/clinical[/]

  Cross-attention on mini-MIAS, small and fast on a CPU:
  [cyan]mammofuse train --dataset mini-mias --data ../shared/data/mini-mias --fusion cross --backbone resnet18 --image-size 64 --epochs 5 --out runs/mias[/]

  Continue that run to 10 epochs:
  [cyan]mammofuse train --dataset mini-mias --data ../shared/data/mini-mias --fusion cross --backbone resnet18 --image-size 64 --epochs 10 --out runs/mias --resume[/]

  Settings from YAML (flags override), two processes with DistributedDataParallel:
  [cyan]torchrun --standalone --nproc-per-node 2 -m mammofuse train --config train.yaml --dataset mini-mias --data ../shared/data/mini-mias --out runs/ddp[/]
"""

Panel = "Model and schedule"


def _opt(*names: str, help: str, panel: str = Panel) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=panel, show_default=False)


def command(
    out: Annotated[Path, typer.Option("--out", help="Output folder (model, last/ checkpoint, history, card).")],
    dataset: Annotated[str | None, typer.Option("--dataset", help="cbis-ddsm, mini-mias or manifest.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Folder with the dataset's CSVs / Info.txt, or a manifest CSV.")] = None,
    images: Annotated[Path | None, typer.Option("--images", help="CBIS-DDSM: root of the DICOM download (not needed for --fusion clinical).")] = None,
    split: Annotated[str | None, typer.Option("--split", help="Which split trains (validation is carved from it by patient). Default: train when the dataset has one, else all.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file with any of the settings below; flags override it.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out up to --epochs (exactly as if never stopped).")] = False,
    fusion: Annotated[str | None, _opt("--fusion", help="image, clinical, concat, cross or co (default cross).")] = None,
    backbone: Annotated[str | None, _opt("--backbone", help="resnet18, resnet34 or resnet50 (default resnet50).")] = None,
    image_size: Annotated[int | None, _opt("--image-size", help="Side of the square input (default 224).")] = None,
    input_mode: Annotated[str | None, _opt("--input", help="roi (lesion crop when known) or full (breast crop) (default roi).")] = None,
    pretrained: Annotated[str | None, _opt("--pretrained", help="imagenet: start from torchvision's weights (must be cached locally).")] = None,
    proj_dim: Annotated[int | None, _opt("--proj-dim", help="Shared token dimension d (default 100).")] = None,
    modality_dropout: Annotated[float | None, _opt("--modality-dropout", help="Chance of dropping a whole modality per training case (default 0.3).")] = None,
    epochs: Annotated[int | None, _opt("--epochs", help="Total epochs (default 10).")] = None,
    freeze_epochs: Annotated[int | None, _opt("--freeze-epochs", help="First epochs with the backbone frozen and its features cached (default 2).")] = None,
    batch_size: Annotated[int | None, _opt("--batch-size", help="Samples per step (per process under torchrun) (default 16).")] = None,
    lr: Annotated[float | None, _opt("--lr", help="Learning rate of the heads while frozen (default 1e-3).")] = None,
    finetune_lr: Annotated[float | None, _opt("--finetune-lr", help="Learning rate once the backbone is unfrozen (default 1e-4).")] = None,
    weight_decay: Annotated[float | None, _opt("--weight-decay", help="AdamW weight decay (default 1e-4).")] = None,
    patience: Annotated[int | None, _opt("--patience", help="Stop after this many epochs without a better validation AUC (default 5).")] = None,
    val_fraction: Annotated[float | None, _opt("--val-fraction", help="Share of patients held out for validation (default 0.2).")] = None,
    seed: Annotated[int | None, _opt("--seed", help="Seed of weights, split, shuffling and dropout (default 0).")] = None,
    device: Annotated[str | None, _opt("--device", help="auto, cpu or cuda (default auto).", panel="Machine")] = None,
    workers: Annotated[int | None, _opt("--workers", help="Image-reading worker processes (default 0).", panel="Machine")] = None,
    feature_cache: Annotated[str | None, _opt("--feature-cache", help="Frozen-backbone features in memory, on disk (the user cache) or off (default memory).", panel="Machine")] = None,
    amp: Annotated[bool | None, _opt("--amp/--no-amp", help="Mixed precision on CUDA (default on).", panel="Machine")] = None,
) -> None:
    """Train a model: backbone frozen first (cached features), then fine-tuned; early stopping on validation AUC.

    Writes to --out: model.safetensors + config.json (best epoch, with its validation threshold), last/ (checkpoint for --resume), history.jsonl, train_config.yaml and README.md (model card).
    """
    _train(**locals())


@guarded
def _train(out: Path, dataset: str | None, data: Path | None, images: Path | None, split: str | None, config: Path | None, resume: bool, **flags: Any) -> None:
    from mammofuse import RESEARCH_NOTICE
    from mammofuse.errors import MammofuseError
    from mammofuse.training.settings import TrainSettings, read_settings_yaml

    flags["input"] = flags.pop("input_mode")
    values: dict[str, Any] = {str(k).replace("-", "_"): v for k, v in (read_settings_yaml(config) if config else {}).items()}
    values.update({k: v for k, v in flags.items() if v is not None})
    if dataset:
        values["dataset"] = dataset
    settings = TrainSettings.from_dict(values, source=str(config) if config else "settings")
    if not settings.dataset:
        raise MammofuseError("--dataset is required (cbis-ddsm, mini-mias or manifest)")
    if data is None:
        raise MammofuseError("--data is required (the dataset's folder or manifest CSV)")
    from mammofuse.atomic import check_writable_folder

    check_writable_folder(out)
    train_samples, val_samples, used_split = load_training_samples(settings, data, images, split)

    from mammofuse.training import train

    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        from mammofuse.cli.common import err_console

        err_console.print(
            f"training {settings.fusion} on {settings.dataset} ({used_split}): {len(train_samples)} train, "
            f"{len(val_samples)} validation lesions (grouped by patient) -> {out}",
            highlight=False, soft_wrap=True,
        )
    result = train(settings, train_samples, val_samples, out, resume=resume, progress=True)
    if main:
        from rich.console import Console

        auc = "n/a" if result.best_val_auc != result.best_val_auc else f"{result.best_val_auc:.3f}"
        Console(highlight=False, soft_wrap=True).print(
            f"best epoch {result.best_epoch} of {len(result.history)}: validation AUC {auc}, "
            f"threshold {result.threshold:.3f}\nwrote {result.out}\n{RESEARCH_NOTICE}"
        )


def load_training_samples(settings: Any, data: Path, images: Path | None, split: str | None) -> tuple[list, list, str]:
    """The dataset's training split (``train`` when it has one, else all), split into train/validation by patient."""
    from mammofuse.data import load_dataset, train_val_split
    from mammofuse.errors import MammofuseError

    samples = load_dataset(settings.dataset, data, images)
    splits = sorted({s.split for s in samples})
    if split is None:
        split = "train" if "train" in splits else "all"
    if split != "all":
        if split not in splits:
            raise MammofuseError(f"--split {split}: {settings.dataset} has {', '.join(splits)}")
        samples = [s for s in samples if s.split == split]
    folds = max(2, round(1 / settings.val_fraction))  # train_val_split keeps one of this many patient folds
    patients = len({s.patient_id for s in samples})
    if patients < folds:
        raise MammofuseError(f"{settings.dataset} ({split}): {patients} patient(s); --val-fraction {settings.val_fraction} needs at least {folds}")
    try:
        train_samples, val_samples = train_val_split(samples, settings.val_fraction, settings.seed)
    except ValueError as exc:
        raise MammofuseError(f"{settings.dataset} ({split}): cannot split by patient ({exc})") from None
    return train_samples, val_samples, split


def register(app: typer.Typer) -> None:
    app.command("train", epilog=EPILOG)(command)
