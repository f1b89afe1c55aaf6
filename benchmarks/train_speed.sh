#!/usr/bin/env bash
# Training speed on the CBIS-DDSM mass training images (docs/benchmarks.md, "Data path and training
# speed"): the bundled default's recipe (`mammofuse train --fusion late`, every training lesion, no
# validation part) for EPOCHS epochs on each device given, then lesions per second through training,
# from the run's history (the first epoch, which reads and crops the images, apart).
# Options after the devices go to `mammofuse train`, e.g. the paper's image branch:
#   benchmarks/train_speed.sh cuda -- --backbone resnet50 --image-size 224 --pretrained none
#
# Usage: [EPOCHS=5] [OUT=runs/bench/train-speed] [SHARED=../shared/data] benchmarks/train_speed.sh [DEVICE ...] [-- train options]
set -euo pipefail
SHARED=${SHARED:-$(dirname "$0")/../../shared/data}
OUT=${OUT:-runs/bench/train-speed}
devices=()
while [[ $# -gt 0 && "$1" != "--" ]]; do devices+=("$1"); shift; done
[[ $# -gt 0 ]] && shift
[[ ${#devices[@]} -gt 0 ]] || devices=(cpu)
for device in ${devices[@]+"${devices[@]}"}; do  # the guard: bash before 4.4 calls an empty array unbound under set -u
  out="$OUT/${device//:/-}"
  rm -rf "$out"; mkdir -p "$OUT"
  ${MAMMOFUSE:-mammofuse} train --dataset cbis-ddsm --data "$SHARED/cbis-ddsm" --images "$SHARED/cbis-ddsm-mass-800/train" \
    --abnormality mass --fusion late --val-fraction 0 --epochs "${EPOCHS:-5}" --seed 0 --device "$device" --out "$out" "$@" > "$out.log" 2>&1
  python - "$out" "$device" <<'PYTHON'
import json, statistics, sys
from pathlib import Path
out, device = Path(sys.argv[1]), sys.argv[2]
epochs = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
lesions = json.loads((out / "config.json").read_text())["provenance"]["n_train"]
later = statistics.median(e["seconds"] for e in epochs[1:]) if len(epochs) > 1 else float("nan")
print(f"{device}: {lesions} lesions, first epoch {epochs[0]['seconds']:.1f} s (reads the images), "
      f"later epochs {later:.2f} s median: {lesions / later:.0f} lesions/s")
PYTHON
done
