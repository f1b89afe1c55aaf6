"""`train --threshold-from RUN`: a final model's threshold from the out-of-fold predictions of its recipe's cross-validation."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mammofuse.cli import app
from mammofuse.errors import MammofuseError

runner = CliRunner()


@pytest.fixture(scope="module")
def cv(mini_mias: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-fold cross-validation of the clinical recipe on every mini-MIAS case (2 epochs)."""
    out = tmp_path_factory.mktemp("cv")
    result = runner.invoke(app, ["ablate", "--dataset", "mini-mias", "--data", str(mini_mias), "--variants", "clinical", "--folds", "3",
                                 "--epochs", "2", "--device", "cpu", "--bootstrap", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _train(mini_mias: Path, out: Path, *extra: str):
    return runner.invoke(app, ["train", "--dataset", "mini-mias", "--data", str(mini_mias), "--fusion", "clinical", "--epochs", "2",
                               "--device", "cpu", "--val-fraction", "0", "--out", str(out), *extra])


def test_the_calibration_and_threshold_come_from_the_pooled_out_of_fold_predictions(mini_mias, cv, tmp_path):
    from mammofuse.data import load_dataset
    from mammofuse.evaluation.calibration import fit_platt
    from mammofuse.evaluation.evaluate import score_samples
    from mammofuse.evaluation.metrics import youden_threshold
    from mammofuse.model import load_model

    labels, probs = [], []
    for path in sorted((cv / "arms" / "clinical").glob("fold-*/result.json")):
        record = json.loads(path.read_text())
        labels += record["labels"]
        probs += record["scores"]["0"]
    calibration = fit_platt(labels, probs)
    expected = youden_threshold(np.array(labels), calibration.apply(probs))
    assert expected != 0.5 and calibration.slope != pytest.approx(1.0, abs=0.01)

    result = _train(mini_mias, tmp_path / "final", "--threshold-from", str(cv))
    assert result.exit_code == 0, result.output
    assert f"threshold {expected:.3f} (out-of-fold, {cv})" in " ".join(result.output.split())
    model = load_model(tmp_path / "final")
    config = model.config
    assert config.threshold == pytest.approx(expected)
    assert config.calibration == pytest.approx(calibration.as_dict())
    cases = load_dataset("mini-mias", mini_mias)
    assert config.provenance["threshold_from"] == {"value": expected, "arm_folder": str(cv / "arms" / "clinical"), "folds": 3,
                                                   "cases": len(cases), "calibration": calibration.as_dict()}
    assert config.provenance["n_val"] == 0 and config.provenance["n_train"] == len(cases)
    card = " ".join((tmp_path / "final" / "README.md").read_text().split())
    assert f"Decision threshold {expected:.3f}: Youden's J on the pooled out-of-fold predictions" in card
    assert f"(3-fold cross-validation of this recipe on these {len(cases)} cases), recalibrated;" in card
    assert f"logit x {calibration.slope:.3f} " in card
    assert "no validation part: every patient trained" in card and "Metrics (validation)" not in card
    malignant = sum(int(c.label) for c in cases)
    assert config.provenance["n_train_malignant"] == malignant
    assert f"conditional on the training cases' mix, {malignant / len(cases):.0%} of them malignant ({malignant} of {len(cases)} lesions)" in card

    # the model scores through the map: the same network without it gives the raw scores
    scored, _ = score_samples(model, cases[:20])
    config.calibration = None
    raw, _ = score_samples(model, cases[:20])
    assert np.allclose(scored, calibration.apply(raw), atol=1e-6) and not np.allclose(scored, raw, atol=1e-3)

    arm = _train(mini_mias, tmp_path / "arm", "--threshold-from", str(cv / "arms" / "clinical"))  # one arm's folder does too
    assert arm.exit_code == 0, arm.output
    assert load_model(tmp_path / "arm").config.threshold == pytest.approx(expected)
    published = _train(mini_mias, tmp_path / "published", "--threshold-from", str(cv), "--no-patient-digests")  # records no patients: same recipe
    assert published.exit_code == 0, published.output
    assert load_model(tmp_path / "published").config.threshold == pytest.approx(expected)


def test_a_threshold_from_another_recipe_other_cases_or_no_cross_validation_is_refused(mini_mias, cv, tmp_path):
    from mammofuse.data import load_dataset
    from mammofuse.evaluation.ablation import plan_arms, run_ablation
    from mammofuse.evaluation.oof import oof_threshold
    from mammofuse.model import ModelConfig
    from mammofuse.training import TrainSettings

    other = _train(mini_mias, tmp_path / "other", "--threshold-from", str(cv), "--lr", "0.01")
    assert other.exit_code == 2
    assert "cross-validated another recipe (lr 0.001 there, 0.01 here); its threshold does not fit this model" in " ".join(other.output.split())
    concat = _train(mini_mias, tmp_path / "concat", "--threshold-from", str(cv), "--fusion", "concat")
    assert concat.exit_code == 2 and "no cross-validation results" in concat.output
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())

    settings = TrainSettings(fusion="clinical", epochs=2, device="cpu", dataset="mini-mias")
    config = ModelConfig(fusion="clinical")
    ids = load_dataset("mini-mias", mini_mias)
    assert oof_threshold(cv, settings, ids, config).folds == 3
    with pytest.raises(MammofuseError, match=rf"held out {len(ids)} cases, this run trains {len(ids) - 1} \(1 not trained here, 0 never"):
        oof_threshold(cv, settings, ids[:-1], config)
    relabelled = [dataclasses.replace(ids[0], label=1 - ids[0].label), *ids[1:]]  # the same case ids, other data
    with pytest.raises(MammofuseError, match=r"\(1 not trained here, 1 never held out there, counting a case whose label or patient"):
        oof_threshold(cv, settings, relabelled, config)
    old = tmp_path / "old"  # a run made before a setting existed: that setting had another default then
    shutil.copytree(cv / "arms" / "clinical", old)
    for result in old.glob("fold-*/result.json"):
        record = json.loads(result.read_text())
        del record["settings"]["aux_findings"]
        result.write_text(json.dumps(record))
    with pytest.raises(MammofuseError, match=r"another recipe \(aux_findings not recorded there\)"):
        oof_threshold(old, settings, ids, config)
    one = tmp_path / "one" / "fold-1"
    shutil.copytree(cv / "arms" / "clinical" / "fold-1", one)
    with pytest.raises(MammofuseError, match="1 fold; out-of-fold predictions need a k-fold cross-validation"):
        oof_threshold(one.parent, settings, ids, config)
    (one / "result.json").write_text("{not json")
    with pytest.raises(MammofuseError, match="result.json: not a readable fold result"):
        oof_threshold(one.parent, settings, ids, config)
    with pytest.raises(MammofuseError, match="threshold_from is for `train`"):
        run_ablation([], plan_arms(["clinical"]), TrainSettings(threshold_from=str(cv)), tmp_path / "ablate")


def test_the_map_is_fitted_on_the_cases_it_applies_to_and_the_threshold_on_the_scores_as_given(mini_mias, cv):
    """A case without findings is scored raw by a calibrated clinical model: it is left out of the fit, not of the threshold."""
    from mammofuse.data import load_dataset
    from mammofuse.evaluation.calibration import fit_platt
    from mammofuse.evaluation.metrics import youden_threshold
    from mammofuse.evaluation.oof import oof_threshold
    from mammofuse.model import ModelConfig
    from mammofuse.training import TrainSettings

    cases = load_dataset("mini-mias", mini_mias)
    bare = {c.id for c in cases[::3]}
    cases = [dataclasses.replace(c, clinical={}) if c.id in bare else c for c in cases]
    labels, probs, ids = [], [], []
    for path in sorted((cv / "arms" / "clinical").glob("fold-*/result.json")):
        record = json.loads(path.read_text())
        labels += record["labels"]
        probs += record["scores"]["0"]
        ids += record["ids"]
    complete = np.array([i not in bare for i in ids])
    labels, probs = np.array(labels), np.array(probs)
    expected = fit_platt(labels[complete], probs[complete])
    found = oof_threshold(cv, TrainSettings(fusion="clinical", epochs=2, device="cpu", dataset="mini-mias"), cases, ModelConfig(fusion="clinical"))
    assert found.calibration == expected and expected != fit_platt(labels, probs)
    assert found.value == youden_threshold(labels, np.where(complete, expected.apply(probs), probs))
