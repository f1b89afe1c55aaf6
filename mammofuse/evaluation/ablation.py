"""The paper's ablation, run honestly: every arm on identical patient-grouped folds and seeds.

An *arm* is one model variant (fusion x modality dropout x projection size). For each arm
and fold we train with :func:`mammofuse.training.train` (validation carved out of the fold's
training part, grouped by patient), score the held-out fold, and, for fusion arms, score it
again with the clinical findings of a seeded random share of cases removed. Each (arm, fold)
result is written atomically to ``OUT/arms/<arm>/fold-<k>/result.json`` with a fingerprint of
its settings and split; a second run with the same ``OUT`` loads it instead of retraining.

:func:`run_ablation` returns an :class:`~mammofuse.evaluation.ablation_results.AblationResult`;
the result types, the summaries over folds and the report live in
:mod:`mammofuse.evaluation.ablation_results`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mammofuse.atomic import folder_lock, remove_stale_temporaries, write_text
from mammofuse.data.sample import Sample, case_digest, patient_digest
from mammofuse.errors import MammofuseError, ResumeMismatch
from mammofuse.evaluation.ablation_results import (
    RESULT_FORMAT,
    RESULT_NAME,
    AblationResult,
    FoldResult,
    rate_key,
    read_result,
    summarize_arms,
    write_report,
)
from mammofuse.evaluation.leakage import pretrained_patients, withheld_patients
from mammofuse.evaluation.subgroups import case_subgroups
from mammofuse.fusion import FUSIONS, Fusion
from mammofuse.jsontext import json_text
from mammofuse.provenance import UNTUNED_ONE_CLASS
from mammofuse.training.callbacks import Reporter, TrainCallback
from mammofuse.training.checkpoint import has_checkpoint

VARIANTS = FUSIONS
DEFAULT_MISSING_RATES = (0.0, 0.3, 0.5, 1.0)
DEFAULT_PROJ_DIM = 100
# Settings that do not change what a fold's model is (so they may differ between runs sharing OUT);
# ``threshold_from`` is always unset here (ablate takes thresholds from its own folds).
# What changes no result: the machine, and what a model records of its patients.
NOT_FINGERPRINTED = frozenset({"device", "workers", "feature_cache", "amp", "threshold_from", "patient_digests"})


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


def plan_arms(
    variants: Sequence[str] = VARIANTS,
    modality_dropout: Sequence[bool] = (True,),
    proj_dims: Sequence[int] = (100,),
    dropout_p: float = 0.3,
) -> list[Arm]:
    """The arms to run. Modality dropout only acts on a joint head (``concat``, ``cross``, ``co``), so it
    multiplies only those; ``late`` is one arm, recording ``dropout_p`` as ``train --fusion late`` does
    (unused: its branches train apart), so its finished folds stay valid.

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
        fusion = Fusion(variant)
        for md in dict.fromkeys(modality_dropout) if fusion.joint_head else (fusion.is_multimodal,):
            for dim in dict.fromkeys(proj_dims):
                name = variant
                if fusion.joint_head and not md:
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
        if shared := {s.patient_id for s in train} & {s.patient_id for s in test}:
            raise MammofuseError(f"the train and test splits share {len(shared)} patient(s), e.g. {min(shared)}: "
                                 "an official split must not share a patient")
        return [(train, test)]
    if folds < 2:
        raise MammofuseError(f"folds (--folds) must be >= 2, not {folds}")
    patients = len({s.patient_id for s in samples})
    if patients < folds:
        raise MammofuseError(f"{patients} patients cannot make {folds} patient-grouped folds")
    return kfold_splits(list(samples), folds, seed)


def drop_clinical(samples: Sequence[Sample], rate: float, seed: Sequence[int]) -> list[Sample]:
    """A copy of ``samples`` with the clinical findings removed from a seeded random ``rate`` share of cases."""
    count = int(round(rate * len(samples)))
    chosen = set(np.random.default_rng(list(seed)).choice(len(samples), size=count, replace=False).tolist()) if count else set()
    return [dataclasses.replace(s, clinical={}) if i in chosen else s for i, s in enumerate(samples)]


def _stored_record(path: Path) -> dict[str, Any]:
    """A fold's stored ``result.json`` as a mapping; empty (the fold runs again) when torn, damaged or not an object."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _fingerprint(settings: dict[str, Any], train: Sequence[Sample], test: Sequence[Sample]) -> str:
    from mammofuse.training.pretrain import weights_file_digest

    payload = {
        "format": RESULT_FORMAT,
        "settings": {k: v for k, v in sorted(settings.items()) if k not in NOT_FINGERPRINTED},
        # A backbone or image model rewritten at the same path is other settings (the findings alone read no image).
        "weights": None if settings.get("fusion") == "clinical" else weights_file_digest(settings.get("pretrained")),
        "train": sorted(case_digest(s) for s in train),  # a case's data (label, findings, image...) as well as its id
        "test": sorted(case_digest(s) for s in test),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


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

    Fusion arms are scored at each share of cases without clinical findings in ``missing_rates``; image
    arms also on each shortcut control in ``controls`` (``away`` on ``away_patches`` patches per case).
    A finished result is completed by :func:`_reuse`, never by retraining.
    """
    from mammofuse.data.splits import train_val_split
    from mammofuse.imaging.controls import controls_for
    from mammofuse.model import MammoFuse

    key = _fingerprint(settings.as_dict(), train_part, test_part)
    result_path = folder / RESULT_NAME
    model_dir = folder / "model"
    rates = _rates_for(arm, missing_rates)
    wanted = controls_for(settings.input, controls) if arm.needs_images else []
    if result_path.is_file():
        record = _stored_record(result_path)
        if record.get("fingerprint") == key:
            return _reuse(read_result(record, result_path), result_path, test_part, rates, wanted, away_patches, settings.seed), True
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
    try:
        trained = trainer(settings, train_s, val_s, model_dir, resume=resume, callbacks=callbacks)
    except ResumeMismatch as exc:  # the trainer's message speaks of --resume, which ablate takes no part of
        raise MammofuseError(f"{model_dir} holds an interrupted training of {exc.difference} (arm {arm.name}, fold {fold + 1}); "
                             "use a new --out or delete that folder") from None
    model = MammoFuse.from_pretrained(getattr(trained, "out", model_dir))
    scores, errors_seen = _score_rates(model, test_part, rates, settings.seed, fold)
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
    write_text(result_path, json_text(result.to_dict(), indent=1) + "\n")
    if not keep_models:
        shutil.rmtree(model_dir, ignore_errors=True)
    return result, False


def _rates_for(arm: Arm, missing_rates: Sequence[float]) -> list[float]:
    """The missing-clinical shares an arm is scored at: 0 always, the others for fusion arms only."""
    return list(dict.fromkeys([0.0, *(missing_rates if arm.is_fusion else ())]))


def _score_rates(model: Any, samples: Sequence[Sample], rates: Sequence[float], seed: int, fold: int,
                 ) -> tuple[dict[str, list[float | None]], dict[str, str]]:
    """Held-out probabilities per missing-clinical share (None where a case cannot be scored), and case id -> error."""
    from mammofuse.evaluation.evaluate import score_samples

    scores: dict[str, list[float | None]] = {}
    errors_seen: dict[str, str] = {}
    for rate in rates:
        subset = drop_clinical(samples, rate, (seed, fold, int(round(rate * 1000))))
        probs, errors = score_samples(model, subset)
        scores[rate_key(rate)] = [float(p) if np.isfinite(p) else None for p in probs]
        errors_seen.update({s.id: e for s, e in zip(subset, errors) if e})
    return scores, errors_seen


def _reuse(result: FoldResult, result_path: Path, test_part: Sequence[Sample], rates: Sequence[float],
           wanted: Sequence[str], away_patches: int, seed: int) -> FoldResult:
    """A finished fold's result as this run asks for it: only the requested missing rates and controls.

    What it lacks (a missing rate, a control, or ``away`` on another number of patches) is scored from the
    fold's kept model (``--keep-models``) and stored; without that model it is a MammofuseError naming the
    ways out, so a run never reports less than it was asked for.
    """
    from mammofuse.model import MammoFuse

    stale = "away" in wanted and "away" in result.controls and result.away_patches != away_patches
    lacking_rates = [r for r in rates if rate_key(r) not in result.scores]
    lacking_controls = [c for c in wanted if c not in result.controls or (c == "away" and stale)]
    model_file = result_path.parent / "model" / "model.safetensors"
    if (lacking_rates or lacking_controls) and not model_file.is_file():
        absent = [c for c in lacking_controls if c not in result.controls]
        raise _incomplete(result_path, lacking_rates, absent, result.away_patches if stale else None, away_patches)
    if lacking_rates or lacking_controls:
        model = MammoFuse.from_pretrained(model_file.parent)
        scores, errors = _score_rates(model, test_part, lacking_rates, seed, result.fold)
        controls = _score_controls(model, test_part, lacking_controls, away_patches)
        result = dataclasses.replace(
            result, scores={**result.scores, **scores}, controls={**result.controls, **controls}, errors={**result.errors, **errors},
            away_patches=away_patches if "away" in lacking_controls else result.away_patches,
        )
        write_text(result_path, json_text(result.to_dict(), indent=1) + "\n")
    return dataclasses.replace(result, scores={rate_key(r): result.scores[rate_key(r)] for r in rates},
                               controls={c: result.controls[c] for c in wanted})


def _incomplete(result_path: Path, rates: Sequence[float], controls: Sequence[str], stored_patches: int | None,
                away_patches: int) -> MammofuseError:
    """Why a finished fold cannot give what was asked without its model, and the ways out."""
    lacks, asks = [], []
    if rates:
        shares = ", ".join(f"{r:g}" for r in rates)
        lacks.append(f"scores with the clinical findings of {shares} of the cases removed")
        asks.append(f"drop {shares} from --missing-rates")
    if controls:
        lacks.append(f"the {', '.join(controls)} control(s)")
    if stored_patches is not None:
        lacks.append(f"the away control on {away_patches} patch(es) per case (it averages {stored_patches} patch(es) per case, not {away_patches})")
    if controls or stored_patches is not None:
        asks.append("pass --no-controls" if controls else f"pass --away-patches {stored_patches}")
    return MammofuseError(
        f"{result_path}: this finished fold lacks {' and '.join(lacks)}, and its model was not kept to score them: "
        f"{' and '.join(asks)} to reuse it as it is, or use a new --out with --keep-models, or delete {result_path.parent} to train it again"
    )


def _image_init_model(folder: Path, fold: int, test_part: Sequence[Sample]) -> Path:
    """The kept model of fold ``fold`` in an image arm's folder, after checking it held out exactly ``test_part``."""
    source = folder / f"fold-{fold + 1}"
    if not (source / "model" / "model.safetensors").is_file():
        raise MammofuseError(f"image_init (--image-init) {folder}: no kept model in {source} (run the image arm with --keep-models)")
    if _image_fold_result(folder, fold).ids != [s.id for s in test_part]:
        raise MammofuseError(f"image_init (--image-init) {folder}: fold {fold + 1} held out other cases (other data, folds or seed): its model saw this fold's test cases")
    return source / "model"


def _image_fold_result(folder: Path, fold: int) -> FoldResult:
    """The result of fold ``fold`` of an image arm's folder; an unfinished or damaged one is a usage error."""
    path = folder / f"fold-{fold + 1}" / RESULT_NAME
    try:
        return read_result(json.loads(path.read_text(encoding="utf-8")), path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, MammofuseError):
        raise MammofuseError(
            f"image_init (--image-init) {folder}: fold {fold + 1} is unfinished or damaged (no readable {RESULT_NAME}): "
            f"finish that run (the same ablate command on its --out) or delete {path.parent}"
        ) from None


def _score_controls(model: Any, samples: Sequence[Sample], controls: Sequence[str], away_patches: int = 1) -> dict[str, list[float | None]]:
    """Held-out probabilities under each shortcut control (None where the control cannot be made)."""
    from mammofuse.evaluation.evaluate import score_samples

    out = {}
    for control in controls:
        probs, errors = score_samples(model, samples, control=control, patches=away_patches)
        out[control] = [float(p) if np.isfinite(p) and not e else None for p, e in zip(probs, errors)]
    return out


def _fold_line(result: FoldResult, cached: bool) -> str:
    auc = result.auc()
    status = "already done (reused)" if cached else f"done in {result.seconds:.0f} s"
    return f"{status}, AUC {'n/a' if auc is None else format(auc, '.3f')}"


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
        out: output folder (created); finished (arm, fold) results in it are reused. The run holds it throughout:
            another process given the same folder is refused (OutputError).
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
    _check_settings(base_settings, threshold, folds, missing_rates)
    if trainer is None:
        from mammofuse.training import train as trainer
    log = Reporter(callbacks).log
    out = Path(out)
    runnable, skipped, samples = _runnable_arms(arms, samples, log)
    _check_pretrained(base_settings, runnable, samples, log)
    fold_pairs = make_folds(samples, folds, base_settings.seed)
    for train_part, test_part in fold_pairs:
        shared = {s.patient_id for s in train_part} & {s.patient_id for s in test_part}
        if shared:  # only possible with a dataset's own split: k-fold splits are grouped by patient
            log(f"WARNING: {len(shared)} patient(s) are on both sides of the split (e.g. {sorted(shared)[0]}); "
                "their held-out results are optimistic")
    with folder_lock(out):  # one run at a time: another would resume, score or delete this one's folds
        remove_stale_temporaries(out, depth=3)  # of a killed run's report and fold results (OUT/arms/ARM/fold-K)
        all_folds: dict[str, list[FoldResult]] = {arm.name: [] for arm in runnable}
        arm_settings: dict[str, dict[str, Any]] = {}
        total, done = len(runnable) * len(fold_pairs), 0
        for arm in runnable:
            settings = dataclasses.replace(base_settings, fusion=arm.fusion, modality_dropout=arm.modality_dropout, proj_dim=arm.proj_dim, dataset=dataset or base_settings.dataset)
            arm_settings[arm.name] = settings.as_dict()
            for k, (train_part, test_part) in enumerate(fold_pairs):
                fold_settings = settings
                if image_init and arm.is_fusion:
                    fold_settings = dataclasses.replace(settings, pretrained=str(_image_init_model(Path(image_init), k, test_part)))
                done += 1
                where = f"[{done}/{total}] {arm.name} fold {k + 1}/{len(fold_pairs)}"
                carved = f" ({settings.val_fraction:g} of their patients carved out for validation)" if settings.val_fraction else ""
                log(f"{where}: training on {len(train_part)} cases{carved}, testing on {len(test_part)}")
                result, cached = run_fold(arm, k, train_part, test_part, fold_settings, out / "arms" / arm.name / f"fold-{k + 1}",
                                          missing_rates, trainer, keep_models, callbacks, controls, away_patches)
                log(f"{where}: {_fold_line(result, cached)}")
                all_folds[arm.name].append(result)
        groups = {s.id: case_subgroups(s) for s in samples}
        variants = summarize_arms(all_folds, missing_rates, n_boot, base_settings.seed, threshold, groups)
        for name, summary in variants.items():
            summary.settings = arm_settings[name]
        protocol = _protocol(base_settings, samples, runnable, dataset, folds, len(fold_pairs), threshold, controls, away_patches, missing_rates)
        protocol.update(_one_class_validation(base_settings, fold_pairs, threshold))
        report = AblationResult(variants=variants, skipped=skipped, protocol=protocol, folds=all_folds)
        write_report(report, out)
    return report


def _check_settings(base_settings: Any, threshold: str, folds: int | None, missing_rates: Sequence[float]) -> None:
    """Refuse settings that ablate cannot honour, before any data is touched."""
    if not base_settings.val_fraction and (threshold == "validation" or folds is None):
        why = "--threshold-from validation" if threshold == "validation" else "the official split (one fold: no other folds to take a threshold from)"
        raise MammofuseError(f"{why} needs a validation part: set --val-fraction (e.g. 0.2)")
    if base_settings.threshold_from:
        raise MammofuseError("threshold_from is for `train`: ablate takes each fold's threshold from its own folds (--threshold-from oof|validation)")
    for rate in missing_rates:
        if not 0.0 <= rate <= 1.0:
            raise MammofuseError(f"missing rates must be within [0, 1], not {rate:g}")


def _runnable_arms(arms: Sequence[Arm], samples: Sequence[Sample], log: Callable[[str], None]) -> tuple[list[Arm], dict[str, str], Sequence[Sample]]:
    """The arms that can run, why the others are skipped, and the cases every arm uses (all with an image where one arm needs it)."""
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
    return runnable, skipped, samples


def _check_pretrained(base_settings: Any, runnable: Sequence[Arm], samples: Sequence[Sample], log: Callable[[str], None]) -> None:
    """Refuse pretrained weights that saw these patients; warn where that cannot be checked."""
    if not any(a.needs_images for a in runnable):
        return
    if seen := pretrained_patients(base_settings.pretrained):
        overlap = len(seen & {patient_digest(s.patient_id) for s in samples})
        if overlap:
            raise MammofuseError(f"pretrained (--pretrained) {base_settings.pretrained}: {overlap} of these patients trained that model, so its "
                                 "image branch has seen held-out labels in every fold; start from weights trained on other patients")
    if withheld_patients(base_settings.pretrained):
        log(f"WARNING: pretrained (--pretrained) {base_settings.pretrained} was trained without patient digests: whether its "
            "patients are among these cannot be checked; if they are, every image arm's held-out results are optimistic")
    if seen_patients := _pretraining_overlap(base_settings.pretrained, samples):
        log(f"note: pretrained (--pretrained) {base_settings.pretrained} was pretrained without labels on the films of {seen_patients} of these "
            f"{len({s.patient_id for s in samples})} patients: held-out films it has seen are scored, so the image arms' held-out AUCs "
            "include what seeing them adds (ablation.json: protocol.image_weights_pretraining)")


def _pretraining_overlap(spec: str | None, samples: Sequence[Sample]) -> int | None:
    """How many of the samples' patients a pretrained backbone's films came from (None where it records no patients)."""
    from mammofuse.training.pretrain import pretraining_patients

    seen = pretraining_patients(spec)
    return None if seen is None else len(seen & {patient_digest(s.patient_id) for s in samples})


def _pretraining_note(spec: str | None, samples: Sequence[Sample]) -> str | None:
    """The protocol's words on whose films the image weights were pretrained on (None: no pretrained backbone)."""
    overlap = _pretraining_overlap(spec, samples)
    if overlap is None:
        return None
    patients = len({s.patient_id for s in samples})
    if not overlap:
        return f"self-supervised on the films of none of these {patients} patients"
    return (f"self-supervised (no labels, lesions avoided) on the films of {overlap} of these {patients} patients: held-out folds hold films "
            "it has seen, a transductive step that an evaluation on unseen patients lacks")


def _one_class_validation(settings: Any, fold_pairs: Sequence[tuple[Sequence[Sample], Sequence[Sample]]], threshold: str) -> dict[str, str]:
    """The protocol's ``validation`` and ``threshold`` words where some folds' validation parts (carved as :func:`run_fold`
    carves them) hold one class: no AUC there, so the threshold is 0.5 and ``selection: best`` chooses by the loss."""
    from mammofuse.data.splits import train_val_split

    if not settings.val_fraction:
        return {}
    one_class = [str(k + 1) for k, (train_part, _) in enumerate(fold_pairs)
                 if len({s.label for s in train_val_split(list(train_part), settings.val_fraction, seed=settings.seed)[1]}) == 1]
    if not one_class:
        return {}
    where = f"fold{'s' if len(one_class) > 1 else ''} {', '.join(one_class)}"
    words = {"validation": f"{settings.val_fraction:g} of each fold's training patients carved out (with selection 'best', the epoch is "
                           f"chosen there: by the validation loss in {where}, whose validation part is of one class)"}
    if threshold == "validation" or len(fold_pairs) == 1:
        words["threshold"] = f"Youden's J on each fold's validation part; {UNTUNED_ONE_CLASS} in {where}: 0.5"
    return words


def _protocol(base_settings: Any, samples: Sequence[Sample], runnable: Sequence[Arm], dataset: str, folds: int | None, n_folds: int,
              threshold: str, controls: Sequence[str], away_patches: int, missing_rates: Sequence[float]) -> dict[str, Any]:
    """The ``protocol`` block of ``ablation.json``: how the numbers were made, in words a reader can check."""
    return {
        "dataset": dataset,
        "cases": len(samples),
        "patients": len({s.patient_id for s in samples}),
        "split": "official train/test" if folds is None else f"{folds}-fold patient-grouped stratified CV",
        "validation": ("none: every training patient of a fold trains (val_fraction 0)" if not base_settings.val_fraction else
                       f"{base_settings.val_fraction:g} of each fold's training patients carved out (with selection 'best', the epoch is chosen there)"),
        "threshold": ("Youden's J on the pooled held-out predictions of the other folds" if threshold == "oof" and n_folds > 1
                      else "Youden's J on each fold's validation part"),
        "controls": "none: image arms were not scored on shortcut controls" if not controls else
                    "image arms also scored with the lesion masked out (filled from adjacent tissue) and on a same-size patch away from every lesion "
                    + ("(one patch per case, fixed by its id; on a small set its AUC moves with that draw: see --away-patches)" if away_patches == 1
                       else f"(the mean logit over {away_patches} patches per case, each fixed by its id)"),
        "away_patches": away_patches,
        "missing_rates": [float(r) for r in missing_rates],
        "missing_clinical": "clinical findings removed at inference from a seeded random share of held-out cases (same cases for every arm)",
        "seed": base_settings.seed,
        "image_weights": None if not any(a.needs_images for a in runnable) else (base_settings.pretrained or "random initialisation (no ImageNet weights)"),
        "image_weights_pretraining": _pretraining_note(base_settings.pretrained, samples) if any(a.needs_images for a in runnable) else None,
        "auc": "mean over folds (SD over folds); auc_ci is the patient-bootstrap 95% CI of the pooled out-of-fold AUC",
    }
