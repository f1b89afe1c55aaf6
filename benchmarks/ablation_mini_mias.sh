#!/usr/bin/env bash
# Five-arm ablation on mini-MIAS, 5 patient-grouped folds, fold seeds 0 and 1 (SEEDS="2 3" for others), on CPU
# (docs/benchmarks.md, "mini-MIAS ablation").
#
# The default training recipe (cnn4 from the shipped backbone on 64 px lesion crops, 20 epochs, cosine
# schedule, augmentation, last epoch kept, every training patient of a fold trains), with one
# mini-MIAS specific: some calcification rows have no coordinates, so those cases are cropped to the
# whole breast (--without-region breast) rather than scored without their image. Image arms are also scored on the shortcut controls.
# Re-running with the same OUT reuses finished (arm, fold) results. Options after OUT and DATA go to
# `mammofuse ablate`, e.g. the transfer recipe of docs/benchmarks.md (the bundled CBIS-DDSM model's
# image branch, frozen, with the radiomics token):
#   SEEDS="0 1 2 3" benchmarks/ablation_mini_mias.sh runs/bench/mias-transfer "" --pretrained default --freeze-epochs 20 --radiomics
#
# Usage: [SEEDS="0 1"] benchmarks/ablation_mini_mias.sh [OUT] [DATA] [ablate options...]
set -euo pipefail
OUT=${1:-runs/bench/ablation-mini-mias}
DATA=${2:-$(dirname "$0")/../../shared/data/mini-mias}
shift $(( $# < 2 ? $# : 2 ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for seed in ${SEEDS:-0 1}; do
  start=$(date +%s)
  ${MAMMOFUSE:-mammofuse} ablate --dataset mini-mias --data "$DATA" --out "$OUT-seed$seed" \
    --variants image,clinical,concat,cross,co --folds 5 --without-region breast --seed "$seed" --device cpu \
    --bootstrap 2000 --format json "$@" > "$OUT-seed$seed.json"
  echo "seed $seed wall time: $(( $(date +%s) - start )) s (OMP_NUM_THREADS=$OMP_NUM_THREADS)"
  cat "$OUT-seed$seed/ablation.md"
done
