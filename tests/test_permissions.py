"""Inputs this user may not read and outputs they may not write.

The tests may run as root, where no file mode denies anything: a refusal is staged by making the function that opens
or stats one path raise ``EACCES``, as it does for an ordinary user. Where a test sets a real mode instead, it runs only
for an ordinary user.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mammofuse.cli import app
from mammofuse.errors import MammofuseError, MammofuseWarning, OutputError

runner = CliRunner()
AS_ROOT = os.geteuid() == 0


def _deny(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, refused: Path) -> None:
    """Make ``owner.name`` (``os.open``, ``os.stat``, ``Path.read_text``...) refuse ``refused`` with EACCES."""
    original: Callable[..., Any] = getattr(owner, name)

    def refusing(path: object, *args: object, **kwargs: object) -> Any:
        if isinstance(path, (str, os.PathLike)) and Path(path) == refused:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(owner, name, refusing)


def _cannot_read(path: Path) -> str:
    return f"^{re.escape(str(path))}: cannot read .Permission denied.$"


def _error(result: Any) -> str:
    return result.stderr.splitlines()[-1] if result.stderr else ""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", "clinical")


def test_a_model_whose_weights_cannot_be_read_says_so(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``error: model/model.safetensors: not found``: safetensors reports no permission as a missing file."""
    weights = model / "model.safetensors"
    _deny(monkeypatch, os, "open", weights)
    result = runner.invoke(app, ["predict", "--density", "2", "--model", str(model), "--format", "json", str(model / "config.json")])
    assert result.exit_code == 2 and _error(result) == f"error: {weights}: cannot read (Permission denied)", result.output


def test_a_pretrained_backbone_that_cannot_be_read_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``not a valid safetensors file (No such file or directory: ...)`` for a backbone file with no read permission."""
    from mammofuse.model.encoders import image_backbone
    from mammofuse.training.pretrain import PretrainSettings, load_backbone, save_backbone

    module = image_backbone("cnn4")[0]
    path = save_backbone(module, tmp_path / "np.safetensors", PretrainSettings(backbone="cnn4"), {})
    _deny(monkeypatch, os, "open", path)
    with pytest.raises(MammofuseError, match=_cannot_read(path)):
        load_backbone(module, str(path), "cnn4")


def test_pretrained_weights_in_a_folder_that_cannot_be_searched_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: a bare PermissionError from ``is_file()`` (exit 3, the code of an output that cannot be written)."""
    from mammofuse.model.encoders import image_backbone
    from mammofuse.training.pretrain import load_backbone, weights_file_digest

    path = tmp_path / "hidden" / "np.safetensors"
    _deny(monkeypatch, os, "stat", path)
    with pytest.raises(MammofuseError, match=_cannot_read(path)):
        load_backbone(image_backbone("cnn4")[0], str(path), "cnn4")
    with pytest.raises(MammofuseError, match=_cannot_read(path)):
        weights_file_digest(str(path))


def test_imagenet_weights_that_cannot_be_read_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``refused as ImageNet weights (FileNotFoundError: No such file or directory...)`` for a file with no read permission."""
    import torchvision
    from safetensors.torch import save_file

    from mammofuse.model.encoders import imagenet_state_dict

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    stem = Path(torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]).stem
    save_file({"x": torch.zeros(1)}, checkpoints / f"{stem}.safetensors")
    _deny(monkeypatch, os, "open", checkpoints / f"{stem}.safetensors")
    with pytest.raises(MammofuseError, match=_cannot_read(checkpoints / f"{stem}.safetensors")):
        imagenet_state_dict("resnet18")


def _checkpoint(out: Path) -> Path:
    """A ``last/`` checkpoint in ``out`` naming a tensor file (enough for reading it; not a run to resume)."""
    from safetensors.torch import save_file

    from mammofuse.training.checkpoint import FORMAT

    last = out / "last"
    last.mkdir(parents=True)
    save_file({"rng.torch": torch.get_rng_state()}, last / "epoch-0001.safetensors")
    (last / "checkpoint.json").write_text(json.dumps({"format": FORMAT, "epoch": 1, "tensors": "epoch-0001.safetensors"}))
    return last


@pytest.mark.parametrize(("name", "how"), [("epoch-0001.safetensors", "open"), ("checkpoint.json", "read_text")])
def test_a_checkpoint_file_that_cannot_be_read_says_so(name: str, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``cannot read the checkpoint tensors (No such file or directory...)``, and for checkpoint.json a bare
    PermissionError: ``error: run/last/checkpoint.json: Permission denied``, exit 3."""
    from mammofuse.training.checkpoint import load_checkpoint

    refused = _checkpoint(tmp_path) / name
    _deny(monkeypatch, os if how == "open" else Path, how, refused)
    with pytest.raises(MammofuseError, match=_cannot_read(refused)):
        load_checkpoint(tmp_path)


def test_a_checkpoint_folder_that_cannot_be_searched_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: a bare PermissionError from ``is_file()``, exit 3."""
    from mammofuse.training.checkpoint import has_checkpoint

    refused = _checkpoint(tmp_path) / "checkpoint.json"
    _deny(monkeypatch, os, "stat", refused)
    with pytest.raises(MammofuseError, match=_cannot_read(refused)):
        has_checkpoint(tmp_path)


def test_a_manifest_folder_that_cannot_be_searched_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``error: mf/manifest.csv: Permission denied``, exit 3 (the code of an output that cannot be written)."""
    (tmp_path / "mf").mkdir()
    (tmp_path / "mf" / "manifest.csv").write_text("path,label,patient_id\na.png,1,p1\n")
    _deny(monkeypatch, os, "stat", tmp_path / "mf" / "manifest.csv")
    result = runner.invoke(app, ["data", "summary", "--dataset", "manifest", "--data", str(tmp_path / "mf")])
    assert result.exit_code == 2 and _error(result) == f"error: {tmp_path / 'mf' / 'manifest.csv'}: cannot read (Permission denied)", result.output


@pytest.mark.parametrize("refused", ["Info.txt", "images/mdb001.png"])
def test_a_mini_mias_folder_that_cannot_be_searched_is_a_usage_error(refused: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``error: mm/images/mdb001.png: Permission denied``, exit 3, for an images/ folder with no permission."""
    (tmp_path / "images").mkdir()
    (tmp_path / "Info.txt").write_text("mdb001 G CIRC B 535 425 197\n")
    _deny(monkeypatch, os, "stat", tmp_path / refused)
    result = runner.invoke(app, ["data", "summary", "--dataset", "mini-mias", "--data", str(tmp_path)])
    assert result.exit_code == 2 and _error(result) == f"error: {tmp_path / refused}: cannot read (Permission denied)", result.output


def test_a_cbis_folder_that_cannot_be_searched_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: a bare PermissionError from ``is_file()`` on the case-description CSVs, exit 3."""
    from mammofuse.data import load_dataset

    _deny(monkeypatch, os, "stat", tmp_path / "mass_case_description_train_set.csv")
    with pytest.raises(MammofuseError, match=f"^{re.escape(str(tmp_path))}: cannot read .Permission denied.$"):
        load_dataset("cbis-ddsm", tmp_path)


def test_a_feature_cache_entry_that_cannot_be_read_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``error: .../xx.safetensors: Permission denied``, exit 3, for an entry in another user's cache sub-folder."""
    from mammofuse.training.features import FeatureCache

    cache = FeatureCache("disk", tmp_path)
    _deny(monkeypatch, os, "stat", cache._path("w" * 24, "ab12"))
    assert cache.get("w" * 24, "ab12") is None


@pytest.mark.skipif(AS_ROOT, reason="root reads and writes any folder whatever its mode: see the staged test above")
def test_a_feature_cache_folder_of_another_user_is_a_miss_kept_in_memory(tmp_path: Path) -> None:
    """Was: the run stopped, exit 3, on an entry in a cache sub-folder it may not search."""
    from mammofuse.training.features import FeatureCache

    cache = FeatureCache("disk", tmp_path)
    entry = cache._path("w" * 24, "ab12")
    entry.parent.mkdir(parents=True)
    entry.parent.chmod(0)
    try:
        assert cache.get("w" * 24, "ab12") is None
        with pytest.warns(MammofuseWarning, match="cannot write the cache"):
            cache.put("w" * 24, "ab12", torch.ones(2))
        assert torch.equal(cache.get("w" * 24, "ab12"), torch.ones(2))
    finally:
        entry.parent.chmod(0o700)


def _read_only(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Stage ``path`` as mode 444 for an ordinary user: ``os.access`` says it may not be written (for root it may, and
    root replaces it, as ``cp`` would)."""
    original = os.access

    def access(target: object, mode: int, *args: object, **kwargs: object) -> bool:
        if Path(target) == path and mode & os.W_OK:  # type: ignore[arg-type]
            return False
        return original(target, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)


def test_an_atomic_write_refuses_a_file_the_user_may_not_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``wrote s.json``, exit 0, its contents replaced, for a mode-444 file: its folder allowed the rename."""
    from mammofuse.atomic import check_writable, write_text

    output = tmp_path / "s.json"
    output.write_text("kept\n")
    _read_only(monkeypatch, output)
    for write in (lambda: check_writable(output), lambda: write_text(output, "new\n", follow_symlink=True), lambda: write_text(output, "new\n")):
        with pytest.raises(OutputError, match=f"^{re.escape(str(output))}: cannot write .Permission denied.$"):
            write()
    assert output.read_text() == "kept\n" and [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_a_json_output_the_user_may_not_write_is_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``-f json -o s.json`` replaced a mode-444 file, where ``-f csv`` refused it."""
    output = tmp_path / "s.json"
    output.write_text("kept\n")
    _read_only(monkeypatch, output)
    result = runner.invoke(app, ["schema", "--output", str(output)])
    assert result.exit_code == 3 and _error(result) == f"error: {output}: cannot write (Permission denied)", result.output
    assert output.read_text() == "kept\n"


@pytest.mark.skipif(AS_ROOT, reason="root may write any file, so replaces a mode-444 one: see the staged tests above")
def test_a_mode_444_output_is_kept(tmp_path: Path) -> None:
    """Was: replaced, for the folder allowed it."""
    output = tmp_path / "s.json"
    output.write_text("kept\n")
    output.chmod(0o444)
    result = runner.invoke(app, ["schema", "--output", str(output)])
    assert result.exit_code == 3 and output.read_text() == "kept\n", result.output


@pytest.mark.parametrize("name", ["scan.png", "scan.dcm", "scan"])
def test_an_image_that_cannot_be_opened_says_so_whatever_its_format(name: str, real_dicoms: dict[str, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Was "not a readable image ([Errno 13] Permission denied: ...)", or "not a readable DICOM file (...)": a question
    of the format, where the file could not be opened at all."""
    import builtins
    import io
    import shutil

    from PIL import Image

    from mammofuse.errors import InputFileError
    from mammofuse.imaging.reader import read_mammogram

    image = tmp_path / name
    if name.endswith(".png"):
        Image.fromarray(np.full((64, 64), 128, np.uint8)).save(image)
    else:
        shutil.copy(real_dicoms["P_00173_lcc"], image)
    for opener in (io, builtins):  # Path.open calls io.open; pydicom, the built-in open
        _deny(monkeypatch, opener, "open", image)
    with pytest.raises(InputFileError, match=_cannot_read(image)):
        read_mammogram(image)
