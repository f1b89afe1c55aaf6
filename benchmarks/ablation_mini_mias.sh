#!/usr/bin/env bash
# Five-arm ablation on mini-MIAS, 5 patient-grouped folds, on CPU (docs/benchmarks.md, "Evaluation and ablation").
#
# Settings and why:
#   resnet18, 64 px ROI crops (1.5x the lesion diameter, >= 64 px source): the lesion is what
#     matters, and 2 shared CPU cores must finish 25 trainings in well under 30 minutes;
#   12 epochs, the first 4 with the (random) backbone frozen on cached features, patience 4:
#     with ~80 training cases per fold more epochs only overfit;
#   random initialisation: no ImageNet weights can be downloaded here;
#   fusion arms with and without modality dropout (p = 0.3), clinical data removed at inference
#   from 0/30/50/100% of held-out cases.
# Re-running with the same OUT reuses finished (arm, fold) results.
#
# Usage: benchmarks/ablation_mini_mias.sh [OUT] [DATA]
set -euo pipefail
OUT=${1:-/tmp/mammofuse-bench/ablation-mini-mias}
DATA=${2:-$(dirname "$0")/../../shared/data/mini-mias}
mkdir -p "$(dirname "$OUT")"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
start=$(date +%s)
${MAMMOFUSE:-mammofuse} ablate --dataset mini-mias --data "$DATA" --out "$OUT" \
  --variants image,clinical,concat,cross,co --folds 5 --missing-rates 0,0.3,0.5,1.0 --modality-dropout on,off \
  --backbone resnet18 --image-size 64 --input roi --epochs 12 --freeze-epochs 4 --patience 4 \
  --batch-size 16 --lr 1e-3 --finetune-lr 1e-4 --seed 0 --device cpu --bootstrap 2000 2>&1 | tee "$OUT.log" >&2
echo "wall time: $(( $(date +%s) - start )) s (OMP_NUM_THREADS=$OMP_NUM_THREADS, $(getconf _NPROCESSORS_ONLN) cores)" | tee -a "$OUT.log"
cat "$OUT/ablation.md"
