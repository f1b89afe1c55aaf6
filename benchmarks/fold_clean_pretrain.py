"""What the shipped backbone's pretraining on every training-split film adds to a cross-validated image arm.

``cbis-texture-cnn4`` was pretrained (no labels, lesion boxes avoided) on all the CBIS-DDSM
Mass-Training films, so in a 5-fold CV inside that split it has seen the tissue of each fold's
held-out films. For fold K of the CV (the folds ``ablate --folds 5 --seed S`` makes), this script
pretrains a backbone with the same settings on the fold's training patients' films only, then
trains the default image arm on the fold's training part twice, from the shipped backbone and from
the fold-clean one, and scores the held-out fold: the paired patient-bootstrap difference of the two
AUCs is what seeing the held-out films adds. Each step is kept in OUT and reused when run again.

Usage:
    OMP_NUM_THREADS=2 python benchmarks/fold_clean_pretrain.py OUT [--fold 1] [--seed 0] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--fold", type=int, default=1, help="1-based fold of the CV.")
    parser.add_argument("--seed", type=int, default=0, help="Fold seed (ablate's --seed).")
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()

    from sklearn.metrics import roc_auc_score

    from mammofuse.data import load_dataset
    from mammofuse.evaluation.ablation import make_folds, plan_arms, run_fold
    from mammofuse.evaluation.evaluate import select_split
    from mammofuse.evaluation.metrics import paired_auc_difference
    from mammofuse.inference import lesion_regions
    from mammofuse.training import TrainSettings
    from mammofuse.training.build import common_canvas
    from mammofuse.training.pretrain import PretrainSettings, build_patch_set, pretrain_backbone, save_backbone
    from mammofuse.training.trainer import train

    samples = select_split(load_dataset("cbis-ddsm", args.shared / "cbis-ddsm", [args.shared / "cbis-ddsm-mass-800/train"], "mass"), "train")
    train_part, test_part = make_folds(samples, 5, args.seed)[args.fold - 1]
    args.out.mkdir(parents=True, exist_ok=True)
    clean = args.out / f"backbone-fold{args.fold}-seed{args.seed}.safetensors"
    films: dict[str, list] = {}
    for s in train_part:
        films.setdefault(s.image_path, []).append(s)
    held_films = {s.image_path for s in test_part}
    if not clean.is_file():
        settings = PretrainSettings(canvas=common_canvas(samples), seed=0)  # as `mammofuse pretrain --seed 0` made the shipped one
        avoid = {path: lesion_regions(film, settings.canvas) for path, film in films.items()}
        inputs, targets, owners, errors = build_patch_set(sorted(films), avoid, settings)
        backbone, report = pretrain_backbone(inputs, targets, owners, settings, on_epoch=lambda row: print(json.dumps(row), flush=True))
        save_backbone(backbone, clean, settings, {**report, "skipped_files": len(errors)})
    arm = plan_arms(["image"])[0]
    probs = {}
    for name, weights in (("shipped", "cbis-texture-cnn4"), ("fold-clean", str(clean))):
        settings = TrainSettings.from_dict({"dataset": "cbis-ddsm", "fusion": "image", "pretrained": weights, "val_fraction": 0.0, "seed": args.seed})
        result, cached = run_fold(arm, args.fold - 1, train_part, test_part, settings, args.out / name / f"fold-{args.fold}", [0.0], train)
        probs[name] = result.scores["0"]
        print(f"{name}: AUC {roc_auc_score(result.labels, probs[name]):.4f} ({'reused' if cached else f'{result.seconds:.0f} s'})", flush=True)
    labels, patients = result.labels, result.patients
    summary = {
        "fold": args.fold, "fold_seed": args.seed, "train_cases": len(train_part), "held_out_cases": len(test_part),
        "fold_clean_pretraining_films": len(films), "held_out_films": len(held_films),
        "auc_shipped": round(roc_auc_score(labels, probs["shipped"]), 4), "auc_fold_clean": round(roc_auc_score(labels, probs["fold-clean"]), 4),
        "shipped_minus_clean": paired_auc_difference(labels, probs["shipped"], probs["fold-clean"], patients, n_boot=args.bootstrap, seed=0),
    }
    (args.out / f"summary-fold{args.fold}-seed{args.seed}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
