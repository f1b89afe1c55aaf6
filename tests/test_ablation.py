"""`mammofuse ablate`: arms, identical folds, missing clinical data at inference, resumable results, skipped arms."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mammofuse.cli import app
from mammofuse.errors import MammofuseError
from mammofuse.evaluation import AblationResult, ArmSummary, FoldResult
from mammofuse.evaluation.ablation import drop_clinical, make_folds, plan_arms, run_ablation
from mammofuse.evaluation.ablation_results import fold_thresholds, markdown_table, summarize_arm, summarize_arms
from mammofuse.evaluation.calibration import calibration_summary
from mammofuse.jsontext import json_text
from mammofuse.training import TrainCallback

runner = CliRunner()
DATA = Path(__file__).parent / "data"
# Synthetic fold results and what the dict-based ablation code (before FoldResult/ArmSummary) made of them.
SUMMARIES = json.loads((DATA / "ablation_summaries.json").read_text(encoding="utf-8"))


@dataclass
class _Result:
    out: Path
    best_epoch: int = 1
    best_val_auc: float = 0.5
    threshold: float = 0.5


class CountingTrainer:
    """Stands in for ``training.train``: saves an untrained model of the arm's shape and counts calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, settings, train, val, out, resume=False, callbacks=()):
        import torch

        from mammofuse.imaging.preprocess import PreprocessRecipe
        from mammofuse.model import MammoFuse, ModelConfig, save_model

        assert not {s.patient_id for s in train} & {s.patient_id for s in val}, "validation must be grouped by patient"
        self.calls.append((settings.fusion, len(train), len(val)))
        torch.manual_seed(len(self.calls))
        config = ModelConfig(fusion=settings.fusion, backbone=settings.backbone, proj_dim=settings.proj_dim,
                             modality_dropout=settings.modality_dropout,
                             preprocessing=PreprocessRecipe(image_size=settings.image_size, input=settings.input).as_dict())
        save_model(MammoFuse(config), out)
        return _Result(Path(out))


class Notes(TrainCallback):
    """Collects the ablation's notes."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def on_log(self, message: str) -> None:
        self.messages.append(message)


def _settings(**kw):
    from mammofuse.training import TrainSettings

    return TrainSettings(**{"backbone": "resnet18", "image_size": 32, "epochs": 1, "freeze_epochs": 0, "device": "cpu", **kw})


def test_arms_multiply_only_the_factors_that_vary():
    names = [a.name for a in plan_arms(["image", "clinical", "cross"], [True, False], [100])]
    assert names == ["image", "clinical", "cross", "cross-md_off"]
    late = plan_arms(["late"], [True, False], [100])  # no joint head: modality dropout would train it twice alike
    assert [(a.name, a.modality_dropout) for a in late] == [("late", 0.3)]  # the value its finished folds were made with
    arms = plan_arms(["co"], [True], [50, 100, 200], dropout_p=0.4)
    assert [(a.name, a.proj_dim, a.modality_dropout) for a in arms] == [("co-d50", 50, 0.4), ("co", 100, 0.4), ("co-d200", 200, 0.4)]
    with pytest.raises(MammofuseError, match="unknown variant"):
        plan_arms(["early"])


def test_dropping_clinical_data_is_seeded_and_exact(mini_mias):
    from mammofuse.data import load_dataset

    samples = load_dataset("mini-mias", mini_mias)[:40]
    dropped = drop_clinical(samples, 0.3, (0, 1, 300))
    assert sum(not s.clinical for s in dropped) == 12
    assert [s.clinical for s in dropped] == [s.clinical for s in drop_clinical(samples, 0.3, (0, 1, 300))]
    assert all(s.clinical for s in samples)  # the originals are untouched
    assert all(not s.clinical for s in drop_clinical(samples, 1.0, (0, 0, 1000)))


@pytest.mark.parametrize("threshold", ["validation", "oof"])
def test_the_protocol_names_the_folds_whose_validation_part_is_of_one_class(threshold: str, tmp_path: Path) -> None:
    """Was: a fold whose validation part held one class kept threshold 0.5 and chose its epoch by the validation loss,
    and the protocol still said "Youden's J on each fold's validation part"."""
    from mammofuse.data.sample import Sample

    samples = [Sample(id=f"c{i}", patient_id=f"p{i}", label=int(i < 2), clinical={"margin": "SPICULATED" if i < 2 else "CIRCUMSCRIBED"})
               for i in range(10)]
    report = run_ablation(samples, plan_arms(["clinical"]), _settings(val_fraction=0.5), tmp_path, folds=2, n_boot=0,
                          trainer=CountingTrainer(), threshold=threshold)
    protocol = report.protocol
    assert "by the validation loss in folds 1, 2, whose validation part is of one class" in protocol["validation"]
    if threshold == "validation":
        assert protocol["threshold"] == "Youden's J on each fold's validation part; not tuned (validation part of one class) in folds 1, 2: 0.5"
    else:
        assert protocol["threshold"] == "Youden's J on the pooled held-out predictions of the other folds"


def test_second_run_reuses_finished_arms_and_image_arms_are_skipped_without_images(cbis_csv, tmp_path):
    from mammofuse.data import load_dataset

    train = [s for s in load_dataset("cbis-ddsm", cbis_csv) if s.split == "train"]
    samples = train[:120] + train[-120:]  # masses and calcifications
    trainer, notes = CountingTrainer(), Notes()
    messages = notes.messages
    arms = plan_arms(["image", "clinical"])
    report = run_ablation(samples, arms, _settings(), tmp_path, folds=3, n_boot=20, trainer=trainer, callbacks=[notes], dataset="cbis-ddsm")
    assert [c[0] for c in trainer.calls] == ["clinical"] * 3
    assert isinstance(report, AblationResult) and isinstance(report.variants["clinical"], ArmSummary)
    assert "needs images" in report.skipped["image"] and any("skipping arm image" in m for m in messages)
    results = sorted((tmp_path / "arms" / "clinical").glob("fold-*/result.json"))
    assert len(results) == 3
    stamps = [p.stat().st_mtime_ns for p in results]

    again = run_ablation(samples, arms, _settings(), tmp_path, folds=3, n_boot=20, trainer=trainer, callbacks=[notes], dataset="cbis-ddsm")
    assert len(trainer.calls) == 3, "finished folds must not be retrained"
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert sum("already done" in m for m in messages) == 3
    assert again.variants["clinical"].auc == report.variants["clinical"].auc
    assert again.folds["clinical"] == report.folds["clinical"]  # the reused fold results are the ones written

    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved == again.to_dict()
    clinical = saved["variants"]["clinical"]
    assert {"auc", "auc_sd", "auc_ci", "auc_folds", "pr_auc", "f1", "sensitivity", "specificity", "brier", "ece"} <= set(clinical)
    assert len(clinical["auc_folds"]) == 3 and set(clinical["subsets"]) == {"mass", "calc"}
    assert set(clinical["subgroups"]) == {"density", "view"} and sum(g["n"] for g in clinical["subgroups"]["view"].values()) == clinical["n"]
    assert (tmp_path / "ablation.md").read_text().startswith("| arm |")
    assert (tmp_path / "ablation.png").stat().st_size > 10_000

    with pytest.raises(MammofuseError, match="different settings"):
        run_ablation(samples, arms, _settings(lr=0.5), tmp_path, folds=3, n_boot=20, trainer=trainer)


def test_an_official_split_sharing_a_patient_is_refused() -> None:
    from mammofuse.data.sample import Sample

    def case(patient: str, split: str) -> Sample:
        return Sample(id=f"{patient}-{split}", patient_id=patient, label=0, clinical={}, split=split)

    assert len(make_folds([case("P1", "train"), case("P2", "test")], None, 0)) == 1
    with pytest.raises(MammofuseError, match="the train and test splits share 1 patient\\(s\\), e.g. P2"):
        make_folds([case("P1", "train"), case("P2", "train"), case("P2", "test")], None, 0)


def test_a_case_whose_data_changed_under_the_same_id_is_other_data() -> None:
    """Manifest cases are named by their line: a fold result must not be reused after the rows' contents change."""
    from mammofuse.data.sample import Sample
    from mammofuse.evaluation.ablation import _fingerprint

    case = Sample(id="row2", patient_id="P1", label=0, clinical={"margin": "spiculated"}, image_path="/a/x.png")
    key = _fingerprint(_settings(fusion="clinical").as_dict(), [case], [])
    for changed in (dataclasses.replace(case, label=1), dataclasses.replace(case, clinical={}), dataclasses.replace(case, patient_id="P2"),
                    dataclasses.replace(case, image_path="/a/y.png"), dataclasses.replace(case, region=(1.0, 2.0, 3.0))):
        assert _fingerprint(_settings(fusion="clinical").as_dict(), [changed], []) != key
    assert _fingerprint(_settings(fusion="clinical").as_dict(), [dataclasses.replace(case, image_path="/b/x.png")], []) == key  # data moved


def test_weights_rewritten_at_the_same_path_are_different_settings(tmp_path):
    """Fold results name their --pretrained weights by path: a backbone retrained there must not reuse them."""
    from mammofuse.evaluation.ablation import _fingerprint

    weights = tmp_path / "backbone.safetensors"
    weights.write_bytes(b"first")

    def key(fusion: str) -> str:
        return _fingerprint(_settings(pretrained=str(weights), fusion=fusion).as_dict(), [], [])

    image, findings = key("image"), key("clinical")
    assert key("image") == image
    weights.write_bytes(b"second")
    assert key("image") != image
    assert key("clinical") == findings  # the findings alone read no image weights


@pytest.mark.parametrize("content", [b"[]", b"null", b'"done"', b"\xff\xfe not UTF-8"])
def test_a_damaged_fold_result_is_run_again_not_a_crash(content, cbis_csv, tmp_path):
    """A result.json holding JSON that is not an object crashed the next run (exit 4); a torn one was already run again."""
    from mammofuse.data import load_dataset

    train = [s for s in load_dataset("cbis-ddsm", cbis_csv) if s.split == "train"]
    samples, arms, trainer = train[:60] + train[-60:], plan_arms(["clinical"]), CountingTrainer()
    run_ablation(samples, arms, _settings(), tmp_path, folds=2, n_boot=5, trainer=trainer)
    damaged = tmp_path / "arms" / "clinical" / "fold-1" / "result.json"
    damaged.write_bytes(content)
    run_ablation(samples, arms, _settings(), tmp_path, folds=2, n_boot=5, trainer=trainer)
    assert len(trainer.calls) == 3, "only the damaged fold runs again"
    assert "fingerprint" in json.loads(damaged.read_text())


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_fusion_arms_report_auc_as_clinical_data_goes_missing(mini_mias, tmp_path):
    from mammofuse.data import load_dataset

    samples = load_dataset("mini-mias", mini_mias)[:24]
    trainer = CountingTrainer()
    report = run_ablation(samples, plan_arms(["clinical", "concat"]), _settings(), tmp_path, folds=2,
                          missing_rates=(0.0, 0.5, 1.0), n_boot=0, trainer=trainer)
    assert report.variants["clinical"].missing_clinical is None and "missing_clinical" not in report.to_dict()["variants"]["clinical"]
    missing = report.variants["concat"].missing_clinical
    assert set(missing) == {"0", "0.5", "1"} and missing["0"]["auc"] == report.variants["concat"].auc
    record = json.loads((tmp_path / "arms" / "concat" / "fold-1" / "result.json").read_text())
    assert FoldResult.from_dict(record) == report.folds["concat"][0]
    assert record["scores"]["0"] != record["scores"]["1"]  # removing the clinical data changes the scores
    # identical folds and seeds for every arm
    other = json.loads((tmp_path / "arms" / "clinical" / "fold-1" / "result.json").read_text())
    assert record["ids"] == other["ids"] and record["train_patients"] == other["train_patients"]
    assert not (tmp_path / "arms" / "concat" / "fold-1" / "model").exists()  # weights not kept by default


def test_ablate_refuses_image_weights_trained_on_its_own_patients(mini_mias, tmp_path):
    from mammofuse.data import load_dataset
    from mammofuse.data.sample import patient_digest

    samples = load_dataset("mini-mias", mini_mias)[:24]
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"provenance": {"train_patients": [patient_digest(samples[3].patient_id)],
                                                                   "init_patients": [patient_digest(samples[5].patient_id)]}}))
    trainer = CountingTrainer()
    settings = _settings(pretrained=str(source))
    with pytest.raises(MammofuseError, match=r"pretrained \(--pretrained\) .*source: 2 of these patients trained that model"):
        run_ablation(samples, plan_arms(["image", "clinical"]), settings, tmp_path / "a", folds=2, n_boot=0, trainer=trainer)
    assert trainer.calls == []
    run_ablation(samples, plan_arms(["clinical"]), settings, tmp_path / "b", folds=2, n_boot=0, trainer=trainer)  # no image weights used
    others = [s for s in samples if s.patient_id not in {samples[3].patient_id, samples[5].patient_id}]
    run_ablation(others, plan_arms(["image"]), settings, tmp_path / "c", folds=2, n_boot=0, trainer=trainer, controls=())
    assert [c[0] for c in trainer.calls] == ["clinical"] * 2 + ["image"] * 2


def test_ablate_says_whose_films_a_pretrained_backbone_has_seen(mini_mias, tmp_path):
    from mammofuse.data import load_dataset
    from mammofuse.data.sample import patient_digest
    from mammofuse.model.encoders import image_backbone
    from mammofuse.training.pretrain import PretrainSettings, save_backbone

    samples = load_dataset("mini-mias", mini_mias)[:24]
    seen = {samples[3].patient_id, samples[5].patient_id, "someone else"}
    backbone = save_backbone(image_backbone("resnet18")[0], tmp_path / "seen.safetensors", PretrainSettings(backbone="resnet18"), {},
                             patients=[patient_digest(p) for p in seen])
    unrecorded = save_backbone(image_backbone("resnet18")[0], tmp_path / "old.safetensors", PretrainSettings(backbone="resnet18"), {})
    patients = len({s.patient_id for s in samples})
    protocols = {}
    for name, weights in (("seen", backbone), ("old", unrecorded)):
        notes = Notes()
        report = run_ablation(samples, plan_arms(["image"]), _settings(pretrained=str(weights)), tmp_path / name, folds=2, n_boot=0,
                              trainer=CountingTrainer(), callbacks=[notes], controls=())
        protocols[name] = report.protocol["image_weights_pretraining"]
        assert any(f"pretrained without labels on the films of 2 of these {patients} patients" in m for m in notes.messages) == (name == "seen")
    assert protocols["seen"].startswith(f"self-supervised (no labels, lesions avoided) on the films of 2 of these {patients} patients")
    assert protocols["old"] is None  # a file that records no patients: nothing to say
    others = [s for s in samples if s.patient_id not in seen]
    report = run_ablation(others, plan_arms(["image"]), _settings(pretrained=str(backbone)), tmp_path / "others", folds=2, n_boot=0,
                          trainer=CountingTrainer(), controls=())
    assert report.protocol["image_weights_pretraining"].startswith("self-supervised on the films of none of these")


def test_the_away_control_is_rescored_on_more_patches_from_kept_models_never_retrained(mini_mias, tmp_path):
    from mammofuse.data import load_dataset
    from mammofuse.imaging.controls import CONTROLS

    samples = [s for s in load_dataset("mini-mias", mini_mias) if s.region][:24]
    trainer = CountingTrainer()
    kept = run_ablation(samples, plan_arms(["image"]), _settings(), tmp_path / "kept", folds=2, n_boot=0, trainer=trainer,
                        controls=CONTROLS, keep_models=True)
    more = run_ablation(samples, plan_arms(["image"]), _settings(), tmp_path / "kept", folds=2, n_boot=0, trainer=trainer,
                        controls=CONTROLS, away_patches=3)
    assert len(trainer.calls) == 2  # the second run trained nothing
    before, after = kept.folds["image"][0], more.folds["image"][0]
    assert (before.away_patches, after.away_patches) == (1, 3) and before.controls["masked"] == after.controls["masked"]
    assert before.controls["away"] != after.controls["away"] and more.protocol["away_patches"] == 3
    assert json.loads((tmp_path / "kept" / "arms" / "image" / "fold-1" / "result.json").read_text())["away_patches"] == 3

    run_ablation(samples, plan_arms(["image"]), _settings(), tmp_path / "plain", folds=2, n_boot=0, trainer=trainer, controls=CONTROLS)
    assert "away_patches" not in json.loads((tmp_path / "plain" / "arms" / "image" / "fold-1" / "result.json").read_text())
    with pytest.raises(MammofuseError, match="averages 1 patch.*not 3.*--away-patches 1"):
        run_ablation(samples, plan_arms(["image"]), _settings(), tmp_path / "plain", folds=2, n_boot=0, trainer=trainer,
                     controls=CONTROLS, away_patches=3)


def test_missing_rates_and_controls_asked_later_are_scored_from_kept_models_or_refused(mini_mias, tmp_path):
    """Was: a finished fold was reused without the newly asked missing rates and controls, and nothing was said."""
    from mammofuse.data import load_dataset
    from mammofuse.imaging.controls import CONTROLS

    samples, arms = [s for s in load_dataset("mini-mias", mini_mias) if s.region][:24], plan_arms(["late"])

    def ablate(out, trainer, rates, controls, **kw):
        return run_ablation(samples, arms, _settings(), tmp_path / out, folds=2, n_boot=0, trainer=trainer, missing_rates=rates,
                            controls=controls, **kw)

    fresh = ablate("fresh", CountingTrainer(), (0.0, 0.5), CONTROLS)
    trainer = CountingTrainer()  # the same seeds as the fresh run's: the same fold models
    ablate("kept", trainer, (0.0,), (), keep_models=True)
    completed = ablate("kept", trainer, (0.0, 0.5), CONTROLS)
    assert len(trainer.calls) == 2, "completed from the kept models, never retrained"
    timeless = lambda report: [dataclasses.replace(r, seconds=0) for r in report.folds["late"]]  # noqa: E731
    assert timeless(completed) == timeless(fresh) and completed.variants["late"].controls == fresh.variants["late"].controls
    assert completed.variants["late"].missing_clinical == fresh.variants["late"].missing_clinical
    stored = json.loads((tmp_path / "kept" / "arms" / "late" / "fold-1" / "result.json").read_text())
    assert set(stored["scores"]) == {"0", "0.5"} and set(stored["controls"]) == set(CONTROLS)

    ablate("plain", trainer, (0.0,), ())
    result = tmp_path / "plain" / "arms" / "late" / "fold-1" / "result.json"
    with pytest.raises(MammofuseError, match=rf"^{result}: this finished fold lacks scores with the clinical findings of 0.5 .*"
                                             r"drop 0.5 from --missing-rates to reuse it as it is, or use a new --out with --keep-models, or delete"):
        ablate("plain", trainer, (0.0, 0.5), ())
    with pytest.raises(MammofuseError, match=r"lacks the masked, away control\(s\).*: pass --no-controls to reuse"):
        ablate("plain", trainer, (0.0,), CONTROLS)
    with pytest.raises(MammofuseError, match=r"lacks scores .* of 0.5 .* and the masked, away control\(s\).*"
                                             r": drop 0.5 from --missing-rates and pass --no-controls to reuse"):
        ablate("plain", trainer, (0.0, 0.5), CONTROLS)
    assert len(trainer.calls) == 4 and ablate("plain", trainer, (0.0,), ()).folds  # the same request still reuses

    fewer = ablate("fresh", trainer, (0.0,), ())  # a fold holding more than asked is reused, and reports what was asked
    assert len(trainer.calls) == 4 and fewer.variants["late"].controls == {} and fewer.variants["late"].missing_clinical is None
    assert fewer.protocol["controls"].startswith("none")


def _refuse_non_finite(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def test_ablate_command_end_to_end_with_the_real_trainer(mini_mias, tmp_path):
    args = ["ablate", "--dataset", "mini-mias", "--data", str(mini_mias), "--out", str(tmp_path), "--variants", "clinical",
            "--folds", "2", "--epochs", "2", "--device", "cpu", "--bootstrap", "20", "--format", "json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads((tmp_path / "ablation.json").read_text())
    assert json.loads(first.stdout) == report
    assert 0.0 <= report["variants"]["clinical"]["auc"] <= 1.0
    assert report["protocol"]["split"].startswith("2-fold patient-grouped")
    from mammofuse.data import load_dataset

    paths = sorted((tmp_path / "arms" / "clinical").glob("fold-*/result.json"))
    folds = [json.loads(path.read_text(), parse_constant=_refuse_non_finite) for path in paths]
    assert len(folds) == 2 and all(f["val_auc"] is None for f in folds)  # no validation part: no AUC, written as null
    fold = folds[0]
    patients = {s.patient_id for s in load_dataset("mini-mias", mini_mias)}
    assert fold["settings"]["val_fraction"] == 0 and fold["val_patients"] == []  # no validation part: all training patients train
    assert len(fold["train_patients"]) + len(set(fold["patients"])) == len(patients)
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and second.output.count("already done (reused)") == 2
    from mammofuse.training.card import add_cross_validation

    (tmp_path / "README.md").write_text("# card\n")
    add_cross_validation(tmp_path, report, "clinical")
    card = (tmp_path / "README.md").read_text()
    assert f"pooled out-of-fold AUC {report['variants']['clinical']['auc_pooled']:.3f}" in card
    assert "at each fold's threshold (Youden's J on the pooled held-out predictions of the other folds)" in card


def test_a_fold_stopped_midway_and_run_with_other_settings_names_the_way_out_not_resume(mini_mias, tmp_path):
    """Was: "resume (--resume): settings differ ...", though ablate has no --resume and resumes its folds itself."""
    from mammofuse.data import load_dataset

    class CtrlCAfterTheFirstEpoch(TrainCallback):
        def on_epoch_end(self, row, improved) -> None:
            raise KeyboardInterrupt

    samples, arms = load_dataset("mini-mias", mini_mias), plan_arms(["clinical"])
    with pytest.raises(KeyboardInterrupt):
        run_ablation(samples, arms, _settings(epochs=2), tmp_path, folds=2, n_boot=0, callbacks=[CtrlCAfterTheFirstEpoch()])
    with pytest.raises(MammofuseError) as error:
        run_ablation(samples, arms, _settings(epochs=3), tmp_path, folds=2, n_boot=0)
    model = tmp_path / "arms" / "clinical" / "fold-1" / "model"
    assert str(error.value) == (f"{model} holds an interrupted training of other settings (epochs 2 -> 3) (arm clinical, fold 1); "
                                "use a new --out or delete that folder")


def test_ablate_keeps_fold_models_without_patient_digests_when_asked(mini_mias, tmp_path):
    from mammofuse.model import load_model

    result = runner.invoke(app, ["ablate", "--dataset", "mini-mias", "--data", str(mini_mias), "--out", str(tmp_path), "--variants", "clinical",
                                 "--folds", "2", "--epochs", "1", "--device", "cpu", "--bootstrap", "0", "--keep-models", "--no-patient-digests"])
    assert result.exit_code == 0, result.output
    models = sorted((tmp_path / "arms" / "clinical").glob("fold-*/model"))
    assert len(models) == 2
    for model in models:
        provenance = load_model(model).config.provenance
        assert provenance["settings"]["patient_digests"] is False
        assert not {"train_patients", "val_patients", "init_patients"} & set(provenance)


def test_ablate_takes_proj_dim_and_modality_dropout_from_its_config_unless_flags_say_otherwise(mini_mias, tmp_path, monkeypatch):
    """--proj-dims and --dropout-p defaulted to 100 and 0.3 and silently replaced the --config's values."""
    import mammofuse.evaluation.ablation as ablation

    planned: list[list[tuple[str, float, int]]] = []

    def stop(samples, arms, settings, *args, **kwargs):
        planned.append([(a.name, a.modality_dropout, a.proj_dim) for a in arms])
        raise MammofuseError("planned")

    monkeypatch.setattr(ablation, "run_ablation", stop)
    config = tmp_path / "ablate.yaml"
    config.write_text("proj_dim: 32\nmodality_dropout: 0.1\n")
    base = ["ablate", "--dataset", "mini-mias", "--data", str(mini_mias), "--out", str(tmp_path / "out"), "--variants", "clinical,cross",
            "--config", str(config)]
    for extra in ([], ["--proj-dims", "64", "--dropout-p", "0.2"]):
        assert runner.invoke(app, [*base, *extra]).exit_code == 2
    assert planned == [[("clinical-d32", 0.0, 32), ("cross-d32", 0.1, 32)], [("clinical-d64", 0.0, 64), ("cross-d64", 0.2, 64)]]


def test_ablate_usage_errors(mini_mias, tmp_path):
    base = ["ablate", "--dataset", "mini-mias", "--data", str(mini_mias), "--out", str(tmp_path)]
    bad_variant = runner.invoke(app, [*base, "--variants", "clinical,early"])
    assert bad_variant.exit_code == 2 and "unknown variant" in bad_variant.output
    no_official = runner.invoke(app, [*base, "--variants", "clinical", "--protocol", "official"])
    assert no_official.exit_code == 2 and "no official train and test split" in no_official.output
    assert runner.invoke(app, [*base, "--protocol", "holdout"]).exit_code == 2
    no_validation = runner.invoke(app, [*base, "--variants", "clinical", "--val-fraction", "0", "--threshold-from", "validation"])
    assert no_validation.exit_code == 2 and "--threshold-from validation needs a validation part" in no_validation.output
    with pytest.raises(MammofuseError, match=r"the official split \(one fold: no other folds to take a threshold from\) needs a validation part"):
        run_ablation([], plan_arms(["clinical"]), _settings(val_fraction=0), tmp_path / "official", folds=None)
    assert runner.invoke(app, [*base, "--modality-dropout", "maybe"]).exit_code == 2


@pytest.mark.parametrize("result", [None, "{bad"])
def test_image_init_from_an_unfinished_or_damaged_image_fold_is_a_usage_error(mini_mias, tmp_path, result):
    import mammofuse

    fold = tmp_path / "image" / "fold-1"
    (fold / "model").mkdir(parents=True)
    (fold / "model" / "model.safetensors").write_bytes((Path(mammofuse.__file__).parent / "weights" / "default" / "model.safetensors").read_bytes())
    if result is not None:
        (fold / "result.json").write_text(result)
    out = runner.invoke(app, ["ablate", "--dataset", "mini-mias", "--data", str(mini_mias), "--variants", "cross", "--folds", "2",
                              "--epochs", "1", "--image-size", "32", "--image-init", str(tmp_path / "image"), "--out", str(tmp_path / "ab")])
    assert out.exit_code == 2, out.output
    assert "fold 1 is unfinished or damaged" in out.output and f"delete {fold}" in out.output


def _fold(k: int, labels: list[int], scores: list[float | None], threshold: float = 0.9) -> FoldResult:
    n = len(labels)
    return FoldResult(fingerprint="f", arm="clinical", fold=k, settings={}, train_patients=[], val_patients=[], ids=[f"c{k}-{i}" for i in range(n)],
                      labels=labels, patients=[f"p{k}-{i}" for i in range(n)], abnormality=[None] * n, threshold=threshold, best_epoch=None,
                      val_auc=None, scores={"0": scores}, controls={}, errors={}, seconds=1.0)


def test_out_of_fold_thresholds_never_look_at_the_folds_own_cases():
    from mammofuse.evaluation.metrics import youden_threshold

    rng = np.random.default_rng(0)

    def fold(k: int, shift: float) -> FoldResult:
        labels = [0, 1] * 20
        return _fold(k, labels, [float(np.clip(0.3 + 0.3 * y + shift + rng.normal(0, 0.1), 0, 1)) for y in labels])

    results = [fold(0, 0.0), fold(1, 0.1), fold(2, -0.1)]
    assert fold_thresholds(results, "validation") == [0.9, 0.9, 0.9]
    oof = fold_thresholds(results, "oof")
    others = results[1].labels + results[2].labels, results[1].probs + results[2].probs
    assert oof[0] == youden_threshold(np.array(others[0]), np.array(others[1]))
    results[0] = dataclasses.replace(results[0], scores={"0": [1 - p for p in results[0].probs]})  # fold 0's own cases do not move its threshold
    assert fold_thresholds(results, "oof")[0] == oof[0] and fold_thresholds(results, "oof")[1] != oof[1]
    summary = summarize_arm(results, [0.0], n_boot=0, seed=0, threshold="oof")
    assert [m["threshold"] for m in summary.per_fold] == fold_thresholds(results, "oof")
    assert fold_thresholds(results[:1], "oof") == [0.9]  # one fold (official split): its validation threshold


def test_fold_means_over_fewer_folds_than_all_say_how_many(tmp_path, monkeypatch):
    """Was: three of five held-out parts were all benign, and the AUC read 0.250 ± 0.000 as if over five folds, without a word."""
    import io

    from rich.console import Console

    from mammofuse.cli import ablate_cmd
    from mammofuse.training.card import add_cross_validation

    both, benign = ([0, 1, 0, 1], [0.6, 0.4, 0.7, 0.3]), ([0, 0], [0.2, 0.8])
    results = [dataclasses.replace(_fold(k, *parts), settings={"fusion": "clinical"}) for k, parts in enumerate([both, benign, benign, benign, both])]
    with pytest.warns(UserWarning, match=r"fold-mean AUC covers only the folds whose held-out part has both classes \(clinical 2 of 5\)"):
        variants = summarize_arms({"clinical": results}, [0.0], n_boot=0, seed=0)
    arm = variants["clinical"]
    assert arm.to_dict()["folds_averaged"] == {"auc": 2, "pr_auc": 2, "recall": 2, "sensitivity": 2}
    protocol = {**SUMMARIES["report"]["protocol"], "missing_rates": [0.0]}
    report = AblationResult(variants, {}, protocol, folds={"clinical": results})
    row = markdown_table(report).split("\n")[2].split(" | ")
    assert row[1] == f"{arm.auc:.3f} ± {arm.auc_sd:.3f} (2 of 5 folds)" and row[4] == f"{arm.metrics['accuracy']:.3f} ± {arm.metrics['accuracy_sd']:.3f}"
    out = io.StringIO()
    monkeypatch.setattr(ablate_cmd, "console", Console(file=out, width=300))
    ablate_cmd._table(report)
    assert f"{arm.auc:.2f} ± {arm.auc_sd:.2f} (2 of 5 folds)" in out.getvalue()
    (tmp_path / "README.md").write_text("# card\n")
    add_cross_validation(tmp_path, report.to_dict(), "clinical")
    assert f"ROC AUC {arm.auc:.3f} ± {arm.auc_sd:.3f} over 2 of 5 folds;" in (tmp_path / "README.md").read_text()


def test_fold_means_over_every_fold_carry_no_count():
    results = [_fold(k, [0, 1, 0, 1], [0.6, 0.4, 0.7, 0.3]) for k in range(3)]
    arm = summarize_arm(results, [0.0], n_boot=0, seed=0)
    assert arm.folds_averaged is None and "folds_averaged" not in arm.to_dict()


def test_subset_means_say_which_folds_they_cover():
    """Was: the mass and calc means of ablation.json covered only the folds with both classes of the type, without a word."""
    both = dataclasses.replace(_fold(0, [0, 1, 0, 1], [0.2, 0.8, 0.3, 0.7]), abnormality=["mass", "mass", "calc", "calc"])
    calc_benign = dataclasses.replace(_fold(1, [0, 1, 0, 0], [0.2, 0.8, 0.3, 0.7]), abnormality=["mass", "mass", "calc", "calc"])
    subsets = summarize_arm([both, calc_benign, both], [0.0], n_boot=0, seed=0).subsets
    assert subsets["mass"]["auc_folds"] == [1.0, 1.0, 1.0] and "folds_averaged" not in subsets["mass"]
    assert subsets["calc"]["auc_folds"] == [1.0, None, 1.0] and subsets["calc"]["folds_averaged"] == {"auc": 2}


def test_reading_and_summarising_finished_runs_does_not_import_torch():
    code = "import sys, mammofuse.evaluation.ablation_results; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_fold_result_knows_its_scored_cases():
    result = dataclasses.replace(_fold(0, [0, 1, 1, 0], [0.2, None, 0.9, 0.4]), abnormality=["mass", "mass", "calc", "calc"])
    assert result.scored() == ([0, 1, 0], [0.2, 0.9, 0.4], ["p0-0", "p0-2", "p0-3"])
    assert result.scored(kind="calc") == ([1, 0], [0.9, 0.4], ["p0-2", "p0-3"])
    assert result.auc() == 1.0 and dataclasses.replace(result, labels=[1, 1, 1, 1]).auc() is None


def test_a_real_result_json_reads_and_writes_back_byte_for_byte():
    """Fold 1 of the image arm of a real run: 5-fold ablation on the CBIS-DDSM Mass-Training lesions (cnn4 on lesion crops
    from cbis-texture-cnn4, seed 0; runs/bench/away-fix-s0), written before results were strict JSON: its NaN val_auc is now null."""
    text = (DATA / "cbis_image_fold1_result.json").read_text(encoding="utf-8")
    result = FoldResult.from_dict(json.loads(text))
    assert result.arm == "image" and result.fold == 0 and set(result.controls) == {"masked", "away"}
    assert json_text(result.to_dict(), indent=1) + "\n" == text.replace('"val_auc": NaN', '"val_auc": null')


@pytest.mark.parametrize("arm", ["image", "clinical", "concat"])
def test_synthetic_result_json_round_trips(arm):
    for record in SUMMARIES["folds"][arm]:
        result = FoldResult.from_dict(copy.deepcopy(record))
        assert result.to_dict() == record
        assert list(result.to_dict()) == list(record)  # same key order, so result.json reads the same


def test_fold_results_of_another_format_or_incomplete_are_refused():
    record = SUMMARIES["folds"]["clinical"][0]
    with pytest.raises(MammofuseError, match="format 2"):
        FoldResult.from_dict({**record, "format": 2})
    with pytest.raises(MammofuseError, match="lacks labels"):
        FoldResult.from_dict({k: v for k, v in record.items() if k != "labels"})
    assert FoldResult.from_dict({k: v for k, v in record.items() if k != "controls"}).controls == {}  # written before shortcut controls


def test_summaries_match_the_dict_code_they_replace():
    folds = {arm: [FoldResult.from_dict(r) for r in records] for arm, records in SUMMARIES["folds"].items()}
    expected = SUMMARIES["report"]
    variants = summarize_arms(folds, expected["protocol"]["missing_rates"], n_boot=50, seed=0, threshold="oof")
    for name, summary in variants.items():
        summary.settings = folds[name][0].settings
    report = AblationResult(variants, expected["skipped"], expected["protocol"], folds=folds)
    got = report.to_dict()
    calibration = {name: arm.pop("calibration") for name, arm in got["variants"].items()}  # added since, from the folds' predictions
    assert all(calibration[name] == calibration_summary([r.scored()[:2] for r in folds[name]]) for name in folds)
    for arm in got["variants"].values():  # each subset's fold AUCs: added since
        assert all(len(subset.pop("auc_folds")) == arm["folds"] for subset in arm["subsets"].values())
    assert got == expected
    assert json.dumps(got) == json.dumps(expected)  # the same key order as well
    lines = markdown_table(report).split("\n")
    head = lines[0].split(" | ")
    column = head.index("calibration slope; pooled ECE → after Platt by the other folds")  # added since
    for i, line in enumerate(lines):
        row = line.split(" | ")
        if "skipped: " in line:
            lines[i] = line.removesuffix(" |")  # one empty cell fewer
        elif i == 1:
            lines[i] = line.replace("---|", "", 1)
        elif len(row) == len(head):
            cell = row.pop(column)
            if i:
                c = calibration[row[0].removeprefix("| ")]
                assert cell == f"{c['slope']:.2f}; {c['ece']:.3f} → {c['ece_recalibrated']:.3f}"
            lines[i] = " | ".join(row)
    assert "\n".join(lines) == SUMMARIES["markdown"]
    concat = variants["concat"]
    assert (concat.auc, concat.auc_sd, concat.sensitivity, concat.specificity) == tuple(expected["variants"]["concat"][k] for k in ("auc", "auc_sd", "sensitivity", "specificity"))
    assert concat.vs_best_single["arm"] == "clinical" and variants["clinical"].vs_best_single is None
    validation = summarize_arm(folds["concat"], [0.0, 0.5, 1.0], n_boot=0, seed=0, threshold="validation").to_dict()
    assert validation.pop("calibration") == calibration["concat"]  # the threshold's source changes no score
    assert all(len(subset.pop("auc_folds")) == concat.folds for subset in validation["subsets"].values())
    assert validation == SUMMARIES["concat_validation"]


def test_a_report_whose_figure_cannot_be_written_leaves_the_previous_three_files_as_they_were(tmp_path, monkeypatch):
    """With a full disk at the figure, ablation.json and ablation.md described the new run and ablation.png the previous one."""
    import errno
    import tempfile

    import mammofuse.atomic as atomic
    from mammofuse.errors import OutputError
    from mammofuse.evaluation.ablation_results import write_report

    folds = {arm: [FoldResult.from_dict(r) for r in records] for arm, records in SUMMARIES["folds"].items()}
    protocol = SUMMARIES["report"]["protocol"]
    variants = summarize_arms(folds, protocol["missing_rates"], n_boot=0, seed=0, threshold="oof")
    write_report(AblationResult(variants, {}, protocol, folds=folds), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    make = tempfile.mkstemp

    def disk_full_at_the_figure(*args: object, prefix: str, **kwargs: object) -> tuple[int, str]:
        if prefix == ".ablation.png.":
            raise OSError(errno.ENOSPC, "No space left on device")
        return make(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", disk_full_at_the_figure)
    fewer = {name: variants[name] for name in ("clinical", "concat")}
    with pytest.raises(OutputError, match=r"ablation.png: cannot write \(No space left on device\)$"):
        write_report(AblationResult(fewer, {}, protocol, folds=folds), tmp_path)
    assert sorted(before) == ["ablation.json", "ablation.md", "ablation.png"]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_ablation_removes_the_temporaries_a_killed_run_left_in_its_report_and_fold_folders(mini_mias, tmp_path):
    """Was: a kill -9 between an atomic write and its rename left a hidden .tmp in OUT (or a fold's folder) for good."""
    from mammofuse.data import load_dataset

    out = tmp_path / "ab"
    fold = out / "arms" / "clinical" / "fold-1"
    fold.mkdir(parents=True)
    left = [out / ".ablation.png.k3j2_x9a.tmp", fold / ".result.json.abcd1234.tmp"]
    for tmp in left:
        tmp.write_bytes(b"half")
    (out / "notes.tmp").write_text("a user's own file")
    run_ablation(load_dataset("mini-mias", mini_mias), plan_arms(["clinical"]), _settings(), out, folds=2, n_boot=0, trainer=CountingTrainer())
    assert not any(tmp.exists() for tmp in left) and (out / "notes.tmp").exists()


def test_an_ablation_into_a_folder_another_run_holds_is_refused_and_the_folder_left_alone(mini_mias, tmp_path):
    """A resubmitted job on the same --out resumed, scored and deleted the first one's folds: a wrong AUC with exit 0."""
    from mammofuse.atomic import folder_lock
    from mammofuse.data import load_dataset

    out = tmp_path / "ab"
    trainer = CountingTrainer()
    with folder_lock(out):  # as another ablate (or train) run holds it while it works
        result = runner.invoke(app, ["ablate", "--dataset", "mini-mias", "--data", str(mini_mias), "--out", str(out), "--variants", "clinical",
                                     "--folds", "2", "--epochs", "1", "--device", "cpu", "--bootstrap", "0"])
        with pytest.raises(MammofuseError, match="in use by another mammofuse process"):
            run_ablation(load_dataset("mini-mias", mini_mias), plan_arms(["clinical"]), _settings(), out, folds=2, n_boot=0, trainer=trainer)
        assert sorted(p.name for p in out.iterdir()) == [".mammofuse.lock"]
    assert result.exit_code == 3 and result.stderr.splitlines()[-1] == f"error: {out}: cannot write (in use by another mammofuse process)", result.output
    assert trainer.calls == [] and not out.exists()  # nothing written; the holder, which made the folder, removed it empty
