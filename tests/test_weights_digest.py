"""Every record names the weights that made it: predict's JSON, streamed and in one array, evaluate's report and
explain's ``explanation.json`` carry one ``weights_digest``, which changes when a weight does."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import make_tiny_model
from typer.testing import CliRunner

from mammofuse.cli import app
from mammofuse.data.sample import Sample
from mammofuse.evaluation.evaluate import evaluate_model
from mammofuse.model.io import load_model, save_model

runner = CliRunner()


def test_predict_evaluate_and_explain_records_carry_the_same_weights_digest(tmp_path: Path, real_dicoms: dict[str, Path]) -> None:
    folder = make_tiny_model(tmp_path / "model", fusion="late")
    scan = str(real_dicoms["P_00173_lcc"])
    args = ["predict", scan, "--model", str(folder), "--density", "2"]
    whole = runner.invoke(app, [*args, "-f", "json"])
    streamed = runner.invoke(app, [*args, "-f", "jsonl"])
    assert whole.exit_code == streamed.exit_code == 0, whole.output + streamed.output
    digest = json.loads(streamed.stdout)["weights_digest"]
    assert len(digest) == 16 and json.loads(whole.stdout)[0]["weights_digest"] == digest

    explained = runner.invoke(app, ["explain", scan, "--model", str(folder), "--density", "2", "--methods", "shap", "--out", str(tmp_path / "x")],
                              env={"OMP_NUM_THREADS": "1"})
    assert explained.exit_code == 0, explained.output
    record = json.loads(next((tmp_path / "x").rglob("explanation.json")).read_text())
    assert record["weights_digest"] == digest and f"weights {digest}" in next((tmp_path / "x").rglob("report.html")).read_text()

    model = load_model(folder)
    assert model.weights_digest() == digest
    cases = [Sample(id=name, patient_id=name, label=i % 2, clinical={"density": "2"}, image_path=str(path))
             for i, (name, path) in enumerate(sorted(real_dicoms.items())[:4])]
    assert evaluate_model(model, cases, n_boot=10).report["model"]["weights_digest"] == digest
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_model(model, tmp_path / "changed")
    changed = runner.invoke(app, ["predict", scan, "--model", str(tmp_path / "changed"), "--density", "2", "-f", "json"])
    assert json.loads(changed.stdout)[0]["weights_digest"] not in (digest, None)
