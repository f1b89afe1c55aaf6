"""``mammofuse train``: fit a model on a dataset, write it with its history and model card."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mammofuse.cli import train_options as o
from mammofuse.cli.common import Abnormality, ImageDirs, check_stdout, guarded, input_option, output_option, safe
from mammofuse.cli.output import console
from mammofuse.fusion import Fusion

if TYPE_CHECKING:  # not imported at start-up: the CLI stays light
    from mammofuse.data.sample import Sample
    from mammofuse.training.settings import TrainSettings

EPILOG = """[bold]Examples[/]

  Clinical findings only, from the CBIS-DDSM CSVs (no images needed):
  [cyan]mammofuse train --dataset cbis-ddsm --data ../shared/data/cbis-ddsm --fusion clinical --out runs/clinical[/]

  Cross-attention on the CBIS-DDSM mass training images (lesion crops, the default recipe):
  [cyan]mammofuse train --dataset cbis-ddsm --data ../shared/data/cbis-ddsm --images ../shared/data/cbis-ddsm-mass-800/train --abnormality mass --out runs/cbis-cross[/]

  Cross-attention on mini-MIAS, small and fast on a CPU:
  [cyan]mammofuse train --dataset mini-mias --data ../shared/data/mini-mias --fusion cross --epochs 5 --out runs/mias[/]

  A final model on every training patient, its threshold from the out-of-fold predictions of the same recipe:
  [cyan]mammofuse ablate --dataset mini-mias --data ../shared/data/mini-mias --variants cross --out runs/mias-cv[/]
  [cyan]mammofuse train --dataset mini-mias --data ../shared/data/mini-mias --fusion cross --val-fraction 0 --threshold-from runs/mias-cv --out runs/mias-final[/]

  Continue an interrupted run (same settings):
  [cyan]mammofuse train --data ../shared/data/mini-mias --out runs/mias --resume[/]

  Settings from YAML (flags override; examples/train.yaml in the source is a commented one), two processes with DistributedDataParallel:
  [cyan]torchrun --standalone --nproc-per-node 2 -m mammofuse train --config examples/train.yaml --dataset mini-mias --data ../shared/data/mini-mias --out runs/ddp[/]
"""


def command(
    out: Annotated[Path, output_option("--out", help="Output folder (model, last/ checkpoint, history, card).")],
    dataset: Annotated[str | None, typer.Option("--dataset", help="cbis-ddsm, mini-mias or manifest.")] = None,
    data: Annotated[Path | None, input_option("--data", help="Folder with the dataset's CSVs / Info.txt, or a manifest CSV.")] = None,
    images: ImageDirs = None,
    abnormality: Abnormality = "all",
    split: Annotated[str | None, typer.Option("--split", help="Which split trains (validation is carved from it by patient). Default: train when the dataset has one, else all.")] = None,
    config: o.ConfigFile = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out, exactly as if never stopped, with its settings (a flag not given again keeps the run's value; its relative paths are taken from the folder it started in): only --patience, --device, --workers, "
                                                   "--feature-cache, --amp and --patient-digests may differ (--epochs too with --schedule step: cosine and one-cycle span the run).")] = False,
    fusion: Annotated[str | None, o.option("--fusion", help=f"{Fusion.help()} (default cross).")] = None,
    backbone: o.Backbone = None,
    image_size: o.ImageSize = None,
    input_mode: o.InputMode = None,
    roi_context: o.RoiContext = None,
    without_region: o.WithoutRegion = None,
    canvas: o.Canvas = None,
    pretrained: o.Pretrained = None,
    radiomics: o.Radiomics = None,
    aux_findings: o.AuxFindings = None,
    proj_dim: o.ProjDim = None,
    modality_dropout: o.ModalityDropout = None,
    epochs: o.Epochs = None,
    freeze_epochs: o.FreezeEpochs = None,
    batch_size: o.BatchSize = None,
    lr: o.Lr = None,
    finetune_lr: o.FinetuneLr = None,
    schedule: o.Schedule = None,
    warmup_epochs: o.WarmupEpochs = None,
    augment: o.Augment = None,
    selection: o.Selection = None,
    weight_decay: o.WeightDecay = None,
    patience: o.Patience = None,
    val_fraction: o.ValFraction = None,
    threshold_from: o.ThresholdFrom = None,
    patient_digests: o.PatientDigests = None,
    seed: o.Seed = None,
    device: o.DeviceFlag = None,
    workers: o.Workers = None,
    feature_cache: o.FeatureCache = None,
    amp: o.Amp = None,
) -> None:
    """Train a model end to end (augmented, cosine schedule, fixed epochs) and write it with its card.

    Writes to --out: model.safetensors + config.json (the kept epoch, with its validation threshold), last/ (checkpoint for --resume), history.jsonl, train_config.yaml and README.md (model card).
    """
    _train(**locals())


@guarded
def _train(
    out: Path, dataset: str | None, data: Path | None, images: list[Path] | None, abnormality: str, split: str | None,
    config: Path | None, resume: bool, **flags: Any,
) -> None:
    from mammofuse import RESEARCH_NOTICE
    from mammofuse.errors import MammofuseError
    from mammofuse.interrupts import load_torch

    load_torch()
    from mammofuse.training import checkpoint as ckpt
    from mammofuse.training.settings import TrainSettings

    values = o.settings_values(config, flags)
    if resume:  # what is not given again is the run's own setting
        values = {**ckpt.saved_settings(out), **values}
    if dataset:
        values["dataset"] = dataset
    settings = TrainSettings.from_dict(values, source=f"{config} and the flags" if config else "settings")
    if not settings.dataset:
        raise MammofuseError("--dataset is required (cbis-ddsm, mini-mias or manifest)")
    if data is None:
        raise MammofuseError("--data is required (the dataset's folder or manifest CSV)")
    from mammofuse.atomic import check_writable_folder
    from mammofuse.training.distributed import env_int

    main = env_int("RANK", 0) == 0
    if main:  # under torchrun, rank 0 alone writes; another rank's check made and removed --out under rank 0's
        check_stdout()  # the summary goes there
        check_writable_folder(out)
        if (out / ckpt.LAST_DIR).exists():  # each epoch writes its checkpoint there
            check_writable_folder(out / ckpt.LAST_DIR)
    train_samples, val_samples, used_split = load_training_samples(settings, data, images, split, abnormality)

    from mammofuse.training import train

    if main:
        from mammofuse.cli.common import err_console

        validation = f"{len(val_samples)} validation lesions (grouped by patient)" if val_samples else "no validation part (--val-fraction 0)"
        err_console.print(
            f"training {settings.fusion} on {settings.dataset} ({used_split}): {len(train_samples)} train, {validation} -> {safe(out)}",
            highlight=False, soft_wrap=True,
        )
    from mammofuse.cli.train_progress import TrainProgress

    result = train(settings, train_samples, val_samples, out, resume=resume, callbacks=[TrainProgress()])
    if main:
        auc = "n/a" if result.best_val_auc != result.best_val_auc else f"{result.best_val_auc:.3f}"
        kept = "last epoch" if settings.selection == "last" else "best epoch"
        threshold = f"threshold {result.threshold:.3f}"
        if settings.threshold_from:
            threshold += f" (out-of-fold, {settings.threshold_from})"
        elif not val_samples:
            threshold += " (not tuned: no validation part)"
        console.print(f"{kept} {result.best_epoch} of {len(result.history)}: validation AUC {auc}, {threshold}\nwrote {safe(result.out)}\n{RESEARCH_NOTICE}", soft_wrap=True)


def load_training_samples(
    settings: TrainSettings, data: Path, images: list[Path] | None, split: str | None, abnormality: str = "all",
) -> tuple[list[Sample], list[Sample], str]:
    """The dataset's training split (``train`` when it has one, else all), split into train/validation by patient:
    (train, validation, the split used).

    Raises:
        MammofuseError: an unknown ``--split``, or fewer patients than ``--val-fraction`` needs (naming both).
    """
    from mammofuse.data import load_dataset, train_val_split
    from mammofuse.data.splits import training_split, validation_folds
    from mammofuse.errors import MammofuseError

    samples, split = training_split(load_dataset(settings.dataset, data, images, abnormality), split, data, settings.dataset)
    folds = validation_folds(settings.val_fraction)
    patients = len({s.patient_id for s in samples})
    if patients < folds:  # splits says so too, but without the flag to change
        raise MammofuseError(f"{settings.dataset} ({split}): {patients} patient(s); --val-fraction {settings.val_fraction} needs at least {folds}")
    train_samples, val_samples = train_val_split(samples, settings.val_fraction, settings.seed)
    return train_samples, val_samples, split


def register(app: typer.Typer) -> None:
    app.command("train", epilog=EPILOG)(command)
