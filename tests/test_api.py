"""The Python front door gives what the CLI prints: typed predictions, errors as values, warnings as notes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mammofuse
from mammofuse.cli import app
from mammofuse.results import ErrorKind


def test_predict_a_folder_per_breast_matches_the_cli(real_dicoms, tmp_path: Path) -> None:
    folder = next(iter(real_dicoms.values())).parent
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = mammofuse.predict([folder, broken], per_breast=True, roi=(1000, 1000, 150), density=2, margin="circumscribed")
    assert [Path(r.path).name for r in records] == sorted(p.name for p in folder.iterdir()) + ["broken.dcm"]
    assert all(r.per_breast and r.breast for r in records[:-1]) and records[-1].error.kind is ErrorKind.INPUT
    remarks = [str(w.message) for w in caught if issubclass(w.category, mammofuse.MammofuseWarning)]
    assert remarks == ["1 of 5 files have no known breast (no patient and laterality in the DICOM header or file name): "
                       "they get no breast score"]  # the broken file; a region for every file, so no other remark
    cli = CliRunner().invoke(app, ["predict", str(folder), str(broken), "--aggregate", "breast", "--density", "2",
                                   "--margin", "circumscribed", "--roi", "1000,1000,150", "--format", "json"])
    assert cli.exit_code == 1 and json.loads(cli.stdout) == [r.to_dict() for r in records]


def test_one_file_gives_one_prediction(real_dicoms) -> None:
    model = mammofuse.MammoFuse.from_pretrained("default")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prediction = model.predict(real_dicoms["P_00820_lcc"], shape="irregular", margin="spiculated")
    remarks = [w for w in caught if issubclass(w.category, mammofuse.MammofuseWarning)]
    assert remarks and all(w.filename == __file__ for w in remarks)  # pointed at the caller's line, not ours
    assert isinstance(prediction, mammofuse.Prediction) and prediction.ok and prediction.model == "default"
    assert prediction.decision == ("malignant" if prediction.probability >= prediction.threshold else "benign")


def test_a_folder_of_sub_folders_says_how_to_descend_in_python_too(dicom_root: Path) -> None:
    """The README's Python notes: sub-folders are searched only with recursive=True, and the error says so."""
    with pytest.raises(mammofuse.MammofuseError, match="recursive=True in Python"):
        mammofuse.predict(dicom_root, density=2, margin="circumscribed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(mammofuse.predict(dicom_root, recursive=True, density=2, margin="circumscribed")) == 8
