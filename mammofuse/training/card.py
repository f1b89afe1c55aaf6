"""The model card (``README.md``) written beside a trained model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mammofuse import RESEARCH_NOTICE
from mammofuse.atomic import write_text
from mammofuse.training.settings import TrainSettings


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_card(settings: TrainSettings, provenance: dict[str, Any], history: list[dict], best: dict[str, Any]) -> str:
    """Markdown: data, split, fusion, metrics, caveats and the research-use notice."""
    s = settings
    image = f"{s.backbone}, {s.image_size}x{s.image_size} {s.input} input, " + (
        "ImageNet-initialised" if s.pretrained == "imagenet" else "randomly initialised"
    )
    lines = [
        f"# mammofuse model: {s.fusion} fusion on {s.dataset or 'custom data'}",
        "",
        f"**{RESEARCH_NOTICE}** Not validated for clinical use; do not use it to make decisions about patients.",
        "",
        "## Model",
        "",
        f"- Fusion: `{s.fusion}`" + ("" if s.fusion == "clinical" else f"; image encoder {image}"),
        f"- Shared token dimension {s.proj_dim}"
        + (f"; modality dropout {s.modality_dropout} during training" if s.fusion in ("concat", "cross", "co") else ""),
        f"- Decision threshold {_fmt(best['threshold'])} (probability of malignancy), chosen on validation by Youden's J",
        "",
        "## Data and split",
        "",
        f"- Dataset: {s.dataset or 'not recorded'}",
        f"- Training: {provenance['n_train']} lesions from {len(provenance['train_patients'])} patients; "
        f"validation: {provenance['n_val']} lesions from {len(provenance['val_patients'])} patients",
        "- Validation carved out of training data, grouped by patient (no patient on both sides); "
        "`config.json` lists one-way digests of the patients of each side",
        "",
        "## Training",
        "",
        f"- {len(history)} epochs run of {s.epochs} asked (early stopping patience {s.patience})"
        + (f"; backbone frozen for the first {s.freeze_epochs} (heads at lr {s.lr}, cached features), "
           f"then fine-tuned at {s.finetune_lr}" if s.fusion != "clinical" else f"; lr {s.lr}"),
        f"- AdamW (weight decay {s.weight_decay}), batch size {s.batch_size}, per-epoch lr decay, "
        "gradient clipping, class-weighted loss (pos_weight = benign/malignant)",
        f"- Seed {s.seed}; full settings in `train_config.yaml`, per-epoch figures in `history.jsonl`",
        "",
        "## Metrics (validation)",
        "",
        f"- Best epoch {best['epoch']}: ROC AUC {_fmt(best['auc'])}",
        "",
        "| epoch | frozen | train loss | val loss | val AUC |",
        "|---|---|---|---|---|",
        *(f"| {r['epoch']} | {'yes' if r['frozen'] else 'no'} | {_fmt(r['train_loss'])} | {_fmt(r['val_loss'])} | {_fmt(r['val_auc'])} |" for r in history),
        "",
        "## Caveats",
        "",
        "- The validation AUC selected the epoch and the threshold, so it is optimistic: "
        "report a held-out test set or patient-grouped cross-validation (`mammofuse evaluate`) instead.",
        "- Small public research datasets (scanned film, one population); performance elsewhere is unknown.",
        "- Clinical findings are radiologists' descriptors; BI-RADS assessment and subtlety are never inputs.",
    ]
    if s.fusion != "clinical" and s.pretrained != "imagenet":
        lines.append("- The image encoder started from random weights: expect far lower AUC than papers using ImageNet initialisation.")
    return "\n".join(lines) + "\n"


def write_model_card(out: Path, settings: TrainSettings, provenance: dict[str, Any], history: list[dict], best: dict[str, Any]) -> None:
    write_text(Path(out) / "README.md", model_card(settings, provenance, history, best))
