"""Scoring a model on a dataset split and turning the scores into the protocol's report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from mammofuse import RESEARCH_NOTICE
from mammofuse.cases import model_notes
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError
from mammofuse.evaluation.leakage import (
    INIT_UNKNOWN_NOTE,
    LEAKAGE_CHECKLIST,
    SUSPICIOUS_NOTE,
    UNCHECKED_NOTE,
    is_suspicious,
    overlap_warning,
    patient_overlap,
)
from mammofuse.evaluation.metrics import evaluate_predictions
from mammofuse.evaluation.subgroups import case_subgroups, subgroup_metrics
from mammofuse.provenance import threshold_source

REGION_HINT = "The dataset gives them none (CBIS-DDSM: ROI masks in a TCIA tree, or COCO boxes beside the images)"


@dataclass
class Metrics:
    """What :func:`evaluate_model` measured: headline figures, the full JSON report, and the scored cases.

    Attributes:
        auc: ROC-AUC of the scored cases (None with one class).
        auc_ci: patient-bootstrap 95% interval of the AUC (None without resamples).
        sensitivity, specificity: at ``threshold``, the model's stored operating point.
        n, patients: scored cases and their patients.
        report: everything, JSON-ready, as ``mammofuse evaluate --format json`` writes it.
        labels, probs, patient_ids: the scored cases (for plots and further analysis).
        failed: cases left out, each ``{"id", "path"`` (its image file, None without one) ``, "error"}``.
    """

    auc: float | None
    auc_ci: tuple[float, float] | None
    sensitivity: float | None
    specificity: float | None
    threshold: float
    n: int
    patients: int
    report: dict[str, Any]
    labels: np.ndarray
    probs: np.ndarray
    patient_ids: list[str]
    failed: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return self.report


def select_split(samples: Sequence[Sample], split: str) -> list[Sample]:
    """The samples of one dataset split (``all`` for datasets without an official split, e.g. mini-MIAS); any case."""
    chosen = [s for s in samples if s.split == split.lower()]
    if not chosen:
        have = ", ".join(sorted({s.split for s in samples})) or "none"
        raise MammofuseError(f"the data has no {split!r} split (it has: {have}); choose one with split (--split)")
    return chosen


def rows_notes(rows: dict[str, int] | None) -> list[str]:
    """What became of a CBIS-DDSM split's CSV rows (``load_dataset``'s ``report["rows"]``), where not one case each."""
    if not rows:
        return []
    notes = []
    if rows["left_out"]:
        why = [f"{rows[key]} {text}" for key, text in (
            ("mixed_pathology", "on films holding lesions of both pathologies, whose boxes cannot be told apart"),
            ("box_count", "on films whose boxes in the COCO file are not as many as their rows"),
        ) if rows.get(key)]
        notes.append(f"{rows['left_out']} of the split's {rows['rows']} CSV rows are left out" + (f": {'; '.join(why)}" if why else ""))
    if rows["ambiguous"]:
        notes.append(f"{rows['ambiguous']} of the split's {rows['rows']} CSV rows lie on films with several lesions of one pathology: "
                     "each box is scored as a case with the findings its film's rows share")
    return notes


@dataclass(frozen=True)
class Remark:
    """One thing the reader of an evaluation must be told.

    Attributes:
        text: the remark, one paragraph (the message of :func:`mammofuse.evaluate`'s warning).
        kind: ``note``; ``overlap``, evaluated patients the model was trained on; ``suspicious_auc``, an AUC too good to be true.
        details: the longer form the CLI shows in its panel, line by line (empty: ``text``).
    """

    text: str
    kind: Literal["note", "overlap", "suspicious_auc"] = "note"
    details: tuple[str, ...] = ()


def report_remarks(report: dict[str, Any]) -> list[Remark]:
    """The remarks on an :func:`evaluate_model` report, which ``mammofuse evaluate`` prints and :func:`mammofuse.evaluate`
    warns: what became of the split's CSV rows, what the model could not use, patient overlap with the model's
    training data (or that it cannot be checked), and an AUC >= 0.97."""
    remarks = [Remark(text) for text in [*rows_notes(report.get("rows")), *report["model"]["notes"]]]
    overlap = overlap_warning(report["leakage"])
    if overlap:
        remarks.append(Remark(overlap, "overlap"))
    elif not report["leakage"]["checked"]:
        remarks.append(Remark(UNCHECKED_NOTE))
    if report["leakage"].get("init_unknown"):
        remarks.append(Remark(INIT_UNKNOWN_NOTE))
    if report["suspicious_auc"]:
        remarks.append(Remark(SUSPICIOUS_NOTE, "suspicious_auc", LEAKAGE_CHECKLIST))
    return remarks


def score_samples(
    model: Any, samples: Sequence[Sample], batch_size: int = 16, workers: int = 0,
    on_batch: Callable[[int], None] | None = None, control: str | None = None, patches: int = 1,
) -> tuple[np.ndarray, list[str]]:
    """Probabilities and per-sample errors; a sample with no image for a model that needs one is an error.

    ``control`` scores a shortcut control instead of the lesion (``masked`` or ``away``). With
    ``away``, each case is scored on ``patches`` away patches (draws 0 to patches - 1) and gets
    the sigmoid of its mean logit; a case that fails on any patch fails.
    """
    from mammofuse.inference import NOTHING_TO_SCORE, predict_proba
    from mammofuse.results import sigmoid

    runs = [predict_proba(model, samples, batch_size, workers, on_batch, control=control, draw=draw)
            for draw in range(patches if control == "away" else 1)]
    errors = [next((e for e in found if e), "") for found in zip(*(e for _, e in runs))]
    probs = runs[0][0]
    if len(runs) > 1:
        clipped = np.clip([p for p, _ in runs], 1e-12, 1 - 1e-12)
        probs = sigmoid(np.mean(np.log(clipped) - np.log1p(-clipped), axis=0))
    if model.config.uses_image:
        for i, s in enumerate(samples):
            if not s.has_image and errors[i] in ("", NOTHING_TO_SCORE):  # say why
                film = f" ({s.image_id})" if s.image_id else ""
                errors[i] = f"no image file found for this case{film}: it is in none of the folders given with --images, or none was given"
                probs[i] = np.nan
    return probs, errors


def evaluate_model(
    model: Any,
    samples: Sequence[Sample],
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 16,
    workers: int = 0,
    on_batch: Callable[[int], None] | None = None,
    describe: dict[str, Any] | None = None,
    control: str | None = None,
    per_breast: bool = False,
    away_patches: int = 1,
) -> Metrics:
    """Score ``samples`` and compute every metric at the model's stored threshold.

    Cases whose image fails are listed in ``result["failed"]`` and left out of every metric; ``result["model"]["notes"]``
    says what the model could not use (e.g. cases with no lesion region for a lesion-crop model: findings only).
    The evaluated patients are checked against the digests in the model's provenance.
    ``control`` scores a shortcut control instead of the lesion (``away`` averaged over
    ``away_patches`` patches per case); ``per_breast`` adds ``result["per_breast"]``: the
    metrics of one mean score per breast (patient, laterality).
    """
    config = model.config
    if config.uses_image and samples and not any(s.has_image for s in samples):
        raise MammofuseError(
            f"none of the {len(samples)} cases has an image file, and model {model.name} reads images: "
            "pass the dataset's image folders (--images, images= in Python)"
        )
    probs, errors = score_samples(model, samples, batch_size, workers, on_batch, control, away_patches)
    ok = [i for i, e in enumerate(errors) if not e and np.isfinite(probs[i])]
    ok_set = set(ok)
    failed = [{"id": samples[i].id, "path": samples[i].image_path, "error": errors[i] or "no score"} for i in range(len(samples)) if i not in ok_set]
    kept = [samples[i] for i in ok]
    labels = np.array([s.label for s in kept], dtype=int)
    scores = probs[ok]
    patients = [s.patient_id for s in kept]
    metrics = evaluate_predictions(labels, scores, patients, config.threshold, [s.abnormality for s in kept], n_boot, seed)
    provenance = dict(config.provenance or {})
    result: dict[str, Any] = {
        **(describe or {}),
        **({"away_patches": away_patches} if control == "away" else {}),
        "model": {"fusion": config.fusion, "backbone": config.backbone if config.uses_image else None, "weights_digest": model.weights_digest(),
                  "threshold_source": threshold_source(provenance), "trained_on": provenance.get("dataset"),
                  "notes": model_notes(model, samples, True, REGION_HINT, "cases", control=control)},
        **metrics,
        "bootstrap": {"resamples": n_boot, "unit": "patient", "seed": seed, "level": 0.95},
        "failed": failed,
        "leakage": patient_overlap(set(patients), provenance),  # the patients evaluated: not those whose every case failed
        "suspicious_auc": False,
        "notice": RESEARCH_NOTICE,
    }
    result["suspicious_auc"] = is_suspicious(result)
    result["subgroups"] = subgroup_metrics(labels, scores, patients, [config.threshold] * len(kept), [case_subgroups(s) for s in kept], n_boot, seed)
    if per_breast:
        result["per_breast"] = _per_breast(kept, scores, config.threshold, n_boot, seed)
    ci = result.get("auc_ci")
    return Metrics(
        auc=result["auc"], auc_ci=tuple(ci) if ci else None, sensitivity=result["sensitivity"], specificity=result["specificity"],
        threshold=result["threshold"], n=result["n"], patients=result["patients"], report=result,
        labels=labels, probs=scores, patient_ids=patients, failed=failed,
    )


def _per_breast(samples: Sequence[Sample], probs: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    """Metrics of the mean probability per breast (label: any malignant lesion), cases without laterality left out."""
    from mammofuse.evaluation.aggregate import aggregate, breast_of_sample

    keys = [breast_of_sample(s) for s in samples]
    breasts = aggregate(keys, list(probs), [s.label for s in samples])
    names = sorted(breasts)
    metrics = evaluate_predictions(
        [breasts[k]["label"] for k in names], [breasts[k]["probability"] for k in names], [k.split("/")[0] for k in names],
        threshold, None, n_boot, seed,
    )
    metrics.pop("subsets", None)
    metrics["cases_without_laterality"] = sum(k is None for k in keys)
    return metrics


FAIL_UNDER_METRICS = ("auc", "auc_low", "pr_auc", "accuracy", "f1", "precision", "recall", "sensitivity", "specificity")


def parse_bounds(text: str) -> dict[str, float]:
    """``"auc=0.85,recall=0.9"`` -> {"auc": 0.85, "recall": 0.9}; unknown names and bounds outside [0, 1] (where no
    gated metric can lie) are a MammofuseError."""
    bounds: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep:
            raise MammofuseError(f"--fail-under: expected METRIC=VALUE, got {part!r}")
        if name not in FAIL_UNDER_METRICS:
            raise MammofuseError(f"--fail-under: unknown metric {name!r}; choose from {', '.join(FAIL_UNDER_METRICS)}")
        try:
            bound = float(value)
        except ValueError:
            raise MammofuseError(f"--fail-under: {name} needs a number, got {value!r}") from None
        if not 0 <= bound <= 1:  # nan too: nothing is ever below it; every gated metric lies in [0, 1]
            raise MammofuseError(f"--fail-under: {name} needs a number from 0 to 1, got {value.strip()!r}")
        bounds[name] = bound
    if not bounds:
        raise MammofuseError("--fail-under: no bounds given (e.g. auc=0.85,recall=0.9)")
    return bounds


def check_bounds(result: dict[str, Any], bounds: dict[str, float]) -> list[str]:
    """Reasons the result misses its bounds (empty when all pass); an undefined metric fails."""
    failures = []
    for name, bound in bounds.items():
        value = result["auc_ci"][0] if name == "auc_low" and result.get("auc_ci") else result.get(name)
        if name == "auc_low" and not result.get("auc_ci"):
            value = None
        if value is None:
            failures.append(f"{name} is undefined on this data (needs >= {bound:g})")
        elif value < bound:
            failures.append(f"{name} {value:.4f} < {bound:g}")
    return failures

