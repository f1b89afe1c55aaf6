"""Out-of-fold performance of a finished `mammofuse ablate` run by breast density and view, beside the radiologists'
BI-RADS assessment on the same lesions (CBIS-DDSM).

Re-reads the fold results (nothing is retrained), gives each case its groups from the dataset, and reports each
arm's pooled held-out AUC per group with a patient-bootstrap interval, and sensitivity and specificity with each case
called at its fold's threshold, as `ablate` now writes them in `ablation.json` (`subgroups`), and the specificity
where the pooled ROC curve reaches a sensitivity of 0.90 and 0.95. For CBIS-DDSM, the
assessment column of the case-description CSVs (BI-RADS 0-5, never a model input: it would give the label away) is
the comparator a radiologist's reading gives: its AUC on the same cases, paired against each arm's (patient
bootstrap), and its sensitivity and specificity read as "BI-RADS 4 or 5 is malignant".

    python benchmarks/subgroups.py runs/default-model-cv --arms clinical,late --dataset cbis-ddsm \\
        --data ../shared/data/cbis-ddsm --images ../shared/data/cbis-ddsm-mass-800/train --abnormality mass
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from mammofuse.data import load_dataset
from mammofuse.evaluation.ablation_results import fold_thresholds, read_arm, summarize_arm
from mammofuse.evaluation.metrics import auc_or_none, paired_auc_difference
from mammofuse.evaluation.subgroups import case_subgroups, subgroup_lines
from mammofuse.results import MALIGNANT, decide


def assessments(data: Path) -> dict[str, int]:
    """Case id (as the CBIS-DDSM loader names a lesion: ``Mass-Training_P_00001_LEFT_CC_1``) -> its BI-RADS assessment."""
    out = {}
    for path in sorted(data.glob("*_case_description_*_set.csv")):
        kind = "Mass" if path.name.startswith("mass") else "Calc"
        split = "Training" if "_train_" in path.name else "Test"
        with path.open(newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                key = f"{kind}-{split}_{row['patient_id']}_{row['left or right breast']}_{row['image view']}_{row['abnormality id']}"
                if row.get("assessment", "").strip().isdigit():
                    out[key] = int(row["assessment"])
    return out


def comparator(run: Path, arm: str, birads: dict[str, int], threshold: str, n_boot: int, seed: int) -> str:
    """The arm's pooled AUC against the BI-RADS assessment's, paired on the cases both have, and each one's
    sensitivity and specificity there (the arm's cases called at their fold's threshold; the assessment's at 4)."""
    results = read_arm(run / "arms" / arm)
    cases = [(case, label, prob, patient, cut) for r, cut in zip(results, fold_thresholds(results, threshold))
             for case, label, patient, prob in zip(r.ids, r.labels, r.patients, r.scores["0"]) if prob is not None and case in birads]
    if not cases:
        return f"{arm}: no case has a BI-RADS assessment"
    ids, y, p, who, cuts = (list(x) for x in zip(*cases))
    b = np.array([birads[c] for c in ids], dtype=float)
    y_arr = np.array(y)
    diff = paired_auc_difference(y, p, list(b), who, n_boot, seed)
    ci = diff.get("ci")
    interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
    model = np.array([decide(prob, cut) == MALIGNANT for prob, cut in zip(p, cuts)])
    return (f"{arm}: AUC {auc_or_none(y_arr, np.array(p)):.3f}, BI-RADS assessment {auc_or_none(y_arr, b):.3f} on the same {len(ids)} "
            f"cases; {arm} − assessment {diff['difference']:+.3f}{interval} (paired, patients); there, {arm} at its folds' thresholds: "
            f"{_rates(model, y_arr)}, the assessment read as 4 or 5 malignant: {_rates(b >= 4, y_arr)}")


def _rates(called: np.ndarray, labels: np.ndarray) -> str:
    return f"sensitivity {called[labels == 1].mean():.3f}, specificity {(~called[labels == 0]).mean():.3f}"


def operating_points(run: Path, arm: str, sensitivities: tuple[float, ...] = (0.90, 0.95)) -> str:
    """Specificity where the pooled out-of-fold ROC curve first reaches each sensitivity (a point on the curve, not
    a threshold chosen without these cases)."""
    from sklearn.metrics import roc_curve

    y, p = zip(*[(label, prob) for r in read_arm(run / "arms" / arm) for label, prob in zip(r.labels, r.scores["0"]) if prob is not None])
    fpr, tpr, _ = roc_curve(y, p)
    return "; ".join(f"sensitivity {s:.2f}: specificity {1 - fpr[np.argmax(tpr >= s)]:.3f}" for s in sensitivities)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--arms", default=None, help="comma-separated (default: every arm of the run)")
    parser.add_argument("--dataset", default="cbis-ddsm")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=Path, default=None)
    parser.add_argument("--abnormality", default="all")
    parser.add_argument("--threshold-from", choices=("oof", "validation"), default="oof", help="as the run's ablate took it")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    seed, threshold = json.loads((args.run / "ablation.json").read_text())["protocol"]["seed"], args.threshold_from
    groups = {s.id: case_subgroups(s) for s in load_dataset(args.dataset, args.data, args.images, args.abnormality)}
    arms = args.arms.split(",") if args.arms else sorted(p.name for p in (args.run / "arms").iterdir() if p.is_dir())
    birads = assessments(args.data) if args.dataset == "cbis-ddsm" else {}
    for arm in arms:
        summary = summarize_arm(read_arm(args.run / "arms" / arm), [0.0], args.bootstrap, seed, threshold, groups)
        print(f"## {arm}: pooled AUC {summary.auc_pooled:.3f}")
        for line in subgroup_lines(summary.subgroups or {}):
            print(f"- {line}")
        for kind, table in (summary.subgroups or {}).items():
            for value, m in table.items():
                if "sensitivity" in m:
                    print(f"  - {kind} {value}: sensitivity {m['sensitivity']:.3f}, specificity {m['specificity']:.3f}")
        print(f"- pooled out-of-fold ROC curve: {operating_points(args.run, arm)}")
        if birads:
            print(f"- {comparator(args.run, arm, birads, threshold, args.bootstrap, seed)}")


if __name__ == "__main__":
    main()
