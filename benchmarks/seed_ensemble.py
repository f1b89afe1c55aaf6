"""Does averaging models trained with different seeds lift an arm? The same folds; members differ only
in their training seed (weights, shuffling, augmentation, dropout).

Member m is ``mammofuse ablate``'s arm trained with seed ``--seed + 1000 m`` on the folds of ``--seed``
(written to ``OUT/member-<m>``, reused when run again; its ``result.json`` records the fold seed).
The ensemble averages the members' logits per held-out case. Printed: each member's and the
ensemble's pooled out-of-fold AUC and fold mean, the ensemble's shortcut controls (the members'
control scores averaged the same way), and the paired patient-bootstrap difference between the
ensemble and member 0 (the plain run). CBIS-DDSM masses (training split) or mini-MIAS (every
lesion; ``--without-region breast``, as in ``benchmarks/ablation_mini_mias.sh``).

    python benchmarks/seed_ensemble.py --out runs/ens-s0 --arm image --members 3 --seed 0
    python benchmarks/seed_ensemble.py --dataset mini-mias --out runs/ens-mias-s0 --arm image --seed 0

``--config FILE`` starts from a training-settings YAML (as ``ablate --config``), e.g. the mini-MIAS
transfer recipe: ``{pretrained: default, freeze_epochs: 20, radiomics: true}``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from mammofuse.data import load_dataset
from mammofuse.evaluation.ablation import plan_arms, run_ablation
from mammofuse.evaluation.ablation_results import read_arm
from mammofuse.evaluation.metrics import paired_auc_difference
from mammofuse.imaging.controls import CONTROLS
from mammofuse.training import TrainSettings, train
from mammofuse.training.settings import read_settings_yaml


def member_trainer(offset: int):
    """``training.train`` with the run's seed moved by ``offset`` (the folds stay those of the run's seed)."""

    def run(settings, *args, **kwargs):
        return train(dataclasses.replace(settings, seed=settings.seed + offset), *args, **kwargs)

    return run


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arm", default="image")
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", choices=("cbis-ddsm", "mini-mias"), default="cbis-ddsm")
    parser.add_argument("--config", type=Path, help="training-settings YAML the members start from")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    if args.dataset == "cbis-ddsm":
        samples = load_dataset("cbis-ddsm", args.shared / "cbis-ddsm", [args.shared / "cbis-ddsm-mass-800" / "train"], "mass")
        samples = [s for s in samples if s.split == "train"]
    else:
        samples = load_dataset("mini-mias", args.shared / "mini-mias")
    base = read_settings_yaml(args.config) if args.config else {}
    settings = TrainSettings.from_dict({**base, "dataset": args.dataset, "seed": args.seed, "val_fraction": 0.0, "device": "cpu",
                                        "without_region": "breast" if args.dataset == "mini-mias" else "skip"})
    members = []
    for m in range(args.members):
        folder = args.out / f"member-{m}"
        run_ablation(samples, plan_arms([args.arm]), settings, folder, n_boot=0, trainer=member_trainer(1000 * m), dataset=args.dataset,
                     controls=CONTROLS)
        members.append({(r.fold, i): (y, p, patient, {c: r.controls[c][j] for c in r.controls})
                        for r in read_arm(folder / "arms" / args.arm)
                        for j, (i, y, p, patient) in enumerate(zip(r.ids, r.labels, r.probs, r.patients)) if p is not None})
    cases = sorted(set.intersection(*(set(m) for m in members)))
    labels = np.array([members[0][c][0] for c in cases])
    patients = [members[0][c][2] for c in cases]
    folds = np.array([c[0] for c in cases])
    probs = np.array([[m[c][1] for c in cases] for m in members])
    ensemble = 1 / (1 + np.exp(-logit(probs).mean(axis=0)))

    def report(name: str, p: np.ndarray) -> None:
        per_fold = [roc_auc_score(labels[folds == k], p[folds == k]) for k in sorted(set(folds))]
        print(f"{name}: pooled AUC {roc_auc_score(labels, p):.3f}, folds {np.mean(per_fold):.3f} ± {np.std(per_fold, ddof=1):.3f}")

    for m in range(len(members)):
        report(f"member {m} (seed {args.seed + 1000 * m})", probs[m])
    report(f"ensemble of {len(members)}", ensemble)
    for control in CONTROLS:
        kept = [k for k, c in enumerate(cases) if all(m[c][3].get(control) is not None for m in members)]
        if kept:
            scores = np.array([[m[cases[k]][3][control] for k in kept] for m in members])
            averaged = logit(scores).mean(axis=0)
            print(f"ensemble, {control}: AUC {roc_auc_score(labels[kept], averaged):.3f} "
                  f"(plain {roc_auc_score(labels[kept], ensemble[kept]):.3f} on the same {len(kept)} cases)")
    diff = paired_auc_difference(labels, ensemble, probs[0], patients, n_boot=2000, seed=0)
    ci = diff["ci"]
    print(f"ensemble - member 0: {diff['difference']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] ({len(cases)} cases, {len(set(patients))} patients)")


if __name__ == "__main__":
    main()
