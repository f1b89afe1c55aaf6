#!/usr/bin/env bash
# CBIS-DDSM masses, 5-fold patient-grouped CV inside the official training split (the 1,231 800 px
# Mass-Training images with their COCO boxes): the numbers of docs/benchmarks.md, "CBIS-DDSM masses".
#
# Every arm uses the default recipe of `mammofuse train` (cnn4 starting from the shipped
# self-supervised backbone cbis-texture-cnn4, 64 px lesion crops of 1.5x the lesion's diameter, 20 epochs, cosine
# schedule, augmentation, last epoch kept, threshold from the other folds' predictions, no validation
# part: every training patient of a fold trains) on the same
# folds; image arms are also scored on the shortcut controls.
#   base         image, clinical, cross, late (and concat, co with ARMS=...)
#   random       image arm from random weights (--pretrained none): what the backbone adds
#   staged       cross whose image branch starts from the image arm's model of the same fold
#   radiomics    image arm with the radiomics token (RADIOMICS=1)
# The shipped backbone comes from `mammofuse pretrain` on the same images (examples/train_default_model.sh
# re-creates it): no labels, lesion boxes avoided, training-split images only.
# Re-running with the same OUT reuses finished (arm, fold) results. Two processes with one thread
# each use two cores best (about 1.3x one process with two threads).
#
# Usage: benchmarks/ablation_cbis_cv.sh [OUT] [SEED]
set -euo pipefail
OUT=${1:-runs/bench/cbis-cv}
SEED=${2:-0}
ARMS=${ARMS:-image,clinical,cross,late}
SHARED=${SHARED:-$(dirname "$0")/../../shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DATA=(--dataset cbis-ddsm --data "$SHARED/cbis-ddsm" --images "$SHARED/cbis-ddsm-mass-800/train" --abnormality mass --split train)
CB=("${DATA[@]}" --seed "$SEED" --keep-models --bootstrap 2000)
base="$OUT/base-seed$SEED" staged="$OUT/staged-seed$SEED"
mammofuse ablate "${CB[@]}" --out "$base" --variants "$ARMS"
mkdir -p "$staged/arms" && cp -rn "$base/arms/image" "$base/arms/clinical" "$staged/arms/"  # same folds: reused, not retrained
mammofuse ablate "${CB[@]}" --out "$staged" --variants image,clinical,cross --image-init "$base/arms/image"
mammofuse ablate "${CB[@]}" --out "$OUT/random-seed$SEED" --variants image --pretrained none
[ "${RADIOMICS:-0}" = 1 ] && mammofuse ablate "${CB[@]}" --out "$OUT/radiomics-seed$SEED" --variants image --radiomics
for run in base staged random; do cat "$OUT/$run-seed$SEED/ablation.md"; done
