"""The trainer on real data: every fusion trains, loss falls, resume is exact, torchrun works."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mammofuse.data import load_dataset, train_val_split
from mammofuse.data.sample import Sample, patient_digest
from mammofuse.errors import MammofuseError
from mammofuse.model import FUSIONS, load_model
from mammofuse.results import MALIGNANT, decide
from mammofuse.training import EpochRow, TrainCallback, TrainSettings, train


def write_backbone(path: Path, name: str = "resnet18") -> Path:
    """A backbone file as `mammofuse pretrain` writes it (random weights: these tests check mechanics, not accuracy)."""
    from mammofuse.model.encoders import image_backbone
    from mammofuse.training.pretrain import PretrainSettings, save_backbone

    torch.manual_seed(0)
    return save_backbone(image_backbone(name)[0], path, PretrainSettings(backbone=name), {})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TrainSettings:
    """Small settings with a pretrained backbone frozen for the first epoch (a random one is never frozen)."""
    backbone = write_backbone(tmp_path_factory.mktemp("backbone") / "resnet18.safetensors")
    return TrainSettings(fusion="cross", backbone="resnet18", image_size=32, epochs=1, freeze_epochs=1, batch_size=8,
                         proj_dim=16, dataset="mini-mias", pretrained=str(backbone))


@pytest.fixture(scope="module")
def mias_split(mini_mias: Path) -> tuple[list[Sample], list[Sample]]:
    """A small patient-grouped split of real mini-MIAS lesions (both classes on each side)."""
    train_samples, val_samples = train_val_split(load_dataset("mini-mias", mini_mias), 0.2, seed=0)
    pick = lambda xs, n: [s for s in xs if s.label][: n // 2] + [s for s in xs if not s.label][: n // 2]  # noqa: E731
    return pick(train_samples, 16), pick(val_samples, 8)


def probabilities(folder: Path, samples: list[Sample]) -> np.ndarray:
    from mammofuse.inference import predict_proba

    probs, errors = predict_proba(load_model(folder), samples, batch_size=8)
    assert not any(errors)
    return probs


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_trains_on_real_mini_mias(fusion: str, mias_split, tiny, tmp_path: Path) -> None:
    train_samples, val_samples = mias_split
    result = train(replace(tiny, fusion=fusion), train_samples, val_samples, tmp_path)
    assert {"model.safetensors", "config.json", "history.jsonl", "train_config.yaml", "README.md", "last"} <= {p.name for p in tmp_path.iterdir()}
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1] and np.isfinite(history[0]["train_loss"])
    assert history[0]["frozen"] is (fusion != "clinical")
    config = load_model(tmp_path).config
    assert config.fusion == fusion and config.threshold == pytest.approx(result.threshold)
    prov = config.provenance
    assert prov["n_train"] == 16 and prov["n_val"] == 8 and prov["dataset"] == "mini-mias" and prov["seed"] == 0
    assert prov["train_patients"] == sorted({patient_digest(s.patient_id) for s in train_samples})
    assert not set(prov["train_patients"]) & set(prov["val_patients"])
    assert prov["settings"]["fusion"] == fusion and prov["mammofuse"]
    assert np.isfinite(probabilities(tmp_path, val_samples)).all()
    card = (tmp_path / "README.md").read_text()
    assert "Research use only, not a medical device." in card and fusion in card


def test_staged_training_records_whose_labels_trained_its_image_branch(mias_split, tiny, tmp_path: Path) -> None:
    """A model whose image branch starts from another model carries that model's patients: evaluating on them warns."""
    from mammofuse.evaluation import overlap_warning, patient_overlap

    train_samples, val_samples = mias_split
    train(replace(tiny, fusion="image"), train_samples, val_samples, tmp_path / "image")
    source = load_model(tmp_path / "image").config.provenance
    assert "init_patients" not in source  # its backbone file (as `mammofuse pretrain` writes it) saw no labels
    train(replace(tiny, fusion="concat", pretrained=str(tmp_path / "image")), train_samples, val_samples, tmp_path / "staged")
    staged = load_model(tmp_path / "staged").config.provenance
    assert staged["init_patients"] == sorted(set(source["train_patients"]) | set(source["val_patients"]))
    overlap = patient_overlap([val_samples[0].patient_id, "P_unseen"], staged)
    assert overlap["init"] == 1 and overlap["train"] == 0 and overlap["val"] == 1
    assert "TRAINED THE MODEL its image branch started from" in overlap_warning(overlap)


def test_weights_from_a_model_without_patient_digests_are_known_to_hide_their_patients(mias_split, tiny, tmp_path: Path) -> None:
    """Staged from such a model, a model records that its image branch's patients are unknown, and evaluate says so."""
    from mammofuse.evaluation import patient_overlap
    from mammofuse.evaluation.evaluate import report_remarks
    from mammofuse.evaluation.leakage import INIT_UNKNOWN_NOTE, withheld_patients

    train_samples, val_samples = mias_split
    train(replace(tiny, fusion="image", patient_digests=False), train_samples, val_samples, tmp_path / "image")
    assert withheld_patients(str(tmp_path / "image")) and not withheld_patients(tiny.pretrained) and not withheld_patients("default")
    train(replace(tiny, fusion="concat", pretrained=str(tmp_path / "image")), train_samples, val_samples, tmp_path / "staged")
    staged = load_model(tmp_path / "staged").config.provenance
    assert staged["init_patients_unknown"] is True and "init_patients" not in staged and withheld_patients(str(tmp_path / "staged"))
    overlap = patient_overlap(["P_unseen"], staged)
    assert overlap["checked"] and overlap["init_unknown"] and overlap["train"] == overlap["val"] == 0
    report = {"model": {"notes": []}, "leakage": overlap, "suspicious_auc": False}
    assert [r.text for r in report_remarks(report)] == [INIT_UNKNOWN_NOTE]


def test_a_model_trained_without_patient_digests_records_none_and_evaluate_says_overlap_cannot_be_checked(mini_mias: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mammofuse.cli import app

    runner = CliRunner()
    data = ["--dataset", "mini-mias", "--data", str(mini_mias)]
    trained = runner.invoke(app, ["train", *data, "--fusion", "clinical", "--epochs", "1", "--no-patient-digests", "--out", str(tmp_path)])
    assert trained.exit_code == 0, trained.output
    provenance = json.loads((tmp_path / "config.json").read_text())["provenance"]
    assert not {"train_patients", "val_patients", "init_patients"} & set(provenance) and provenance["settings"]["patient_digests"] is False
    assert provenance["n_train_patients"] > provenance["n_val_patients"] > 0
    assert "lists no patient digests" in (tmp_path / "README.md").read_text()
    evaluated = runner.invoke(app, ["evaluate", "--model", str(tmp_path), *data, "--split", "all", "--bootstrap", "10", "--format", "json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["leakage"]["checked"] is False
    assert "patient overlap cannot be checked" in evaluated.stderr


def test_saved_model_is_the_best_epoch_with_its_validation_threshold(mias_split, tiny, tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from mammofuse.evaluation.metrics import youden_threshold

    train_samples, val_samples = mias_split
    result = train(replace(tiny, fusion="concat", epochs=3, selection="best"), train_samples, val_samples, tmp_path)
    aucs = [h["val_auc"] for h in result.history]
    assert result.best_epoch == 1 + int(np.argmax(aucs)) and result.best_val_auc == pytest.approx(max(aucs), abs=1e-6)
    probs = probabilities(tmp_path, val_samples)
    labels = np.array([s.label for s in val_samples])
    assert roc_auc_score(labels, probs) == pytest.approx(result.best_val_auc, abs=1e-5)
    threshold = load_model(tmp_path).config.threshold
    assert threshold == youden_threshold(labels, probs)  # exactly a probability scoring gives, not a float32 neighbour of it
    called = [s.label for s, p in zip(val_samples, probs) if decide(p, threshold) == MALIGNANT]
    assert len(called) == int(np.sum(probs >= threshold))  # the case it came from is on the side Youden's J put it


def test_without_a_validation_part_every_patient_trains_and_the_threshold_is_not_tuned(mias_split, tiny, tmp_path: Path) -> None:
    train_samples, val_samples = mias_split
    assert train_val_split(train_samples, 0.0) == (train_samples, [])
    train_samples = [replace(s, abnormality="mass") for s in train_samples]
    result = train(replace(tiny, fusion="concat", epochs=2, val_fraction=0.0), train_samples, [], tmp_path)
    assert [(h["val_loss"], h["val_auc"]) for h in result.history] == [(None, None)] * 2
    config = load_model(tmp_path).config
    assert config.threshold == 0.5 and config.provenance["n_train"] == len(train_samples) and config.provenance["n_val"] == 0
    assert config.provenance["abnormality"] == ["mass"]  # predict notes calcification findings given to such a model
    assert "not tuned: no validation part" in (tmp_path / "README.md").read_text()
    with pytest.raises(MammofuseError, match="selection best needs them"):
        train(replace(tiny, selection="best"), train_samples, [], tmp_path / "best")


def test_a_validation_part_of_one_class_is_said_to_leave_the_threshold_untuned(tmp_path: Path) -> None:
    """Was: a validation part of benign cases alone kept threshold 0.5 and the epoch of least validation loss silently,
    and the card (and evaluate's threshold_source) said the threshold was chosen on validation by Youden's J."""
    from mammofuse.provenance import threshold_source

    notes = Recorder()
    benign = [s for s in synthetic_clinical(20, 2) if not s.label]
    train(TrainSettings(fusion="clinical", epochs=2, proj_dim=16, selection="best"), synthetic_clinical(40, 1), benign, tmp_path,
          callbacks=[notes])
    assert [e[1] for e in notes.of("log")] == ["warning: the validation part has only benign cases (no AUC): the threshold is 0.5, "
                                              "not tuned; --selection best chooses the epoch by validation loss"]
    config = load_model(tmp_path).config
    assert config.threshold == 0.5 and config.provenance["n_val_malignant"] == 0
    assert threshold_source(config.provenance).startswith("not tuned (validation part of one class)")
    card = (tmp_path / "README.md").read_text()
    assert "- Decision threshold 0.500: not tuned (validation part of one class)" in card and "by Youden's J" not in card
    assert "- The validation part holds only benign cases, so it gives no AUC: the threshold is 0.5, not tuned, its loss chose the epoch" in card


class Recorder(TrainCallback):
    """Keeps every report of a run, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_train_start(self, settings: TrainSettings) -> None:
        self.events.append(("start", settings.epochs))

    def on_phase_start(self, description: str, total: int) -> None:
        self.events.append(("phase", description, total))

    def on_phase_advance(self, steps: int, note: str) -> None:
        self.events.append(("advance", steps))

    def on_phase_end(self) -> None:
        self.events.append(("end",))

    def on_epoch_end(self, row: EpochRow, improved: bool) -> None:
        self.events.append(("epoch", row, improved))

    def on_log(self, message: str) -> None:
        self.events.append(("log", message))

    def of(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]


@pytest.mark.parametrize(("selection", "validate"), [("best", True), ("last", True), ("last", False)])
def test_epoch_lines_mark_best_only_when_selection_best_and_the_auc_improved(selection, validate, mias_split, tiny, tmp_path, capsys) -> None:
    from mammofuse.cli.train_progress import TrainProgress

    settings = replace(tiny, fusion="clinical", epochs=5, freeze_epochs=0, selection=selection, patience=5, val_fraction=0.2 if validate else 0)
    result = train(settings, mias_split[0], mias_split[1] if validate else [], tmp_path, callbacks=[TrainProgress()])
    marked = [line.endswith("  best") for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    aucs = [row["val_auc"] for row in result.history]
    assert marked == [selection == "best" and auc > max(aucs[:i], default=-1.0) for i, auc in enumerate(aucs)], aucs


def test_unreadable_image_trains_as_image_absent_with_one_warning(mias_split, tiny, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    train_samples = [replace(mias_split[0][0], id="broken", image_path=str(broken)), *mias_split[0][1:]]
    recorder = Recorder()
    result = train(replace(tiny, fusion="concat", epochs=2, freeze_epochs=1), train_samples, mias_split[1], tmp_path / "run",
                   callbacks=[recorder])
    assert len(result.history) == 2 and all(np.isfinite(h["train_loss"]) for h in result.history)
    notes = [message for _, message in recorder.of("log")]
    assert len(notes) == 1 and "1 image(s) could not be read" in notes[0] and "broken.png" in notes[0]


@pytest.mark.parametrize("freeze_epochs", [0, 1])
def test_no_readable_training_image_fails_before_a_model_is_written(mias_split, tiny, tmp_path: Path, freeze_epochs: int) -> None:
    """Every training image unreadable trained an image model on none with one warning, and exited 0."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    train_samples = [replace(s, image_path=str(broken)) for s in mias_split[0]]
    with pytest.raises(MammofuseError, match=r"none of the 16 training images could be read \(e.g. .*broken.png: .*\): fix them"):
        train(replace(tiny, fusion="concat", freeze_epochs=freeze_epochs), train_samples, mias_split[1], tmp_path / "run")
    assert not (tmp_path / "run" / "model.safetensors").exists() and not (tmp_path / "run" / "last").exists()


def test_train_cli_with_no_readable_image_is_a_usage_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mammofuse.cli import app

    rows = ["path,label,patient_id,density"] + [f"{k}.png,{k % 2},p{k},{k % 4 + 1}" for k in range(10)]
    for k in range(10):
        (tmp_path / f"{k}.png").write_bytes(b"not a png")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(app, ["train", "--dataset", "manifest", "--data", str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "run"),
                                      "--fusion", "concat", "--image-size", "32", "--proj-dim", "16", "--epochs", "1", "--pretrained", "none",
                                      "--input", "full"])
    assert result.exit_code == 2, result.output
    assert "error: none of the 8 training images could be read" in result.stderr and "Traceback" not in result.output


def test_callbacks_see_phases_then_epoch_rows_in_order(mias_split, tiny, tmp_path: Path) -> None:
    recorder = Recorder()
    result = train(replace(tiny, fusion="concat", epochs=2, augment=False), *mias_split, tmp_path, callbacks=[recorder])
    assert recorder.events[0] == ("start", 2)
    rows = [row for _, row, _ in recorder.of("epoch")]
    assert [r["epoch"] for r in rows] == [1, 2] and rows == result.history
    assert [improved for *_, improved in recorder.of("epoch")] == [True, True]  # selection: last keeps every new epoch
    phases = [e[1] for e in recorder.of("phase")]
    assert phases == ["caching train features", "caching val features", "epoch 1/2 (frozen)", "epoch 2/2"]
    assert len(recorder.of("end")) == len(phases)
    first_epoch = recorder.events.index(("phase", "epoch 1/2 (frozen)", 2))
    assert recorder.events[first_epoch + 1 : first_epoch + 4] == [("advance", 1), ("advance", 1), ("end",)]  # 16 cases, batches of 8
    assert not recorder.of("log")


def test_a_model_whose_inputs_no_training_case_gives_is_refused_and_cases_without_a_region_are_counted(mias_split, tiny, tmp_path: Path) -> None:
    """A lesion-crop model trained on cases without regions, and a findings model on cases without findings, were
    written without a word: neither had read anything of what it was made for."""
    train_samples, val_samples = mias_split
    with pytest.raises(MammofuseError, match=r"^--fusion clinical reads the clinical findings, and no training sample gives one"):
        train(replace(tiny, fusion="clinical"), [replace(s, clinical={}) for s in train_samples], val_samples, tmp_path / "a")
    with pytest.raises(MammofuseError, match=r"^--input roi crops each lesion, and none of the 16 training cases with an image gives its "
                                             r"lesion region \(roi_row, roi_col, roi_radius in a manifest\): give the regions"):
        train(replace(tiny, fusion="image"), [replace(s, region=None) for s in train_samples], val_samples, tmp_path / "b")
    recorder = Recorder()
    some = [replace(s, region=None) if i % 4 == 0 else s for i, s in enumerate(train_samples)]
    train(replace(tiny, fusion="image"), some, val_samples, tmp_path / "c", callbacks=[recorder])
    assert [m for _, m in recorder.of("log")] == [
        "warning: 4 of the 16 train cases with an image give no lesion region: a lesion-crop model leaves their image out"]


def test_train_without_callbacks_prints_nothing(tmp_path: Path, capfd) -> None:
    settings = TrainSettings(fusion="clinical", epochs=2, proj_dim=16)
    train(settings, synthetic_clinical(40, 1), synthetic_clinical(20, 2), tmp_path)
    train(replace(settings, epochs=2), synthetic_clinical(40, 1), synthetic_clinical(20, 2), tmp_path, resume=True)  # nothing to train
    assert capfd.readouterr() == ("", "")


def test_the_trainer_does_not_import_rich() -> None:
    code = "import sys, mammofuse.training.trainer, mammofuse.evaluation.ablation; print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_settings_check_the_device_as_every_command_does() -> None:
    from mammofuse.device import resolve_device

    with pytest.raises(MammofuseError) as direct:
        resolve_device("cuda:0")
    with pytest.raises(MammofuseError) as settings:
        TrainSettings(device="cuda:0")
    assert str(settings.value) == str(direct.value) == "device cuda:0: CUDA is not available on this machine (use cpu or auto)"
    with pytest.raises(MammofuseError, match="auto, cpu, cuda, cuda:N or mps"):
        TrainSettings(device="gpu")


@pytest.mark.parametrize("spec", ["cpu", "CPU", " cpu:0 ", torch.device("cpu"), torch.device("cpu", 0)])
def test_every_spelling_of_the_cpu_is_the_cpu(spec: object) -> None:
    from mammofuse.device import resolve_device

    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cpu:1", "cpu:", "auto:0", "gpu", "mps:x", ""])
def test_malformed_devices_are_named(spec: str) -> None:
    from mammofuse.device import resolve_device

    with pytest.raises(MammofuseError, match=f"device must be auto, cpu, cuda, cuda:N or mps, not {spec!r}"):
        resolve_device(spec)


def synthetic_clinical(n: int, seed: int) -> list[Sample]:
    """Spiculated margins are malignant, circumscribed benign; density is noise; no images."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        label = int(rng.random() < 0.35)
        samples.append(Sample(
            id=f"s{seed}_{i}", patient_id=f"p{seed}_{i}", label=label,
            clinical={"margin": "SPICULATED" if label else "CIRCUMSCRIBED", "density": str(rng.integers(1, 5))},
        ))
    return samples


def test_loss_falls_on_a_learnable_task(tmp_path: Path) -> None:
    settings = TrainSettings(fusion="clinical", epochs=5, batch_size=16, lr=1e-2, proj_dim=16, patience=10)
    result = train(settings, synthetic_clinical(128, 1), synthetic_clinical(32, 2), tmp_path)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.15 * losses[0]  # about 0.1 with torch 2.6 to 2.14
    assert result.best_val_auc > 0.99


def _run(settings: TrainSettings, samples, out: Path, resume: bool = False):
    return train(settings, *samples, out, resume=resume)


def test_resume_from_the_cli_continues_with_the_runs_own_settings(mini_mias: Path, tmp_path: Path) -> None:
    """Only the flags given again are compared: the others are the run's (they used to be the defaults, and refused)."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    runner = CliRunner()
    data = ["--data", str(mini_mias), "--out", str(tmp_path)]
    first = runner.invoke(app, ["train", "--dataset", "mini-mias", *data, "--fusion", "clinical", "--epochs", "1", "--schedule", "step",
                                "--lr", "0.01"])
    assert first.exit_code == 0, first.output
    more = runner.invoke(app, ["train", *data, "--epochs", "2", "--resume"])
    assert more.exit_code == 0, more.output
    config = load_model(tmp_path).config
    assert config.fusion == "clinical" and config.provenance["settings"]["lr"] == 0.01 and config.provenance["settings"]["epochs"] == 2
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 2
    other = runner.invoke(app, ["train", *data, "--epochs", "3", "--lr", "0.1", "--resume"])
    assert other.exit_code == 2 and "settings differ" in other.output and "lr 0.01" in " ".join(other.output.split())


def test_resume_without_a_run_says_nothing_to_resume_before_reading_data(tmp_path: Path) -> None:
    """Without --dataset it used to say "--dataset is required", though --resume takes the dataset from the run."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    (tmp_path / "finished").mkdir()  # a finished run whose last/ was removed
    for out in (tmp_path / "nonexistent", tmp_path / "finished"):
        result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "no-data"), "--out", str(out), "--resume"])
        assert result.exit_code == 2, result.output
        assert f"{out}: nothing to resume (no last/checkpoint.json)" in result.output


def _interrupted_after_two_epochs(settings: TrainSettings, data: tuple[list[Sample], list[Sample]], out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train ``settings`` into ``out`` as a run that Ctrl-C stops when epoch 3 begins."""
    from mammofuse.training.trainer import _Trainer

    one_epoch = _Trainer._one_epoch

    def stop_after_two(self: _Trainer, epoch: int) -> None:
        if epoch == 3:
            raise KeyboardInterrupt
        one_epoch(self, epoch)

    with monkeypatch.context() as patched:
        patched.setattr(_Trainer, "_one_epoch", stop_after_two)
        with pytest.raises(KeyboardInterrupt):
            _run(settings, data, out)


def test_resume_is_exact(mias_split, tiny, tmp_path: Path, monkeypatch) -> None:
    """4 epochs straight vs a run stopped after epoch 2 and resumed to 4: across the frozen -> fine-tune switch,
    with augmentation and a cosine schedule over the whole run."""
    from safetensors.torch import load_file


    settings = replace(tiny, fusion="co", epochs=4, freeze_epochs=1)
    _run(settings, mias_split, tmp_path / "straight")
    _interrupted_after_two_epochs(settings, mias_split, tmp_path / "resumed", monkeypatch)
    halfway = load_file(str(tmp_path / "resumed" / "last" / "epoch-0002.safetensors"))
    result = _run(settings, mias_split, tmp_path / "resumed", resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    a = load_file(str(tmp_path / "straight" / "last" / "epoch-0004.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "last" / "epoch-0004.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # weights, optimiser, RNG
    assert not torch.equal(a["model.head.4.weight"], halfway["model.head.4.weight"])  # epochs 3-4 did train
    assert (tmp_path / "straight" / "model.safetensors").read_bytes() == (tmp_path / "resumed" / "model.safetensors").read_bytes()
    history = lambda d: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in (tmp_path / d / "history.jsonl").read_text().splitlines()]  # noqa: E731
    assert history("straight") == history("resumed")


def test_a_diverged_epoch_stops_the_run_unsaved_and_resume_stays_exact(tmp_path: Path, monkeypatch) -> None:
    """A NaN training loss wrote a NaN model and history, and the run ended as a success."""
    from safetensors.torch import load_file

    from mammofuse.training.trainer import _Trainer

    settings = TrainSettings(fusion="clinical", epochs=3, proj_dim=16, schedule="step")
    data = (synthetic_clinical(40, 1), synthetic_clinical(20, 2))
    _run(settings, data, tmp_path / "straight")
    loss = _Trainer._loss
    monkeypatch.setattr(_Trainer, "_loss", lambda self, *args: loss(self, *args) * (math.nan if self.state.epoch == 1 else 1.0))
    with pytest.raises(MammofuseError, match=r"^training diverged in epoch 2 \(training loss nan\); epoch 2 was not saved: lower --lr \(now 0.001\)$"):
        _run(settings, data, tmp_path / "resumed")
    monkeypatch.setattr(_Trainer, "_loss", loss)
    out = tmp_path / "resumed"
    assert len((out / "history.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in (out / "last").iterdir()) == ["checkpoint.json", "epoch-0001.safetensors"]
    load_model(out)  # the first epoch's model, finite
    assert _run(settings, data, out, resume=True).best_epoch == 3
    a, b = (load_file(str(tmp_path / d / "last" / "epoch-0003.safetensors")) for d in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_loss_climbing_far_above_the_first_epochs_is_warned_of_once(tmp_path: Path, monkeypatch) -> None:
    """Was: a run at --lr 10 whose loss climbed 0.66 -> 493 -> 401685, finite, was saved as normal without a word."""
    from mammofuse.training.trainer import _Trainer

    settings = TrainSettings(fusion="clinical", epochs=3, proj_dim=16)
    data = (synthetic_clinical(40, 1), synthetic_clinical(20, 2))
    notes = Recorder()
    train(settings, *data, tmp_path / "plain", callbacks=[notes])
    assert not notes.of("log")
    loss = _Trainer._loss
    monkeypatch.setattr(_Trainer, "_loss", lambda self, *args: loss(self, *args) * (1.0 if self.state.epoch == 0 else 100.0))
    notes = Recorder()
    train(settings, *data, tmp_path / "diverging", callbacks=[notes])
    [(_, message)] = notes.of("log")
    assert re.fullmatch(r"warning: training loss \S+ in epoch 2 is over 10x the first epoch's \(\S+\): the run is diverging; "
                        r"train again with a lower --lr \(now 0.001\)", message)
    monkeypatch.setattr(_Trainer, "_loss", lambda self, *args: loss(self, *args) * 1e6)  # diverging from the first epoch
    notes = Recorder()
    train(settings, *data, tmp_path / "diverged", callbacks=[notes])
    [(_, message)] = notes.of("log")
    assert re.fullmatch(r"warning: training loss \S+ in epoch 1 is over 10x a constant guess's \(1.39\): the run is diverging; "
                        r"train again with a lower --lr \(now 0.001\)", message)


@pytest.mark.parametrize("selection", ["best", "last"])
def test_an_interrupted_runs_model_says_it_is_unfinished_until_the_run_finishes(selection: str, tmp_path: Path, monkeypatch) -> None:
    """Was: a run stopped at epoch 2 of 4 left a model that predict scored with without a word, and a card with its
    threshold and nothing about the epochs it lacked."""
    from PIL import Image
    from typer.testing import CliRunner

    from mammofuse.cli import app

    settings = TrainSettings(fusion="clinical", epochs=4, proj_dim=16, schedule="step", selection=selection)
    data = (synthetic_clinical(40, 1), synthetic_clinical(20, 2))
    _interrupted_after_two_epochs(settings, data, tmp_path, monkeypatch)
    provenance = lambda: json.loads((tmp_path / "config.json").read_text())["provenance"]  # noqa: E731
    assert provenance()["unfinished"] == {"epochs_run": 2, "epochs": 4}
    remark = "trained 2 of 4 epochs (an interrupted run: continue it with train --resume)"
    assert f"- Unfinished: {remark}" in (tmp_path / "README.md").read_text()
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(tmp_path / "case.png")
    predict = ["predict", str(tmp_path / "case.png"), "--model", str(tmp_path), "--density", "3", "--margin", "spiculated", "--format", "json"]
    scored = CliRunner().invoke(app, predict)
    assert scored.exit_code == 0, scored.output
    assert f": {remark}" in scored.stderr and scored.stderr.count(remark) == 1
    _run(settings, data, tmp_path, resume=True)
    assert "unfinished" not in provenance() and "Unfinished" not in (tmp_path / "README.md").read_text()
    assert remark not in CliRunner().invoke(app, predict).stderr


def test_a_model_config_with_a_malformed_unfinished_mark_is_refused_in_one_line() -> None:
    from mammofuse.model.config import check_provenance

    with pytest.raises(MammofuseError, match=r"provenance.unfinished.epochs_run"):
        check_provenance({"unfinished": {"epochs_run": "two", "epochs": 4}})


def _files(out: Path) -> dict[Path, bytes]:
    """Every file under ``out`` with its bytes, temporaries included."""
    return {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def _disk_full_at(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Writing the temporary of the file ``name`` fails as on a full disk."""
    import errno
    from typing import Callable

    def failing(write: Callable[..., int]) -> Callable[..., int]:
        def writing(path: Path, data: object, *args: object, **kwargs: object) -> int:
            if path.name.startswith(f".{name}."):
                raise OSError(errno.ENOSPC, "No space left on device")
            return write(path, data, *args, **kwargs)
        return writing

    monkeypatch.setattr(Path, "write_bytes", failing(Path.write_bytes))
    monkeypatch.setattr(Path, "write_text", failing(Path.write_text))


@pytest.mark.parametrize("failing", ["epoch-0002.safetensors", "checkpoint.json", "history.jsonl", "model.safetensors"])
def test_an_epoch_that_cannot_be_written_leaves_the_previous_one_whole_and_resumable(failing: str, tmp_path: Path, monkeypatch) -> None:
    """A full disk at the checkpoint left epoch 2's model, config and a minimal card beside epoch 1's history and
    checkpoint; one at checkpoint.json left an orphan epoch-0002.safetensors."""
    from safetensors.torch import load_file

    from mammofuse.errors import OutputError

    settings = TrainSettings(fusion="clinical", epochs=2, proj_dim=16, schedule="step", selection="last")
    data = (synthetic_clinical(40, 1), synthetic_clinical(20, 2))
    _run(settings, data, tmp_path / "straight")
    out = tmp_path / "resumed"
    _run(replace(settings, epochs=1), data, out)
    before = {p: b for p, b in _files(out).items() if p.name != "train_config.yaml"}  # the resumed run's settings: written first
    _disk_full_at(monkeypatch, failing)
    with pytest.raises(OutputError, match=r": cannot write \(No space left on device\)$"):
        _run(settings, data, out, resume=True)
    monkeypatch.undo()
    assert {p: b for p, b in _files(out).items() if p.name != "train_config.yaml"} == before
    assert _run(settings, data, out, resume=True).best_epoch == 2
    a, b = (load_file(str(tmp_path / d / "last" / "epoch-0002.safetensors")) for d in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_checkpoint_json_goes_in_after_the_rest_of_the_epoch(tmp_path: Path, monkeypatch) -> None:
    """The JSON was moved in before the tensor file it names: a run killed between them could not be resumed."""
    import mammofuse.atomic as atomic

    moved: list[str] = []
    replace_file = os.replace

    def recording(source: str, target: str) -> None:
        moved.append(Path(target).name)
        replace_file(source, target)

    monkeypatch.setattr(atomic.os, "replace", recording)
    _run(TrainSettings(fusion="clinical", epochs=1, proj_dim=16, schedule="step"), (synthetic_clinical(40, 1), synthetic_clinical(20, 2)), tmp_path)
    epoch = moved[:moved.index("checkpoint.json") + 1]
    assert epoch[-1] == "checkpoint.json" and {"epoch-0001.safetensors", "model.safetensors", "config.json", "history.jsonl"} <= set(epoch)


def test_train_refuses_a_last_folder_it_cannot_write_before_training(tmp_path: Path, monkeypatch) -> None:
    """A read-only last/ was found only at the end of the first epoch, after training it."""
    import errno
    import tempfile

    from typer.testing import CliRunner

    import mammofuse.atomic as atomic
    from mammofuse.cli import app

    runner, out = CliRunner(), tmp_path / "run"
    command = ["train", "--dataset", "manifest", "--out", str(out), "--data", str(clinical_manifest(tmp_path / "m.csv")), "--fusion", "clinical",
               "--schedule", "step", "--epochs", "1"]
    assert runner.invoke(app, command).exit_code == 0
    before = _files(out)
    make = tempfile.mkstemp

    def read_only_last(*args: object, dir: str, **kwargs: object) -> tuple[int, str]:
        if Path(dir) == out / "last":
            raise OSError(errno.EROFS, "Read-only file system")
        return make(*args, dir=dir, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only_last)
    second = runner.invoke(app, [*command[:-1], "2", "--resume"])
    assert second.exit_code == 3 and second.stderr.splitlines()[-1] == f"error: {out / 'last'}: cannot write (Read-only file system)", second.output
    assert "training clinical" not in second.stderr and _files(out) == before


def test_resume_refuses_changed_settings_and_fresh_runs_refuse_an_existing_run(tmp_path: Path) -> None:
    settings = TrainSettings(fusion="clinical", epochs=1, proj_dim=16, schedule="step")  # step: the epoch count may grow
    data = (synthetic_clinical(40, 1), synthetic_clinical(20, 2))
    _run(settings, data, tmp_path)
    with pytest.raises(MammofuseError, match="already holds a training run"):
        _run(settings, data, tmp_path)
    with pytest.raises(MammofuseError, match="lr 0.001 -> 0.01"):
        _run(replace(settings, epochs=2, lr=0.01), data, tmp_path, resume=True)
    with pytest.raises(MammofuseError, match="nothing to resume"):
        _run(settings, data, tmp_path / "empty", resume=True)
    state_file = tmp_path / "last" / "checkpoint.json"
    state = json.loads(state_file.read_text())
    assert state["processes"] == 1
    state_file.write_text(json.dumps({**state, "processes": 2}))  # made under torchrun --nproc-per-node 2
    with pytest.raises(MammofuseError, match=r"trained in 2 process\(es\), this one has 1; each process takes --batch-size"):
        _run(replace(settings, epochs=2), data, tmp_path, resume=True)
    state_file.write_text(json.dumps(state))
    assert len(_run(replace(settings, epochs=2), data, tmp_path, resume=True).history) == 2


@pytest.mark.parametrize("selection", ["last", "best"])
def test_resume_that_changes_patient_digests_rewrites_the_kept_models_config(selection: str, tmp_path: Path) -> None:
    """The card said "config.json lists no patient digests" while config.json kept them: only a newly kept epoch rewrote it."""
    settings = TrainSettings(fusion="clinical", epochs=1, proj_dim=16, schedule="step", selection=selection)
    data = (synthetic_clinical(40, 1), synthetic_clinical(20, 2))
    _run(settings, data, tmp_path)
    provenance = lambda: json.loads((tmp_path / "config.json").read_text())["provenance"]  # noqa: E731
    digests = {k: provenance()[k] for k in ("train_patients", "val_patients")}
    weights = (tmp_path / "model.safetensors").read_bytes()
    _run(replace(settings, patient_digests=False), data, tmp_path, resume=True)  # finished: nothing to train, no epoch kept
    assert not {"train_patients", "val_patients"} & set(provenance()) and provenance()["settings"]["patient_digests"] is False
    assert "lists no patient digests" in (tmp_path / "README.md").read_text()
    assert load_model(tmp_path).config.provenance == provenance() and (tmp_path / "model.safetensors").read_bytes() == weights
    _run(settings, data, tmp_path, resume=True)
    assert {k: provenance()[k] for k in digests} == digests and provenance()["settings"]["patient_digests"] is True


def test_a_run_with_relative_paths_resumes_from_another_folder(mias_split, tmp_path: Path, monkeypatch) -> None:
    """A relative --pretrained was looked up from the new folder ("bb.safetensors: no such file"), and the same file
    given by its absolute path was "settings differ (pretrained 'bb.safetensors' -> '/abs/bb.safetensors')"."""
    from typer.testing import CliRunner

    from mammofuse.backbones import backbone_path
    from mammofuse.cli import app

    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    for folder in (start, elsewhere):
        folder.mkdir()
    for name in ("bb.safetensors", "other.safetensors"):
        shutil.copy(backbone_path("cbis-texture-cnn4"), start / name)
    manifest = str(write_manifest([*mias_split[0], *mias_split[1]], tmp_path / "m.csv"))
    runner, run = CliRunner(), ["--data", manifest, "--out", str(tmp_path / "run")]
    monkeypatch.chdir(start)
    first = runner.invoke(app, ["train", "--dataset", "manifest", *run, "--fusion", "image", "--image-size", "32", "--batch-size", "8",
                                "--pretrained", "bb.safetensors", "--schedule", "step", "--epochs", "1"])
    assert first.exit_code == 0, first.output
    assert load_model(tmp_path / "run").config.provenance["settings"]["pretrained"] == "bb.safetensors"  # as given, not this machine's path
    monkeypatch.chdir(elsewhere)
    again = runner.invoke(app, ["train", *run, "--epochs", "2", "--resume"])
    assert again.exit_code == 0, again.output
    absolute = runner.invoke(app, ["train", *run, "--epochs", "3", "--pretrained", str(start / "bb.safetensors"), "--resume"])
    assert absolute.exit_code == 0, absolute.output
    other = runner.invoke(app, ["train", *run, "--epochs", "4", "--pretrained", str(start / "other.safetensors"), "--resume"])
    assert other.exit_code == 2 and "settings differ" in other.output and "other.safetensors" in other.output, other.output
    assert len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 3


def clinical_manifest(path: Path, flip: bool = False) -> Path:
    """60 clinical-only manifest rows (ids are row numbers); ``flip`` turns every label over."""
    rows = ["path,label,patient_id,density,shape,margin"]
    for n, s in enumerate(synthetic_clinical(60, 3)):
        rows.append(f",{s.label ^ flip},p{n // 2},{s.clinical['density']},oval,{s.clinical['margin'].lower()}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_resume_refuses_other_data_under_the_same_ids(tmp_path: Path) -> None:
    """Only the ids were digested: a manifest's ids are its row numbers, so relabelled rows resumed as the same data (exit 0)."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    runner = CliRunner()
    out = ["--dataset", "manifest", "--out", str(tmp_path / "run")]
    first = runner.invoke(app, ["train", *out, "--data", str(clinical_manifest(tmp_path / "m1.csv")), "--fusion", "clinical",
                                "--schedule", "step", "--epochs", "1"])
    assert first.exit_code == 0, first.output
    flipped = runner.invoke(app, ["train", *out, "--data", str(clinical_manifest(tmp_path / "m2.csv", flip=True)), "--epochs", "2", "--resume"])
    assert flipped.exit_code == 2, flipped.output
    assert "the training/validation samples differ from the run in" in flipped.output
    same = runner.invoke(app, ["train", *out, "--data", str(clinical_manifest(tmp_path / "m3.csv")), "--epochs", "2", "--resume"])
    assert same.exit_code == 0, same.output


def test_a_checkpoint_of_an_older_mammofuse_is_refused_in_one_line(tmp_path: Path) -> None:
    """Format 1 digested ids only (and older ones lack later settings, e.g. aux_findings): they cannot be compared."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    settings = TrainSettings(fusion="clinical", epochs=1, proj_dim=16, schedule="step")
    data = (synthetic_clinical(40, 1), synthetic_clinical(20, 2))
    _run(settings, data, tmp_path)
    state_file = tmp_path / "last" / "checkpoint.json"
    state = json.loads(state_file.read_text())
    state["settings"].pop("aux_findings")  # as before --aux-findings
    state_file.write_text(json.dumps({**state, "format": 1}))
    older = f"{state_file}: a checkpoint of an older mammofuse (format 1, now 2), which this one cannot resume: train again (delete {tmp_path / 'last'}, or choose another --out)"
    with pytest.raises(MammofuseError) as info:
        _run(replace(settings, epochs=2), data, tmp_path, resume=True)
    assert str(info.value) == older
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path), "--epochs", "2", "--aux-findings", "0", "--resume"])
    assert result.exit_code == 2 and " ".join(result.output.split()) == " ".join(f"error: {older}".split())
    state_file.write_text(json.dumps(state))  # this format, a setting missing: it used to compare as None, never equal
    with pytest.raises(MammofuseError, match=r"checkpoint.json records no aux_findings setting \(written by another mammofuse version\?\), so the run cannot "
                                             r"be continued as it was: train again$"):
        _run(replace(settings, epochs=2, aux_findings=0.0), data, tmp_path, resume=True)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda state: [], "a checkpoint is a JSON object, not list"),
    (lambda state: None, "a checkpoint is a JSON object, not NoneType"),
    (lambda state: {k: v for k, v in state.items() if k != "tensors"}, "names no tensor file"),
    (lambda state: {k: v for k, v in state.items() if k != "settings"}, "damaged checkpoint (KeyError: 'settings')"),
    (lambda state: {**state, "settings": []}, "damaged checkpoint (AttributeError"),
    (lambda state: {**state, "rng": {**state["rng"], "numpy": [1]}}, "damaged checkpoint (ValueError"),
])
def test_resume_from_a_damaged_checkpoint_is_one_line_naming_it(edit, message: str, tmp_path: Path) -> None:
    """A checkpoint.json edited or damaged by hand crashed --resume (exit 4) instead of naming the file."""
    settings = TrainSettings(fusion="clinical", epochs=1, proj_dim=16, schedule="step")
    data = (synthetic_clinical(40, 1), synthetic_clinical(20, 2))
    _run(settings, data, tmp_path)
    state_file = tmp_path / "last" / "checkpoint.json"
    state_file.write_text(json.dumps(edit(json.loads(state_file.read_text()))))
    with pytest.raises(MammofuseError) as info:
        _run(replace(settings, epochs=2), data, tmp_path, resume=True)
    assert str(info.value).startswith(f"{state_file}: ") and message in str(info.value), info.value
    assert "\n" not in str(info.value)


def _mixed_precision_on_the_cpu(monkeypatch) -> None:
    """Train under bfloat16 autocast on the CPU, as ``--amp`` does on a GPU (no GPU here): the same ops run in bfloat16."""
    from mammofuse.training.build import Optimisation

    monkeypatch.setattr(Optimisation, "autocast", lambda self: torch.autocast("cpu", dtype=torch.bfloat16))


def test_under_mixed_precision_the_threshold_is_still_a_probability_scoring_gives(mias_split, tiny, tmp_path: Path, monkeypatch) -> None:
    """Validation scored under the run's autocast gave a threshold and AUC of bfloat16 logits, not of what predict gives."""
    from mammofuse.evaluation.metrics import youden_threshold

    _mixed_precision_on_the_cpu(monkeypatch)
    train_samples, val_samples = mias_split
    result = train(replace(tiny, fusion="concat", epochs=2, selection="best"), train_samples, val_samples, tmp_path)
    probs = probabilities(tmp_path, val_samples)
    labels = np.array([s.label for s in val_samples])
    assert load_model(tmp_path).config.threshold == youden_threshold(labels, probs)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, probs) == pytest.approx(result.best_val_auc, abs=1e-6)


@pytest.mark.parametrize("mixed_precision", [False, True])
def test_feature_cache_matches_uncached_frozen_epochs(mixed_precision: bool, mias_split, tiny, tmp_path: Path, monkeypatch) -> None:
    """Also under mixed precision: the uncached frozen backbone ran in bfloat16 where the cache holds float32 features."""
    from mammofuse.cache import cache_root

    if mixed_precision:
        _mixed_precision_on_the_cpu(monkeypatch)
    settings = replace(tiny, fusion="cross", epochs=2, freeze_epochs=2, augment=False)  # the cache needs fixed inputs
    off = _run(replace(settings, feature_cache="off"), mias_split, tmp_path / "off")
    disk = _run(replace(settings, feature_cache="disk"), mias_split, tmp_path / "disk")
    for a, b in zip(off.history, disk.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    stored = list((cache_root() / "features").rglob("*.safetensors"))
    assert len(stored) == sum(s.has_image for part in mias_split for s in part)
    again = _run(replace(settings, feature_cache="disk"), mias_split, tmp_path / "again")  # all hits now
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in disk.history]


def test_a_feature_cache_that_fills_the_disk_keeps_the_rest_in_memory(mias_split, tiny, tmp_path: Path, monkeypatch) -> None:
    """A full disk under the cache ended the run (exit 3) at the first entry it could not write."""
    from mammofuse import atomic
    from mammofuse.errors import MammofuseWarning, OutputError

    write_bytes, written = atomic.write_bytes, []

    def disk_fills_after_three(path: Path, data: bytes) -> None:
        if "features" in path.parts and len(written) == 3:
            raise OutputError(path, "No space left on device")
        written.append(path)
        write_bytes(path, data)

    settings = replace(tiny, fusion="cross", epochs=2, freeze_epochs=2, augment=False)
    off = _run(replace(settings, feature_cache="off"), mias_split, tmp_path / "off")
    monkeypatch.setenv("MAMMOFUSE_CACHE", str(tmp_path / "cache"))  # empty: another test's entries would all be hits
    monkeypatch.setattr(atomic, "write_bytes", disk_fills_after_three)
    with pytest.warns(MammofuseWarning, match="cannot write the cache .No space left on device.: this run keeps the frozen backbone's features in memory only") as caught:
        full = _run(replace(settings, feature_cache="disk"), mias_split, tmp_path / "full")
    assert len([w for w in caught if "cannot write the cache" in str(w.message)]) == 1
    assert len(written) == 3
    for a, b in zip(off.history, full.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_cache_key_follows_recipe_and_weights(mias_split) -> None:
    from mammofuse.imaging.preprocess import PreprocessRecipe
    from mammofuse.model.encoders import resnet_backbone
    from mammofuse.model.io import state_digest
    from mammofuse.training.features import sample_key

    sample = mias_split[0][0]
    assert sample_key(sample, PreprocessRecipe(image_size=32)) != sample_key(sample, PreprocessRecipe(image_size=64))
    assert sample_key(sample, PreprocessRecipe(image_size=32)) != sample_key(mias_split[0][1], PreprocessRecipe(image_size=32))
    masked = dataclasses.replace(sample, region=None, roi_mask_path="/masks/1.png")  # two lesions of a film, known by their masks
    assert sample_key(masked, PreprocessRecipe()) != sample_key(dataclasses.replace(masked, roi_mask_path="/masks/2.png"), PreprocessRecipe())
    torch.manual_seed(0)
    net, _ = resnet_backbone("resnet18")
    before = state_digest(net)
    with torch.no_grad():
        net.layer4[1].bn2.running_mean += 1
    assert state_digest(net) != before


def _rewritten_keeping_size_and_mtime(path: Path, data: bytes, in_place: bool) -> None:
    """Write ``data`` (as long as the file) to ``path``, in place (``cp -p``) or as a new file (``tar -x``), and set
    its modification time back; after a clock tick, so that the change time can differ."""
    before = path.stat()
    assert len(data) == before.st_size
    time.sleep(0.05)
    if in_place:
        with path.open("r+b") as fh:
            fh.write(data)
    else:
        path.with_suffix(".new").write_bytes(data)
        os.replace(path.with_suffix(".new"), path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


@pytest.mark.parametrize("in_place", [True, False], ids=["in place", "replaced"])
def test_a_file_given_new_bytes_of_the_same_size_and_mtime_is_a_cache_miss(in_place: bool, tmp_path: Path) -> None:
    """The feature cache keyed on path, size and mtime: after `cp -p` of other pixels, training reused the old features
    (weights bit-identical to the old data's); a backbone file rewritten so kept its digest within a run."""
    from mammofuse.imaging.preprocess import PreprocessRecipe
    from mammofuse.training.features import sample_key
    from mammofuse.training.pretrain import weights_file_digest

    image = tmp_path / "a.png"
    image.write_bytes(b"old pixels")
    sample = Sample(id="1", patient_id="p", label=1, image_path=str(image))
    key = sample_key(sample, PreprocessRecipe())
    weights = tmp_path / "bb.safetensors"
    shutil.copy(write_backbone(tmp_path / "written.safetensors", "cnn4"), weights)
    digest = weights_file_digest(str(weights))
    _rewritten_keeping_size_and_mtime(image, b"new pixels", in_place)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    _rewritten_keeping_size_and_mtime(weights, bytes(data), in_place)
    assert sample_key(sample, PreprocessRecipe()) != key
    assert weights_file_digest(str(weights)) != digest


def test_batch_size_1_is_refused_only_where_a_resnet_map_is_1x1() -> None:
    """Was: a ResNet at image_size 32 with batch_size 1 failed in its first step with an internal error (BatchNorm on one value)."""
    from mammofuse.model.encoders import image_backbone

    with pytest.raises(MammofuseError, match=r"^batch_size 1 cannot train resnet50 at image_size 32: its last map is 1x1"):
        TrainSettings(backbone="resnet50", image_size=32, batch_size=1)
    for fine in ({"backbone": "resnet18", "image_size": 33}, {"backbone": "cnn4", "image_size": 32}, {"fusion": "clinical", "image_size": 32}):
        TrainSettings(batch_size=1, **fine)
    image_backbone("resnet18")[0].train()(torch.zeros(1, 1, 33, 33))  # one image trains where the map is 2x2


def test_settings_reject_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    from mammofuse.training import load_settings

    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"fusion": "co", "epochs": 3, "image-size": 64}))
    assert load_settings(path, epochs=5) == TrainSettings(fusion="co", epochs=5, image_size=64)
    path.write_text(yaml.safe_dump({"fusion": "co", "epochz": 3}))
    with pytest.raises(MammofuseError, match="unknown setting"):
        load_settings(path)
    with pytest.raises(MammofuseError, match="fusion must be one of"):
        TrainSettings(fusion="sum")
    with pytest.raises(MammofuseError, match="feature_cache"):
        TrainSettings(feature_cache="gpu")
    with pytest.raises(MammofuseError, match=r"val_fraction must be 0 \(no validation part\) or in \[0.01, 0.99\], not 0.005"):
        TrainSettings(val_fraction=0.005)
    with pytest.raises(MammofuseError, match="selection best needs a validation part"):
        TrainSettings(val_fraction=0, selection="best")


@pytest.mark.parametrize(("text", "canvas"), [("none", None), ("None", None), ("auto", "auto"), ("800x800", [800, 800]), ("600, 400", [600, 400])])
def test_canvas_is_spelled_alike_in_yaml_the_library_and_the_flag(text: str, canvas, tmp_path: Path) -> None:
    """YAML `canvas: none` was refused by a message saying none is allowed, and `canvas: 800x800` although --canvas took it."""
    from mammofuse.cli.train_options import settings_values
    from mammofuse.training import load_settings

    path = tmp_path / "train.yaml"
    path.write_text(f"canvas: {text}\n")
    assert load_settings(path).canvas == TrainSettings(canvas=text).canvas == canvas
    assert TrainSettings.from_dict(settings_values(None, {"canvas": text})).canvas == canvas
    assert yaml.safe_load(TrainSettings(canvas=text).to_yaml())["canvas"] == canvas


def test_a_canvas_setting_that_is_none_of_its_spellings_is_named() -> None:
    for bad in ("800y800", "8x8", [800], "x800"):
        with pytest.raises(MammofuseError, match=r"^canvas must be auto, none, HEIGHTxWIDTH or \[height, width\] in pixels \(32 to 8192\), not "):
            TrainSettings(canvas=bad)


def test_the_shipped_example_settings_load_and_the_readme_names_them() -> None:
    from mammofuse.training import load_settings

    root = Path(__file__).resolve().parents[1]
    settings = load_settings(root / "examples" / "train.yaml")
    assert settings.fusion == "cross" and settings.epochs == 10 and settings.selection == "last"
    assert "--config examples/train.yaml" in (root / "README.md").read_text(encoding="utf-8")


def test_cli_trains_clinical_on_cbis_ddsm_csvs_with_yaml_and_flag_override(cbis_csv: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mammofuse.cli import app

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"fusion": "clinical", "epochs": 3, "proj_dim": 20}))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--dataset", "cbis-ddsm", "--data", str(cbis_csv), "--config", str(config), "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert re.search(r"^epoch 1/1: train_loss \d\.\d{4}  val_loss \d\.\d{4}  val_auc 0\.\d{3}  lr \S+  \d+\.\ds$", result.stderr, re.M)  # selection last: no 'best'
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["proj_dim"] == 20 and saved["fusion"] == "clinical" and saved["dataset"] == "cbis-ddsm"
    prov = load_model(out).config.provenance
    assert prov["n_train"] + prov["n_val"] == len([s for s in load_dataset("cbis-ddsm", cbis_csv) if s.split == "train"])
    assert prov["val_auc"] > 0.7  # clinical descriptors are informative on CBIS-DDSM


def test_a_settings_error_from_a_config_file_and_flags_names_both(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mammofuse.cli import app

    config = tmp_path / "train.yaml"
    config.write_text("val_fraction: 0\n")  # fine alone, as is --selection best alone
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--selection", "best", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"error: {config} and the flags: selection best needs a validation part" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fusion", "sum"], "fusion must be one of"),
        (["--fusion", "cross"], "needs images"),
        (["--split", "validation"], "--split validation"),
        (["--split", "test", "--fusion", "clinical"], "needs at least 5"),
        (["--seed", "99999999999"], "seed must be an integer in [0, 4294967295], not 99999999999"),
        (["--fusion", "image", "--backbone", "resnet18", "--image-size", "32", "--batch-size", "1"],  # was: an internal error (exit 4)
         "batch_size 1 cannot train resnet18 at image_size 32: its last map is 1x1, one value per channel for BatchNorm; "
         "use batch_size 2 or more, or image_size 33 or more"),
        pytest.param(["--fusion", "clinical", "--device", "cuda:0"], "device cuda:0: CUDA is not available",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")),
    ],
)
def test_cli_errors_are_one_line(cbis_csv: Path, tmp_path: Path, args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from mammofuse.cli import app

    result = CliRunner().invoke(app, ["train", "--dataset", "cbis-ddsm", "--data", str(cbis_csv), "--out", str(tmp_path / "x"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


class _Reduced(Exception):
    pass


def test_ranks_sum_on_their_own_device(monkeypatch) -> None:
    """NCCL reduces only GPU tensors: the epoch's loss sum was a CPU tensor, so every torchrun run on GPUs failed."""
    import torch.distributed as dist

    from mammofuse.training.distributed import Distributed

    def all_reduce(tensor: torch.Tensor) -> None:
        raise _Reduced(tensor.device)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    with pytest.raises(_Reduced) as reduced:
        Distributed(rank=0, world=2, device=torch.device("meta")).sum(1.0, 2.0)
    assert reduced.value.args == (torch.device("meta"),)


def test_mixed_precision_is_bfloat16_only_where_the_gpu_computes_in_it(monkeypatch) -> None:
    """A T4 or V100 emulates bfloat16: is_bf16_supported() said yes there, so float16 with its scaler never ran."""
    from mammofuse.training.build import amp_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)  # a pre-Ampere GPU
    assert amp_dtype(torch.device("cuda", 0)) == torch.float16 and amp_dtype(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert amp_dtype(torch.device("cuda", 0)) == torch.bfloat16


def test_a_gpu_random_state_is_saved_and_restored_for_the_runs_own_gpu(monkeypatch) -> None:
    """A checkpoint held one state per visible GPU, and resuming where fewer were visible said it was damaged."""
    from mammofuse.training import checkpoint as ckpt

    states = {1: torch.tensor([1], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: states[device.index])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: states.__setitem__(device.index, state))
    tensors, scalars = ckpt.rng_state(torch.device("cuda", 1))
    assert [k for k in tensors if k.startswith("rng.cuda")] == ["rng.cuda"]
    assert "rng.cuda" not in ckpt.rng_state(torch.device("cpu"))[0]
    states[1] = torch.tensor([9], dtype=torch.uint8)
    ckpt.set_rng_state(tensors, scalars, torch.device("cuda", 1))
    assert states[1].tolist() == [1]
    older = {**tensors, "rng.cuda.0": torch.tensor([5], dtype=torch.uint8), "rng.cuda.1": torch.tensor([6], dtype=torch.uint8)}
    del older["rng.cuda"]  # a checkpoint of 0.1, made where two GPUs were visible, resumed on GPU 1 of this machine
    ckpt.set_rng_state(older, scalars, torch.device("cuda", 1))
    assert states[1].tolist() == [6]


@pytest.mark.parametrize("variables", [{"RANK": "abc"}, {"WORLD_SIZE": "abc"}, {"LOCAL_RANK": "x"}, {"WORLD_SIZE": "2", "RANK": "-1"}])
def test_a_torchrun_variable_that_is_not_an_integer_is_named(variables: dict[str, str], mini_mias: Path, tmp_path: Path) -> None:
    """RANK=abc crashed train with ValueError (exit 4)."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    args = ["train", "--dataset", "mini-mias", "--data", str(mini_mias), "--fusion", "clinical", "--epochs", "1", "--out", str(tmp_path / "x")]
    result = CliRunner().invoke(app, args, env=variables)
    name, value = list(variables.items())[-1]
    assert result.exit_code == 2, result.output
    assert result.stderr.endswith(f"error: environment variable {name} must be a non-negative integer (torchrun sets it), not {value!r}\n")


def write_manifest(samples: list[Sample], path: Path, drop_image_every: int = 0) -> Path:
    """Real mini-MIAS lesions as a user's manifest CSV; every n-th row loses its image."""
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "patient_id", "roi_row", "roi_col", "roi_radius", "density", "shape", "margin"])
        for n, s in enumerate(samples, start=1):
            region = s.region or ("", "", "")
            image = "" if drop_image_every and n % drop_image_every == 0 else s.image_path
            writer.writerow([image, s.label, s.patient_id, *region, *(s.clinical.get(k, "") for k in ("density", "shape", "margin"))])
    return path


def test_a_rank_other_than_0_leaves_out_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rank checked that --out could be written, making it and removing it again when empty: under rank 0, which had
    just made it, so that rank 0 failed with "cannot write (No such file or directory)" (seen once in CI)."""
    from typer.testing import CliRunner

    from mammofuse import atomic
    from mammofuse.cli import app

    def touched(folder: Path) -> None:
        raise AssertionError(f"rank 1 made {folder}")

    monkeypatch.setattr(atomic, "_make_folder", touched)
    monkeypatch.setenv("RANK", "1")
    result = CliRunner().invoke(app, ["train", "--dataset", "mini-mias", "--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "ddp")])
    assert result.exit_code == 2 and "no-data: data folder not found" in result.stderr, result.output
    assert not (tmp_path / "ddp").exists()


@pytest.mark.slow
def test_torchrun_two_process_gloo_run(mini_mias: Path, tmp_path: Path) -> None:
    """Two CPU processes with DistributedDataParallel (a quarter of the cases image-less);
    validation AUC covers the whole split."""
    from sklearn.metrics import roc_auc_score

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    samples = load_dataset("mini-mias", mini_mias)[:48]
    manifest = write_manifest(samples, tmp_path / "manifest.csv", drop_image_every=4)
    validated = [s.image_path for s in train_val_split(load_dataset("manifest", manifest), 0.2, seed=0)[1] if s.image_path]
    broken = {}
    for k, sample in enumerate(samples):
        if sample.image_path in validated[:2]:  # the first two validation images: one in each process's share
            broken[k] = tmp_path / f"broken{k}.png"
            broken[k].write_bytes(Path(sample.image_path).read_bytes()[:200])
            samples[k] = dataclasses.replace(sample, image_path=str(broken[k]))
    manifest = write_manifest(samples, manifest, drop_image_every=4)
    out = tmp_path / "ddp"
    command = [
        torchrun, "--standalone", "--nproc-per-node", "2", "-m", "mammofuse", "train", "--dataset", "manifest",
        "--data", str(manifest), "--fusion", "concat", "--backbone", "resnet18", "--image-size", "32",
        "--proj-dim", "16", "--epochs", "2", "--freeze-epochs", "1", "--batch-size", "8", "--device", "cpu", "--out", str(out),
        "--pretrained", str(write_backbone(tmp_path / "resnet18.safetensors")),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["frozen"] for h in history] == [True, False]
    model = load_model(out)
    train_samples, val_samples = train_val_split(load_dataset("manifest", manifest), 0.2, seed=0)
    assert model.config.provenance["n_val"] == len(val_samples) and model.config.provenance["n_train"] == len(train_samples)
    probs = probabilities(out, [dataclasses.replace(s, image_path=None) if s.image_path in {str(b) for b in broken.values()} else s
                                for s in val_samples])  # unreadable images are image-absent in training's validation
    auc = roc_auc_score([s.label for s in val_samples], probs)
    assert auc == pytest.approx(model.config.provenance["val_auc"], abs=1e-5)
    assert done.stdout.count("validation AUC") == 1  # rank 0 alone reports
    assert f"warning: {len(broken)} image(s) could not be read" in done.stdout + done.stderr  # every process's share counted
    assert len(broken) == 2


@pytest.mark.parametrize("resume", [False, True], ids=["new", "resumed"])
def test_a_training_into_a_folder_another_run_holds_is_refused_and_the_folder_left_alone(resume: bool, tmp_path: Path) -> None:
    """Two runs given one --out both printed `wrote`, leaving one's config.json beside the other's train_config.yaml."""
    from typer.testing import CliRunner

    from mammofuse.atomic import folder_lock
    from mammofuse.cli import app

    runner, out = CliRunner(), tmp_path / "run"
    command = ["train", "--dataset", "manifest", "--out", str(out), "--data", str(clinical_manifest(tmp_path / "m.csv")), "--fusion", "clinical",
               "--schedule", "step", "--epochs", "1"]
    if resume:
        assert runner.invoke(app, command).exit_code == 0
        command = [*command[:-1], "2", "--resume"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with folder_lock(out):  # as another mammofuse process holds it while it trains
        second = runner.invoke(app, command)
    assert second.exit_code == 3 and second.stderr.splitlines()[-1] == f"error: {out}: cannot write (in use by another mammofuse process)", second.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


class _Rank:
    """A torchrun rank without a process group: ``gather`` returns what rank 0 would send."""

    def __init__(self, rank: int, rank0_sends: object = None) -> None:
        self.main, self.rank0_sends = rank == 0, rank0_sends

    def gather(self, obj: object) -> list[object]:
        return [obj if self.main else self.rank0_sends]


def test_under_torchrun_rank_0_alone_holds_the_folder_and_every_rank_learns_it_is_refused(tmp_path: Path) -> None:
    """Every rank clearing the folder's temporaries deleted rank 0's files in flight; a refused rank 0 must not leave the others waiting."""
    from mammofuse.atomic import folder_lock
    from mammofuse.errors import OutputError
    from mammofuse.training.trainer import _Trainer

    orphan = tmp_path / ".train_config.yaml.k3j9.tmp"  # rank 0 writing it, or a kill -9 left it
    orphan.write_text("x")
    trainer = _Trainer.__new__(_Trainer)
    trainer.out = tmp_path
    with folder_lock(tmp_path):  # rank 0 holds it
        trainer.dist = _Rank(1)
        with trainer._holding_out(resume=True):
            assert orphan.exists()
        trainer.dist = _Rank(1, rank0_sends="in use by another mammofuse process")
        with pytest.raises(OutputError, match=f"^{re.escape(str(tmp_path))}: cannot write \\(in use by another mammofuse process\\)$"):
            with trainer._holding_out(resume=True):
                pass
    trainer.dist = _Rank(0)
    with trainer._holding_out(resume=False):
        assert orphan.exists()  # a fresh run leaves files it did not write alone
    with trainer._holding_out(resume=True):
        assert not orphan.exists()
        with pytest.raises(OutputError, match="in use by another mammofuse process"), folder_lock(tmp_path):
            pass
