"""The texture-feature baseline of the evaluation notes, with the shortcut controls of the image arms.

A logistic regression on the texture statistics (:mod:`mammofuse.imaging.radiomics`) of the very
crops the image arm sees (the default recipe: 64 px; ``--roi-context`` as the arm compared), on the folds of
``mammofuse ablate`` (same dataset, fold count and seed give the same patient-grouped folds). Its
regularisation is chosen inside each training part by a patient-grouped inner CV. The held-out
cases are also scored with the lesion masked out and on a patch away from the lesion, as `ablate`
scores image arms. ``--compare RUN ARM`` adds the paired AUC difference against an arm of a
finished run on the same folds, and that of the two averaged. ``--features size`` fits the lesion's
log radius alone: how far the annotated size takes a model, which the controls keep. ``--with-clinical``
adds the one-hot clinical findings (the fusion arms' 36 values) to the features: the evaluation
notes' "GLCM texture + clinical, one logistic regression", the baseline of the fusion arms.

    OMP_NUM_THREADS=1 python benchmarks/texture_baseline.py --dataset mini-mias \\
        --data ../shared/data/mini-mias --seed 0 --roi-context 2 --compare runs/mias-seed0 image
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from paired_runs import pooled  # the sibling script (benchmarks/ is on sys.path when run as a script)
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mammofuse.data import load_dataset
from mammofuse.errors import MammofuseError
from mammofuse.evaluation.ablation import make_folds
from mammofuse.evaluation.evaluate import select_split
from mammofuse.evaluation.metrics import auc_or_none, bootstrap_auc, paired_auc_difference
from mammofuse.imaging.radiomics import N_TEXTURE
from mammofuse.inference import LesionDataset
from mammofuse.model.config import DEFAULT_VOCABULARY
from mammofuse.training.build import common_canvas
from mammofuse.training.settings import TrainSettings

CONTROLS = (None, "masked", "away")
CS = np.logspace(-3, 1, 9)
# Which entries of the radiomics vector each --features choice fits on (the last two: log radius, present).
COLUMNS = {"texture": slice(0, N_TEXTURE), "radiomics": slice(0, N_TEXTURE + 2), "size": slice(N_TEXTURE, N_TEXTURE + 2)}


def features(samples: list, recipe, vocabulary: str, control: str | None, columns: slice, clinical: bool = False) -> np.ndarray:
    """Radiomics vectors of every sample's crop under a control (then its clinical vector, if asked); NaN rows where no crop can be made."""
    dataset = LesionDataset(samples, recipe, vocabulary, radiomics=True, control=control)
    rows = []
    for i in range(len(dataset)):
        item = dataset[i]
        row = item["radiomics"].numpy()[columns] if bool(item["image_present"]) else np.full(columns.stop - columns.start, np.nan)
        rows.append(np.concatenate([row, item["clinical"].numpy()]) if clinical else row)
    return np.asarray(rows, dtype=np.float64)


def fit(x: np.ndarray, y: np.ndarray, patients: np.ndarray, seed: int):
    """Standardised logistic regression, C by a patient-grouped inner 5-fold CV on this training part."""
    inner = list(StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(x, y, patients))
    model = LogisticRegressionCV(Cs=CS, cv=inner, scoring="roc_auc", max_iter=5000, l1_ratios=(0.0,), use_legacy_attributes=False)
    return make_pipeline(StandardScaler(), model).fit(x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mini-mias")
    parser.add_argument("--data", required=True)
    parser.add_argument("--images")
    parser.add_argument("--abnormality", default="all")
    parser.add_argument("--split", default=None, help="keep only this split (cbis-ddsm: train)")
    parser.add_argument("--without-region", default="breast", choices=("breast", "skip"))
    parser.add_argument("--roi-context", type=float, default=TrainSettings.roi_context,
                        help="crop side as a multiple of the lesion's diameter (that of the arm compared with)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", choices=tuple(COLUMNS), default="texture",
                        help="texture statistics only, with the lesion's log radius (radiomics), or that radius alone (size)")
    parser.add_argument("--with-clinical", action="store_true", help="add the one-hot clinical findings to the features")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--compare", nargs=2, metavar=("RUN", "ARM"))
    args = parser.parse_args()

    try:
        samples = load_dataset(args.dataset, args.data, args.images, args.abnormality)
        samples = select_split(samples, args.split) if args.split else samples
    except MammofuseError as exc:
        raise SystemExit(f"error: {exc}") from None
    settings = TrainSettings(without_region=args.without_region, roi_context=args.roi_context)
    recipe = settings.recipe(common_canvas(samples))
    columns = COLUMNS[args.features]
    x = {c: features(samples, recipe, DEFAULT_VOCABULARY, c, columns, args.with_clinical) for c in CONTROLS}
    y = np.array([s.label for s in samples])
    patients = np.array([s.patient_id for s in samples])
    index = {s.id: i for i, s in enumerate(samples)}
    probs = {c: np.full(len(samples), np.nan) for c in CONTROLS}
    fold_of = np.zeros(len(samples), int)
    for fold, (train, test) in enumerate(make_folds(samples, args.folds, args.seed)):
        a = np.array([index[s.id] for s in train])
        a = a[np.isfinite(x[None][a]).all(1)]
        b = np.array([index[s.id] for s in test])
        fold_of[b] = fold
        model = fit(x[None][a], y[a], patients[a], args.seed)
        for c in CONTROLS:
            ok = b[np.isfinite(x[c][b]).all(1)]
            probs[c][ok] = model.predict_proba(x[c][ok])[:, 1]

    plain = np.isfinite(probs[None])
    ci = bootstrap_auc(y[plain], probs[None][plain], patients[plain], n_boot=args.bootstrap, seed=args.seed)
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    name = args.features + (" + clinical" if args.with_clinical else "")
    print(f"{args.dataset} seed {args.seed}, {name} LR, {plain.sum()} cases: pooled AUC "
          f"{auc_or_none(y[plain], probs[None][plain]):.3f}{interval}")
    for c in CONTROLS[1:]:
        same = plain & np.isfinite(probs[c])
        print(f"  {c}: {auc_or_none(y[same], probs[c][same]):.3f} (plain on the same {same.sum()} cases "
              f"{auc_or_none(y[same], probs[None][same]):.3f})")
    if args.compare:
        run, arm = Path(args.compare[0]), args.compare[1]
        other = pooled(run, arm)  # case id -> (label, probability, patient, fold)
        common = [index[k] for k in other if k in index and plain[index[k]]]
        if any(other[samples[i].id][3] != fold_of[i] for i in common):
            raise SystemExit(f"{run}: its folds differ from these (another dataset, fold count or seed)")
        theirs = np.array([other[samples[i].id][1] for i in common])
        ours, labels, groups = probs[None][common], y[common], patients[common]
        for label, value in ((f"{name} LR - {arm}", ours), (f"mean of both - {arm}", (ours + theirs) / 2)):
            diff = paired_auc_difference(labels, value, theirs, groups, n_boot=args.bootstrap, seed=args.seed)
            interval = f" [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}]" if diff and diff["ci"] else ""
            print(f"  {label} ({run}): {diff['difference']:+.3f}{interval} on {len(common)} cases "
                  f"({arm} alone {auc_or_none(labels, theirs):.3f})")


if __name__ == "__main__":
    main()
