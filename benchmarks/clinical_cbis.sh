#!/usr/bin/env bash
# Clinical-only model on the CBIS-DDSM training CSVs (docs/benchmarks.md, "Evaluation and ablation").
#
#  1. train a clinical-only model on the official training CSVs (mass + calc); validation is carved
#     out by patient (20%); the last of 30 epochs is kept; the threshold is chosen there;
#  2. evaluate it on the official test rows that are present (only 10 mass rows, 2 patients, in
#     ../shared/data: far too few for a test result; the full split has 378 mass + 326 calc rows);
#  3. a patient-grouped 5-fold CV estimate inside the training CSVs (mammofuse ablate --variants clinical),
#     and a logistic-regression baseline on the same encoding and the same folds, for comparison with
#     evaluation.md's 0.835 (LR, mass, official test split).
# Inputs never include `assessment` or `subtlety`.
#
# Usage: benchmarks/clinical_cbis.sh [OUT] [DATA]
set -euo pipefail
OUT=${1:-/tmp/mammofuse-bench/clinical-cbis}
DATA=${2:-$(dirname "$0")/../../shared/data/cbis-ddsm}
MAMMOFUSE=${MAMMOFUSE:-mammofuse}
PYTHON=${PYTHON:-python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
SETTINGS=(--epochs 30 --lr 1e-3 --batch-size 64 --proj-dim 100 --seed 0 --device cpu)

start=$(date +%s)
[ -f "$OUT/model/config.json" ] || \
  $MAMMOFUSE train --fusion clinical --dataset cbis-ddsm --data "$DATA" --out "$OUT/model" "${SETTINGS[@]}"
echo "train: $(( $(date +%s) - start )) s"

# Exit code 1 here would mean a missed bound; the gate is shown, not enforced, on 10 rows.
$MAMMOFUSE evaluate --model "$OUT/model" --dataset cbis-ddsm --data "$DATA" --split test \
  --compare paper --plots "$OUT/plots-test" --output "$OUT/test.json" --fail-under auc=0.835 || echo "(fail-under exit code $?)"

start=$(date +%s)
$MAMMOFUSE ablate --dataset cbis-ddsm --data "$DATA" --split train --variants clinical --folds 5 \
  --out "$OUT/cv" --bootstrap 2000 "${SETTINGS[@]}"
echo "5-fold CV: $(( $(date +%s) - start )) s"

# Logistic regression on the same multi-hot encoding and the same patient-grouped folds.
$PYTHON - "$DATA" <<'PY'
import sys
import numpy as np
from sklearn.linear_model import LogisticRegression
from mammofuse.clinical import load_schema
from mammofuse.data import load_dataset, kfold_splits
from mammofuse.evaluation.metrics import auc_or_none, bootstrap_auc

samples = [s for s in load_dataset("cbis-ddsm", sys.argv[1]) if s.split == "train"]
schema = load_schema()
index = {s.id: i for i, s in enumerate(samples)}
X = np.stack([schema.encode(s.clinical)[0] for s in samples])
probs = np.full(len(samples), np.nan)
aucs = {"all": [], "mass": [], "calc": []}
for train, test in kfold_splits(samples, 5, seed=0):
    tr, te = [index[s.id] for s in train], [index[s.id] for s in test]
    lr = LogisticRegression(max_iter=2000, C=1.0).fit(X[tr], [samples[i].label for i in tr])
    probs[te] = lr.predict_proba(X[te])[:, 1]
    for kind in aucs:
        rows = [i for i in te if kind == "all" or samples[i].abnormality == kind]
        aucs[kind].append(auc_or_none(np.array([samples[i].label for i in rows]), probs[rows]))
for kind, values in aucs.items():
    rows = [i for i, s in enumerate(samples) if kind == "all" or s.abnormality == kind]
    y, p, g = [samples[i].label for i in rows], probs[rows], [samples[i].patient_id for i in rows]
    ci = bootstrap_auc(y, p, g, 2000, 0)
    print(f"LR baseline, 5-fold patient-grouped CV, {kind}: AUC {np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} "
          f"(pooled {auc_or_none(np.array(y), p):.3f}, 95% CI {ci[0]:.3f}-{ci[1]:.3f})")
PY
