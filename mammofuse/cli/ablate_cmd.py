"""``mammofuse ablate``: the paper's ablation on identical patient-grouped folds, resumable."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mammofuse.cli import train_options as o
from mammofuse.cli.common import (
    Abnormality,
    AwayPatches,
    DataDir,
    DatasetName,
    Format,
    ImageDirs,
    ReportFormat,
    check_choice,
    check_stdout,
    clean,
    emit,
    err_console,
    guarded,
    output_option,
)
from mammofuse.cli.output import console
from mammofuse.fusion import FUSIONS
from mammofuse.jsontext import json_text
from mammofuse.validation import MAX_BOOTSTRAP

if TYPE_CHECKING:
    from mammofuse.evaluation.ablation_results import AblationResult


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
    dataset: DatasetName,
    data: DataDir,
    out: Annotated[Path, output_option("--out", help="Output folder; finished arms in it are reused, not retrained.")],
    images: ImageDirs = None,
    abnormality: Abnormality = "all",
    variants: Annotated[str, typer.Option("--variants", help=f"Comma-separated arms: {', '.join(FUSIONS)}.")] = ",".join(FUSIONS),
    protocol: Annotated[str, typer.Option("--protocol", help="official: train on the official training split, test on the official test split; cv: patient-grouped folds; auto: official where the data has both splits, else cv.")] = "auto",
    folds: Annotated[int, typer.Option("--folds", min=2, help="Patient-grouped stratified folds (--protocol cv).")] = 5,
    split: Annotated[str | None, typer.Option("--split", help="Only this dataset split goes into the folds (e.g. train: CV inside CBIS-DDSM's official training set).")] = None,
    missing_rates: Annotated[str, typer.Option("--missing-rates", help="Shares of held-out cases whose clinical findings are removed at inference (fusion arms).")] = "0,0.3,0.5,1.0",
    modality_dropout: Annotated[str, typer.Option("--modality-dropout", help="on, off, or on,off (the joint-head arms concat, cross, co; 'on' uses --dropout-p).")] = "on",
    dropout_p: Annotated[float | None, typer.Option("--dropout-p", min=0.0, max=0.99, show_default=False, help="Modality dropout probability when on (default: --config's modality_dropout, else 0.3).")] = None,
    proj_dims: Annotated[str | None, typer.Option("--proj-dims", "--proj-dim", show_default=False, help="Comma-separated shared token sizes d, e.g. 50,100,200 (default: --config's proj_dim, else 100).")] = None,
    image_init: Annotated[Path | None, typer.Option("--image-init", help="Folder of an image arm run on the same folds with --keep-models (OUT/arms/image): fusion arms start their image branch from its fold models (staged training).")] = None,
    threshold_from: Annotated[str, typer.Option("--threshold-from", help="Each fold's decision threshold: oof (Youden's J on the other folds' held-out predictions: hundreds of cases) or validation (its own validation part).")] = "oof",
    controls: Annotated[bool, typer.Option("--controls/--no-controls", help="Also score image arms on the shortcut controls: lesion masked out (with --input full: every lesion of the film), and a patch away from the lesion (lesion-crop arms).")] = True,
    away_patches: AwayPatches = 1,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, max=MAX_BOOTSTRAP, help="Patient-bootstrap resamples for the pooled AUC interval.")] = 1000,
    keep_models: Annotated[bool, typer.Option("--keep-models", help="Keep each fold's trained weights (default: keep only results): a later run on the same --out scores the missing rates and controls it adds from them.")] = False,
    config: o.ConfigFile = None,
    backbone: o.Backbone = None,
    image_size: o.ImageSize = None,
    input_mode: o.InputMode = None,
    roi_context: o.RoiContext = None,
    without_region: o.WithoutRegion = None,
    canvas: o.Canvas = None,
    pretrained: o.Pretrained = None,
    radiomics: o.Radiomics = None,
    aux_findings: o.AuxFindings = None,
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
    patient_digests: o.PatientDigests = None,
    seed: o.Seed = None,
    device: o.DeviceFlag = None,
    workers: o.Workers = None,
    feature_cache: o.FeatureCache = None,
    amp: o.Amp = None,
    fmt: Format = ReportFormat.TABLE,
) -> None:
    """Train and evaluate every ablation arm on the same patient-grouped folds (or the official split) and seeds.

    Writes OUT/ablation.json, OUT/ablation.md and OUT/ablation.png; each finished (arm, fold) is kept in OUT/arms/ and reused when the command runs again with the same --out (a --missing-rates share or control it lacks is scored from its kept model, see --keep-models; without one the run stops). Arms that need images are skipped when the dataset has none (e.g. CBIS-DDSM CSVs without --images). Fusion arms are also scored with the clinical findings removed from --missing-rates of the held-out cases; image arms on the shortcut controls. Training settings not given come from --config (its proj_dim and modality_dropout are the defaults of --proj-dims and --dropout-p), else the defaults of `mammofuse train`, except --val-fraction: 0 with k-fold CV (each fold trains on all its training patients) unless --threshold-from validation or --selection best needs a validation part. Progress goes to stderr.

    Examples:

        mammofuse ablate --dataset cbis-ddsm --data ../shared/data/cbis-ddsm --images ../shared/data/cbis-ddsm-mass-800/train --abnormality mass --split train --out runs/cbis-cv

        mammofuse ablate --dataset cbis-ddsm --data csvs/ --images train-jpegs/ --images test-dicoms/ --abnormality mass --protocol official --out runs/official

        mammofuse ablate --dataset mini-mias --data ../shared/data/mini-mias --out runs/mias-ablation
    """
    from mammofuse.atomic import check_writable_folder
    from mammofuse.interrupts import load_torch

    load_torch()
    from mammofuse.cli.train_progress import TrainProgress
    from mammofuse.errors import MammofuseError
    from mammofuse.evaluation.ablation import plan_arms, run_ablation
    from mammofuse.imaging.controls import CONTROLS

    check_choice("--protocol", protocol, ("auto", "official", "cv"))
    check_choice("--threshold-from", threshold_from, ("oof", "validation"))
    check_stdout()  # the summary goes there
    check_writable_folder(out)
    rates = _floats(missing_rates, "--missing-rates")

    from mammofuse.data import load_dataset
    from mammofuse.training import TrainSettings

    flags = {k: v for k, v in locals().items() if k in _TRAINING_FLAGS}
    values = {**o.settings_values(config, flags), "dataset": dataset}
    settings = TrainSettings.from_dict(values, source=str(config) if config else "ablate flags")  # bad settings fail before data loads
    dims = _ints(proj_dims, "--proj-dims") if proj_dims is not None else [settings.proj_dim]  # --config's, else the default
    arms = plan_arms([v.strip() for v in variants.split(",") if v.strip()], _switches(modality_dropout), dims,
                     settings.modality_dropout if dropout_p is None else dropout_p)
    samples = load_dataset(dataset, data, images, abnormality)
    if split is not None:
        from mammofuse.evaluation.evaluate import select_split

        samples = select_split(samples, split)  # load_dataset and select_split refuse to give no case
    has_official = {"train", "test"} <= {s.split for s in samples}
    if protocol == "official" and not has_official:
        raise MammofuseError(f"--protocol official: the data has no official train and test split here (splits: {', '.join(sorted({s.split for s in samples}))}); use --protocol cv")
    official = protocol == "official" or (protocol == "auto" and has_official)
    if "val_fraction" not in values and not official and threshold_from == "oof" and settings.selection == "last":
        settings = dataclasses.replace(settings, val_fraction=0.0)  # a validation part would choose nothing: every training patient trains
    report = run_ablation(
        samples, arms, settings, out, folds=None if official else folds, missing_rates=rates, n_boot=bootstrap,
        keep_models=keep_models, callbacks=[TrainProgress(epoch_lines=err_console.is_terminal)], dataset=dataset if split is None else f"{dataset} ({split} split)",
        controls=CONTROLS if controls else (), image_init=image_init, threshold=threshold_from, away_patches=away_patches,
    )
    err_console.print(clean(f"wrote {out / 'ablation.json'}, {out / 'ablation.md'}, {out / 'ablation.png'}"), highlight=False, markup=False, soft_wrap=True)
    if fmt == "json":
        emit(json_text(report.to_dict(), indent=2) + "\n", None)
    else:
        _table(report)


_TRAINING_FLAGS = frozenset({
    "backbone", "image_size", "input_mode", "roi_context", "without_region", "canvas", "pretrained", "radiomics", "aux_findings", "epochs",
    "freeze_epochs", "batch_size", "lr", "finetune_lr", "schedule", "warmup_epochs", "augment", "selection", "weight_decay",
    "patience", "val_fraction", "patient_digests", "seed", "device", "workers", "feature_cache", "amp",
})


def _table(report: AblationResult) -> None:
    from rich.table import Table

    from mammofuse.evaluation.ablation_results import folds_covered, partial_means

    p = report.protocol
    rates = [r for r in p["missing_rates"] if r > 0]
    table = Table(title=f"Ablation: {p['dataset']} ({p['split']})", caption=(f"image weights: {p['image_weights']}. " if p["image_weights"] else "") + report.notice)
    table.add_column("arm", no_wrap=True)
    for col in ("AUC mean ± SD", "pooled AUC [95% CI]", "sens. / spec.", "AUC, clinical missing " + " / ".join(f"{r:.0%}" for r in rates)):
        table.add_column(col, justify="right")

    def num(v: float | None, sd: float | None = None, count: int | None = None, folds: int = 0) -> str:
        return "n/a" if v is None else f"{v:.2f}" + (f" ± {sd:.2f}" if sd is not None else "") + partial_means(count, folds)

    for name, a in report.variants.items():
        ci = a.auc_ci
        pooled = num(a.auc_pooled) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        missing = a.missing_clinical or {}
        lost = " / ".join(num(missing[f"{r:g}"]["auc"], None, folds_covered(missing[f"{r:g}"]["auc_folds"]), a.folds) if f"{r:g}" in missing else "—" for r in rates)
        averaged = a.folds_averaged or {}
        rates_shown = f"{num(a.sensitivity, None, averaged.get('sensitivity'), a.folds)} / {num(a.specificity, None, averaged.get('specificity'), a.folds)}"
        table.add_row(name, num(a.auc, a.auc_sd, averaged.get("auc"), a.folds), pooled, rates_shown, lost)
    for name, why in report.skipped.items():
        table.add_row(name, f"skipped: {why}")
    console.print(table)
    for name, a in report.variants.items():
        vs = a.vs_best_single
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
        console.print(f"{name} vs best single modality ({vs['arm']}): pooled AUC {vs['difference']:+.3f}{ci}: {verdict}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("ablate")(ablate)
