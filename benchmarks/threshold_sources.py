"""Where each fold's decision threshold comes from: its validation part, or the other folds' held-out predictions.

Reads a finished ``mammofuse ablate`` folder (``OUT/arms/<arm>/fold-*/result.json``; nothing is
trained) and prints, per arm, balanced accuracy, sensitivity and specificity on the held-out folds
(mean ± SD over folds) with ``--threshold-from validation`` and with ``--threshold-from oof``.

Usage: python benchmarks/threshold_sources.py OUT [OUT ...]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from mammofuse.evaluation.ablation_results import read_arm, summarize_arm


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="ablation output folders")
    args = parser.parse_args()
    print("| run | arm | threshold from | balanced accuracy | sensitivity | specificity |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        for arm in sorted(p for p in (run / "arms").iterdir() if p.is_dir()):
            folds = read_arm(arm)
            if len(folds) < 2:
                continue
            for source in ("validation", "oof"):
                per_fold = summarize_arm(folds, [0.0], n_boot=0, seed=0, threshold=source).per_fold
                sens, spec = [m["sensitivity"] for m in per_fold], [m["specificity"] for m in per_fold]
                balanced = [(a + b) / 2 for a, b in zip(sens, spec)]
                print(f"| {run.name} | {arm.name} | {source} | {_mean_sd(balanced)} | {_mean_sd(sens)} | {_mean_sd(spec)} |")


if __name__ == "__main__":
    main()
