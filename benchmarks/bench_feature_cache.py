"""Per-epoch time of frozen-backbone epochs on mini-MIAS with the feature cache off, in memory and on disk.

Every run trains the same model (same seed, split and settings) with the backbone frozen for
all epochs; only ``feature_cache`` differs. Epoch 1 of a cached run also extracts the
features; later epochs cost only the heads. A second disk run finds every feature cached.

    OMP_NUM_THREADS=1 python benchmarks/bench_feature_cache.py --data ../shared/data/mini-mias \\
        --backbone resnet18 --backbone resnet50 --image-size 224 --epochs 3

Prints a Markdown table (for docs/benchmarks.md) and writes JSON with ``--json``.

On a CUDA machine, ``--amp-compare`` instead trains ``cross`` (backbone unfrozen, so every
epoch runs it) with mixed precision on and off and reports images/s and peak GPU memory:

    python benchmarks/bench_feature_cache.py --amp-compare --backbone resnet50 --image-size 512 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores visible, OMP_NUM_THREADS={threads}, {gpu}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/mini-mias")
    parser.add_argument("--backbone", action="append", help="repeatable (default resnet18)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--amp-compare", action="store_true", help="CUDA: images/s and peak memory with and without AMP")
    args = parser.parse_args()
    if args.amp_compare:
        amp_compare(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MAMMOFUSE_CACHE"] = str(Path(tmp) / "cache")  # a cold disk cache, removed afterwards
        from mammofuse.data import load_dataset, train_val_split
        from mammofuse.training import TrainSettings, train

        samples = load_dataset("mini-mias", args.data)
        train_samples, val_samples = train_val_split(samples, 0.2, seed=0)
        rows = []
        for backbone in args.backbone or ["resnet18"]:
            base = TrainSettings(
                fusion="cross", backbone=backbone, image_size=args.image_size, epochs=args.epochs,
                freeze_epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs, dataset="mini-mias",
            )
            runs = {}
            for label, cache in (("off", "off"), ("memory", "memory"), ("disk (cold)", "disk"), ("disk (warm)", "disk")):
                out = Path(tmp) / f"{backbone}-{label.replace(' ', '')}"
                result = train(replace(base, feature_cache=cache), train_samples, val_samples, out)
                seconds = [h["seconds"] for h in result.history]
                runs[label] = seconds
                print(f"{backbone} {label}: epochs {seconds} s", flush=True)
            later = lambda s: statistics.mean(s[1:]) if len(s) > 1 else s[0]  # noqa: E731
            off = later(runs["off"])
            for label, seconds in runs.items():
                rows.append({
                    "backbone": backbone, "cache": label, "epoch1_s": seconds[0], "later_epoch_s": later(seconds),
                    "speedup_later_epochs": off / later(seconds),
                })
    print(f"\nMachine: {machine()}")
    print(f"mini-MIAS: {len(train_samples)} train + {len(val_samples)} validation lesions, input {args.image_size}px, batch {args.batch_size}, fusion cross\n")
    print("| backbone | feature cache | epoch 1 (s) | later frozen epochs (s, mean) | speed-up vs off |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backbone']} | {r['cache']} | {r['epoch1_s']:.1f} | {r['later_epoch_s']:.2f} | {r['speedup_later_epochs']:.1f}x |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")


def amp_compare(args: argparse.Namespace) -> None:
    """Fine-tuning throughput (all epochs unfrozen) and peak GPU memory, AMP on vs off."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--amp-compare needs a CUDA GPU")
    from mammofuse.data import load_dataset, train_val_split
    from mammofuse.training import TrainSettings, train

    train_samples, val_samples = train_val_split(load_dataset("mini-mias", args.data), 0.2, seed=0)
    print(f"Machine: {machine()}")
    print("| backbone | input | AMP | epoch (s, mean of epochs 2+) | train+val images/s | peak GPU memory (GiB) |")
    print("|---|---|---|---|---|---|")
    for backbone in args.backbone or ["resnet50"]:
        for amp in (False, True):
            torch.cuda.reset_peak_memory_stats()
            settings = TrainSettings(
                fusion="cross", backbone=backbone, image_size=args.image_size, epochs=args.epochs, freeze_epochs=0,
                batch_size=args.batch_size, patience=args.epochs, device="cuda", amp=amp, workers=4, dataset="mini-mias",
            )
            with tempfile.TemporaryDirectory() as tmp:
                result = train(settings, train_samples, val_samples, Path(tmp))
            seconds = [h["seconds"] for h in result.history]
            epoch = statistics.mean(seconds[1:]) if len(seconds) > 1 else seconds[0]
            images = (len(train_samples) + len(val_samples)) / epoch
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"| {backbone} | {args.image_size} | {'on' if amp else 'off'} | {epoch:.2f} | {images:.1f} | {peak:.2f} |", flush=True)


if __name__ == "__main__":
    main()
