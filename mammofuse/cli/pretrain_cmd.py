"""``mammofuse pretrain``: learn an image backbone offline from unlabelled mammograms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mammofuse.cli.common import (
    MAX_BATCH_SIZE,
    Abnormality,
    DataDir,
    DatasetName,
    ImageDirs,
    check_output,
    check_stdout,
    clean,
    err_console,
    guarded,
    output_option,
    safe,
)
from mammofuse.cli.output import console
from mammofuse.validation import MAX_SEED, MIN_IMAGE_SIZE

# The bounds train's settings have (mammofuse.training.settings.RULES), and a patch count that still fits in memory.
MAX_PATCH_SIDE = 4096
MAX_EPOCHS = 100_000
MAX_LR = 10.0
MAX_PATCHES_PER_IMAGE = 10_000


@guarded
def pretrain(
    dataset: DatasetName,
    data: DataDir,
    out: Annotated[Path, output_option("--out", help="The backbone file to write (.safetensors).")],
    images: ImageDirs = None,
    abnormality: Abnormality = "all",
    split: Annotated[str | None, typer.Option("--split", help="Whose images are used (never the test split). Default: train when the dataset has one, else all.")] = None,
    backbone: Annotated[str, typer.Option("--backbone", help="cnn4, resnet18, resnet34 or resnet50.")] = "cnn4",
    image_size: Annotated[int, typer.Option("--image-size", min=MIN_IMAGE_SIZE, max=MAX_PATCH_SIDE, help="Patch side given to the backbone.")] = 64,
    patches: Annotated[int, typer.Option("--patches-per-image", min=1, max=MAX_PATCHES_PER_IMAGE, help="Random tissue patches drawn per image.")] = 8,
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=MAX_EPOCHS)] = 6,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, max=MAX_BATCH_SIZE)] = 64,
    lr: Annotated[float, typer.Option("--lr", min=1e-6, max=MAX_LR, help="Peak learning rate (one-cycle).")] = 2e-3,
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED)] = 0,
) -> None:
    """Pretrain a backbone without labels: regress texture statistics of random breast-tissue patches.

    Patches avoid every known lesion region and no label is read, so the backbone never sees what it will be asked to predict; the test split is never used. Patches are drawn from each image in the training images' geometry (the canvas, when all images share one size). Write the result with --out and pass it to `mammofuse train --pretrained FILE`.

    Examples:

        mammofuse pretrain --dataset cbis-ddsm --data ../shared/data/cbis-ddsm --images ../shared/data/cbis-ddsm-mass-800/train --abnormality mass --out backbones/cbis-texture.safetensors

        mammofuse train --dataset cbis-ddsm --data ../shared/data/cbis-ddsm --images ../shared/data/cbis-ddsm-mass-800/train --abnormality mass --pretrained backbones/cbis-texture.safetensors --out runs/pretrained
    """
    from mammofuse.interrupts import load_torch

    load_torch()
    from mammofuse.data import load_dataset
    from mammofuse.data.sample import Sample, patient_digest
    from mammofuse.data.splits import training_split
    from mammofuse.errors import MammofuseError
    from mammofuse.inference import lesion_regions
    from mammofuse.model.config import ARCHITECTURES
    from mammofuse.training.build import common_canvas
    from mammofuse.training.pretrain import PretrainSettings, build_patch_set, pretrain_backbone, save_backbone

    if backbone not in ARCHITECTURES:
        raise MammofuseError(f"--backbone must be one of {', '.join(ARCHITECTURES)}, not {backbone!r}")
    if split and split.lower() == "test":
        raise MammofuseError("--split test: pretraining never uses test images")
    check_stdout()  # the summary goes there
    check_output(out)
    if out.suffix.lower() != ".safetensors":
        raise MammofuseError(f"--out {out}: the backbone is written as safetensors; name the file .safetensors")
    every = load_dataset(dataset, data, images, abnormality)
    splits = sorted({s.split for s in every})
    if split is None and "train" not in splits and "test" in splits:  # training_split would offer --split all
        raise MammofuseError(f"{data}: no train split to pretrain on (its splits are {', '.join(splits)}), and pretraining never uses test images")
    samples, split = training_split(every, split, data, dataset)
    if split == "all" and any(s.split == "test" for s in every):
        raise MammofuseError(f"--split all: {data} has a test split, and pretraining never uses test images; choose --split train")
    files = sorted({s.image_path for s in samples if s.image_path})
    if not files:
        hint = " (pass --images for CBIS-DDSM)" if dataset == "cbis-ddsm" and not images else ""
        raise MammofuseError(f"{data}: no images in the {split} split{hint}")
    settings = PretrainSettings(
        backbone=backbone, image_size=image_size, canvas=common_canvas(samples), patches_per_image=patches,
        epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
    )
    films: dict[str, list[Sample]] = {}
    for s in samples:
        if s.image_path:
            films.setdefault(s.image_path, []).append(s)
    avoid = {path: lesion_regions(film, settings.canvas) for path, film in films.items()}
    err_console.print(f"drawing {patches} tissue patches from each of {len(files)} images (lesion regions avoided)", highlight=False, markup=False, soft_wrap=True)
    inputs, targets, owners, errors = build_patch_set(files, avoid, settings)
    for error in errors:
        err_console.print(f"skipped: {clean(error)}", highlight=False, markup=False, soft_wrap=True)
    empty = len(files) - len(errors) - len(set(owners.tolist()))
    if empty:
        err_console.print(f"note: {empty} readable image(s) gave no patch (too little tissue clear of the lesions)", highlight=False, markup=False, soft_wrap=True)
    err_console.print(f"pretraining {backbone} on {len(inputs)} patches for {epochs} epochs", highlight=False, markup=False, soft_wrap=True)
    backbone_module, report = pretrain_backbone(
        inputs, targets, owners, settings,
        on_epoch=lambda row: err_console.print(
            f"epoch {row['epoch']}/{epochs}: train MSE {row['train_mse']:.3f}, held-out R^2 {row['holdout_r2']:.3f}, {row['seconds']:.0f}s",
            highlight=False, markup=False, soft_wrap=True),
    )
    report.update({"dataset": dataset, "split": split, "abnormality": abnormality, "canvas": settings.canvas, "skipped_files": len(errors)})
    save_backbone(backbone_module, out, settings, report, patients=(patient_digest(s.patient_id) for s in samples if s.image_path))
    r2 = report["history"][-1]["holdout_r2"]
    if not r2 >= 0:  # negative, or NaN
        err_console.print(f"[bold yellow]warning:[/] held-out R^2 {r2:.3f}: the backbone predicts texture statistics worse than their mean; "
                          "pretrain longer (--epochs) or on more images before training from it", highlight=False, soft_wrap=True)
    seconds = sum(row["seconds"] for row in report["history"])  # not in the file: the same training writes the same bytes
    console.print(f"{report['patches']} patches from {report['images']} images; {report['holdout_patches']} patches of "
                  f"{report['holdout_images']} images held out: held-out R^2 {r2:.3f}; {epochs} epoch(s) in {seconds:.0f} s\n"
                  f"wrote {safe(out)}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
