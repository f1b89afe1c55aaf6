"""The paper's ablation, run honestly: every arm on identical patient-grouped folds and seeds.

An *arm* is one model variant (fusion x modality dropout x projection size). For each arm
and fold we train with :func:`mammofuse.training.train` (validation carved out of the fold's
training part, grouped by patient; the threshold is chosen there), score the held-out fold,
and, for fusion arms, score it again with the clinical findings of a seeded random share of
cases removed. Each (arm, fold) result is written atomically to
``OUT/arms/<arm>/fold-<k>/result.json`` with a fingerprint of its settings and split; a
second run with the same ``OUT`` loads it instead of retraining.

:func:`run_ablation` returns an :class:`AblationResult`: an :class:`ArmSummary` per arm and the
:class:`FoldResult` of every (arm, fold); their ``to_dict`` are what ``ablation.json`` and
``result.json`` hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mammofuse import RESEARCH_NOTICE
from mammofuse.atomic import write_text
from mammofuse.data.sample import Sample, patient_digest
from mammofuse.errors import MammofuseError
from mammofuse.evaluation.leakage import pretrained_patients
from mammofuse.evaluation.metrics import (
    METRIC_NAMES,
    auc_or_none,
    bootstrap_auc,
    evaluate_predictions,
    paired_auc_difference,
    youden_threshold,
)
from mammofuse.fusion import FUSIONS, Fusion
from mammofuse.training.callbacks import Reporter, TrainCallback
from mammofuse.training.checkpoint import has_checkpoint

VARIANTS = FUSIONS
DEFAULT_MISSING_RATES = (0.0, 0.3, 0.5, 1.0)
DEFAULT_PROJ_DIM = 100
RESULT_NAME = "result.json"
RESULT_FORMAT = 1
# Settings that do not change what a fold's model is (so they may differ between runs sharing OUT);
# ``threshold_from`` is always unset here (ablate takes thresholds from its own folds).
NOT_FINGERPRINTED = frozenset({"device", "workers", "feature_cache", "amp", "threshold_from"})


@dataclass(frozen=True)
class Arm:
    """One model variant of the ablation."""

    name: str
    fusion: str
    modality_dropout: float
    proj_dim: int

    @property
    def needs_images(self) -> bool:
        return Fusion(self.fusion).uses_image

    @property
    def is_fusion(self) -> bool:
        return Fusion(self.fusion).is_multimodal


@dataclass(frozen=True)
class FoldResult:
    """What one (arm, fold) produced: its held-out cases, their scores, and how the model was made.

    Attributes:
        fingerprint: hash of the settings and the split; a finished result is reused only while it matches.
        arm, fold: the arm's name and the fold's index (from 0).
        settings: the fold's ``TrainSettings`` as a dict.
        train_patients, val_patients: digests of the patients the model was trained and validated on.
        ids, labels, patients, abnormality: the held-out cases, in order.
        threshold: the decision threshold chosen on the fold's validation part.
        best_epoch, val_auc: as the trainer reported them (None when it does not).
        scores: held-out probabilities per share of cases without clinical findings (keys ``"0"``, ``"0.5"``...;
            None where a case could not be scored).
        controls: held-out probabilities under each shortcut control (image arms; None where it cannot be made).
        errors: case id -> why it could not be scored.
        seconds: training and scoring time.
        away_patches: how many away patches each ``away`` control score averages.
    """

    fingerprint: str
    arm: str
    fold: int
    settings: dict[str, Any]
    train_patients: list[str]
    val_patients: list[str]
    ids: list[str]
    labels: list[int]
    patients: list[str]
    abnormality: list[str | None]
    threshold: float
    best_epoch: int | None
    val_auc: float | None
    scores: dict[str, list[float | None]]
    controls: dict[str, list[float | None]]
    errors: dict[str, str]
    seconds: float
    away_patches: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The ``result.json`` content (``away_patches`` only when not 1, so results of before read back the same)."""
        data = {"format": RESULT_FORMAT, **asdict(self)}
        if self.away_patches == 1:
            del data["away_patches"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldResult:
        """Read a ``result.json``; one of another format or lacking a field is a MammofuseError."""
        if not isinstance(data, dict):
            raise MammofuseError(f"a fold result is a JSON object, not {type(data).__name__}")
        if data.get("format") != RESULT_FORMAT:
            raise MammofuseError(f"fold result format {data.get('format')} is not supported by this mammofuse (needs {RESULT_FORMAT})")
        data = {"controls": {}, "away_patches": 1, **data}  # results written before these existed
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise MammofuseError(f"fold result lacks {', '.join(missing)}")
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    @property
    def probs(self) -> list[float | None]:
        """Held-out probabilities with every case's clinical findings (None where a case could not be scored)."""
        return self.scores[_rate_key(0.0)]

    def scored(self, rate: float = 0.0, kind: str | None = None) -> tuple[list[int], list[float], list[str]]:
        """Labels, probabilities and patients of the held-out cases scored with a ``rate`` share of clinical
        findings removed (only those of abnormality ``kind`` when given)."""
        probs = self.scores[_rate_key(rate)]
        rows = [i for i, p in enumerate(probs) if p is not None and kind in (None, self.abnormality[i])]
        return [self.labels[i] for i in rows], [probs[i] for i in rows], [self.patients[i] for i in rows]

    def auc(self, rate: float = 0.0) -> float | None:
        """AUC of the held-out cases scored at missing-clinical ``rate`` (None with one class or none scored)."""
        labels, probs, _ = self.scored(rate)
        return auc_or_none(np.array(labels), np.array(probs)) if labels else None


@dataclass
class ArmSummary:
    """One arm over its folds, as ``ablation.json`` reports it.

    Attributes:
        folds, n: folds, and held-out cases scored in all of them.
        metrics: each metric of ``METRIC_NAMES``: its mean over folds and its SD over folds (``"<name>_sd"``;
            None with one fold), in that order. ``auc``, ``sensitivity``... read from here.
        auc_folds: each fold's AUC.
        auc_pooled, auc_ci: AUC of all folds' held-out predictions pooled, and its patient-bootstrap 95% CI.
        seconds: training and scoring time of all folds.
        subsets: the AUC figures per abnormality type (``mass``, ``calc``; empty unless the data has both).
        controls: pooled AUC under each shortcut control, beside the plain AUC on the same cases.
        per_fold: every metric of each fold at its threshold.
        missing_clinical: fusion arms: AUC per share of held-out cases without clinical findings (None otherwise).
        settings: the arm's training settings.
        vs_best_single: multimodal arms: pooled AUC minus that of the better single-modality arm, with a paired
            patient-bootstrap interval (``arm``, ``difference``, ``ci``, ``p_a_not_better``).
    """

    folds: int
    n: int
    metrics: dict[str, float | None]
    auc_folds: list[float | None]
    auc_pooled: float | None
    auc_ci: tuple[float, float] | None
    seconds: float
    subsets: dict[str, Any]
    controls: dict[str, Any]
    per_fold: list[dict[str, Any]]
    missing_clinical: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    vs_best_single: dict[str, Any] | None = None

    @property
    def auc(self) -> float | None:
        """Mean fold AUC."""
        return self.metrics["auc"]

    @property
    def auc_sd(self) -> float | None:
        """SD of the fold AUCs."""
        return self.metrics["auc_sd"]

    @property
    def sensitivity(self) -> float | None:
        """Mean fold sensitivity at each fold's threshold."""
        return self.metrics["sensitivity"]

    @property
    def specificity(self) -> float | None:
        """Mean fold specificity at each fold's threshold."""
        return self.metrics["specificity"]

    def to_dict(self) -> dict[str, Any]:
        """The arm's entry in ``ablation.json``."""
        out: dict[str, Any] = {"folds": self.folds, "n": self.n, **self.metrics, "auc_folds": self.auc_folds, "auc_pooled": self.auc_pooled,
                               "auc_ci": list(self.auc_ci) if self.auc_ci else None, "seconds": self.seconds, "subsets": self.subsets,
                               "controls": self.controls, "per_fold": self.per_fold}
        for name in ("missing_clinical", "settings", "vs_best_single"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass
class AblationResult:
    """What :func:`run_ablation` found.

    Attributes:
        variants: arm name -> its summary, in the order the arms ran.
        skipped: arm name -> why it did not run.
        protocol: how folds, thresholds, controls and missing clinical data were made (as ``ablation.json`` states it).
        notice: the research-use notice.
        folds: arm name -> its fold results (the held-out predictions; not part of ``ablation.json``).
    """

    variants: dict[str, ArmSummary]
    skipped: dict[str, str]
    protocol: dict[str, Any]
    notice: str = RESEARCH_NOTICE
    folds: dict[str, list[FoldResult]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``ablation.json`` content."""
        return {"variants": {name: s.to_dict() for name, s in self.variants.items()}, "skipped": self.skipped, "protocol": self.protocol,
                "notice": self.notice}


def plan_arms(
    variants: Sequence[str] = VARIANTS,
    modality_dropout: Sequence[bool] = (True,),
    proj_dims: Sequence[int] = (100,),
    dropout_p: float = 0.3,
) -> list[Arm]:
    """The arms to run. Modality dropout only exists for fusion variants, so it multiplies only those.

    Names carry a suffix only where an arm differs from the default model (modality dropout on,
    d = 100): ``cross``, ``cross-md_off``, ``cross-d50``; so adding factors later reuses finished arms.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise MammofuseError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if not variants:
        raise MammofuseError("no variants to run")
    arms = []
    for variant in dict.fromkeys(variants):
        for md in dict.fromkeys(modality_dropout) if Fusion(variant).is_multimodal else (False,):
            for dim in dict.fromkeys(proj_dims):
                name = variant
                if Fusion(variant).is_multimodal and not md:
                    name += "-md_off"
                if dim != DEFAULT_PROJ_DIM:
                    name += f"-d{dim}"
                arms.append(Arm(name, variant, dropout_p if md else 0.0, int(dim)))
    return arms


def make_folds(samples: Sequence[Sample], folds: int | None, seed: int) -> list[tuple[list[Sample], list[Sample]]]:
    """(train, held-out) pairs: ``folds`` patient-grouped stratified folds, or the official split when None."""
    from mammofuse.data.splits import kfold_splits

    if folds is None:
        train = [s for s in samples if s.split == "train"]
        test = [s for s in samples if s.split == "test"]
        if not train or not test:
            have = ", ".join(sorted({s.split for s in samples}))
            raise MammofuseError(f"the data has no official train/test split (splits: {have}); use --folds K")
        return [(train, test)]
    if folds < 2:
        raise MammofuseError(f"--folds must be >= 2, not {folds}")
    patients = len({s.patient_id for s in samples})
    if patients < folds:
        raise MammofuseError(f"{patients} patients cannot make {folds} patient-grouped folds")
    return kfold_splits(list(samples), folds, seed)


def drop_clinical(samples: Sequence[Sample], rate: float, seed: Sequence[int]) -> list[Sample]:
    """A copy of ``samples`` with the clinical findings removed from a seeded random ``rate`` share of cases."""
    count = int(round(rate * len(samples)))
    chosen = set(np.random.default_rng(list(seed)).choice(len(samples), size=count, replace=False).tolist()) if count else set()
    return [dataclasses.replace(s, clinical={}) if i in chosen else s for i, s in enumerate(samples)]


def _fingerprint(settings: dict[str, Any], train: Sequence[Sample], test: Sequence[Sample]) -> str:
    payload = {
        "format": RESULT_FORMAT,
        "settings": {k: v for k, v in sorted(settings.items()) if k not in NOT_FINGERPRINTED},
        "train": sorted(s.id for s in train),
        "test": sorted(s.id for s in test),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def run_fold(
    arm: Arm,
    fold: int,
    train_part: Sequence[Sample],
    test_part: Sequence[Sample],
    settings: Any,
    folder: Path,
    missing_rates: Sequence[float],
    trainer: Callable[..., Any],
    keep_models: bool = False,
    callbacks: Sequence[TrainCallback] = (),
    controls: Sequence[str] = (),
    away_patches: int = 1,
) -> tuple[FoldResult, bool]:
    """Train and score one (arm, fold), or load its finished result. Returns (result, was_cached).

    Image arms are also scored on each shortcut control in ``controls`` (``away`` on ``away_patches``
    patches per case); a finished result that lacks one, or scored ``away`` on another number of
    patches, is completed from its kept model (``keep_models``), never by retraining.
    """
    from mammofuse.data.splits import train_val_split
    from mammofuse.evaluation.evaluate import score_samples
    from mammofuse.model import MammoFuse

    key = _fingerprint(settings.as_dict(), train_part, test_part)
    result_path = folder / RESULT_NAME
    model_dir = folder / "model"
    wanted = list(controls) if arm.needs_images else []
    if result_path.is_file():
        try:
            record = json.loads(result_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            record = {}
        if record.get("fingerprint") == key:
            result = _read_result(record, result_path)
            stale = "away" in wanted and "away" in result.controls and result.away_patches != away_patches
            missing = [c for c in wanted if c not in result.controls or (c == "away" and stale)]
            if missing and (model_dir / "model.safetensors").is_file():
                model = MammoFuse.from_pretrained(model_dir)
                scored = _score_controls(model, test_part, missing, away_patches)
                patches = away_patches if "away" in missing else result.away_patches
                result = dataclasses.replace(result, controls={**result.controls, **scored}, away_patches=patches)
                write_text(result_path, json.dumps(result.to_dict(), indent=1) + "\n")
            elif stale:
                raise MammofuseError(
                    f"{result_path}: its away control averages {result.away_patches} patch(es) per case, not {away_patches}, "
                    f"and its model was not kept: pass --away-patches {result.away_patches}, or use a new --out"
                )
            return result, True
        if record:
            raise MammofuseError(
                f"{result_path} holds a result of different settings or data (arm {arm.name}, fold {fold + 1}); "
                "use a new --out or delete that folder"
            )
    started = time.perf_counter()
    train_s, val_s = train_val_split(list(train_part), settings.val_fraction, seed=settings.seed)
    resume = has_checkpoint(model_dir)  # the trainer's exact-resume checkpoint of an interrupted fold
    if model_dir.exists() and not resume:
        shutil.rmtree(model_dir)  # interrupted before its first checkpoint: nothing to resume
    trained = trainer(settings, train_s, val_s, model_dir, resume=resume, callbacks=callbacks)
    model = MammoFuse.from_pretrained(getattr(trained, "out", model_dir))
    rates = list(missing_rates) if arm.is_fusion else [0.0]
    scores: dict[str, list[float | None]] = {}
    errors_seen: dict[str, str] = {}
    for rate in dict.fromkeys([0.0, *rates]):
        subset = drop_clinical(test_part, rate, (settings.seed, fold, int(round(rate * 1000))))
        probs, errors = score_samples(model, subset)
        scores[_rate_key(rate)] = [float(p) if np.isfinite(p) else None for p in probs]
        errors_seen.update({s.id: e for s, e in zip(subset, errors) if e})
    result = FoldResult(
        fingerprint=key,
        arm=arm.name,
        fold=fold,
        settings=settings.as_dict(),
        train_patients=sorted({patient_digest(s.patient_id) for s in train_s}),
        val_patients=sorted({patient_digest(s.patient_id) for s in val_s}),
        ids=[s.id for s in test_part],
        labels=[int(s.label) for s in test_part],
        patients=[s.patient_id for s in test_part],
        abnormality=[s.abnormality for s in test_part],
        threshold=float(model.config.threshold),
        best_epoch=getattr(trained, "best_epoch", None),
        val_auc=getattr(trained, "best_val_auc", None),
        scores=scores,
        controls=_score_controls(model, test_part, wanted, away_patches),
        errors=errors_seen,
        seconds=round(time.perf_counter() - started, 1),
        away_patches=away_patches,
    )
    write_text(result_path, json.dumps(result.to_dict(), indent=1) + "\n")
    if not keep_models:
        shutil.rmtree(model_dir, ignore_errors=True)
    return result, False


def _image_init_model(folder: Path, fold: int, test_part: Sequence[Sample]) -> Path:
    """The kept model of fold ``fold`` in an image arm's folder, after checking it held out exactly ``test_part``."""
    source = folder / f"fold-{fold + 1}"
    if not (source / "model" / "model.safetensors").is_file():
        raise MammofuseError(f"--image-init {folder}: no kept model in {source} (run the image arm with --keep-models)")
    path = source / RESULT_NAME
    if _read_result(json.loads(path.read_text(encoding="utf-8")), path).ids != [s.id for s in test_part]:
        raise MammofuseError(f"--image-init {folder}: fold {fold + 1} held out other cases (other data, folds or seed): its model saw this fold's test cases")
    return source / "model"


def read_arm(folder: Path) -> list[FoldResult]:
    """The finished fold results of one arm (``OUT/arms/<arm>``), in fold order."""
    results = []
    for path in sorted(Path(folder).glob(f"fold-*/{RESULT_NAME}")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MammofuseError(f"{path}: not a readable fold result ({exc})") from None
        results.append(_read_result(record, path))
    return sorted(results, key=lambda r: r.fold)


def _read_result(record: Any, path: Path) -> FoldResult:
    """:meth:`FoldResult.from_dict`, its errors naming the file."""
    try:
        return FoldResult.from_dict(record)
    except MammofuseError as exc:
        raise MammofuseError(f"{path}: {exc}") from None


def _score_controls(model: Any, samples: Sequence[Sample], controls: Sequence[str], away_patches: int = 1) -> dict[str, list[float | None]]:
    """Held-out probabilities under each shortcut control (None where the control cannot be made)."""
    from mammofuse.evaluation.evaluate import score_samples

    out = {}
    for control in controls:
        probs, errors = score_samples(model, samples, control=control, patches=away_patches)
        out[control] = [float(p) if np.isfinite(p) and not e else None for p, e in zip(probs, errors)]
    return out


def control_aucs(results: Sequence[FoldResult]) -> dict[str, Any]:
    """Pooled out-of-fold AUC of each shortcut control, beside the plain AUC on the very same cases."""
    out = {}
    for name in sorted({c for r in results for c in r.controls}):
        if not all(name in r.controls for r in results):
            continue
        ys, plain, control = [], [], []
        for r in results:
            for y, p, c in zip(r.labels, r.probs, r.controls[name]):
                if p is not None and c is not None:
                    ys.append(y)
                    plain.append(p)
                    control.append(c)
        out[name] = {
            "n": len(ys),
            "auc": auc_or_none(np.array(ys), np.array(control)) if ys else None,
            "auc_plain_same_cases": auc_or_none(np.array(ys), np.array(plain)) if ys else None,
        }
    return out


def _pooled(results: Sequence[FoldResult]) -> tuple[list[str], list[int], list[float | None], list[str]]:
    ids, labels, probs, patients = [], [], [], []
    for r in results:
        ids += [f"{r.fold}:{i}" for i in r.ids]
        labels += r.labels
        probs += r.probs
        patients += r.patients
    return ids, labels, probs, patients


def _compare_with_best_single(variants: dict[str, ArmSummary], folds: dict[str, Sequence[FoldResult]], n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """``vs_best_single`` of every multimodal arm: pooled out-of-fold AUC minus that of the better single-modality
    arm (by mean fold AUC), with a paired patient-bootstrap interval on the same held-out cases."""
    singles = [n for n in ("image", "clinical") if n in variants and variants[n].auc is not None]
    if not singles:
        return {}
    best = max(singles, key=lambda n: variants[n].auc)
    ids_b, labels, probs_b, patients = _pooled(folds[best])
    out = {}
    for name in variants:
        if not folds[name] or not Fusion(folds[name][0].settings["fusion"]).is_multimodal:
            continue  # single-modality arms (image, clinical-d50...) are not fusions to compare
        ids_a, _, probs_a, _ = _pooled(folds[name])
        if ids_a != ids_b:
            continue  # not the same held-out cases: no paired comparison
        keep = [i for i, (a, b) in enumerate(zip(probs_a, probs_b)) if a is not None and b is not None]
        diff = paired_auc_difference([labels[i] for i in keep], [probs_a[i] for i in keep], [probs_b[i] for i in keep],
                                     [patients[i] for i in keep], n_boot, seed)
        if diff is not None:
            out[name] = {"arm": best, **diff}
    return out


def _fold_line(result: FoldResult, cached: bool) -> str:
    auc = result.auc()
    status = "already done (reused)" if cached else f"done in {result.seconds:.0f} s"
    return f"{status}, AUC {'n/a' if auc is None else format(auc, '.3f')}"


def _subsets(results: Sequence[FoldResult], n_boot: int, seed: int) -> dict[str, Any]:
    """Per abnormality type (only when the data has masses and calcifications): fold-mean AUC and pooled AUC with CI."""
    if not {"mass", "calc"} <= {k for r in results for k in r.abnormality}:
        return {}
    out = {}
    for kind in ("mass", "calc"):
        aucs, ys, ps, gs = [], [], [], []
        for r in results:
            y, p, g = r.scored(kind=kind)
            aucs.append(auc_or_none(np.array(y), np.array(p)) if y else None)
            ys, ps, gs = ys + y, ps + p, gs + g
        mean, sd = _mean_sd(aucs)
        pooled = auc_or_none(np.array(ys), np.array(ps)) if ys else None
        ci = bootstrap_auc(ys, ps, gs, n_boot, seed) if pooled is not None else None
        out[kind] = {"n": len(ys), "auc": mean, "auc_sd": sd, "auc_pooled": pooled, "auc_ci": list(ci) if ci else None}
    return out


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def fold_thresholds(results: Sequence[FoldResult], source: str) -> list[float]:
    """Each fold's decision threshold: from its own validation part (``validation``), or Youden's J on the
    pooled held-out predictions of the *other* folds (``oof``: hundreds of cases instead of a validation
    part of a few dozen; never the fold's own test cases). A single fold keeps its validation threshold."""
    if source == "validation" or len(results) < 2:
        return [float(r.threshold) for r in results]
    kept = [r.scored() for r in results]
    out = []
    for k in range(len(results)):
        y = [v for j, (ys, _, _) in enumerate(kept) if j != k for v in ys]
        p = [v for j, (_, ps, _) in enumerate(kept) if j != k for v in ps]
        out.append(youden_threshold(np.array(y), np.array(p)) if len(set(y)) == 2 else float(results[k].threshold))
    return out


def summarize_arm(results: Sequence[FoldResult], missing_rates: Sequence[float], n_boot: int, seed: int, threshold: str = "oof") -> ArmSummary:
    """Mean and SD over folds of every metric; pooled out-of-fold AUC with a patient-bootstrap CI; AUC per missing rate.

    ``threshold``: where each fold's operating point comes from (:func:`fold_thresholds`).
    """
    per_fold = []
    pooled_y: list[int] = []
    pooled_p: list[float] = []
    pooled_g: list[str] = []
    for r, cut in zip(results, fold_thresholds(results, threshold)):
        y, p, g = r.scored()
        m = evaluate_predictions(y, p, g, cut, None, n_boot=0)
        m.update({"fold": r.fold, "best_epoch": r.best_epoch, "val_auc": r.val_auc, "seconds": r.seconds})
        per_fold.append(m)
        pooled_y += y
        pooled_p += p
        pooled_g += g
    metrics: dict[str, float | None] = {}
    for name in METRIC_NAMES:
        metrics[name], metrics[f"{name}_sd"] = _mean_sd([m[name] for m in per_fold])
    pooled = auc_or_none(np.array(pooled_y), np.array(pooled_p)) if pooled_y else None
    missing = None
    if results and len(results[0].scores) > 1:
        missing = {}
        for rate in [rate for rate in missing_rates if all(_rate_key(rate) in r.scores for r in results)]:
            aucs = [r.auc(rate) for r in results]
            mean, sd = _mean_sd(aucs)
            missing[_rate_key(rate)] = {"auc": mean, "auc_sd": sd, "auc_folds": aucs}
    return ArmSummary(
        folds=len(results),
        n=len(pooled_y),
        metrics=metrics,
        auc_folds=[m["auc"] for m in per_fold],
        auc_pooled=pooled,
        auc_ci=bootstrap_auc(pooled_y, pooled_p, pooled_g, n_boot, seed) if pooled is not None else None,
        seconds=round(sum(m["seconds"] or 0 for m in per_fold), 1),
        subsets=_subsets(results, n_boot, seed),
        controls=control_aucs(results),
        per_fold=per_fold,
        missing_clinical=missing,
    )


def summarize_arms(
    folds: dict[str, Sequence[FoldResult]], missing_rates: Sequence[float], n_boot: int, seed: int, threshold: str = "oof",
) -> dict[str, ArmSummary]:
    """:func:`summarize_arm` of every arm (name -> its fold results), multimodal arms compared with the best single one."""
    variants = {name: summarize_arm(results, missing_rates, n_boot, seed, threshold) for name, results in folds.items()}
    for name, comparison in _compare_with_best_single(variants, folds, n_boot, seed).items():
        variants[name].vs_best_single = comparison
    return variants


def run_ablation(
    samples: Sequence[Sample],
    arms: Sequence[Arm],
    base_settings: Any,
    out: str | Path,
    folds: int | None = 5,
    missing_rates: Sequence[float] = DEFAULT_MISSING_RATES,
    n_boot: int = 1000,
    keep_models: bool = False,
    trainer: Callable[..., Any] | None = None,
    callbacks: Sequence[TrainCallback] = (),
    dataset: str = "",
    controls: Sequence[str] = (),
    image_init: str | Path | None = None,
    threshold: str = "oof",
    away_patches: int = 1,
) -> AblationResult:
    """Run (or resume) every arm on the same folds; write ``ablation.json``, ``ablation.md`` and ``ablation.png``.

    Args:
        samples: the dataset (every split; ``folds=None`` uses its official train/test split).
        arms: from :func:`plan_arms`.
        base_settings: a ``TrainSettings``; each arm replaces ``fusion``, ``modality_dropout``, ``proj_dim``.
        out: output folder (created); finished (arm, fold) results in it are reused.
        trainer: ``train(settings, train, val, out, resume=..., callbacks=...)``; defaults to
            :func:`mammofuse.training.train`.
        callbacks: receive each fold's training and the ablation's own notes (``on_log``).
        image_init: the folder of an image arm run on the same folds with kept models
            (``OUT/arms/image``): each fold model's backbone starts the image branch of every fusion
            arm in that fold (staged training on the same training data; checked by held-out ids).
        threshold: each fold's operating point: ``oof`` (Youden's J on the other folds' held-out
            predictions) or ``validation`` (its own validation part); see :func:`fold_thresholds`.
        away_patches: away patches per case whose scores the ``away`` control averages (logits).

    Returns:
        Each arm's summary and fold results; its ``to_dict()`` is the ``ablation.json`` content.
    """
    if not base_settings.val_fraction and (threshold == "validation" or folds is None):
        why = "--threshold-from validation" if threshold == "validation" else "the official split (one fold: no other folds to take a threshold from)"
        raise MammofuseError(f"{why} needs a validation part: set --val-fraction (e.g. 0.2)")
    if base_settings.threshold_from:
        raise MammofuseError("threshold_from is for `train`: ablate takes each fold's threshold from its own folds (--threshold-from oof|validation)")
    if trainer is None:
        from mammofuse.training import train as trainer
    log = Reporter(callbacks).log
    out = Path(out)
    for rate in missing_rates:
        if not 0.0 <= rate <= 1.0:
            raise MammofuseError(f"missing rates must be within [0, 1], not {rate:g}")
    skipped: dict[str, str] = {}
    runnable = list(arms)
    with_images = [s for s in samples if s.has_image]
    if any(a.needs_images for a in arms):
        if not with_images:
            for arm in arms:
                if arm.needs_images:
                    skipped[arm.name] = "needs images; this dataset has none here (pass --images for CBIS-DDSM)"
            runnable = [a for a in arms if not a.needs_images]
            for name, why in skipped.items():
                log(f"skipping arm {name}: {why}")
        elif len(with_images) < len(samples):
            log(f"{len(samples) - len(with_images)} of {len(samples)} cases have no image: every arm uses only the "
                f"{len(with_images)} with one, so all arms see identical data")
            samples = with_images
    if not runnable:
        raise MammofuseError("every requested arm needs images and this dataset has none here")
    if any(a.needs_images for a in runnable) and (seen := pretrained_patients(base_settings.pretrained)):
        overlap = len(seen & {patient_digest(s.patient_id) for s in samples})
        if overlap:
            raise MammofuseError(f"--pretrained {base_settings.pretrained}: {overlap} of these patients trained that model, so its "
                                 "image branch has seen held-out labels in every fold; start from weights trained on other patients")
    fold_pairs = make_folds(samples, folds, base_settings.seed)
    for train_part, test_part in fold_pairs:
        shared = {s.patient_id for s in train_part} & {s.patient_id for s in test_part}
        if shared:  # only possible with a dataset's own split: k-fold splits are grouped by patient
            log(f"WARNING: {len(shared)} patient(s) are on both sides of the split (e.g. {sorted(shared)[0]}); "
                "their held-out results are optimistic")
    total = len(runnable) * len(fold_pairs)
    done = 0
    all_folds: dict[str, list[FoldResult]] = {}
    arm_settings: dict[str, dict[str, Any]] = {}
    for arm in runnable:
        settings = dataclasses.replace(base_settings, fusion=arm.fusion, modality_dropout=arm.modality_dropout, proj_dim=arm.proj_dim, dataset=dataset or base_settings.dataset)
        results = []
        for k, (train_part, test_part) in enumerate(fold_pairs):
            fold_settings = settings
            if image_init and arm.is_fusion:
                fold_settings = dataclasses.replace(settings, pretrained=str(_image_init_model(Path(image_init), k, test_part)))
            done += 1
            where = f"[{done}/{total}] {arm.name} fold {k + 1}/{len(fold_pairs)}"
            log(f"{where}: training on {len(train_part)} cases, testing on {len(test_part)}")
            result, cached = run_fold(arm, k, train_part, test_part, fold_settings, out / "arms" / arm.name / f"fold-{k + 1}",
                                      missing_rates, trainer, keep_models, callbacks, controls, away_patches)
            log(f"{where}: {_fold_line(result, cached)}")
            results.append(result)
        all_folds[arm.name] = results
        arm_settings[arm.name] = settings.as_dict()
    variants = summarize_arms(all_folds, missing_rates, n_boot, base_settings.seed, threshold)
    for name, summary in variants.items():
        summary.settings = arm_settings[name]
    report = AblationResult(
        variants=variants,
        skipped=skipped,
        protocol={
            "dataset": dataset,
            "cases": len(samples),
            "patients": len({s.patient_id for s in samples}),
            "split": "official train/test" if folds is None else f"{folds}-fold patient-grouped stratified CV",
            "validation": ("none: every training patient of a fold trains (val_fraction 0)" if not base_settings.val_fraction else
                           f"{base_settings.val_fraction:g} of each fold's training patients carved out (with selection 'best', the epoch is chosen there)"),
            "threshold": ("Youden's J on the pooled held-out predictions of the other folds" if threshold == "oof" and len(fold_pairs) > 1
                          else "Youden's J on each fold's validation part"),
            "controls": "image arms also scored with the lesion masked out (filled from adjacent tissue) and on a same-size patch away from every lesion "
                        + ("(one patch per case, fixed by its id; on a small set its AUC moves with that draw: see --away-patches)" if away_patches == 1
                           else f"(the mean logit over {away_patches} patches per case, each fixed by its id)"),
            "away_patches": away_patches,
            "missing_rates": [float(r) for r in missing_rates],
            "missing_clinical": "clinical findings removed at inference from a seeded random share of held-out cases (same cases for every arm)",
            "seed": base_settings.seed,
            "image_weights": None if not any(a.needs_images for a in runnable) else (base_settings.pretrained or "random initialisation (no ImageNet weights)"),
            "auc": "mean over folds (SD over folds); auc_ci is the patient-bootstrap 95% CI of the pooled out-of-fold AUC",
        },
        folds=all_folds,
    )
    write_report(report, out)
    return report


def markdown_table(report: AblationResult) -> str:
    """The ablation as a Markdown table (AUC mean ± SD over folds, pooled CI, threshold metrics, missing-clinical AUC)."""
    rates = [r for r in report.protocol["missing_rates"] if r > 0]

    def num(value: float | None, sd: float | None = None) -> str:
        if value is None:
            return "n/a"
        return f"{value:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")

    head = ["arm", "AUC (mean ± SD)", "pooled AUC [95% CI]", "PR-AUC", "accuracy", "F1", "sensitivity", "specificity", "Brier", "ECE"]
    head += [f"AUC, {r:.0%} clinical missing" for r in rates]
    head += ["pooled AUC − best single modality [paired 95% CI]", "AUC: lesion masked / patch away (plain, same cases)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, a in report.variants.items():
        ci = a.auc_ci
        pooled = "n/a" if a.auc_pooled is None else f"{a.auc_pooled:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        row = [name, num(a.auc, a.auc_sd), pooled]
        row += [num(a.metrics[m], a.metrics[f"{m}_sd"]) for m in ("pr_auc", "accuracy", "f1", "sensitivity", "specificity", "brier", "ece")]
        missing = a.missing_clinical or {}
        row += [num(missing[f"{r:g}"]["auc"], missing[f"{r:g}"]["auc_sd"]) if f"{r:g}" in missing else "—" for r in rates]
        vs = a.vs_best_single
        row += [f"{vs['difference']:+.3f} vs {vs['arm']}" + (f" [{vs['ci'][0]:+.3f}, {vs['ci'][1]:+.3f}]" if vs["ci"] else "") if vs else "—"]
        ctl = a.controls
        row += [" / ".join(f"{num(ctl[c]['auc'])} ({num(ctl[c]['auc_plain_same_cases'])})" if c in ctl else "—" for c in ("masked", "away")) if ctl else "—"]
        lines.append("| " + " | ".join(row) + " |")
    for name, why in report.skipped.items():
        lines.append(f"| {name} | skipped: {why} |" + " |" * (len(head) - 2))
    p = report.protocol
    lines.append("")
    weights = f"; image weights: {p['image_weights']}" if p["image_weights"] else ""
    lines.append(f"{p['dataset']}: {p['cases']} cases, {p['patients']} patients, {p['split']}{weights}. {RESEARCH_NOTICE}")
    return "\n".join(lines) + "\n"


def write_report(report: AblationResult, out: Path) -> None:
    """``ablation.json``, ``ablation.md`` and ``ablation.png`` in ``out`` (each written atomically)."""
    from mammofuse.evaluation.plots import ablation_figure

    data = report.to_dict()
    write_text(out / "ablation.json", json.dumps(data, indent=2) + "\n")
    write_text(out / "ablation.md", markdown_table(report))
    if report.variants:
        ablation_figure(data["variants"], out / "ablation.png", title=f"Ablation: {report.protocol['dataset'] or 'dataset'}")
