"""Data-path speed on the 1,231 CBIS-DDSM 800 px training images: is reading and cropping a bottleneck?

Measures, in one run on one machine (run it alone: two cores are easily shared away):

1. a bare decode loop: ``PIL.Image.open(path).convert("L")`` to a numpy array, nothing else;
2. mammofuse's data path per lesion: read (``read_mammogram``), canvas, lesion crop, resize,
   normalise (``load_input`` with the default recipe), as the first training epoch pays it;
3. a cached epoch: ``LesionDataset`` with ``cache=True`` after the first pass (what every later
   epoch pays), against the training step it feeds (forward + backward of the default model).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_data_path.py [--limit 400]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=400, help="lesions to time (of 1,304)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from mammofuse.data import load_dataset
    from mammofuse.inference import LesionDataset, load_input
    from mammofuse.model import MammoFuse, ModelConfig
    from mammofuse.training import TrainSettings

    samples = load_dataset("cbis-ddsm", SHARED / "cbis-ddsm", [SHARED / "cbis-ddsm-mass-800" / "train"], "mass")
    samples = [s for s in samples if s.split == "train"][: args.limit]
    recipe = TrainSettings().recipe((800, 800))

    start = time.perf_counter()
    for s in samples:
        np.asarray(Image.open(s.image_path).convert("L"))
    bare = len(samples) / (time.perf_counter() - start)

    start = time.perf_counter()
    for s in samples:
        load_input(s, recipe)
    path = len(samples) / (time.perf_counter() - start)

    dataset = LesionDataset(samples, recipe, "cbis-ddsm-v1", cache=True)
    for i in range(len(dataset)):
        dataset[i]
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    cached = len(samples) / (time.perf_counter() - start)

    model = MammoFuse(ModelConfig(fusion="cross", backbone="cnn4", preprocessing=recipe.as_dict())).train()
    optimiser = torch.optim.AdamW(model.parameters())
    batch = torch.stack([dataset[i]["image"] for i in range(32)])
    clinical, mask = torch.zeros(32, 36), torch.ones(32, 5, dtype=torch.bool)
    start = time.perf_counter()
    for _ in range(5):
        loss = model(batch, clinical, mask).logits.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    step = 5 * 32 / (time.perf_counter() - start)
    print(json.dumps({
        "lesions": len(samples), "threads": torch.get_num_threads(),
        "bare_pil_decode_img_per_s": round(bare, 1), "data_path_first_epoch_img_per_s": round(path, 1),
        "data_path_vs_bare": round(path / bare, 3), "cached_epoch_img_per_s": round(cached, 1),
        "train_step_img_per_s": round(step, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
