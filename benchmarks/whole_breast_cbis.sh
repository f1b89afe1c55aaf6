#!/usr/bin/env bash
# CBIS-DDSM masses, whole-breast input: the numbers of docs/benchmarks.md, "Whole-breast input".
#
# The default recipe of `mammofuse train`, but the image branch looks at the whole breast
# (`--input full`, the breast's bounding box stretched to 128x128) instead of a lesion crop, on the
# same patient-grouped folds as benchmarks/ablation_cbis_cv.sh. Each lesion is a case: a film with
# two lesions is seen twice, with each lesion's label. The masked control fills every lesion of the
# film from the adjacent tissue; the away control does not apply (no lesion crop to move).
#   base     image, clinical and late fusion (what `predict` would use with no lesion region)
#   random   image arm from random weights (--pretrained none), as a from-scratch whole-image CNN
# Re-running with the same OUT reuses finished (arm, fold) results. Two processes with one thread
# each use two cores best. About 6 minutes per image or late fold at one thread.
#
# Usage: benchmarks/whole_breast_cbis.sh [OUT] [SEED]
set -euo pipefail
OUT=${1:-runs/bench/whole}
SEED=${2:-0}
ARMS=${ARMS:-image,clinical,late}
SHARED=${SHARED:-$(dirname "$0")/../../shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
WB=(--dataset cbis-ddsm --data "$SHARED/cbis-ddsm" --images "$SHARED/cbis-ddsm-mass-800/train" --abnormality mass --split train
    --seed "$SEED" --keep-models --bootstrap 2000 --input full --image-size 128)
mammofuse ablate "${WB[@]}" --out "$OUT/seed$SEED" --variants "$ARMS"
mammofuse ablate "${WB[@]}" --out "$OUT/random-seed$SEED" --variants image --pretrained none
for run in "seed$SEED" "random-seed$SEED"; do cat "$OUT/$run/ablation.md"; done
