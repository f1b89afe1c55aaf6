"""Leakage guards: patient overlap with the model's training data, and the too-good-to-be-true checklist."""

from __future__ import annotations

import json
from typing import Any, Iterable

from mammofuse.data.sample import patient_digest
from mammofuse.errors import MammofuseError
from mammofuse.hub import staged_model_folder

SUSPICIOUS_AUC = 0.97

LEAKAGE_CHECKLIST = (
    "AUC >= 0.97 is far above every trustworthy published CBIS-DDSM result. Before reporting it, check:",
    "1. Patient overlap: no patient in both training/validation and the evaluated set (splits grouped by patient_id).",
    "2. Label leakage: BI-RADS `assessment` and `subtlety` are not model inputs.",
    "3. Path leakage: file names and folder names (`Mass-Test_...`, `Calc-Training_...`) never reach the model.",
    "4. Threshold and early stopping were chosen on validation data, never on the evaluated data.",
    "5. The evaluated split is the official CBIS-DDSM test split (or a patient-grouped fold), not training data.",
    "6. No duplicate films: the same image (or its other view) is not on both sides of the split.",
)

SUSPICIOUS_NOTE = ("AUC >= 0.97 is far above every trustworthy published CBIS-DDSM result: check for leakage before reporting it "
                   "(mammofuse.evaluation.LEAKAGE_CHECKLIST lists what to check)")
UNCHECKED_NOTE = "the model records no training-patient digests; patient overlap cannot be checked"
INIT_UNKNOWN_NOTE = ("the model's image branch started from a model trained without patient digests (--no-patient-digests): "
                     "overlap with the patients that trained it cannot be checked")


def pretrained_patients(spec: str | None) -> set[str]:
    """Digests of the patients whose labels trained the image weights ``spec`` starts from.

    For a trained model (``--pretrained MODEL_FOLDER`` or a registered model, staged training): its
    training and validation patients and those of the weights it started from in turn. Empty for
    random or ImageNet weights, registered backbones and ``mammofuse pretrain`` files, which saw no labels.
    """
    provenance = _staged_provenance(spec)
    return {d for key in ("train_patients", "val_patients", "init_patients") for d in provenance.get(key) or []}


def withheld_patients(spec: str | None) -> bool:
    """Whether the image weights ``spec`` starts from were trained, in turn or at any earlier stage, without patient
    digests (``--no-patient-digests``): their patients cannot be compared with anyone's."""
    provenance = _staged_provenance(spec)
    return bool(provenance.get("init_patients_unknown")) or (bool(provenance) and "train_patients" not in provenance)


def _staged_provenance(spec: str | None) -> dict[str, Any]:
    """The provenance of the trained model ``spec`` names ({} for weights that are no trained model)."""
    folder = staged_model_folder(spec)
    if folder is None:
        return {}
    from mammofuse.model.config import check_provenance

    config = folder / "config.json"
    try:
        provenance = json.loads(config.read_text(encoding="utf-8")).get("provenance") or {}
        check_provenance(provenance)
    except (OSError, ValueError, AttributeError, RecursionError, MammofuseError) as exc:
        raise MammofuseError(f"{config}: cannot read the model's provenance ({exc})") from None
    return provenance


def patient_overlap(patient_ids: Iterable[str], provenance: dict[str, Any]) -> dict[str, Any]:
    """Compare evaluated patients with the digests the model recorded at training time.

    Returns ``checked`` (False when the model kept no digests), and ``train`` / ``val`` / ``init``:
    how many evaluated patients the model saw in training / validation / the training of the model
    its image branch started from (None where the model recorded no such list).
    """
    digests = {patient_digest(p) for p in patient_ids}
    result: dict[str, Any] = {"checked": False, "patients": len(digests), "train": None, "val": None, "init": None}
    for key, name in (("train_patients", "train"), ("val_patients", "val"), ("init_patients", "init")):
        recorded = provenance.get(key)
        if recorded is not None:
            result["checked"] = True
            result[name] = len(digests & set(recorded))
    if provenance.get("init_patients_unknown"):
        result["init_unknown"] = True
    return result


def overlap_warning(overlap: dict[str, Any]) -> str | None:
    """A loud one-paragraph warning when the evaluated patients overlap training or validation, else None."""
    parts = []
    if overlap.get("train"):
        parts.append(f"{overlap['train']} of {overlap['patients']} evaluated patients were in the model's TRAINING data")
    if overlap.get("val"):
        parts.append(f"{overlap['val']} of {overlap['patients']} were in its VALIDATION data (threshold and early stopping)")
    if overlap.get("init"):
        parts.append(f"{overlap['init']} of {overlap['patients']} TRAINED THE MODEL its image branch started from (--pretrained)")
    if not parts:
        return None
    return "PATIENT OVERLAP: " + "; ".join(parts) + ". These metrics are optimistic and must not be reported as a test result."


def is_suspicious(result: dict[str, Any]) -> bool:
    """True when the overall AUC or any subset's AUC is >= 0.97."""
    aucs = [result.get("auc")] + [s.get("auc") for s in result.get("subsets", {}).values()]
    return any(a is not None and a >= SUSPICIOUS_AUC for a in aucs)
