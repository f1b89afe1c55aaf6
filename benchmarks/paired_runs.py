"""Paired AUC difference between two arms of finished `mammofuse ablate` runs on the same folds.

Re-reads the kept fold results (nothing is retrained) and compares the pooled out-of-fold
predictions of arm A and arm B on the cases both scored, with a paired bootstrap that resamples
patients (``mammofuse.evaluation.metrics.paired_auc_difference``). Runs must share the dataset and
fold seed, so each case was held out by the same fold in both; that is checked.

    python benchmarks/paired_runs.py runs/cbis-s0-pre image runs/cbis-s0 image
    python benchmarks/paired_runs.py runs/x/ late runs/y/ late --bootstrap 2000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mammofuse.evaluation.ablation_results import read_arm
from mammofuse.evaluation.metrics import paired_auc_difference


def pooled(run: Path, arm: str) -> dict[str, tuple[int, float, str, int]]:
    """case id -> (label, probability, patient, fold) of an arm's held-out predictions."""
    out: dict[str, tuple[int, float, str, int]] = {}
    results = read_arm(run / "arms" / arm)
    if not results:
        raise SystemExit(f"{run}: no fold results of arm {arm!r} under arms/{arm}/")
    for result in results:
        for case, label, patient, prob in zip(result.ids, result.labels, result.patients, result.scores["0"]):
            if prob is not None:
                out[case] = (label, prob, patient, result.fold)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("arm_a")
    parser.add_argument("run_b", type=Path)
    parser.add_argument("arm_b")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    a, b = pooled(args.run_a, args.arm_a), pooled(args.run_b, args.arm_b)
    common = sorted(set(a) & set(b))
    if any(a[c][3] != b[c][3] for c in common):
        raise SystemExit("the runs' folds differ (another fold seed or dataset): a paired comparison needs the same folds")
    diff = paired_auc_difference(
        [a[c][0] for c in common], [a[c][1] for c in common], [b[c][1] for c in common], [a[c][2] for c in common],
        n_boot=args.bootstrap, seed=args.seed,
    )
    if diff is None:
        raise SystemExit("AUC undefined: the common cases hold one class only")
    ci = diff["ci"]
    interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else " (too few patients for an interval)"
    print(f"{args.arm_a} ({args.run_a}) - {args.arm_b} ({args.run_b}): pooled AUC {diff['difference']:+.3f}{interval}, "
          f"{len(common)} cases, {len({a[c][2] for c in common})} patients, {len({a[c][3] for c in common})} folds")


if __name__ == "__main__":
    main()
