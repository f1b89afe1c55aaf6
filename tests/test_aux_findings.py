"""``aux_findings``: the image branch also learns to name the lesion's findings, in training only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mammofuse.data import load_dataset, train_val_split
from mammofuse.model import MammoFuse, ModelConfig, load_model
from mammofuse.training import TrainCallback, TrainSettings, train
from mammofuse.training.trainer import findings_loss


def test_findings_loss_counts_only_lesion_fields_present_in_rows_with_an_image() -> None:
    # two fields: "density" (2 dims, the breast's) and "margin" (3 dims, the lesion's)
    dim_fields, lesion_dims = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    clinical = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 1, 0, 0], [1, 0, 0, 0, 1]])
    mask = torch.tensor([[True, True], [True, False], [True, True]])  # case 1 has no margin
    rows = torch.tensor([True, True, False])  # case 2's image was not seen
    logits = torch.randn(3, 5)
    got = findings_loss(logits, rows, clinical, mask, dim_fields, lesion_dims)
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits[0, 2:], clinical[0, 2:])  # case 0's margin only
    assert got == pytest.approx(float(want), rel=1e-5)
    confident = (clinical * 2 - 1) * 20.0
    assert findings_loss(confident, rows, clinical, mask, dim_fields, lesion_dims) < 1e-6
    assert findings_loss(-confident, rows, clinical, mask, dim_fields, lesion_dims) > 10
    assert findings_loss(logits, torch.zeros(3, dtype=torch.bool), clinical, mask, dim_fields, lesion_dims) == 0


def test_the_findings_head_speaks_in_training_only_and_only_with_an_image_branch() -> None:
    config = ModelConfig(fusion="late", backbone="cnn4", proj_dim=16, aux_findings=True)
    model = MammoFuse(config)
    dims = sum(config.field_sizes)
    image, clinical = torch.randn(3, 1, 64, 64), torch.zeros(3, dims)
    mask = torch.zeros(3, len(config.field_sizes), dtype=torch.bool)
    out = model.train()(image, clinical, mask, image_present=torch.tensor([True, False, True]))
    assert out.findings_logits.shape == (3, dims) and out.findings_rows.tolist() == [True, False, True]
    assert model.eval()(image, clinical, mask).findings_logits is None
    assert not hasattr(MammoFuse(replace(config, fusion="clinical")), "findings_head")
    assert ModelConfig.from_dict({k: v for k, v in ModelConfig().to_dict().items() if k != "aux_findings"}).aux_findings is False


def test_training_with_aux_findings_moves_the_image_branch_and_saves_a_loadable_model(mini_mias: Path, tmp_path: Path,
                                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert TrainSettings().aux_findings == 1.0  # on by default
    samples = load_dataset("mini-mias", mini_mias)[:24]
    split = train_val_split(samples, val_fraction=0.3, seed=0)
    base = TrainSettings(fusion="image", backbone="cnn4", image_size=32, epochs=1, batch_size=8, proj_dim=16,
                         dataset="mini-mias", pretrained="none", augment=False, aux_findings=0.0)
    train(base, *split, tmp_path / "plain")
    train(replace(base, aux_findings=1.0), *split, tmp_path / "aux")
    # The control builds the same head (the same random draws) and only its loss is zero.
    monkeypatch.setattr("mammofuse.training.trainer.findings_loss", lambda logits, *_: logits.new_zeros(()))
    train(replace(base, aux_findings=1.0), *split, tmp_path / "muted")
    plain, aux, muted = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("plain", "aux", "muted"))
    assert set(aux) - set(plain) == {"findings_head.0.weight", "findings_head.0.bias", "findings_head.1.weight", "findings_head.1.bias"}
    conv = next(k for k in plain if k.startswith("backbone.") and k.endswith("weight"))
    assert not torch.equal(muted[conv], aux[conv])  # the findings' loss reached the backbone
    model = load_model(tmp_path / "aux")
    assert model.config.aux_findings and model.config.provenance["settings"]["aux_findings"] == 1.0
    card = (tmp_path / "aux" / "README.md").read_text()
    assert "learned to name each lesion's findings" in card and "counted in the train loss below, not in the validation loss" in card
    assert "name each lesion's findings" not in (tmp_path / "plain" / "README.md").read_text()


class _Notes(TrainCallback):
    """Keeps the run's one-line notes."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def on_log(self, message: str) -> None:
        self.messages.append(message)


def test_without_a_lesion_finding_to_learn_the_findings_loss_is_said_to_be_off(mini_mias: Path, tmp_path: Path) -> None:
    """Was: with no training case giving a lesion finding (mini-MIAS calcifications, a manifest of density alone) the findings
    loss was 0 throughout, without a word, and the card said the image branch learned to name each lesion's findings."""
    samples = [replace(s, clinical={"density": s.clinical["density"]}) for s in load_dataset("mini-mias", mini_mias)[:24]]
    settings = TrainSettings(fusion="image", backbone="cnn4", image_size=32, epochs=1, batch_size=8, proj_dim=16,
                             dataset="mini-mias", pretrained="none", augment=False, aux_findings=5.0)
    notes = _Notes()
    train(settings, *train_val_split(samples, val_fraction=0.3, seed=0), tmp_path, callbacks=[notes])
    assert "note: no training case with an image has a lesion finding (shape, margin, calcification...), so the findings loss " \
           "(--aux-findings) is off" in notes.messages
    config = load_model(tmp_path).config
    assert config.provenance["aux_findings_targets"] == 0 and config.provenance["settings"]["aux_findings"] == 5.0  # --resume compares those
    card = (tmp_path / "README.md").read_text()
    assert "no findings loss: `aux_findings` 5 asked for one, but no training case with an image gave a lesion finding" in card
    assert "learned to name each lesion's findings" not in card and "findings loss (counted in the train loss" not in card
