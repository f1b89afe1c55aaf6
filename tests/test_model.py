"""MammoFuse: attention masking, missing-data fallbacks, modality dropout, strict save/load."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mammofuse.errors import MammofuseError
from mammofuse.imaging.preprocess import PreprocessRecipe
from mammofuse.model import FUSIONS, MammoFuse, ModelConfig, load_model, save_model

FIELDS = [4, 8, 5, 14, 5]


def make_model(fusion: str, **overrides) -> MammoFuse:
    torch.manual_seed(0)
    settings = {"fusion": fusion, "backbone": "resnet18", "proj_dim": 16, "num_heads": 4, "dropout": 0.0, **overrides}
    return MammoFuse(ModelConfig(**settings)).eval()


def make_batch(batch: int = 4, size: int = 32, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)[:batch]
    clinical = torch.cat([(torch.rand(batch, n, generator=g) > 0.6).float() for n in FIELDS], dim=1)
    return {"image": torch.randn(batch, 1, size, size, generator=g), "clinical": clinical, "clinical_mask": mask}


@pytest.mark.parametrize("fusion", ["cross", "co"])
def test_attention_sums_to_one_over_present_fields_and_is_zero_for_absent(fusion: str) -> None:
    model, batch = make_model(fusion), make_batch()
    with torch.no_grad():
        out = model(**batch)
    weights = out.image_to_clinical  # (B, image tokens, fields)
    mask = batch["clinical_mask"]
    assert weights.shape[0] == 4 and weights.shape[2] == 5
    absent = ~mask[:, None, :].expand_as(weights)
    assert torch.all(weights[absent] == 0)
    sums = weights.sum(dim=2)
    assert torch.allclose(sums[:3], torch.ones_like(sums[:3]), atol=1e-5)  # rows with a present field
    assert torch.all(sums[3] == 0)  # no field present: no attention at all
    if fusion == "co":
        back = out.clinical_to_image  # (B, fields, image tokens)
        row_sums = back.sum(dim=2)
        assert torch.allclose(row_sums[mask], torch.ones_like(row_sums[mask]), atol=1e-5)
        assert torch.all(back[~mask] == 0)


@pytest.mark.parametrize("fusion", ["concat", "cross", "co", "clinical"])
def test_all_fields_absent_gives_finite_output_that_ignores_the_clinical_vector(fusion: str) -> None:
    model, batch = make_model(fusion), make_batch()
    none_present = torch.zeros_like(batch["clinical_mask"])
    with torch.no_grad():
        a = model(batch["image"], batch["clinical"], none_present).logits
        b = model(batch["image"], 1 - batch["clinical"], none_present).logits
        full = model(batch["image"], batch["clinical"], torch.ones_like(none_present)).logits
    assert torch.isfinite(a).all()
    if fusion != "clinical":  # falls back to the image path: absent values cannot matter
        assert torch.equal(a, b)
    assert not torch.allclose(a, full)  # ...while present ones do


def test_missing_image_uses_learned_token_not_the_pixels() -> None:
    model, batch = make_model("cross"), make_batch()
    absent = torch.zeros(4, dtype=torch.bool)
    with torch.no_grad():
        a = model(**batch, image_present=absent).logits
        b = model(**{**batch, "image": torch.randn_like(batch["image"])}, image_present=absent).logits
        seen = model(**batch).logits
    assert torch.isfinite(a).all() and torch.equal(a, b) and not torch.allclose(a, seen)


def test_modality_dropout_only_in_training_mode() -> None:
    """Feeding features directly keeps BatchNorm out, so the only randomness is modality dropout."""
    model = make_model("concat", modality_dropout=0.9)
    twin = make_model("concat", modality_dropout=0.0)
    twin.load_state_dict(model.state_dict())
    batch = make_batch()
    features = torch.randn(4, 512, 2, 2, generator=torch.Generator().manual_seed(3))
    kwargs = {"image": None, "clinical": batch["clinical"], "clinical_mask": torch.ones(4, 5, dtype=torch.bool), "features": features}
    with torch.no_grad():
        evals = [model(**kwargs).logits for _ in range(3)]
        reference = twin(**kwargs).logits
        model.train()
        torch.manual_seed(0)
        trains = [model(**kwargs).logits for _ in range(3)]
    assert all(torch.equal(e, reference) for e in evals)
    assert any(not torch.allclose(t, reference) for t in trains)


@pytest.mark.parametrize("fusion", ["late", "cross", "image", "clinical"])
def test_calibration_maps_the_logits_of_complete_cases_in_eval_mode_only(fusion: str) -> None:
    """Fitted on cases with every modality, the map leaves cases scored on one modality, and training, as they were."""
    model = make_model(fusion)
    calibrated = make_model(fusion, calibration={"slope": 1.5, "intercept": -0.25})
    calibrated.load_state_dict(model.state_dict())
    batch = make_batch()  # row 3 has no finding
    present = torch.tensor([True, False, True, True])
    with torch.no_grad():
        raw = model(**batch, image_present=present).logits
        mapped = calibrated(**batch, image_present=present).logits
        calibrated.train()
        torch.manual_seed(0)
        trained = calibrated(**batch, image_present=present).logits
        model.train()
        torch.manual_seed(0)
        assert torch.equal(trained, model(**batch, image_present=present).logits)
    has_finding = batch["clinical_mask"].any(dim=1)
    complete = {"image": present, "clinical": has_finding}.get(fusion, present & has_finding)
    assert torch.allclose(mapped[complete], raw[complete] * 1.5 - 0.25) and torch.equal(mapped[~complete], raw[~complete])


def test_the_model_maps_the_cases_its_calibration_is_fitted_on() -> None:
    """The map is fitted on the cases :func:`uses_every_modality` names (the density alone counts as a finding: a late
    fusion's score of an image and the density is still a mean of two logits) and the network maps those, no others."""
    from mammofuse.cases import uses_every_modality
    from mammofuse.clinical import load_schema
    from mammofuse.data.sample import Sample

    model = make_model("late")
    calibrated = make_model("late", calibration={"slope": 1.5, "intercept": -0.25})
    calibrated.load_state_dict(model.state_dict())
    cases = [Sample(id=str(i), patient_id="", label=-1, clinical=clinical, image_path="a.dcm")
             for i, clinical in enumerate([{}, {"density": "2"}, {"density": "2", "shape": "oval"}, {"margin": "spiculated"}])]
    vectors, masks = zip(*(load_schema().encode(c.clinical) for c in cases))
    inputs = {"image": make_batch(4)["image"], "clinical": torch.from_numpy(np.stack(vectors)), "clinical_mask": torch.from_numpy(np.stack(masks))}
    with torch.no_grad():
        raw, mapped = model(**inputs).logits, calibrated(**inputs).logits
    complete = torch.tensor([uses_every_modality(calibrated.config, c) for c in cases])  # the cases its map is fitted on
    assert complete.tolist() == [False, True, True, True]
    assert torch.equal(mapped[~complete], raw[~complete]) and torch.allclose(mapped[complete], raw[complete] * 1.5 - 0.25)


@pytest.mark.parametrize("calibration", [{"slope": -1.0, "intercept": 0.0}, {"slope": 1.0}, {"slope": 1.0, "intercept": 0.0, "x": 1.0},
                                         {"slope": "1", "intercept": 0.0}])
def test_a_calibration_that_is_no_increasing_map_is_refused(calibration: dict) -> None:
    with pytest.raises(MammofuseError, match="calibration"):
        ModelConfig(fusion="clinical", calibration=calibration)


def test_an_uncalibrated_config_writes_no_calibration_key() -> None:
    assert "calibration" not in ModelConfig(fusion="clinical").to_dict()
    assert ModelConfig(fusion="clinical", calibration={"slope": 2.0, "intercept": 0.5}).to_dict()["calibration"] == {"slope": 2.0, "intercept": 0.5}


@pytest.mark.parametrize("fusion", FUSIONS)
def test_save_and_load_give_identical_outputs(fusion: str, tmp_path) -> None:
    model, batch = make_model(fusion), make_batch()
    model.config.threshold = 0.37
    model.config.provenance = {"dataset": "unit", "seed": 0}
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    assert loaded.config == model.config
    assert not loaded.training


def test_clinical_fusion_builds_no_image_encoder() -> None:
    model = make_model("clinical")
    assert model.backbone is None
    assert not any(name.startswith("backbone") for name in model.state_dict())


def test_unknown_config_key_is_refused(tmp_path) -> None:
    save_model(make_model("concat"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["attention_temperature"] = 2.0
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(MammofuseError, match="unknown keys"):
        load_model(tmp_path)


def test_unknown_preprocessing_key_is_refused(tmp_path) -> None:
    """A newer model's preprocessing step was silently dropped: the model would score other pixels than it learnt from."""
    save_model(make_model("concat"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["preprocessing"]["clahe"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(MammofuseError, match=r"config.json: preprocessing has unknown keys \['clahe'\]: made by a newer mammofuse"):
        load_model(tmp_path)
    with pytest.raises(MammofuseError, match=r"preprocessing has unknown keys \['clahe'\]"):
        PreprocessRecipe.from_dict({**PreprocessRecipe().as_dict(), "clahe": True})


@pytest.mark.parametrize("key", ["threshold", "backbone", "num_heads", "vocabulary", "preprocessing", "preprocessing.mean", "preprocessing.image_size"])
def test_a_config_missing_a_key_every_model_has_is_refused(key: str, tmp_path) -> None:
    """Defaults filled in silently: without preprocessing the bundled model scored 0.149 instead of 0.307, without threshold 0.5."""
    save_model(make_model("cross"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    parent, _, name = key.rpartition(".")
    (config[parent] if parent else config).pop(name)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(MammofuseError, match=rf"^{re.escape(str(tmp_path / 'config.json'))}: missing key '{re.escape(key)}', which every mammofuse"):
        load_model(tmp_path)


def test_a_config_without_the_keys_added_later_loads_as_older_models_scored(tmp_path) -> None:
    save_model(make_model("cross"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("radiomics", "aux_findings"):
        config.pop(key)
    for key in ("canvas", "without_region"):
        config["preprocessing"].pop(key)
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_model(tmp_path).config
    assert loaded.recipe.canvas is None and loaded.recipe.without_region == "breast" and not loaded.radiomics and not loaded.aux_findings


def test_every_config_the_package_writes_loads() -> None:
    """Every recipe field has a rule (else the config would be refused), and the configs of trained and bundled models load."""
    from dataclasses import fields

    from mammofuse.hub import resolve_model
    from mammofuse.model.config import RECIPE_RULES
    from mammofuse.training.settings import TrainSettings

    assert set(RECIPE_RULES) == {f.name for f in fields(PreprocessRecipe)}
    recipe = TrainSettings(canvas=[800, 800], without_region="skip").recipe()  # what `train` saves
    assert ModelConfig.from_dict(ModelConfig(preprocessing=recipe.as_dict()).to_dict()).recipe == recipe
    bundled = load_model(resolve_model("default").folder).config  # written by `train`, provenance and all
    assert bundled.recipe.canvas == (800, 800) and bundled.provenance["abnormality"] == ["mass"]


def test_another_tools_config_is_named_as_such(tmp_path) -> None:
    """A transformers-style folder (config.json + model.safetensors) is not 'made by a newer mammofuse'."""
    save_model(make_model("concat"), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 768}))
    with pytest.raises(MammofuseError, match=r"config.json: not a mammofuse model config \(no 'fusion' key") as caught:
        load_model(tmp_path)
    assert "newer mammofuse" not in str(caught.value)


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_weights_must_match_the_config_exactly(change: str, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    save_model(make_model("cross"), tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    if change == "missing":
        state.pop("head.4.weight")
    else:
        state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(MammofuseError, match="do not match"):
        load_model(tmp_path)


def test_weights_of_another_fusion_are_refused(tmp_path) -> None:
    save_model(make_model("co"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["fusion"] = "cross"  # co has an extra attention block
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(MammofuseError, match="do not match"):
        load_model(tmp_path)


def test_saving_again_replaces_a_card_of_another_model_but_keeps_the_owners(tmp_path) -> None:
    """The second model's folder was left with the first one's card (fusion, threshold): what the Hub shows."""
    save_model(make_model("clinical"), tmp_path)
    second = make_model("concat")
    second.config.threshold = 0.7
    save_model(second, tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "concat fusion" in card and "threshold 0.700" in card and "clinical fusion" not in card
    trained = card.replace("concat fusion", "concat fusion on my data") + "\n## Metrics (validation)\n\nAUC 0.9\n"  # a training card
    (tmp_path / "README.md").write_text(trained)
    save_model(second, tmp_path)
    assert (tmp_path / "README.md").read_text() == trained  # the same model saved again: its card still describes it
    save_model(make_model("clinical"), tmp_path)
    assert "clinical fusion" in (tmp_path / "README.md").read_text() and "AUC 0.9" not in (tmp_path / "README.md").read_text()
    (tmp_path / "README.md").write_text("# My model\n\nMy notes.\n")
    save_model(second, tmp_path)
    assert (tmp_path / "README.md").read_text() == "# My model\n\nMy notes.\n"  # a card someone wrote is theirs: kept


@pytest.mark.parametrize("stop", ["ctrl-c", "disk full"])
def test_a_save_stopped_midway_leaves_the_earlier_model_or_the_new_one_never_a_mix(stop: str, tmp_path, monkeypatch) -> None:
    """Was: training stopped between the two writes left epoch 2's weights with epoch 1's config (threshold, provenance)."""
    import os
    import signal
    from pathlib import Path
    from typing import Callable

    import mammofuse.atomic as atomic

    first, second = make_model("concat"), make_model("concat")
    save_model(first, tmp_path)
    with torch.no_grad():
        next(second.parameters()).add_(1.0)
    second.config.threshold = 0.7
    replace = os.replace

    def ctrl_c_after(source: str, target: str) -> None:
        replace(source, target)
        os.kill(os.getpid(), signal.SIGINT)  # between this file and the next one

    def disk_full_at_config(write: Callable[..., int]) -> Callable[..., int]:
        def writing(path: Path, data: object, *args: object, **kwargs: object) -> int:
            if path.name.startswith(".config.json."):
                raise OSError(28, "No space left on device")
            return write(path, data, *args, **kwargs)
        return writing

    if stop == "ctrl-c":
        monkeypatch.setattr(atomic.os, "replace", ctrl_c_after)
    else:
        monkeypatch.setattr(Path, "write_bytes", disk_full_at_config(Path.write_bytes))
        monkeypatch.setattr(Path, "write_text", disk_full_at_config(Path.write_text))
    with pytest.raises(KeyboardInterrupt if stop == "ctrl-c" else MammofuseError):
        save_model(second, tmp_path)
    monkeypatch.undo()
    loaded = load_model(tmp_path)
    now = loaded.config.threshold, torch.equal(next(loaded.parameters()), next(second.parameters()))
    assert now == ((0.7, True) if stop == "ctrl-c" else (first.config.threshold, False))
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_radiomics_feature_constant_in_training_is_centred_not_blown_up() -> None:
    """Every training lesion had a size, so 'size known' had std 1e-6: a case without one scored at z = -1,000,000."""
    from mammofuse.imaging.radiomics import N_RADIOMICS

    model = make_model("concat", radiomics=True)
    batch = make_batch()
    radiomics = torch.zeros(4, N_RADIOMICS)
    with torch.no_grad():
        model.radiomics_std[-1] = 1e-6  # as trained before the floor
        model.radiomics_mean[-1] = 1.0
        tiny = model(**batch, radiomics=radiomics).logits
        model.radiomics_std[-1] = 1.0
        unit = model(**batch, radiomics=radiomics).logits
    assert torch.allclose(tiny, unit)


def _backbone_rows(model: MammoFuse) -> list[int]:
    """The batch sizes the backbone computes on from now on."""
    rows: list[int] = []
    model.backbone.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    return rows


@pytest.mark.parametrize("fusion", ["image", "concat", "cross", "co", "late"])
def test_scoring_runs_the_backbone_only_on_the_images_there_are(fusion: str) -> None:
    """Without --roi a lesion-crop model has no image to look at: the backbone ran on blank inputs and the result was
    thrown away. In eval mode it now runs on the rows with an image only, and without one on a single zero image
    once (the shape of its output); the outputs (logits, attention maps) are those of the whole batch going through it."""
    model, batch = make_model(fusion, radiomics=True), make_batch()
    radiomics = torch.rand(4, model.radiomics_mean.numel(), generator=torch.Generator().manual_seed(2))
    rows = _backbone_rows(model)
    for present, computed in (([False] * 4, [1]), ([False] * 4, []), ([True, False, True, False], [2])):
        image_present = torch.tensor(present)
        with torch.no_grad():
            whole = model(**batch, image_present=image_present, radiomics=radiomics, features=model.backbone(batch["image"]))
            rows.clear()
            out = model(**batch, image_present=image_present, radiomics=radiomics)
        assert rows == computed
        assert torch.allclose(out.logits, whole.logits, atol=1e-6, rtol=0)
        for name in ("image_to_clinical", "clinical_to_image", "branch_logits"):
            mine, theirs = getattr(out, name), getattr(whole, name)
            assert (mine is None and theirs is None) or torch.allclose(mine, theirs, atol=1e-6, rtol=0)


def test_training_still_runs_the_backbone_on_every_row() -> None:
    """DDP expects every parameter to take part in a training step: no row is kept out of the backbone there."""
    model, batch = make_model("concat").train(), make_batch()
    rows = _backbone_rows(model)
    model(**batch, image_present=torch.zeros(4, dtype=torch.bool)).logits.sum().backward()
    assert rows == [4] and model.backbone.conv1.weight.grad is not None


def test_a_config_built_with_part_of_a_recipe_saves_one_that_loads(tmp_path) -> None:
    """config.json must hold every key of the recipe; one built in code from a few is saved with the rest spelled out."""
    folder = save_model(MammoFuse(ModelConfig(fusion="image", backbone="cnn4", preprocessing={"image_size": 32})), tmp_path / "m")
    config = load_model(folder).config
    assert config.preprocessing == {**PreprocessRecipe().as_dict(), "image_size": 32}


def test_a_config_with_an_integer_too_long_to_read_is_named_not_an_internal_error(tmp_path) -> None:
    folder = save_model(make_model("clinical"), tmp_path / "m")
    text = (folder / "config.json").read_text().replace('"proj_dim": 16', '"proj_dim": 1' + "0" * 5000)
    (folder / "config.json").write_text(text)
    with pytest.raises(MammofuseError, match=r"config.json: not valid JSON \(ValueError: Exceeds the limit"):
        load_model(folder)
