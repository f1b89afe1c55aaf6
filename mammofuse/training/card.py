"""The model card (``README.md``) written beside a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mammofuse import RESEARCH_NOTICE
from mammofuse.atomic import write_text
from mammofuse.evaluation.subgroups import subgroup_lines
from mammofuse.fusion import Fusion
from mammofuse.hub import CARD_METADATA, CARD_NAME, staged_model_folder
from mammofuse.provenance import fmt, threshold_source, validation_class
from mammofuse.training.schedule import lr_factor
from mammofuse.training.settings import TrainSettings

if TYPE_CHECKING:
    from mammofuse.training.callbacks import EpochRow
    from mammofuse.training.state import BestEpoch


def _initialisation(pretrained: str | None) -> str:
    if pretrained == "imagenet":
        return "ImageNet-initialised"
    if staged_model_folder(pretrained) is not None:
        return f"initialised from the image branch of the trained model `{Path(pretrained).name}` (staged training)"
    if pretrained:
        return f"initialised from the self-supervised backbone `{Path(pretrained).name}` (texture statistics of unlabelled tissue patches)"
    return "randomly initialised"


def _learning_rates(s: TrainSettings) -> str:
    """The card's words on the learning rate, read off the schedule itself: a warm-up of ``epochs`` or more never
    reaches ``lr``; after a frozen phase ``finetune_lr`` scales the run's schedule from where it then stands, so the
    fine-tune phase starts below it."""
    freeze = s.freeze_epochs if s.uses_image else 0
    rates = [s.lr * lr_factor(epoch, s) for epoch in range(s.epochs)]
    if not freeze:  # a warm-up as long as the run never reaches lr
        return f"; peak lr {max(rates):.3g}"
    frozen, tuned = rates[:freeze], rates[freeze:]
    heads = f"heads at up to lr {max(frozen):.3g}"
    if not tuned:
        return f"; backbone frozen throughout ({heads})"
    return (f"; backbone frozen for the first {freeze} ({heads}), then fine-tuned at up to {max(tuned):.3g}, following the "
            f"{s.schedule} schedule from epoch {freeze + 1}: lr {tuned[0]:.3g} → {tuned[-1]:.3g}")


def model_card(settings: TrainSettings, provenance: dict[str, Any], history: Sequence[EpochRow], best: BestEpoch) -> str:
    """Markdown: data, split, fusion, metrics, caveats and the research-use notice."""
    has_val = bool(provenance["n_val"])
    lines = [
        CARD_METADATA,  # YAML front matter: the Hub files the folder under mammofuse and these tags
        f"# mammofuse model: {settings.fusion} fusion on {settings.dataset or 'custom data'}",
        "",
        f"**{RESEARCH_NOTICE}** Not validated for clinical use; do not use it to make decisions about patients.",
        *_intended_use_section(settings, provenance),
        *_model_section(settings, provenance, best),
        *_data_section(settings, provenance, has_val),
        *_training_section(settings, provenance, history),
        *_metrics_section(history, best, has_val),
        *_caveats_section(settings, provenance, has_val),
    ]
    return "\n".join(lines) + "\n"


CBIS_DDSM = "cbis-ddsm"
FILM_DATASETS = frozenset({CBIS_DDSM, "mini-mias"})
"""Datasets of digitised screen-film mammograms: no image from a modern digital detector trained their models."""
LEE_2017 = "Lee et al. 2017, *Scientific Data* 4:170177"
HEATH_2001 = "Heath et al. 2001, *Proc. IWDM 2000*"
LESION_WORDS = {"mass": ("mass", "masses"), "calc": ("calcification", "calcifications")}
"""Each ``abnormality`` value in words, singular and plural."""


def _lesion_kind(provenance: Mapping[str, Any], plural: bool = False) -> str:
    """The lesion types the model trained on, in words (``provenance.abnormality``): ``mass``, ``mass or calcification``, ``lesion``."""
    kinds = [LESION_WORDS[k][plural] if k in LESION_WORDS else k for k in provenance.get("abnormality") or []]
    return (" and " if plural else " or ").join(kinds) or ("lesions" if plural else "lesion")


def _intended_use_section(s: TrainSettings, provenance: Mapping[str, Any]) -> list[str]:
    """What the model is for and what it is not for, from its fusion, input and the lesion types and dataset it trained on."""
    fusion = Fusion(s.fusion)
    given = [*(["delimited (its lesion region)"] if fusion.uses_image and s.input == "roi" else []),
             *(["described (its findings)"] if fusion.uses_clinical else [])]
    trained = set(provenance.get("abnormality") or [])
    untrained = [plural for kind, (_, plural) in LESION_WORDS.items() if trained and kind not in trained]
    out = [
        "screening or detection (finding lesions): the model scores a lesion it is given",
        *([f"{' and '.join(untrained)}: it trained on {_lesion_kind(provenance, plural=True)} only"] if untrained else []),
        *(["digital mammograms from modern detectors: its training images were digitised film"]
          if fusion.uses_image and s.dataset in FILM_DATASETS else []),
        "any clinical decision",
    ]
    return [
        "",
        "## Intended use",
        "",
        f"- Task: telling benign from malignant a {_lesion_kind(provenance)} that a radiologist has already "
        + ", ".join(["found", *given[:-1]]) + (f" and {given[-1]}" if given else "")
        + "; research on multimodal fusion and its explanations",
        "- Users: researchers",
        "- Out of scope: " + "; ".join(out),
    ]


def _model_section(s: TrainSettings, provenance: Mapping[str, Any], best: BestEpoch) -> list[str]:
    """What the model is: fusion, image encoder, token size, threshold and the geometry of its input."""
    crop = f"lesion crop ({s.roi_context:g}x the lesion's diameter)" if s.input == "roi" else "whole-breast crop"
    image = f"{s.backbone}, {s.image_size}x{s.image_size} {crop}, " + _initialisation(s.pretrained) + (
        ", plus a radiomics token (texture statistics and lesion size)" if s.radiomics else "") + _findings_words(s, provenance)
    return [
        "",
        "## Model",
        "",
        f"- Fusion: `{s.fusion}`" + ("" if not s.uses_image else f"; image encoder {image}"),
        f"- Shared token dimension {s.proj_dim}"
        + (f"; modality dropout {s.modality_dropout} during training" if Fusion(s.fusion).joint_head else "")
        + ("; late fusion: image and clinical heads each trained on their own, their logits averaged" if s.fusion == Fusion.LATE else ""),
        f"- Decision threshold {fmt(best.threshold)}: " + threshold_source(provenance),
        *([_geometry(s, provenance.get("recipe", {}).get("canvas"))] if s.uses_image else []),
    ]


def _findings_trained(s: TrainSettings, provenance: Mapping[str, Any]) -> bool:
    """Whether the image branch learned the findings: ``aux_findings`` asked for it and some training case gave a lesion finding."""
    return bool(s.aux_findings) and provenance.get("aux_findings_targets") != 0


def _findings_words(s: TrainSettings, provenance: Mapping[str, Any]) -> str:
    """The image encoder's words on the findings loss (``aux_findings``): learned, off for want of a target, or not asked for."""
    if _findings_trained(s, provenance):
        return f"; in training the image branch also learned to name each lesion's findings (shape, margin...; loss weight {s.aux_findings:g})"
    if s.aux_findings:
        return f"; no findings loss: `aux_findings` {s.aux_findings:g} asked for one, but no training case with an image gave a lesion finding"
    return ""


def _geometry(s: TrainSettings, canvas: Sequence[int] | None) -> str:
    """How a file's pixels reach the image branch, and what happens without a lesion region."""
    geometry = (
        f"- Geometry: every image is min-max scaled and stretched to {canvas[0]}x{canvas[1]} before cropping, as the "
        "training images were; a full-resolution DICOM is brought onto that canvas and a given lesion region mapped with it"
        if canvas else "- Geometry: crops are taken from the file's own pixels"
    )
    if s.input == "roi":
        without = ("the image is left out and the clinical findings are scored (a warning says so)" if s.without_region == "skip"
                   else "the whole breast is scored instead (a warning says so)")
        geometry += f"\n- Without a lesion region (`--roi`, or roi columns in `--clinical`): {without}"
    return geometry


def _data_section(s: TrainSettings, provenance: Mapping[str, Any], has_val: bool) -> list[str]:
    """The training data, its split and whether patient overlap can be checked."""
    return [
        "",
        "## Data and split",
        "",
        f"- Dataset: {s.dataset or 'not recorded'}",
        f"- Training: {provenance['n_train']} lesions from {provenance['n_train_patients']} patients; "
        + (f"validation: {provenance['n_val']} lesions from {provenance['n_val_patients']} patients" if has_val
           else "no validation part: every patient trained (`val_fraction` 0)"),
        *(["- Validation carved out of training data, grouped by patient (no patient on both sides)"] if has_val else []),
        (f"- `config.json` lists digests of the {'training and validation' if has_val else 'training'} patients (pseudonymous: "
         "whoever holds a patient's id can test whether the patient trained this model)" if s.patient_digests
         else "- `config.json` lists no patient digests (`--no-patient-digests`): patient overlap cannot be checked"),
        *_reference_and_provenance(s),
    ]


def _reference_and_provenance(s: TrainSettings) -> list[str]:
    """How the labels were established and where the data came from: CBIS-DDSM's, by its papers; otherwise not known here."""
    if s.dataset != CBIS_DDSM:
        return [f"- Reference standard: the labels as {f'`{s.dataset}`' if s.dataset else 'the training data'} gives them; "
                "how they were established is not recorded here"]
    return [
        "- Unit: a lesion on one view; CBIS-DDSM describes each lesion once per film, so a lesion seen in the CC and the MLO view "
        "counts twice (both views are one patient's, so they stay on one side of every split)",
        "- Reference standard: malignant = pathology-proven; benign = pathology-proven, or not recalled (BENIGN_WITHOUT_CALLBACK: "
        f"judged benign on the screening films alone, with no further films and no biopsy); {LEE_2017}",
        "- Data provenance: DDSM screen-film mammograms from US sites (Massachusetts General Hospital, Wake Forest University, "
        "Sacred Heart Hospital, Washington University in St Louis), assembled in the 1990s (completed 1999) and digitised with "
        f"several film scanners ({HEATH_2001}), re-curated as CBIS-DDSM ({LEE_2017}). "
        "CBIS-DDSM's case descriptions carry no demographics (not even age), so performance by age or ethnicity is unknown",
    ]


def _training_section(s: TrainSettings, provenance: Mapping[str, Any], history: Sequence[EpochRow]) -> list[str]:
    """Epochs, selection, optimiser, schedule, augmentation, loss and seed."""
    return [
        "",
        "## Training",
        "",
        f"- {len(history)} epochs run of {s.epochs} asked; kept: "
        + ("the last epoch (fixed epoch count)" if s.selection == "last" else f"the best validation epoch (early stopping patience {s.patience})")
        + _learning_rates(s),
        f"- AdamW (weight decay {s.weight_decay}), batch size {s.batch_size}, {s.schedule} learning-rate schedule, "
        + ("flip/rotation/scale/intensity augmentation, " if s.augment and s.uses_image else "")
        + "gradient clipping, class-weighted loss (pos_weight = benign/malignant)"
        + (f" plus {s.aux_findings:g} x the image branch's findings loss (counted in the train loss below, not in the validation loss)"
           if _findings_trained(s, provenance) and s.uses_image else ""),
        f"- Seed {s.seed}; every setting in `config.json` (`provenance.settings`), every epoch in the table below",
    ]


def _metrics_section(history: Sequence[EpochRow], best: BestEpoch, has_val: bool) -> list[str]:
    """The kept epoch and every epoch's losses and validation AUC."""
    return [
        "",
        "## Metrics (validation)" if has_val else "## Training loss",
        "",
        f"- Kept epoch {best.epoch}: ROC AUC {fmt(best.val_auc)}" if has_val
        else f"- Kept epoch {best.epoch}; no validation part, so no metric here",
        "",
        "| epoch | frozen | train loss | val loss | val AUC |",
        "|---|---|---|---|---|",
        *(f"| {r['epoch']} | {'yes' if r['frozen'] else 'no'} | {fmt(r['train_loss'])} | {fmt(r['val_loss'])} | {fmt(r['val_auc'])} |" for r in history),
    ]


def _caveats_section(s: TrainSettings, provenance: Mapping[str, Any], has_val: bool) -> list[str]:
    """What the card's numbers cannot say: validation optimism, data, case mix, inputs, initialisation."""
    lines = [
        "",
        "## Caveats",
        "",
        _validation_caveat(has_val, bool(provenance.get("threshold_from")), s.selection, validation_class(provenance))
        + "report a held-out test set or patient-grouped cross-validation (`mammofuse ablate`) instead.",
        "- Small public research datasets (scanned film, one population); performance elsewhere is unknown.",
        *_case_mix(provenance),
        "- Clinical findings are radiologists' descriptors; BI-RADS assessment and subtlety are never inputs.",
    ]
    if s.uses_image and s.pretrained != "imagenet":
        lines.append(f"- The image encoder was {_initialisation(s.pretrained)}, not ImageNet-initialised: "
                     "expect lower AUC than papers using ImageNet initialisation.")
    return lines


def _case_mix(provenance: Mapping[str, Any]) -> list[str]:
    """The caveat that a score is conditional on the training cases' share of malignancy (none where unrecorded)."""
    malignant, n = provenance.get("n_train_malignant"), provenance.get("n_train")
    if not isinstance(malignant, int) or not isinstance(n, int) or not n:
        return []
    return [f"- Its probabilities are conditional on the training cases' mix, {malignant / n:.0%} of them malignant ({malignant} of {n} "
            "lesions): where malignancy is rarer, as in screening, the same score means a lower risk."]


def _validation_caveat(has_val: bool, threshold_from_cv: bool, selection: str, only: str | None) -> str:
    """The card's first caveat: what the validation part chose, so how far its AUC can be trusted; ``only``: the one
    class a validation part held, which gives no AUC to choose by."""
    if not has_val:
        return "- No validation part: no metric here; "
    if only:
        threshold = "the threshold came from cross-validation" if threshold_from_cv else "the threshold is 0.5, not tuned"
        chose = "its loss chose the epoch" if selection == "best" else "the epoch is the last"
        return f"- The validation part holds only {only} cases, so it gives no AUC: {threshold}, {chose}; "
    chose = [*([] if threshold_from_cv else ["the threshold"]), *(["the epoch"] if selection == "best" else [])]
    if not chose:
        return "- The validation part chose nothing (the threshold came from cross-validation, the epoch is the last), but it is small: "
    return f"- The validation AUC chose {' and '.join(chose)}, so it is optimistic: "


def write_model_card(out: Path, settings: TrainSettings, provenance: dict[str, Any], history: Sequence[EpochRow], best: BestEpoch) -> None:
    """Write the model card (:func:`model_card`) to ``out/README.md``, atomically."""
    write_text(Path(out) / CARD_NAME, model_card(settings, provenance, history, best))


VALIDATION_THRESHOLD = "Youden's J on each fold's validation part"  # what reports older than --threshold-from used


def _folds_covered(arm: Mapping[str, Any]) -> str:
    """The folds an ablate arm's mean AUC covers: ``folds``, or ``2 of 5 folds`` where some held-out parts had one class."""
    covered = (arm.get("folds_averaged") or {}).get("auc")
    return f"{covered} of {arm['folds']} folds" if covered else "folds"


def _arm_fusion(arm: str) -> Fusion | None:
    """The fusion of an ``ablate`` arm, named ``cross``, ``cross-md_off``, ``cross-d50``...; None where the name says none."""
    try:
        return Fusion(arm.split("-")[0])
    except ValueError:
        return None


def _reading_the_controls(report: Mapping[str, Any], arm: str) -> list[str]:
    """One sentence on how to read ``arm``'s shortcut controls: for a fusion arm they keep the findings, so they are
    compared with the findings alone (the report's ``clinical`` arm, where it has one) and the image arm's own controls."""
    if not report["variants"][arm].get("controls"):
        return []
    chance = "near 0.5 mean the image branch reads the lesion, not the tissue around it or the film"
    fusion = _arm_fusion(arm)
    if fusion is None or not fusion.is_multimodal:
        return [f"- How to read the controls: {chance}"]
    variants = report["variants"]
    clinical = (variants.get("clinical") or {}).get("auc_pooled")
    alone = (f"the findings alone, the `clinical` arm of this ablation: pooled AUC {fmt(clinical)}" if clinical is not None
             else "the findings alone (the `clinical` arm: `mammofuse ablate --variants clinical`, same folds)")
    image = [f"{name} {fmt(c['auc'])}" for name, c in (variants.get("image") or {}).get("controls", {}).items()]
    own = (f"the image arm's own controls (here {', '.join(image)}) " if image
           else "the image arm's own controls (`mammofuse ablate --variants image`) ")
    return [f"- How to read the controls: a fusion model keeps the findings when the lesion is hidden, so compare its controls "
            f"with {alone}; {own}{chance}"]


def add_cross_validation(folder: Path, report: dict[str, Any], arm: str) -> None:
    """Append the cross-validated results of ``arm`` (an ``ablate`` report of the same recipe) to the card."""
    a = report["variants"][arm]
    p = report["protocol"]
    ci = a.get("auc_ci")
    lines = [
        "",
        "## Cross-validated performance (the same recipe, `mammofuse ablate`)",
        "",
        f"- `{p['dataset']}`: {p['cases']} cases, {p['patients']} patients, {p['split']}",
        f"- ROC AUC {fmt(a['auc'])} ± {fmt(a.get('auc_sd'))} over {_folds_covered(a)}; pooled out-of-fold AUC {fmt(a.get('auc_pooled'))}"
        + (f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}] (patient bootstrap)" if ci else ""),
        f"- Sensitivity {fmt(a['sensitivity'])}, specificity {fmt(a['specificity'])} at each fold's threshold "
        f"({p.get('threshold', VALIDATION_THRESHOLD)})",
    ]
    if p.get("image_weights"):
        lines.append(f"- Image branch started from: `{p['image_weights']}`")
    vs = a.get("vs_best_single")
    if vs:
        vci = f" [{vs['ci'][0]:+.3f}, {vs['ci'][1]:+.3f}]" if vs.get("ci") else ""
        lines.append(f"- Against the best single modality ({vs['arm']}): pooled AUC {vs['difference']:+.3f}{vci} (paired)")
    patches = p.get("away_patches", 1)
    for name, c in a.get("controls", {}).items():
        what = ("lesion masked out (filled from adjacent tissue)" if name == "masked" else
                "a same-size patch away from every lesion" + (f" (mean over {patches} patches per case)" if patches > 1 else ""))
        lines.append(f"- Shortcut control, {what}: AUC {fmt(c['auc'])} (plain {fmt(c['auc_plain_same_cases'])} on the same {c['n']} cases)")
    lines.extend(_reading_the_controls(report, arm))
    if cal := a.get("calibration"):
        lines.append(f"- Calibration of the pooled out-of-fold scores: slope {fmt(cal['slope'])} (1: calibrated; above 1: "
                     f"under-confident), Brier {fmt(cal['brier'])}, ECE {fmt(cal['ece'])}; recalibrated by the Platt map of the "
                     f"other folds: Brier {fmt(cal['brier_recalibrated'])}, ECE {fmt(cal['ece_recalibrated'])}")
    missing = a.get("missing_clinical", {})
    if "1" in missing:
        lines.append(f"- Clinical findings removed at inference for every case: AUC {fmt(missing['1']['auc'])}")
    lines.extend(f"- By {line} (pooled out of fold, 95% CI by patient bootstrap)" for line in subgroup_lines(a.get("subgroups") or {}))
    card = Path(folder) / CARD_NAME
    write_text(card, card.read_text(encoding="utf-8") + "\n".join(lines) + "\n")
