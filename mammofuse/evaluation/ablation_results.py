"""What an ablation found: each (arm, fold)'s held-out scores, each arm's summary over its folds, and the report.

A :class:`FoldResult` is one ``OUT/arms/<arm>/fold-<k>/result.json``; :func:`summarize_arms` turns the fold
results of every arm into :class:`ArmSummary` objects (mean and SD over folds, pooled out-of-fold AUC with a
patient-bootstrap CI, shortcut controls, fusion versus the best single modality), and :func:`write_report`
writes ``ablation.json``, ``ablation.md`` and ``ablation.png``. Nothing here trains or imports torch, so
benchmarks re-read finished runs cheaply.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mammofuse import RESEARCH_NOTICE
from mammofuse.atomic import write_together
from mammofuse.errors import MammofuseError
from mammofuse.evaluation.calibration import calibration_summary
from mammofuse.evaluation.metrics import (
    METRIC_NAMES,
    auc_or_none,
    bootstrap_auc,
    evaluate_predictions,
    paired_auc_difference,
    youden_threshold,
)
from mammofuse.fusion import Fusion
from mammofuse.jsontext import json_text

RESULT_NAME = "result.json"
RESULT_FORMAT = 1


def rate_key(rate: float) -> str:
    """The key of a missing-clinical share in :attr:`FoldResult.scores` (``"0"``, ``"0.5"``...)."""
    return f"{rate:g}"


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
        return self.scores[rate_key(0.0)]

    def scored(self, rate: float = 0.0, kind: str | None = None) -> tuple[list[int], list[float], list[str]]:
        """Labels, probabilities and patients of the held-out cases scored with a ``rate`` share of clinical
        findings removed (only those of abnormality ``kind`` when given)."""
        probs = self.scores[rate_key(rate)]
        kept = [(i, p) for i, p in enumerate(probs) if p is not None and kind in (None, self.abnormality[i])]
        return [self.labels[i] for i, _ in kept], [p for _, p in kept], [self.patients[i] for i, _ in kept]

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
        calibration: of the pooled held-out predictions, and after Platt recalibration by the other folds
            (:func:`mammofuse.evaluation.calibration.calibration_summary`; None with one fold).
        folds_averaged: each metric whose mean covers fewer folds than all, and how many it covers (a held-out
            part of one class has no AUC); None when every mean covers every fold.
        subgroups: the pooled held-out predictions by breast density and view, each case called at its fold's
            threshold (:func:`mammofuse.evaluation.subgroups.subgroup_metrics`); None where the cases' groups are not known.
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
    calibration: dict[str, float] | None = None
    folds_averaged: dict[str, int] | None = None
    subgroups: dict[str, Any] | None = None

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
        for name in ("missing_clinical", "settings", "vs_best_single", "calibration", "folds_averaged", "subgroups"):
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


def read_arm(folder: Path) -> list[FoldResult]:
    """The finished fold results of one arm (``OUT/arms/<arm>``), in fold order."""
    results = []
    for path in sorted(Path(folder).glob(f"fold-*/{RESULT_NAME}")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MammofuseError(f"{path}: not a readable fold result ({exc})") from None
        results.append(read_result(record, path))
    return sorted(results, key=lambda r: r.fold)


def read_result(record: Any, path: Path) -> FoldResult:
    """:meth:`FoldResult.from_dict`, its errors naming the file."""
    try:
        return FoldResult.from_dict(record)
    except MammofuseError as exc:
        raise MammofuseError(f"{path}: {exc}") from None


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


def _subsets(results: Sequence[FoldResult], n_boot: int, seed: int) -> dict[str, Any]:
    """Per abnormality type (only when the data has masses and calcifications): fold-mean AUC and pooled AUC with CI,
    each fold's AUC (``auc_folds``, None where its held-out cases of the type lack a class) and, when the mean covers
    fewer folds than all, how many (``folds_averaged``)."""
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
        out[kind] = {"n": len(ys), "auc": mean, "auc_sd": sd, "auc_pooled": pooled, "auc_ci": list(ci) if ci else None, "auc_folds": aucs}
        if 0 < (covered := folds_covered(aucs)) < len(aucs):
            out[kind]["folds_averaged"] = {"auc": covered}
    return out


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def folds_covered(values: Sequence[float | None]) -> int:
    """How many of the folds' values a mean over them covers: those that are not None."""
    return sum(v is not None for v in values)


def partial_means(count: int | None, folds: int) -> str:
    """`` (k of N folds)`` after a mean that covers ``count`` of the ``folds`` only; empty when it covers all (None)."""
    return f" ({count} of {folds} folds)" if count is not None and count < folds else ""


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


def summarize_arm(
    results: Sequence[FoldResult], missing_rates: Sequence[float], n_boot: int, seed: int, threshold: str = "oof",
    groups: Mapping[str, Mapping[str, str]] | None = None,
) -> ArmSummary:
    """Mean and SD over folds of every metric; pooled out-of-fold AUC with a patient-bootstrap CI; AUC per missing rate.

    ``threshold``: where each fold's operating point comes from (:func:`fold_thresholds`). ``groups``: each case's
    subgroups by id (:func:`~mammofuse.evaluation.subgroups.case_subgroups`), for metrics by subgroup.
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
    averaged = {name: count for name in METRIC_NAMES if 0 < (count := folds_covered([m[name] for m in per_fold])) < len(per_fold)}
    pooled = auc_or_none(np.array(pooled_y), np.array(pooled_p)) if pooled_y else None
    missing = None
    if results and len(results[0].scores) > 1:
        missing = {}
        for rate in [rate for rate in missing_rates if all(rate_key(rate) in r.scores for r in results)]:
            aucs = [r.auc(rate) for r in results]
            mean, sd = _mean_sd(aucs)
            missing[rate_key(rate)] = {"auc": mean, "auc_sd": sd, "auc_folds": aucs}
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
        calibration=calibration_summary([r.scored()[:2] for r in results]),
        folds_averaged=averaged or None,
        subgroups=_by_subgroup(results, fold_thresholds(results, threshold), groups, n_boot, seed) if groups is not None else None,
    )


def _by_subgroup(results: Sequence[FoldResult], cuts: Sequence[float], groups: Mapping[str, Mapping[str, str]], n_boot: int, seed: int) -> dict[str, Any]:
    """:func:`~mammofuse.evaluation.subgroups.subgroup_metrics` of the pooled held-out predictions, each at its fold's threshold."""
    from mammofuse.evaluation.subgroups import subgroup_metrics

    rows = [(r.labels[i], prob, r.patients[i], cut, groups.get(r.ids[i], {}))
            for r, cut in zip(results, cuts) for i, prob in enumerate(r.scores[rate_key(0.0)]) if prob is not None]
    if not rows:
        return {}
    labels, probs, patients, thresholds, of = zip(*rows)
    return subgroup_metrics(labels, probs, patients, thresholds, of, n_boot, seed)


def summarize_arms(
    folds: dict[str, Sequence[FoldResult]], missing_rates: Sequence[float], n_boot: int, seed: int, threshold: str = "oof",
    groups: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, ArmSummary]:
    """:func:`summarize_arm` of every arm (name -> its fold results), multimodal arms compared with the best single one."""
    variants = {name: summarize_arm(results, missing_rates, n_boot, seed, threshold, groups) for name, results in folds.items()}
    if partial := [f"{name} {s.folds_averaged['auc']} of {s.folds}" for name, s in variants.items() if s.folds_averaged and "auc" in s.folds_averaged]:
        warnings.warn(f"fold-mean AUC covers only the folds whose held-out part has both classes ({', '.join(partial)}); the pooled AUC covers every case",
                      stacklevel=2)
    for name, comparison in _compare_with_best_single(variants, folds, n_boot, seed).items():
        variants[name].vs_best_single = comparison
    return variants


def markdown_table(report: AblationResult) -> str:
    """The ablation as a Markdown table (AUC mean ± SD over folds, pooled CI, threshold metrics, calibration,
    missing-clinical AUC, paired difference to the best single modality, shortcut controls)."""
    rates = [r for r in report.protocol["missing_rates"] if r > 0]

    def num(value: float | None, sd: float | None = None, count: int | None = None, folds: int = 0) -> str:
        if value is None:
            return "n/a"
        return f"{value:.3f}" + (f" ± {sd:.3f}" if sd is not None else "") + partial_means(count, folds)

    head = ["arm", "AUC (mean ± SD)", "pooled AUC [95% CI]", "PR-AUC", "accuracy", "F1", "sensitivity", "specificity", "Brier", "ECE"]
    head += ["calibration slope; pooled ECE → after Platt by the other folds"]
    head += [f"AUC, {r:.0%} clinical missing" for r in rates]
    head += ["pooled AUC − best single modality [paired 95% CI]", "AUC: lesion masked / patch away (plain, same cases)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, a in report.variants.items():
        ci = a.auc_ci
        pooled = "n/a" if a.auc_pooled is None else f"{a.auc_pooled:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        averaged = a.folds_averaged or {}
        row = [name, num(a.auc, a.auc_sd, averaged.get("auc"), a.folds), pooled]
        row += [num(a.metrics[m], a.metrics[f"{m}_sd"], averaged.get(m), a.folds) for m in ("pr_auc", "accuracy", "f1", "sensitivity", "specificity", "brier", "ece")]
        cal = a.calibration
        row += [f"{cal['slope']:.2f}; {cal['ece']:.3f} → {cal['ece_recalibrated']:.3f}" if cal else "—"]
        missing = a.missing_clinical or {}
        row += [num(missing[f"{r:g}"]["auc"], missing[f"{r:g}"]["auc_sd"], folds_covered(missing[f"{r:g}"]["auc_folds"]), a.folds)
                if f"{r:g}" in missing else "—" for r in rates]
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
    """``ablation.json``, ``ablation.md`` and ``ablation.png`` in ``out``, written together
    (:func:`~mammofuse.atomic.write_together`): when one cannot be, none changes."""
    from mammofuse.evaluation.plots import ablation_png

    data = report.to_dict()
    texts = {"ablation.json": json_text(data, indent=2) + "\n", "ablation.md": markdown_table(report)}
    files = {out / name: text.encode("utf-8", "surrogateescape") for name, text in texts.items()}  # as write_text does
    if report.variants:
        files[out / "ablation.png"] = ablation_png(data["variants"], title=f"Ablation: {report.protocol['dataset'] or 'dataset'}")
    write_together(files)
