"""How much does the 'away' shortcut control move with the patch it happens to draw?

The 'away' control scores each held-out case on one patch of its film, away from every lesion,
drawn as a pure function of the case id (``mammofuse.imaging.controls.away_key``). This script
re-scores the kept fold models of a finished ``mammofuse ablate ... --keep-models`` run on
``--draws`` patches per case (draws 0 to K - 1; draw 0 is the run's own, checked against its
stored scores) and prints the AUC of each draw and of the per-case mean logit over all draws,
which is what ``--away-patches K`` reports. Nothing is retrained.

    python benchmarks/away_draws.py runs/cbis-s0 --draws 4
    python benchmarks/away_draws.py runs/mias-s0 --dataset mini-mias --draws 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.special import logit
from sklearn.metrics import roc_auc_score

from mammofuse.data import load_dataset
from mammofuse.evaluation.ablation_results import read_arm
from mammofuse.inference import predict_proba
from mammofuse.model import MammoFuse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an ablate output folder whose arm kept its fold models")
    parser.add_argument("--arm", default="image")
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--dataset", choices=("cbis-ddsm", "mini-mias"), default="cbis-ddsm")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    if args.dataset == "cbis-ddsm":
        samples = load_dataset("cbis-ddsm", args.shared / "cbis-ddsm", [args.shared / "cbis-ddsm-mass-800" / "train"], "mass")
    else:
        samples = load_dataset("mini-mias", args.shared / "mini-mias")
    by_id = {s.id: s for s in samples}
    results = read_arm(args.run / "arms" / args.arm)
    if not results:
        raise SystemExit(f"{args.run}: no fold results of arm {args.arm!r}")
    labels, scores = [], []  # scores: per case, one probability per draw (None where no patch)
    for result in results:
        model_dir = args.run / "arms" / args.arm / f"fold-{result.fold + 1}" / "model"
        if not (model_dir / "model.safetensors").is_file():
            raise SystemExit(f"{model_dir}: no kept model (run ablate with --keep-models)")
        model = MammoFuse.from_pretrained(model_dir)
        held_out = [by_id[i] for i in result.ids]
        draws = []
        for k in range(args.draws):
            probs, errors = predict_proba(model, held_out, control="away", draw=k)
            draws.append([float(p) if np.isfinite(p) and not e else None for p, e in zip(probs, errors)])
        if not np.allclose(np.array(draws[0], float), np.array(result.controls["away"], float), atol=1e-5, equal_nan=True):
            raise SystemExit(f"fold {result.fold + 1}: draw 0 does not reproduce the run's stored 'away' scores")
        labels += result.labels
        scores += [list(case) for case in zip(*draws)]
    kept = [i for i, case in enumerate(scores) if None not in case]
    y = np.array([labels[i] for i in kept])
    matrix = np.array([scores[i] for i in kept], dtype=float)  # cases x draws
    report = {
        "cases": len(kept),
        "auc_per_draw": [round(float(roc_auc_score(y, matrix[:, k])), 4) for k in range(args.draws)],
        "auc_mean_of_draws": round(float(roc_auc_score(y, logit(np.clip(matrix, 1e-6, 1 - 1e-6)).mean(axis=1))), 4),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
