"""Calibration of each way a fusion model scores a case, from the kept fold models of a `mammofuse ablate` run.

A calibrated model (``train --threshold-from``) applies its Platt map to cases with an image and findings only; a case
given without a lesion region (the Quickstart's) is scored by the findings branch alone, and one without findings by
the image branch alone, each raw. This re-scores every fold's held-out CBIS-DDSM mass lesions with the fold's kept
model three ways (as they are; the lesion region removed, so a lesion-crop model leaves the image out as ``predict``
does; the findings removed) and reports each way's pooled AUC and calibration: slope and intercept of Platt scaling,
Brier and ECE as they are and after recalibrating each fold with the map of the other folds
(``mammofuse.evaluation.calibration.calibration_summary``). The scores as they are must equal the run's stored ones
(checked), so the kept models are those the run reported. Nothing is trained.

    mammofuse ablate --dataset cbis-ddsm --data ../shared/data/cbis-ddsm \\
        --images ../shared/data/cbis-ddsm-mass-800/train --abnormality mass --split train \\
        --variants late --pretrained cbis-texture-cnn4 --seed 0 --bootstrap 0 --keep-models --out runs/late-keep
    python benchmarks/branch_calibration.py runs/late-keep --arm late
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

from mammofuse.api import as_model
from mammofuse.data import Sample, load_dataset
from mammofuse.evaluation.ablation_results import read_arm
from mammofuse.evaluation.calibration import calibration_summary
from mammofuse.evaluation.evaluate import score_samples

WAYS: dict[str, Callable[[Sample], Sample]] = {
    "image and findings": lambda s: s,
    "findings only (no lesion region)": lambda s: dataclasses.replace(s, region=None, roi_path=None, roi_mask_path=None),
    "image only (no findings)": lambda s: dataclasses.replace(s, clinical={}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an ablate --out run with --keep-models")
    parser.add_argument("--arm", default="late")
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"), help="the folder of cbis-ddsm/ and cbis-ddsm-mass-800/")
    args = parser.parse_args()

    samples = {s.id: s for s in load_dataset("cbis-ddsm", args.shared / "cbis-ddsm", [args.shared / "cbis-ddsm-mass-800" / "train"], "mass")}
    folds: dict[str, list[tuple[list[int], list[float]]]] = {way: [] for way in WAYS}
    for result in read_arm(args.run / "arms" / args.arm):
        model_dir = args.run / "arms" / args.arm / f"fold-{result.fold + 1}" / "model"
        if not model_dir.is_dir():
            raise SystemExit(f"{model_dir}: no kept model (run ablate with --keep-models)")
        net = as_model(model_dir, device="cpu")
        part = [samples[case] for case in result.ids]
        for way, change in WAYS.items():
            probs, errors = score_samples(net, [change(s) for s in part])
            if any(errors):
                raise SystemExit(f"fold {result.fold + 1}, {way}: {next(e for e in errors if e)}")
            if way == "image and findings" and not np.array_equal(probs, np.asarray(result.scores["0"], dtype=probs.dtype)):
                raise SystemExit(f"fold {result.fold + 1}: the kept model's scores differ from the run's stored ones")
            folds[way].append((result.labels, [float(p) for p in probs]))

    print("| how the case is scored | AUC | slope | intercept | Brier | ECE | Brier, recalibrated out of fold | ECE, recalibrated out of fold |")
    print("|---|---|---|---|---|---|---|---|")
    for way, scored in folds.items():
        labels = np.concatenate([y for y, _ in scored])
        probs = np.concatenate([p for _, p in scored])
        c = calibration_summary(scored)
        if c is None:
            raise SystemExit(f"{way}: no calibration fits these scores")
        print(f"| {way} | {roc_auc_score(labels, probs):.3f} | {c['slope']:.3f} | {c['intercept']:+.3f} | {c['brier']:.3f} | {c['ece']:.3f} "
              f"| {c['brier_recalibrated']:.3f} | {c['ece_recalibrated']:.3f} |")


if __name__ == "__main__":
    main()
