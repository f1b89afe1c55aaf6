"""The training recipe for random weights: schedule, augmentation, no frozen random backbone, radiomics, pretraining, controls."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from mammofuse.errors import MammofuseError
from mammofuse.training import TrainSettings
from mammofuse.training.schedule import lr_factor


def test_cosine_schedule_warms_up_then_decays_over_the_whole_run():
    settings = TrainSettings(epochs=10, warmup_epochs=1)
    factors = [lr_factor(e, settings) for e in range(10)]
    assert factors[0] == pytest.approx(0.5) and factors[1] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(factors[1:], factors[2:]))
    assert factors[-1] < 0.05
    one = [lr_factor(e, replace(settings, schedule="onecycle")) for e in range(10)]
    assert int(np.argmax(one)) == 2 and one[-1] < 0.05
    step = [lr_factor(e, replace(settings, schedule="step")) for e in range(3)]
    assert step == pytest.approx([1.0, 0.9, 0.81])


def test_a_random_backbone_is_never_frozen():
    with pytest.raises(MammofuseError, match="never frozen"):
        TrainSettings(freeze_epochs=2, pretrained="none")
    with pytest.raises(MammofuseError, match="never frozen"):
        TrainSettings(freeze_epochs=2, backbone="resnet18")  # auto: nothing ships for resnet18
    assert TrainSettings(freeze_epochs=2, fusion="clinical", pretrained="none").freeze_epochs == 2
    assert TrainSettings(freeze_epochs=2, pretrained="imagenet").freeze_epochs == 2


def test_auto_starts_cnn4_from_the_shipped_backbone_and_says_so():
    from mammofuse.backbones import backbone_path, registered_backbones
    from mammofuse.model.encoders import image_backbone
    from mammofuse.training.pretrain import load_backbone

    assert TrainSettings().pretrained == "cbis-texture-cnn4"  # resolved when made: saved settings name it
    assert TrainSettings(backbone="resnet18").pretrained is None
    assert TrainSettings(pretrained="none").pretrained is None
    [record] = registered_backbones()
    assert record["available"] and record["default"] and record["backbone"] == "cnn4"
    module, _ = image_backbone("cnn4")
    before = {k: v.clone() for k, v in module.state_dict().items()}
    meta = load_backbone(module, "cbis-texture-cnn4", "cnn4")
    assert meta["format"] == "mammofuse-backbone-1" and json.loads(meta["report"])["split"] == "train"
    assert not torch.equal(before["layer1.0.weight"], module.state_dict()["layer1.0.weight"])
    assert backbone_path("cbis-texture-cnn4").stat().st_size < 5 * 2**20


def test_pretrained_may_name_a_registered_model_whose_image_branch_and_patients_it_takes():
    from mammofuse.evaluation.leakage import pretrained_patients
    from mammofuse.model import MammoFuse
    from mammofuse.model.encoders import image_backbone
    from mammofuse.training.card import _initialisation
    from mammofuse.training.pretrain import load_backbone

    bundled = MammoFuse.from_pretrained("default")
    module, _ = image_backbone("cnn4")
    assert load_backbone(module, "default", "cnn4")["source"] == "default"
    for key, value in bundled.backbone.state_dict().items():
        assert torch.equal(module.state_dict()[key], value), key
    trained_on = bundled.config.provenance["train_patients"]
    assert trained_on and pretrained_patients("default") == set(trained_on)  # so ablate refuses its patients' folds
    assert pretrained_patients("cbis-texture-cnn4") == set()  # a backbone learned without labels
    assert "image branch of the trained model `default`" in _initialisation("default")
    with pytest.raises(MammofuseError, match=r"pretrained \(--pretrained\) defualt: no such file, model folder or registered name .*models: default"):
        load_backbone(module, "defualt", "cnn4")


def test_epochs_may_not_change_on_resume_when_the_schedule_spans_the_run():
    from mammofuse.training.settings import resumable_changes

    assert "epochs" not in resumable_changes(TrainSettings())
    assert "epochs" in resumable_changes(TrainSettings(schedule="step"))


def test_resume_help_names_what_may_change():
    import typer

    from mammofuse.cli import app
    from mammofuse.training.settings import RESUMABLE_CHANGES

    help_text = next(p.help for p in typer.main.get_command(app).commands["train"].params if p.name == "resume")
    assert "up to --epochs" not in help_text and "--epochs too with --schedule step" in help_text
    assert all(f"--{k.replace('_', '-')}" in help_text for k in RESUMABLE_CHANGES)


def test_augmentation_is_per_image_seeded_and_keeps_shape():
    from mammofuse.imaging.augment import augment_batch

    images = torch.randn(6, 1, 32, 32)
    torch.manual_seed(0)
    a = augment_batch(images)
    torch.manual_seed(0)
    b = augment_batch(images)
    assert a.shape == images.shape and torch.equal(a, b)
    assert not torch.allclose(a[0], images[0])
    assert not torch.allclose(a[0] - a[0].mean(), a[1] - a[1].mean())


def test_radiomics_features_are_finite_and_see_texture():
    from mammofuse.imaging.radiomics import N_RADIOMICS, radiomics_features

    rng = np.random.default_rng(0)
    smooth = np.full((64, 64), 0.5, np.float32)
    noisy = np.clip(0.5 + 0.2 * rng.standard_normal((64, 64)), 0, 1).astype(np.float32)
    a, b = radiomics_features(smooth, 10.0), radiomics_features(noisy, None)
    assert a.shape == b.shape == (N_RADIOMICS,) and np.isfinite(a).all() and np.isfinite(b).all()
    assert b[0] > a[0]  # GLCM contrast at distance 1
    assert a[-1] == 1.0 and b[-1] == 0.0  # lesion size known / unknown


def test_model_with_radiomics_token_needs_and_uses_it():
    from mammofuse.imaging.radiomics import N_RADIOMICS
    from mammofuse.model import MammoFuse, ModelConfig

    model = MammoFuse(ModelConfig(fusion="cross", backbone="cnn4", proj_dim=16, radiomics=True)).eval()
    image, clinical, mask = torch.randn(2, 1, 32, 32), torch.zeros(2, 36), torch.zeros(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="radiomics"):
        model(image, clinical, mask)
    r = torch.randn(2, N_RADIOMICS)
    assert not torch.allclose(model(image, clinical, mask, radiomics=r).logits, model(image, clinical, mask, radiomics=r * 3).logits)


@pytest.mark.parametrize(("change", "message"), [
    (lambda k, v: v * float("nan") if k == "layer1.0.weight" else v, "1 weight tensor.s. hold NaN or infinite values .e.g. layer1.0.weight"),
    (lambda k, v: v.double() * 1e300 if k == "layer2.0.weight" else v, "1 weight tensor.s. hold NaN or infinite values .e.g. layer2.0.weight"),  # inf as float32
    (lambda k, v: v.long() if k == "layer1.0.weight" else v, "1 weight tensor.s. of the wrong type .e.g. layer1.0.weight is int64, the model's is float32"),
    (lambda k, v: v.bool() if v.is_floating_point() else v, "40 weight tensor.s. of the wrong type"),
    (lambda k, v: v.float() if k == "layer1.1.num_batches_tracked" else v, "1 weight .* layer1.1.num_batches_tracked is float32, the model's is int64"),
])
def test_a_backbone_file_with_nan_or_integer_weights_is_refused_naming_it(change, message: str, tmp_path):
    """NaN weights trained a NaN model (exit 0); integer ones were cast by load_state_dict and gave constant scores."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from mammofuse.backbones import backbone_path
    from mammofuse.model.encoders import image_backbone
    from mammofuse.training.pretrain import load_backbone

    shipped = str(backbone_path("cbis-texture-cnn4"))
    with safe_open(shipped, "pt") as fh:
        meta = fh.metadata()
    state = load_file(shipped)
    module, _ = image_backbone("cnn4")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(tmp_path / "half.safetensors"), metadata=meta)
    load_backbone(module, str(tmp_path / "half.safetensors"), "cnn4")  # another floating type is cast as before
    save_file({k: change(k, v) for k, v in state.items()}, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(MammofuseError, match=f"^{tmp_path / 'bad.safetensors'}: {message}"):
        load_backbone(module, str(tmp_path / "bad.safetensors"), "cnn4")


def test_a_backbone_file_under_the_home_folder_may_be_named_with_a_tilde(tmp_path, monkeypatch):
    """A trained model folder expanded ~ but a .safetensors backbone did not ("~/bb.safetensors: no such file")."""
    import shutil

    from mammofuse.backbones import backbone_path
    from mammofuse.model.encoders import image_backbone
    from mammofuse.training.pretrain import load_backbone, weights_file_digest

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(backbone_path("cbis-texture-cnn4"), tmp_path / "bb.safetensors")
    module, _ = image_backbone("cnn4")
    assert load_backbone(module, "~/bb.safetensors", "cnn4")["format"] == "mammofuse-backbone-1"
    assert weights_file_digest("~/bb.safetensors") == weights_file_digest(str(tmp_path / "bb.safetensors")) is not None


def test_pretrained_backbone_round_trip_and_wrong_architecture(tmp_path):
    from PIL import Image

    from mammofuse.model.encoders import image_backbone
    from mammofuse.training.pretrain import PretrainSettings, build_patch_set, load_backbone, pretrain_backbone, save_backbone

    rng = np.random.default_rng(1)
    files = []
    for k in range(4):
        pixels = np.clip(120 + 40 * rng.standard_normal((200, 200)), 0, 255).astype(np.uint8)
        pixels[:, :20] = 0
        Image.fromarray(pixels).save(tmp_path / f"{k}.png")
        files.append(str(tmp_path / f"{k}.png"))
    settings = PretrainSettings(image_size=32, canvas=None, patches_per_image=4, patch_sides=(40, 80), epochs=1, batch_size=8)
    inputs, targets, owners, errors = build_patch_set(files + [str(tmp_path / "missing.png")], {files[0]: [(100.0, 100.0, 90.0)]}, settings)
    assert inputs.shape[1:] == (1, 32, 32) and len(errors) == 1
    assert 12 <= len(inputs) <= 16  # the first image is nearly all lesion: few or no patches there
    backbone, report = pretrain_backbone(inputs, targets, owners, settings)
    path = save_backbone(backbone, tmp_path / "bb.safetensors", settings, report)
    fresh, _ = image_backbone("cnn4")
    load_backbone(fresh, str(path), "cnn4")
    for (name, a), b in zip(backbone.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    other, _ = image_backbone("resnet18")
    with pytest.raises(MammofuseError, match="cnn4 backbone"):
        load_backbone(other, str(path), "resnet18")
    with pytest.raises(MammofuseError, match="no such file, model folder or registered name"):
        load_backbone(fresh, str(tmp_path / "nope.safetensors"), "cnn4")


@pytest.mark.parametrize("r2", [-0.25, 0.5, float("nan")])
def test_pretrain_cli_reports_in_words_warns_on_a_negative_r2_and_follows_the_umask(r2, tmp_path, monkeypatch):
    import os

    from typer.testing import CliRunner

    from mammofuse.cli import app
    from mammofuse.training import pretrain

    _tiny_manifest(tmp_path)
    from PIL import Image

    Image.fromarray(np.arange(3600).reshape(300, 12).astype(np.uint8)).save(tmp_path / "narrow.png")  # readable, narrower than any patch
    with (tmp_path / "manifest.csv").open("a") as manifest:
        manifest.write("narrow.png,0,p9\n")
    real = pretrain.pretrain_backbone

    def with_r2(*args, **kwargs):
        backbone, report = real(*args, **kwargs)
        report["history"][-1]["holdout_r2"] = r2
        return backbone, report

    monkeypatch.setattr(pretrain, "pretrain_backbone", with_r2)
    old = os.umask(0o027)
    try:
        result = CliRunner().invoke(app, ["pretrain", "--dataset", "manifest", "--data", str(tmp_path), "--split", "all", "--image-size", "32",
                                          "--patches-per-image", "4", "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "bb.safetensors")])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bb.safetensors").stat().st_mode & 0o777 == 0o640
    assert f"held-out R^2 {r2:.3f}" in result.stdout and "wrote " in result.stdout and "{" not in result.stdout
    assert ("worse than their mean" in result.stderr) == (not r2 >= 0)
    assert "note: 1 readable image(s) gave no patch" in result.stderr
    assert "16 patches from 4 images; 4 patches of 1 images held out" in result.stdout


def test_pretraining_twice_writes_the_same_bytes_however_long_it_took(tmp_path, monkeypatch):
    """Was: each epoch's wall-clock seconds and safetensors' per-process metadata order were in the file, so
    ``ablate`` (which fingerprints the file) refused a backbone re-created by the very same command."""
    import types

    from safetensors import safe_open
    from typer.testing import CliRunner

    from mammofuse.cli import app
    from mammofuse.data.sample import patient_digest
    from mammofuse.training import pretrain

    _tiny_manifest(tmp_path)
    args = ["pretrain", "--dataset", "manifest", "--data", str(tmp_path), "--split", "all", "--image-size", "32",
            "--patches-per-image", "4", "--epochs", "2", "--batch-size", "8", "--out"]
    first = CliRunner().invoke(app, [*args, str(tmp_path / "a.safetensors")])
    ticks = iter(range(0, 10**6, 7))  # a machine where every epoch takes 7 s
    monkeypatch.setattr(pretrain, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    second = CliRunner().invoke(app, [*args, str(tmp_path / "b.safetensors")])
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert "2 epoch(s) in 14 s" in second.stdout  # the timings are reported, not stored
    data = (tmp_path / "a.safetensors").read_bytes()
    meta = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    assert list(meta) == sorted(meta) == ["backbone", "format", "image_size", "patients", "report", "task"]
    assert json.loads(meta["patients"]) == sorted(patient_digest(f"p{k}") for k in range(4))  # whose films it has seen
    history = json.loads(meta["report"])["history"]
    assert [set(row) for row in history] == [{"epoch", "train_mse", "holdout_r2"}] * 2
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as fh:
        assert fh.metadata()["format"] == "mammofuse-backbone-1"


def test_pretrain_takes_every_image_of_data_without_splits_by_default_as_train_does(tmp_path):
    """Was: the default --split train found no rows in a manifest without a split column (or mini-MIAS), and
    failed with "no images in the train split (pass --images for CBIS-DDSM)"."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    _tiny_manifest(tmp_path)
    result = CliRunner().invoke(app, ["pretrain", "--dataset", "manifest", "--data", str(tmp_path), "--image-size", "32",
                                      "--patches-per-image", "2", "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "bb.safetensors")])
    assert result.exit_code == 0, result.output
    assert "8 patches from 4 images" in result.stdout and (tmp_path / "bb.safetensors").is_file()


def test_pretrain_on_data_of_a_test_split_alone_says_there_is_nothing_it_may_use(tmp_path):
    """Was: "choose one with --split (all: every case)", and --split all then: "pretraining never uses test images"."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    _tiny_manifest(tmp_path)
    header, *rows = (tmp_path / "manifest.csv").read_text().splitlines()
    (tmp_path / "manifest.csv").write_text("\n".join([f"{header},split", *(f"{row},test" for row in rows)]) + "\n")
    result = CliRunner().invoke(app, ["pretrain", "--dataset", "manifest", "--data", str(tmp_path), "--out", str(tmp_path / "bb.safetensors")])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {tmp_path}: no train split to pretrain on (its splits are test), and pretraining never uses test images\n"


def test_pretrain_says_pass_images_only_for_cbis_ddsm(tmp_path):
    """Was: a manifest of rows without images was told to "pass --images for CBIS-DDSM"."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    (tmp_path / "manifest.csv").write_text("path,label,patient_id\n,0,p0\n,1,p1\n")
    result = CliRunner().invoke(app, ["pretrain", "--dataset", "manifest", "--data", str(tmp_path), "--out", str(tmp_path / "bb.safetensors")])
    assert result.exit_code == 2, result.output
    assert "no images in the all split" in result.output and "CBIS-DDSM" not in result.output


def _tiny_manifest(folder):
    from PIL import Image

    rng = np.random.default_rng(2)
    rows = ["path,label,patient_id"]
    for k in range(4):
        Image.fromarray(np.clip(120 + 40 * rng.standard_normal((300, 300)), 0, 255).astype(np.uint8)).save(folder / f"{k}.png")
        rows.append(f"{k}.png,{k % 2},p{k}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize(("out", "flags", "code", "message"), [
    ("folder", [], 3, "it is a folder"),
    ("bb.safetensors", ["--seed", "-1"], 2, "--seed"),
    ("bb.safetensors", ["--seed", "99999999999999999999"], 2, "--seed"),
    ("bb.safetensors", ["--image-size", "99999999999999999999"], 2, "--image-size"),
    ("bb.safetensors", ["--lr", "inf"], 2, "--lr"),
    ("bb.pt", [], 2, "bb.pt: the backbone is written as safetensors; name the file .safetensors"),
    ("bb", [], 2, "bb: the backbone is written as safetensors; name the file .safetensors"),
])
def test_pretrain_refuses_bad_flags_and_an_unwritable_out_before_any_work(out, flags, code, message, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mammofuse.cli import app
    from mammofuse.training import pretrain

    _tiny_manifest(tmp_path)
    (tmp_path / "folder").mkdir()
    monkeypatch.setattr(pretrain, "build_patch_set", lambda *a, **k: pytest.fail("patches drawn before the flags and --out were checked"))
    result = CliRunner().invoke(app, ["pretrain", "--dataset", "manifest", "--data", str(tmp_path), "--split", "all", "--out", str(tmp_path / out), *flags])
    assert result.exit_code == code, result.output
    assert message in result.output and "internal error" not in result.output
    assert not (tmp_path / "bb.safetensors").exists() and not (tmp_path / "bb.pt").exists()


def test_pretraining_that_diverges_fails_instead_of_writing_nan_weights():
    from mammofuse.training.pretrain import PretrainSettings, pretrain_backbone

    rng = np.random.default_rng(0)
    inputs = rng.random((12, 1, 32, 32), dtype=np.float32)
    targets = rng.standard_normal((12, 3)).astype(np.float32)
    owners = np.repeat(np.arange(4), 3)
    settings = PretrainSettings(image_size=32, canvas=None, epochs=1, batch_size=4, lr=float("inf"))
    with pytest.raises(MammofuseError, match="diverged in epoch 1.*lower --lr"):
        pretrain_backbone(inputs, targets, owners, settings)


@pytest.mark.parametrize(("owners", "got"), [
    ([0, 0, 0], "1 image(s) gave 3 patch(es), 0 to train on: add images (every one is held out)"),  # more patches cannot help
    ([0, 1], "2 image(s) gave 2 patch(es), 1 to train on: add images or raise --patches-per-image"),  # a lone training patch makes no batch
])
def test_pretraining_with_no_training_step_is_refused_before_training(owners, got, monkeypatch):
    """Was: no optimiser step ran, yet the untrained backbone was returned (train MSE 0.000, held-out R^2 NaN) and written."""
    from mammofuse.training import pretrain

    monkeypatch.setattr(pretrain, "image_backbone", lambda name: pytest.fail("a backbone built for a training that cannot run"))
    rng = np.random.default_rng(0)
    inputs = rng.random((len(owners), 1, 32, 32), dtype=np.float32)
    targets = rng.standard_normal((len(owners), 3)).astype(np.float32)
    settings = pretrain.PretrainSettings(image_size=32, canvas=None, epochs=1, batch_size=4)
    with pytest.raises(MammofuseError, match=re.escape(f"needs at least 2 patches to train on besides the 1 image(s) held out to measure it; {got}")):
        pretrain.pretrain_backbone(inputs, targets, np.asarray(owners), settings)


def test_pretrain_cli_refuses_a_single_image_and_writes_nothing(tmp_path):
    """Was: exit 0 and a backbone file of untrained weights whose metadata held "holdout_r2": NaN (invalid JSON)."""
    from typer.testing import CliRunner

    from mammofuse.cli import app

    _tiny_manifest(tmp_path)
    lines = (tmp_path / "manifest.csv").read_text().splitlines()
    (tmp_path / "manifest.csv").write_text("\n".join(lines[:2]) + "\n")
    result = CliRunner().invoke(app, ["pretrain", "--dataset", "manifest", "--data", str(tmp_path), "--image-size", "32",
                                      "--patches-per-image", "2", "--epochs", "1", "--out", str(tmp_path / "bb.safetensors")])
    assert result.exit_code == 2, result.output
    assert "error: pretraining needs at least 2 patches to train on" in result.stderr and "nan" not in result.output.lower()
    assert not (tmp_path / "bb.safetensors").exists()


def test_pretraining_whose_held_out_predictions_are_not_finite_fails_instead_of_writing_nan(monkeypatch):
    """Was: a finite training loss passed, and a held-out R^2 of NaN went into the file's metadata."""
    from mammofuse.training import pretrain

    class Blind(torch.nn.Conv2d):
        def forward(self, x):
            out = super().forward(x)
            return out if self.training else out * float("nan")

    monkeypatch.setattr(pretrain, "image_backbone", lambda name: (Blind(1, 4, 3), 4))
    rng = np.random.default_rng(0)
    inputs = rng.random((12, 1, 32, 32), dtype=np.float32)
    targets = rng.standard_normal((12, 3)).astype(np.float32)
    settings = pretrain.PretrainSettings(image_size=32, canvas=None, epochs=1, batch_size=4)
    with pytest.raises(MammofuseError, match="diverged in epoch 1 .*held-out error nan"):
        pretrain.pretrain_backbone(inputs, targets, np.repeat(np.arange(4), 3), settings)


def test_masking_control_changes_only_the_lesion_square_and_away_patch_avoids_lesions():
    from mammofuse.imaging.controls import away_region, mask_lesion

    pixels = np.full((200, 200), 0.5, np.float32)
    pixels[90:110, 90:110] = 1.0  # the lesion
    masked = mask_lesion(pixels, (100.0, 100.0, 10.0))
    assert masked[85:115, 85:115].max() == pytest.approx(0.5)
    assert np.array_equal(masked[:80], pixels[:80])
    other = (40.0, 160.0, 10.0)
    a = away_region(pixels, (100.0, 100.0, 10.0), [other], "case-1")
    assert a == away_region(pixels, (100.0, 100.0, 10.0), [other], "case-1")
    assert np.hypot(a[0] - 100, a[1] - 100) > 40 and np.hypot(a[0] - 40, a[1] - 160) > 40
    with pytest.raises(MammofuseError, match="no breast tissue"):
        away_region(np.zeros((200, 200), np.float32), (100.0, 100.0, 10.0), [], "x")


def test_the_away_crop_never_reaches_a_lesion_and_keeps_every_draw_that_did_not():
    """A small lesion's crop is wider than the centre rule allowed for: 1 mini-MIAS away crop in 240 held half a lesion."""
    from mammofuse.imaging.controls import away_region

    pixels = np.full((200, 200), 0.5, np.float32)
    lesion, half = (100.0, 100.0, 5.0), 32.0  # a 64 px crop around a lesion of radius 5

    def reaches(patch: tuple[float, float, float]) -> bool:
        return float(np.hypot(max(abs(patch[0] - 100) - half, 0), max(abs(patch[1] - 100) - half, 0))) <= lesion[2]

    moved = 0
    for k in range(200):
        first_rule, patch = away_region(pixels, lesion, [], f"c{k}"), away_region(pixels, lesion, [], f"c{k}", crop_half=half)
        assert not reaches(patch) and (patch == first_rule) != reaches(first_rule)
        moved += reaches(first_rule)
    assert 5 < moved < 60


def _film_with_two_lesions(path) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """A 256x256 PNG whose breast lies on the right (the reader flips it), tissue 0.5 with two bright lesions."""
    from PIL import Image

    pixels = np.zeros((256, 256), np.uint8)
    pixels[:, 96:] = 128
    pixels[50:70, 190:210] = 255
    pixels[170:190, 150:170] = 255
    Image.fromarray(pixels).save(path)
    return (60.0, 200.0, 10.0), (180.0, 160.0, 10.0)


def test_the_away_patch_avoids_the_films_other_lesions_where_the_film_was_flipped(tmp_path, monkeypatch):
    import mammofuse.imaging.controls as controls
    from mammofuse.data.sample import Sample
    from mammofuse.imaging.preprocess import PreprocessRecipe
    from mammofuse.inference import load_input

    first, second = _film_with_two_lesions(tmp_path / "film.png")
    seen = []
    real = controls.away_region
    monkeypatch.setattr(controls, "away_region", lambda p, r, avoid, key, half: seen.append((r, list(avoid))) or real(p, r, avoid, key, half))
    sample = Sample(id="c0", patient_id="p0", label=1, image_path=str(tmp_path / "film.png"), region=first, image_id="film")
    load_input(sample, PreprocessRecipe(image_size=32), control="away", avoid=[first, second])
    region, avoid = seen[0]
    assert region == (60.0, 255 - 200.0, 10.0)  # the reader put the breast on the left
    assert avoid == [region, (180.0, 255 - 160.0, 10.0)]  # the other lesion where it now lies, not mirrored


def test_a_whole_breast_models_masked_control_fills_every_lesion_of_the_film_and_it_has_no_away_control(tmp_path):
    from mammofuse.data.sample import Sample
    from mammofuse.imaging.controls import controls_for
    from mammofuse.imaging.preprocess import PreprocessRecipe
    from mammofuse.inference import load_input

    first, second = _film_with_two_lesions(tmp_path / "film.png")
    sample = Sample(id="c0", patient_id="p0", label=1, image_path=str(tmp_path / "film.png"), region=first, image_id="film")
    full, roi = PreprocessRecipe(image_size=64, input="full"), PreprocessRecipe(image_size=64, input="roi")

    def brightest(recipe: PreprocessRecipe, control: str | None) -> float:
        image, _ = load_input(sample, recipe, control=control, avoid=[first, second])
        return float(image.max() * recipe.std + recipe.mean)

    assert brightest(full, None) > 0.9 and brightest(full, "masked") < 0.6  # both lesions gone
    assert brightest(roi, "masked") < 0.6
    with pytest.raises(MammofuseError, match="whole breast"):
        load_input(sample, full, control="away", avoid=[first, second])
    with pytest.raises(MammofuseError, match="^the 'masked' control needs the lesion region$"):  # the record names the case
        load_input(replace(sample, region=None), full, control="masked")
    assert controls_for("full", ["masked", "away"]) == ["masked"] and controls_for("roi", ["masked", "away"]) == ["masked", "away"]


@pytest.mark.parametrize("input_mode", ["full", "roi"])
def test_a_control_of_a_case_without_a_region_fails_without_decoding_its_image(input_mode, tmp_path, monkeypatch):
    """Each such case's full-field DICOM was decoded (a second or so) only to fail; a file that is no image still says so."""
    import mammofuse.inference as inference
    from mammofuse.data.sample import Sample
    from mammofuse.imaging.preprocess import PreprocessRecipe

    _film_with_two_lesions(tmp_path / "film.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    decoded = []
    real = inference.read_mammogram
    monkeypatch.setattr(inference, "read_mammogram", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))
    samples = [Sample(id=name, patient_id="p0", label=1, image_path=str(tmp_path / f"{name}.png")) for name in ("film", "broken")]
    recipe = PreprocessRecipe(image_size=32, input=input_mode, without_region="breast")
    for control in ("masked", "away"):
        dataset = inference.LesionDataset(samples, recipe, "cbis-ddsm-v1", control=control)
        film, broken = dataset[0], dataset[1]
        assert film["error"] == f"the {control!r} control needs the lesion region"
        assert broken["error"] and "control" not in broken["error"]  # the header check still reports a file that is no image
    assert decoded == []
    assert inference.LesionDataset(samples, recipe, "cbis-ddsm-v1")[0]["error"] == "" and decoded  # scored plainly, it is read


def test_the_away_control_averages_the_logits_of_several_patches_per_case(tmp_path):
    from conftest import make_tiny_model
    from PIL import Image

    from mammofuse.data.sample import Sample
    from mammofuse.evaluation.evaluate import score_samples
    from mammofuse.imaging.controls import away_key
    from mammofuse.inference import predict_proba
    from mammofuse.model import load_model
    from mammofuse.results import sigmoid

    path = tmp_path / "film.png"
    Image.fromarray(np.random.default_rng(0).integers(60, 255, (256, 256), dtype=np.uint8)).save(path)
    samples = [Sample(id=f"c{i}", patient_id=f"p{i}", label=i % 2, image_path=str(path), region=(60.0 + 40 * i, 128.0, 12.0),
                      image_id="film") for i in range(4)]
    model = load_model(make_tiny_model(tmp_path / "model", "image", "roi"))
    assert away_key("c0") == away_key("c0", 0) == "c0" and away_key("c0", 1) != away_key("c0", 2)
    draws = np.array([predict_proba(model, samples, control="away", draw=k)[0] for k in range(3)])
    assert not np.allclose(draws[0], draws[1])  # another draw, another patch, another score
    probs, errors = score_samples(model, samples, control="away", patches=3)
    assert errors == [""] * 4 and np.allclose(probs, sigmoid((np.log(draws) - np.log1p(-draws)).mean(axis=0)))
    assert np.array_equal(score_samples(model, samples, control="away")[0], draws[0])  # one patch: draw 0, as before
    masked = predict_proba(model, samples, control="masked")[0]
    assert np.array_equal(score_samples(model, samples, control="masked", patches=3)[0], masked)  # only 'away' draws


def test_default_recipe_trains_end_to_end_keeps_last_epoch(tmp_path, cbis_subset, cbis_800):
    from mammofuse.data import load_dataset, train_val_split
    from mammofuse.model import load_model
    from mammofuse.training import train

    samples = [s for s in load_dataset("cbis-ddsm", cbis_subset, [cbis_800], "mass") if s.split == "train"]
    tr, va = train_val_split(samples, 0.25, 0)
    settings = TrainSettings(fusion="cross", image_size=32, epochs=2, device="cpu", radiomics=True, dataset="cbis-ddsm")
    result = train(settings, tr, va, tmp_path / "run")
    assert result.best_epoch == 2  # selection: last
    model = load_model(tmp_path / "run")
    assert model.config.recipe.canvas == (800, 800)  # the training images' size, recorded in the recipe
    assert model.config.radiomics and float(model.radiomics_std.min()) > 0
    assert not torch.allclose(model.radiomics_mean, torch.zeros_like(model.radiomics_mean))


def test_stretching_to_the_canvas_copies_no_full_size_image() -> None:
    """An image not already scaled to [0, 1] cost two full-size float32 copies (8 B/px) before being stretched to the
    canvas; it is stretched first now, and the canvas scaled: the same values up to float rounding."""
    import tracemalloc

    from mammofuse.imaging.preprocess import resize, to_canvas

    pixels = np.random.default_rng(0).uniform(0.2, 0.7, (1500, 1200)).astype(np.float32)
    kept = pixels.copy()
    tracemalloc.start()
    try:
        canvas = to_canvas(pixels, (400, 300))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    expected = resize((pixels - pixels.min()) / (pixels.max() - pixels.min()), (400, 300))
    assert canvas.shape == (400, 300) and canvas.dtype == np.float32 and np.abs(canvas - expected).max() < 1e-6
    assert np.array_equal(pixels, kept)  # the caller's pixels are not changed
    assert peak / pixels.size < 1, f"{peak / pixels.size:.1f} bytes per pixel"


def test_a_shortcut_control_fails_a_case_without_a_lesion_region_instead_of_scoring_its_findings(tmp_path):
    import torch
    from PIL import Image

    from mammofuse.data.sample import Sample
    from mammofuse.evaluation.evaluate import score_samples
    from mammofuse.imaging.preprocess import PreprocessRecipe
    from mammofuse.inference import NO_REGION, predict_proba
    from mammofuse.model import MammoFuse, ModelConfig, load_model, save_model

    path = tmp_path / "film.png"
    Image.fromarray(np.random.default_rng(0).integers(60, 255, (256, 256), dtype=np.uint8)).save(path)
    torch.manual_seed(0)
    recipe = PreprocessRecipe(image_size=32, input="roi", without_region="skip")  # the bundled default's rule
    model = load_model(save_model(MammoFuse(ModelConfig(backbone="resnet18", fusion="late", proj_dim=16, num_heads=2,
                                                        preprocessing=recipe.as_dict())), tmp_path / "model"))
    samples = [Sample(id=f"c{i}", patient_id=f"p{i}", label=i % 2, clinical={"density": "2"}, image_path=str(path),
                      region=(80.0 + 60 * i, 128.0, 12.0) if i < 2 else None, image_id="film") for i in range(3)]
    notes: list[str] = []
    plain, errors = predict_proba(model, samples, notes=notes)
    assert errors == ["", "", ""] and notes == ["", "", NO_REGION] and np.isfinite(plain).all()  # findings only, said so
    for control in ("masked", "away"):
        probs, errors = score_samples(model, samples, control=control)
        assert errors == ["", "", f"the {control!r} control needs the lesion region"]  # not its plain score, counted as controlled
        assert np.isfinite(probs[:2]).all() and np.isnan(probs[2])
