"""Start-up cost of `mammofuse --help` against `python -c "import typer, rich"` (goal: at most 3x).

Also timed: the `--help` of a two-command Typer app, what any Typer + Rich CLI pays before its own code
(Rich help rendering imports rich.markdown, rich.traceback and pygments, which `import typer, rich` does not).

Usage: python benchmarks/bench_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

BARE_APP = """
import typer
app = typer.Typer()
@app.command()
def one() -> None:
    \"\"\"First.\"\"\"
@app.command()
def two() -> None:
    \"\"\"Second.\"\"\"
app()
"""


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    cli = shutil.which("mammofuse") or sys.exit("mammofuse is not installed in this environment")
    baseline = median_seconds([sys.executable, "-c", "import typer, rich"], args.runs)
    bare_time = median_seconds([sys.executable, "-c", BARE_APP, "--help"], args.runs)
    help_time = median_seconds([cli, "--help"], args.runs)
    version_time = median_seconds([cli, "--version"], args.runs)
    print(f"python -c 'import typer, rich': {baseline * 1000:.0f} ms (median of {args.runs})")
    print(f"a bare two-command Typer --help: {bare_time * 1000:.0f} ms  ratio {bare_time / baseline:.2f}x")
    print(f"mammofuse --help:               {help_time * 1000:.0f} ms  ratio {help_time / baseline:.2f}x")
    print(f"mammofuse --version:            {version_time * 1000:.0f} ms  ratio {version_time / baseline:.2f}x")


if __name__ == "__main__":
    main()
