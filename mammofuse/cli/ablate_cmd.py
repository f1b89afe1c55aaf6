"""``mammofuse ablate``: the paper's ablation on identical patient-grouped folds, resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mammofuse.cli.common import Format, check_choice, emit, err_console, guarded

_TRAIN = "Training (every arm)"


def _floats(text: str, flag: str) -> list[float]:
    from mammofuse.errors import MammofuseError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MammofuseError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def _ints(text: str, flag: str) -> list[int]:
    values = _floats(text, flag)
    from mammofuse.errors import MammofuseError

    if any(v != int(v) or v < 4 for v in values):
        raise MammofuseError(f"{flag}: expected comma-separated integers >= 4, got {text!r}")
    return [int(v) for v in values]


def _switches(text: str) -> list[bool]:
    from mammofuse.errors import MammofuseError

    mapping = {"on": True, "off": False}
    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    if not values or any(v not in mapping for v in values):
        raise MammofuseError(f"--modality-dropout: expected on, off or on,off, got {text!r}")
    return [mapping[v] for v in values]


@guarded
def ablate(
    dataset: Annotated[str, typer.Option("--dataset", help="cbis-ddsm, mini-mias or manifest.")],
    data: Annotated[Path, typer.Option("--data", help="Folder with the dataset's CSVs / Info.txt, or a manifest CSV.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder; finished arms in it are reused, not retrained.")],
    images: Annotated[Path | None, typer.Option("--images", help="CBIS-DDSM: root of the DICOM download.")] = None,
    variants: Annotated[str, typer.Option("--variants", help="Comma-separated arms: image, clinical, concat, cross, co.")] = "image,clinical,concat,cross,co",
    folds: Annotated[int, typer.Option("--folds", min=2, help="Patient-grouped stratified folds.")] = 5,
    split: Annotated[str | None, typer.Option("--split", help="Only this dataset split goes into the folds (e.g. train: CV inside CBIS-DDSM's official training set).")] = None,
    official: Annotated[bool, typer.Option("--official-split", help="Train on the official train split, test on the official test split (instead of folds).")] = False,
    missing_rates: Annotated[str, typer.Option("--missing-rates", help="Shares of held-out cases whose clinical findings are removed at inference (fusion arms).")] = "0,0.3,0.5,1.0",
    modality_dropout: Annotated[str, typer.Option("--modality-dropout", help="on, off, or on,off (fusion arms; 'on' uses --dropout-p).")] = "on",
    dropout_p: Annotated[float, typer.Option("--dropout-p", min=0.0, max=0.99, help="Modality dropout probability when on.")] = 0.3,
    proj_dims: Annotated[str, typer.Option("--proj-dims", "--proj-dim", help="Comma-separated shared token sizes d, e.g. 50,100,200.")] = "100",
    backbone: Annotated[str, typer.Option("--backbone", rich_help_panel=_TRAIN, help="resnet18, resnet34 or resnet50.")] = "resnet18",
    image_size: Annotated[int, typer.Option("--image-size", rich_help_panel=_TRAIN, help="Input side in pixels.")] = 96,
    input_mode: Annotated[str, typer.Option("--input", rich_help_panel=_TRAIN, help="roi (lesion crop) or full (breast crop).")] = "roi",
    epochs: Annotated[int, typer.Option("--epochs", rich_help_panel=_TRAIN, help="Epochs per fold.")] = 10,
    freeze_epochs: Annotated[int, typer.Option("--freeze-epochs", rich_help_panel=_TRAIN, help="Epochs with the backbone frozen.")] = 2,
    batch_size: Annotated[int, typer.Option("--batch-size", rich_help_panel=_TRAIN)] = 16,
    lr: Annotated[float, typer.Option("--lr", rich_help_panel=_TRAIN, help="Head learning rate.")] = 1e-3,
    finetune_lr: Annotated[float, typer.Option("--finetune-lr", rich_help_panel=_TRAIN, help="Learning rate once unfrozen.")] = 1e-4,
    weight_decay: Annotated[float, typer.Option("--weight-decay", rich_help_panel=_TRAIN)] = 1e-4,
    patience: Annotated[int, typer.Option("--patience", rich_help_panel=_TRAIN, help="Early-stopping patience (validation AUC).")] = 5,
    val_fraction: Annotated[float, typer.Option("--val-fraction", rich_help_panel=_TRAIN, help="Share of each fold's training patients used for validation.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", rich_help_panel=_TRAIN, help="One seed for folds, validation split and every arm.")] = 0,
    pretrained: Annotated[str | None, typer.Option("--pretrained", rich_help_panel=_TRAIN, help="'imagenet' (from the local torchvision cache) or none.")] = None,
    device: Annotated[str, typer.Option("--device", rich_help_panel=_TRAIN, help="auto, cpu or cuda.")] = "auto",
    workers: Annotated[int, typer.Option("--workers", rich_help_panel=_TRAIN, min=0)] = 0,
    feature_cache: Annotated[str, typer.Option("--feature-cache", rich_help_panel=_TRAIN, help="memory, disk or off.")] = "memory",
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Patient-bootstrap resamples for the pooled AUC interval.")] = 1000,
    keep_models: Annotated[bool, typer.Option("--keep-models", help="Keep each fold's trained weights (default: keep only results).")] = False,
    fmt: Format = "table",
) -> None:
    """Train and evaluate every ablation arm on the same patient-grouped folds and seeds.

    Writes OUT/ablation.json, OUT/ablation.md and OUT/ablation.png; each finished (arm, fold) is kept in OUT/arms/ and reused when the command runs again with the same --out. Arms that need images are skipped when the dataset has none (e.g. CBIS-DDSM CSVs without --images). Fusion arms are also scored with the clinical findings removed from --missing-rates of the held-out cases. Progress goes to stderr.

    Examples:

        mammofuse ablate --dataset mini-mias --data ../shared/data/mini-mias --out runs/ablation --epochs 6

        mammofuse ablate --dataset cbis-ddsm --data csvs/ --variants clinical --official-split --out runs/clin
    """
    from mammofuse.atomic import check_writable_folder
    from mammofuse.errors import MammofuseError
    from mammofuse.evaluation.ablation import plan_arms, run_ablation

    check_choice("--format", fmt, ("table", "json"))
    check_writable_folder(out)
    arms = plan_arms([v.strip() for v in variants.split(",") if v.strip()], _switches(modality_dropout), _ints(proj_dims, "--proj-dims"), dropout_p)
    rates = _floats(missing_rates, "--missing-rates")

    from mammofuse.data import load_dataset
    from mammofuse.training import TrainSettings

    settings = TrainSettings.from_dict({
        "backbone": backbone, "image_size": image_size, "input": input_mode, "epochs": epochs, "freeze_epochs": freeze_epochs,
        "batch_size": batch_size, "lr": lr, "finetune_lr": finetune_lr, "weight_decay": weight_decay, "patience": patience,
        "val_fraction": val_fraction, "seed": seed, "pretrained": pretrained, "device": device, "workers": workers,
        "feature_cache": feature_cache, "dataset": dataset,
    }, source="ablate flags")
    samples = load_dataset(dataset, data, images)
    if split is not None:
        if official:
            raise MammofuseError("--split and --official-split exclude each other")
        from mammofuse.evaluation.evaluate import select_split

        samples = select_split(samples, split)
    if not samples:
        raise MammofuseError(f"{data}: no samples")
    report = run_ablation(
        samples, arms, settings, out, folds=None if official else folds, missing_rates=rates, n_boot=bootstrap,
        keep_models=keep_models, log=lambda m: err_console.print(m, highlight=False, soft_wrap=True),
        progress=err_console.is_terminal, dataset=dataset if split is None else f"{dataset} ({split} split)",
    )
    err_console.print(f"wrote {out / 'ablation.json'}, {out / 'ablation.md'}, {out / 'ablation.png'}", highlight=False)
    if fmt == "json":
        emit(json.dumps(report, indent=2) + "\n", None)
    else:
        _table(report)


def _table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    rates = [r for r in report["protocol"]["missing_rates"] if r > 0]
    p = report["protocol"]
    table = Table(title=f"Ablation: {p['dataset']} ({p['split']})", caption=(f"image weights: {p['image_weights']}. " if p["image_weights"] else "") + report["notice"])
    table.add_column("arm", no_wrap=True)
    for col in ("AUC mean ± SD", "pooled AUC [95% CI]", "sens. / spec.", "AUC, clinical missing " + " / ".join(f"{r:.0%}" for r in rates)):
        table.add_column(col, justify="right")

    def num(v: float | None, sd: float | None = None) -> str:
        return "n/a" if v is None else f"{v:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")

    for name, a in report["variants"].items():
        ci = a.get("auc_ci")
        pooled = num(a.get("auc_pooled")) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        missing = a.get("missing_clinical", {})
        lost = " / ".join(num(missing[f"{r:g}"]["auc"]) if f"{r:g}" in missing else "—" for r in rates)
        table.add_row(name, num(a["auc"], a.get("auc_sd")), pooled, f"{num(a['sensitivity'])} / {num(a['specificity'])}", lost)
    for name, why in report["skipped"].items():
        table.add_row(name, f"skipped: {why}")
    console = Console()
    console.print(table)
    for name, a in report["variants"].items():
        vs = a.get("vs_best_single")
        if not vs:
            continue
        if vs["ci"] is None:
            verdict = "no interval (too few patients)"
        elif vs["ci"][0] > 0:
            verdict = "better, interval excludes 0"
        elif vs["ci"][1] < 0:
            verdict = "worse, interval excludes 0"
        else:
            verdict = "no evidence of a difference"
        ci = f" [{vs['ci'][0]:+.3f}, {vs['ci'][1]:+.3f}]" if vs["ci"] else ""
        console.print(f"{name} vs best single modality ({vs['arm']}): pooled AUC {vs['difference']:+.3f}{ci}: {verdict}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("ablate")(ablate)
