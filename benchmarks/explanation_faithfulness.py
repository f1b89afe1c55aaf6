"""Do the image explanations (Grad-CAM, LIME) show what the model uses, and the lesion? Out of fold, on kept models.

For each fold model of a finished ``mammofuse ablate --keep-models`` run (lesion-crop arms), every held-out case is
explained as ``mammofuse explain`` does (the same input; Grad-CAM at a layer, or image LIME with its 500 samples and
seed 0; a LIME map is each superpixel's positive weight) and two questions are measured:

* **Faithfulness (deletion).** The ``q`` share of the crop's pixels where the map is highest is replaced by the
  crop's mean, and the case is scored again with its findings. If the map shows the evidence the model used, removing
  it changes the score more than removing the same share where *another* held-out case's map is highest (same shape
  statistics, wrong case): the control. Reported: the mean logit change, own minus other with a patient-bootstrap
  interval, and the held-out AUC after each deletion, paired.
* **Lesion share.** The share of the map's mass inside the lesion circle (the region the crop is centred on), over
  the circle's share of the crop: above 1, the map leans on the lesion rather than the tissue around it. Crops are
  centred on the lesion, so a map centred by habit scores above 1 too: the other case's map gives that baseline.

Maps that are zero everywhere (no region raised the score) or of one value are counted and left out of both.

    python benchmarks/explanation_faithfulness.py /work/cbis-s18/A/out --arms image,concat --dataset cbis-ddsm \\
        --data ../shared/data/cbis-ddsm --images ../shared/data/cbis-ddsm-mass-800/train
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mammofuse.data import load_dataset
from mammofuse.data.sample import Sample
from mammofuse.evaluation.ablation_results import read_arm
from mammofuse.evaluation.metrics import auc_or_none, paired_auc_difference
from mammofuse.explainers.gradcam import grad_cam, is_flat, upsample
from mammofuse.explainers.inputs import CaseInputs, FixedClinicalScorer, prepare_inputs
from mammofuse.explainers.lime_explain import lime_image
from mammofuse.explainers.options import DEFAULT_LIME_SAMPLES
from mammofuse.imaging.preprocess import lesion_side
from mammofuse.model import MammoFuse
from mammofuse.model.io import load_model


def lesion_disc(size: int, radius: float, side: int) -> np.ndarray:
    """The lesion circle in a ``size`` px model input of a crop ``side`` px wide centred on it."""
    r = radius * size / side
    yy, xx = np.mgrid[:size, :size] + 0.5 - size / 2
    return (yy**2 + xx**2) <= r**2


def deleted(image: torch.Tensor, heat: np.ndarray, share: float) -> torch.Tensor:
    """``image`` with the ``share`` of its pixels where ``heat`` is highest set to the image's mean."""
    flat = heat.reshape(-1)
    top = np.argsort(-flat, kind="stable")[: int(round(share * flat.size))]
    out = image.clone().reshape(-1)
    out[torch.from_numpy(top)] = image.mean()
    return out.reshape(image.shape)


def case_map(model: MammoFuse, inputs: CaseInputs, method: str, seed: int) -> np.ndarray | None:
    """The case's map at the model input's size (``gradcam:LAYER`` or ``lime``), None where it shows no location."""
    size = inputs.image.shape[-1]
    if method == "lime":
        explained = lime_image(FixedClinicalScorer(model, inputs), inputs.image[0, 0].numpy(), DEFAULT_LIME_SAMPLES, seed)
        heat = np.clip(explained.weights[explained.segments], 0, None)  # superpixels that raised the score
        return heat if heat.max() > 0 else None
    cam = grad_cam(model, inputs.image, inputs.clinical, inputs.mask, method.removeprefix("gradcam:"), **inputs.extra())
    return None if cam.max() <= 0 or is_flat(cam) else upsample(cam, (size, size))


def explain_fold(model_dir: Path, cases: list[Sample], methods: list[str], shares: list[float], seed: int) -> dict[str, list[dict]]:
    """Per method and held-out case: its logit, its map's lesion share, and the logits after each deletion (own map,
    another case's)."""
    model = load_model(model_dir).eval()
    recipe = model.config.recipe
    prepared = [prepare_inputs(model, sample) for sample in cases]
    out = {}
    for method in methods:
        maps = [case_map(model, inputs, method, seed) for inputs in prepared]
        usable = [i for i, m in enumerate(maps) if m is not None]
        order = [int(i) for i in np.random.default_rng(seed).permutation(usable)]
        partner = {order[k]: order[k - 1] for k in range(len(order))} if len(order) > 1 else {}  # another case's map
        rows = []
        for i, inputs in enumerate(prepared):
            logits = FixedClinicalScorer(model, inputs).logits  # with the case's findings, as explain scores it
            sample = inputs.sample
            row = {"id": sample.id, "patient": sample.patient_id, "label": sample.label, "logit": float(logits(inputs.image)[0]),
                   "usable": i in partner}
            if row["usable"]:
                own, other = maps[i], maps[partner[i]]
                disc = lesion_disc(own.shape[0], inputs.lesion_radius, lesion_side(inputs.lesion_radius, recipe))
                area = disc.mean()
                row["lesion_share"] = float(own[disc].sum() / own.sum() / area)
                row["lesion_share_other"] = float(other[disc].sum() / other.sum() / area)
                for q in shares:
                    row[f"own_{q}"] = float(logits(deleted(inputs.image, own, q))[0])
                    row[f"other_{q}"] = float(logits(deleted(inputs.image, other, q))[0])
            rows.append(row)
        out[method] = rows
    return out


def mean_interval(values: np.ndarray, patients: list[str], n_boot: int, seed: int = 0) -> list[float]:
    """95% percentile interval of the mean of per-case ``values``, resampling patients (their cases together)."""
    by_patient: dict[str, list[int]] = {}
    for i, patient in enumerate(patients):
        by_patient.setdefault(patient, []).append(i)
    groups = [np.asarray(v) for v in by_patient.values()]
    rng = np.random.default_rng(seed)
    means = [values[np.concatenate([groups[j] for j in rng.integers(0, len(groups), len(groups))])].mean() for _ in range(n_boot)]
    return [float(v) for v in np.quantile(means, [0.025, 0.975])]


def report(arm: str, method: str, rows: list[dict], shares: list[float], n_boot: int) -> dict:
    """Pooled figures over the folds' held-out cases with a usable map (``auc``: every case's, as the run scored it)."""
    kept = [r for r in rows if r["usable"]]
    y, patients = [r["label"] for r in kept], [r["patient"] for r in kept]
    plain = [r["logit"] for r in kept]
    out = {"arm": arm, "method": method, "cases": len(rows), "usable": len(kept),
           "auc": auc_or_none([r["label"] for r in rows], [r["logit"] for r in rows]),
           "lesion_share": float(np.median([r["lesion_share"] for r in kept])),
           "lesion_share_other": float(np.median([r["lesion_share_other"] for r in kept])),
           "lesion_share_above_other": float(np.mean([r["lesion_share"] > r["lesion_share_other"] for r in kept])),
           "lesion_share_own_minus_other": float(np.mean([r["lesion_share"] - r["lesion_share_other"] for r in kept])),
           "lesion_share_own_minus_other_ci": mean_interval(
               np.array([r["lesion_share"] - r["lesion_share_other"] for r in kept]), patients, n_boot),
           "deletion": {}}
    for q in shares:
        own, other = [r[f"own_{q}"] for r in kept], [r[f"other_{q}"] for r in kept]
        paired = paired_auc_difference(y, own, other, patients, n_boot=n_boot)
        out["deletion"][str(q)] = {
            "auc_own": auc_or_none(y, own), "auc_other": auc_or_none(y, other),
            "auc_own_minus_other": paired["difference"] if paired else None, "ci": paired["ci"] if paired else None,
            "logit_change_own": float(np.mean(np.subtract(own, plain))),
            "logit_change_other": float(np.mean(np.subtract(other, plain))),
            "own_minus_other": float(np.mean(np.subtract(own, other))),
            "own_minus_other_ci": mean_interval(np.subtract(own, other), patients, n_boot),
            "own_lowers_more": float(np.mean(np.less(own, other))),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an ablate --keep-models output folder")
    parser.add_argument("--arms", default="image")
    parser.add_argument("--methods", default="gradcam:backbone.layer4,gradcam:backbone.layer3,lime",
                        help="gradcam:LAYER and lime (image superpixels, as explain runs them)")
    parser.add_argument("--shares", default="0.1,0.25", help="shares of the crop's pixels deleted")
    parser.add_argument("--dataset", default="cbis-ddsm")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=Path, nargs="*")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the figures (and each case's) as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shares = [float(v) for v in args.shares.split(",")]
    by_id = {s.id: s for s in load_dataset(args.dataset, args.data, args.images or None)}
    methods = args.methods.split(",")
    results = []
    for arm in args.arms.split(","):
        folds = read_arm(args.run / "arms" / arm)
        if not folds:
            raise SystemExit(f"{args.run}: no fold results of arm {arm!r}")
        rows: dict[str, list[dict]] = {method: [] for method in methods}
        for fold in folds:
            model_dir = args.run / "arms" / arm / f"fold-{fold.fold + 1}" / "model"
            if not (model_dir / "model.safetensors").is_file():
                raise SystemExit(f"{model_dir}: no kept model (run ablate with --keep-models)")
            missing = [c for c in fold.ids if c not in by_id]
            if missing:
                raise SystemExit(f"{args.data}: {len(missing)} held-out cases of the run are not in this dataset (e.g. {missing[0]})")
            cases = [by_id[c] for c, p in zip(fold.ids, fold.scores["0"]) if p is not None]
            for method, method_rows in explain_fold(model_dir, cases, methods, shares, args.seed + fold.fold).items():
                rows[method] += method_rows
        for method in methods:
            result = report(arm, method, rows[method], shares, args.bootstrap)
            results.append({**result, "per_case": rows[method]})
            print(json.dumps(result), flush=True)
    if args.output:
        args.output.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
