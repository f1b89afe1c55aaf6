"""Does flip test-time augmentation lift the held-out AUC of kept fold models? (docs/benchmarks.md)

Re-scores each fold's held-out cases of a finished `mammofuse ablate --keep-models` run on the
CBIS-DDSM mass images twice: as trained, and with the image backbone's features averaged over the
four flips of each crop (feature maps flipped back before averaging). Nothing is retrained.

    OMP_NUM_THREADS=1 python benchmarks/flip_tta.py runs/cbis-s0-pre image
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from mammofuse.data import load_dataset
from mammofuse.evaluation.evaluate import score_samples
from mammofuse.model import MammoFuse

FLIPS: list[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)]


class FlipAveraged(torch.nn.Module):
    """A backbone whose output is the mean over the four flips of its input."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for dims in FLIPS:
            y = self.inner(torch.flip(x, dims) if dims else x)
            outs.append(torch.flip(y, dims) if dims and y.dim() == 4 else y)
        return torch.stack(outs).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("arm")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    cases = load_dataset("cbis-ddsm", args.shared / "cbis-ddsm", [args.shared / "cbis-ddsm-mass-800" / "train"], "mass")
    by_id = {s.id: s for s in cases if s.split == "train"}
    labels: list[int] = []
    plain: list[float] = []
    flipped: list[float] = []
    for fold_dir in sorted((args.run / "arms" / args.arm).glob("fold-*")):
        record = json.loads((fold_dir / "result.json").read_text(encoding="utf-8"))
        test = [by_id[i] for i in record["ids"]]
        model = MammoFuse.from_pretrained(fold_dir / "model")
        p0, _ = score_samples(model, test)
        model.backbone = FlipAveraged(model.backbone)
        p1, _ = score_samples(model, test)
        y = np.asarray(record["labels"])
        print(f"{fold_dir.name}: AUC {roc_auc_score(y, p0):.3f} plain, {roc_auc_score(y, p1):.3f} flip-averaged", flush=True)
        labels += y.tolist()
        plain += p0.tolist()
        flipped += p1.tolist()
    print(f"pooled: {roc_auc_score(labels, plain):.4f} plain, {roc_auc_score(labels, flipped):.4f} flip-averaged")


if __name__ == "__main__":
    main()
