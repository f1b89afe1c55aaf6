"""The Python front door gives what the CLI prints: typed predictions, errors as values, warnings as notes."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mammofuse
from mammofuse.cli import app
from mammofuse.errors import OutputError
from mammofuse.results import ErrorKind


def test_predict_a_folder_per_breast_matches_the_cli(real_dicoms, tmp_path: Path) -> None:
    folder = next(iter(real_dicoms.values())).parent
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = mammofuse.predict([folder, broken], per_breast=True, roi=(1000, 1000, 150), density=2, margin="circumscribed")
    assert [Path(r.path).name for r in records] == sorted(p.name for p in folder.iterdir()) + ["broken.dcm"]
    assert all(r.per_breast and r.breast and r.breast_views == 2 for r in records[:-1]) and records[-1].error.kind is ErrorKind.INPUT
    remarks = [str(w.message) for w in caught if issubclass(w.category, mammofuse.MammofuseWarning)]
    assert remarks == ["1 of 5 files have no known breast (no patient and laterality in the DICOM header or file name): "
                       "they get no breast score"]  # the broken file; a region for every file, so no other remark
    cli = CliRunner().invoke(app, ["predict", str(folder), str(broken), "--aggregate", "breast", "--density", "2",
                                   "--margin", "circumscribed", "--roi", "1000,1000,150", "--format", "json"])
    digest = mammofuse.MammoFuse.from_pretrained("default").weights_digest()
    assert cli.exit_code == 1 and json.loads(cli.stdout) == [{**r.to_dict(), "weights_digest": digest} for r in records]


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


@pytest.mark.parametrize(("roi", "message"), [
    *[(roi, r"^roi must be the lesion circle \(row, column, radius\) in the file's pixels: three numbers; not ")
      for roi in [(2400, 1145), (2400, 1145, 100, 1), "2400,1145,100", ("2400", "1145", "100")]],
    ((float("nan"), 1145, 100), r"^roi: row nan: row, column and radius must be finite numbers of pixels"),
    ((2400, 1145, -5), r"^roi: radius -5: .* radius in \(0, 1e6\)$"),
    ((2400, -1, 100), r"^roi: column -1: .* row and column in \[0, 1e6\)"),
])
def test_a_malformed_roi_is_a_usage_error_naming_roi(real_dicoms, roi, message: str) -> None:
    """Not a per-file 'cannot read (ValueError: not enough values to unpack...)' record: the argument is wrong for every file."""
    with pytest.raises(mammofuse.MammofuseError, match=message):
        mammofuse.predict(real_dicoms["P_00173_lcc"], density=2, roi=roi)


def test_a_roi_array_and_any_path_like_are_taken(real_dicoms) -> None:
    import numpy as np

    class PathLike:  # os.PathLike without being a pathlib.Path
        def __fspath__(self) -> str:
            return str(real_dicoms["P_00173_lcc"])

    prediction = mammofuse.predict(PathLike(), density=2, roi=np.array([2400, 1145, 100]))
    assert isinstance(prediction, mammofuse.Prediction) and prediction.ok and prediction.region == (2400.0, 1145.0, 100.0)
    assert prediction.to_dict()["region"] == [2400.0, 1145.0, 100.0]


@pytest.mark.parametrize(("images", "message"), [
    (5, "images must be a file or folder path .str or pathlib.Path. or a list of them, not int"),
    (None, "images must be .* not NoneType"),
    (b"scan.dcm", "images must be .* not bytes"),
    ([Path("a.dcm"), 7], r"images\[1\] must be a path .str or pathlib.Path., not int"),
])
def test_images_that_are_not_paths_are_a_type_error_naming_images(images, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        mammofuse.predict(images, density=2)


def test_an_in_memory_image_is_refused_with_its_type() -> None:
    from PIL import Image

    with pytest.raises(TypeError, match="images must be a file or folder path .* not PIL.Image.Image"):
        mammofuse.predict(Image.new("L", (8, 8)), density=2)


def test_no_path_at_all_says_so() -> None:
    with pytest.raises(mammofuse.MammofuseError, match="^no files or folders given"):
        mammofuse.predict([], density=2)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_a_bad_batch_size_is_a_usage_error(real_dicoms, batch_size) -> None:
    with pytest.raises(mammofuse.MammofuseError, match=r"^batch_size must be an integer in \[1, 65536\]"):
        mammofuse.predict(real_dicoms["P_00173_lcc"], density=2, batch_size=batch_size)


def test_device_none_is_a_type_error_not_an_attribute_error() -> None:
    with pytest.raises(TypeError, match="device must be a string: auto, cpu, cuda, cuda:N or mps, not None"):
        mammofuse.MammoFuse.from_pretrained("default", device=None)


def test_model_predict_takes_a_list_as_mammofuse_predict_does(real_dicoms) -> None:
    model = mammofuse.MammoFuse.from_pretrained("default")
    files = [real_dicoms["P_00173_lcc"], real_dicoms["P_00173_rcc"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = model.predict(files, density=2, margin="circumscribed")
    assert [r.path for r in records] == [str(f) for f in files]


def test_explain_into_a_file_or_under_one_says_so_as_the_cli_does(real_dicoms, tmp_path: Path) -> None:
    """Was: "somefile.txt/explanation.json: cannot write (an earlier output cannot be removed: Not a directory)"."""
    (tmp_path / "somefile.txt").write_text("x")
    for out, problem in ((tmp_path / "somefile.txt", "it is a file"), (tmp_path / "somefile.txt" / "out", "a part of its folder path is a file")):
        with pytest.raises(OutputError, match=f"^{re.escape(str(out))}: cannot write \\({problem}\\)$"):
            mammofuse.explain(real_dicoms["P_00173_lcc"], out, "missing-model-not-loaded", roi=(2400, 1145, 100), density=2)
    assert (tmp_path / "somefile.txt").read_text() == "x"


def test_explain_takes_one_file_and_says_so_for_a_folder(real_dicoms, tmp_path: Path) -> None:
    folder = real_dicoms["P_00173_lcc"].parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(mammofuse.MammofuseError, match=f"^{folder}: explain takes one file, not a folder: explain each file in turn$"):
            mammofuse.explain(folder, tmp_path, roi=(2400, 1145, 100), density=2)
        (tmp_path / "nested" / "sub").mkdir(parents=True)  # no image at its top: the error is the same, not a --recursive hint
        with pytest.raises(mammofuse.MammofuseError, match="explain takes one file, not a folder"):
            mammofuse.explain(tmp_path / "nested", tmp_path / "out", roi=(2400, 1145, 100), density=2)
        (tmp_path / "nested" / "sub").rmdir()
        (tmp_path / "nested").rmdir()
        with pytest.raises(TypeError, match="^image must be a path .str or pathlib.Path., not list"):
            mammofuse.explain([real_dicoms["P_00173_lcc"]] * 2, tmp_path, roi=(2400, 1145, 100), density=2)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("options", "message"), [
    ({"control": "nope"}, "control must be one of masked, away"),
    ({"away_patches": 0, "control": "away"}, r"away_patches must be an integer in \[1, 1000\]"),
    ({"away_patches": 10**9, "control": "away"}, r"away_patches must be an integer in \[1, 1000\]"),  # the CLI's bound
    ({"batch_size": 10**9}, r"batch_size must be an integer in \[1, 65536\]"),
    ({"away_patches": 4}, "away_patches is for control='away'"),
    ({"bootstrap": -1}, "bootstrap must be an integer in"),
    ({"seed": "a"}, r"seed must be an integer in \[0, 4294967295\]"),
    ({"bootstrap": 100_001}, r"bootstrap must be an integer in \[0, 100000\], not 100001"),  # the CLI's --bootstrap bound
    ({"seed": 2**32}, r"seed must be an integer in \[0, 4294967295\], not 4294967296"),
])
def test_evaluate_checks_its_options_before_any_work(options: dict, message: str, tmp_path: Path) -> None:
    """A misspelt control used to run the 'away' control and report it under the misspelt name."""
    with pytest.raises(mammofuse.MammofuseError, match=message):
        mammofuse.evaluate("default", "cbis-ddsm", tmp_path / "no-such-data", **options)


def test_evaluate_takes_one_images_folder_as_load_dataset_does(real_dicoms, cbis_csv) -> None:
    """A str was iterated character by character ('w: images folder not found'); a Path failed with 'not iterable'."""
    root = real_dicoms["P_00173_lcc"].parents[1]
    for images in (str(root), root):
        metrics = mammofuse.evaluate("default", "cbis-ddsm", cbis_csv, images=images, split="test", abnormality="mass", bootstrap=0)
        assert metrics.n == 10


def test_numpy_numbers_are_numbers(real_dicoms) -> None:
    """threshold=np.float32(0.4) was refused as 'threshold must be a number in [0, 1], not np.float32(0.4)'."""
    import numpy as np

    prediction = mammofuse.predict(real_dicoms["P_00173_lcc"], density=2, roi=(2400, 1145, 100),
                                   threshold=np.float32(0.25), batch_size=np.int64(2))
    assert prediction.ok and prediction.threshold == 0.25 and type(prediction.threshold) is float
    assert prediction.decision == ("malignant" if prediction.probability >= 0.25 else "benign")


def test_predict_and_evaluate_give_the_model_its_training_mode_back(real_dicoms, cbis_csv) -> None:
    """A model being trained was left in eval mode (dropout off) by a prediction in between."""
    model = mammofuse.MammoFuse(mammofuse.ModelConfig(fusion="cross", backbone="cnn4"))
    assert model.training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert model.predict(real_dicoms["P_00173_lcc"], density=2, roi=(2400, 1145, 100)).ok
        assert model.training
        mammofuse.evaluate(model, "cbis-ddsm", cbis_csv, images=real_dicoms["P_00173_lcc"].parents[1], abnormality="mass", bootstrap=0)
    assert model.training
    model.eval()
    mammofuse.predict(real_dicoms["P_00173_lcc"], model, density=2, roi=(2400, 1145, 100))
    assert not model.training


def test_every_remark_of_the_package_is_a_mammofuse_warning(tmp_path: Path) -> None:
    """filterwarnings(category=MammofuseWarning) missed the reader's and the datasets' remarks (plain UserWarnings)."""
    from dicom_factory import breast_phantom, write_dicom

    from mammofuse.data.cbis_ddsm import DatasetWarning
    from mammofuse.imaging.reader import ReaderWarning

    assert issubclass(ReaderWarning, mammofuse.MammofuseWarning) and issubclass(DatasetWarning, mammofuse.MammofuseWarning)
    path = write_dicom(tmp_path / "cr.dcm", breast_phantom(), Modality="CR")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=mammofuse.MammofuseWarning)
        assert mammofuse.predict(path, density=2, roi=(32, 8, 6)).ok
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mammofuse.predict(path, density=2, roi=(32, 8, 6))
    assert any("modality is CR, not MG" in str(w.message) and issubclass(w.category, mammofuse.MammofuseWarning) for w in caught)
    cli = CliRunner().invoke(app, ["predict", str(path), "--density", "2", "--roi", "32,8,6", "--format", "json"])
    assert cli.exit_code == 0 and f"note: {path}: modality is CR, not MG (mammography)" in " ".join(cli.stderr.split())


def test_errors_from_python_name_the_argument_as_well_as_the_flag(real_dicoms, cbis_csv, tmp_path: Path) -> None:
    """'choose one with --split', '--abnormality must be...', '--clinical takes a CSV file' named only CLI flags."""
    with pytest.raises(mammofuse.MammofuseError, match=r"the data has no 'val' split \(it has: test, train\); choose one with split \(--split\)$"):
        mammofuse.evaluate("default", "cbis-ddsm", cbis_csv, split="val", abnormality="mass")
    with pytest.raises(mammofuse.MammofuseError, match=r"^abnormality \(--abnormality\) must be one of mass, calc, all, not 'masses'$"):
        mammofuse.load_dataset("cbis-ddsm", cbis_csv, abnormality="masses")
    with pytest.raises(mammofuse.MammofuseError, match=r": is a folder; clinical_csv \(--clinical\) takes a CSV file$"):
        mammofuse.predict(real_dicoms["P_00173_lcc"], clinical_csv=tmp_path, density=2)


def test_a_model_that_is_no_mammofuse_is_a_type_error_and_a_compiled_one_is_unwrapped(real_dicoms) -> None:
    """predict(D, 123) looked for a model '123'; another module's repr filled a 3,700-character 'unknown model' error."""
    import torch

    model = mammofuse.MammoFuse.from_pretrained("default")
    for wrong, name in ((123, "int"), (torch.nn.Linear(2, 1), "torch.nn.modules.linear.Linear"), (b"default", "bytes")):
        with pytest.raises(TypeError, match=rf"^model must be a MammoFuse, a name or path \(str or pathlib.Path\), or None, not {name}$"):
            mammofuse.predict(real_dicoms["P_00173_lcc"], wrong, density=2)
    compiled = mammofuse.predict(real_dicoms["P_00173_lcc"], torch.compile(model), density=2, roi=(2400, 1145, 100))
    assert compiled == mammofuse.predict(real_dicoms["P_00173_lcc"], model, density=2, roi=(2400, 1145, 100))


@pytest.mark.parametrize("images", ["", [""], ["scan.dcm", ""]])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scan.dcm").write_bytes(b"")
    with pytest.raises(mammofuse.MammofuseError, match=r"^images(\[\d\])? is an empty path"):
        mammofuse.predict(images, density=2)


def test_an_explanation_carries_the_remark_a_prediction_record_carries(real_dicoms, tmp_path: Path) -> None:
    """A calcification explained by the masses-only default: the remark predict puts in its record, in the explanation's notes."""
    kwargs = {"roi": (2400, 1145, 100), "density": 2, "calc_type": "vascular"}
    prediction = mammofuse.predict(real_dicoms["P_00173_lcc"], **kwargs)
    explanation = mammofuse.explain(real_dicoms["P_00173_lcc"], tmp_path, methods=["shap"], **kwargs)
    assert "never saw calcifications" in prediction.note
    assert [n for n in explanation.notes if "never saw calcifications" in n] == [n for n in prediction.note.split("; ") if "never saw" in n]
    assert explanation.probability == pytest.approx(prediction.probability, abs=1e-6)


@pytest.mark.parametrize("call", ["predict", "explain", "evaluate", "load_dataset"])
def test_threads_sharing_the_library_take_their_turn(call: str, real_dicoms, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: two threads calling predict at once broke the process's warnings for good (``catch_warnings`` is not
    thread-safe), ran Grad-CAM on each other's activations, and turned dropout back on mid-scoring."""
    import threading

    from mammofuse import api
    from mammofuse.interrupts import load_torch

    load_torch()  # loaded before: the second call then fails at once unless it waits for the first
    entered, release = threading.Event(), threading.Event()
    as_paths = api.as_paths

    def held(value, name):  # the first thread's call waits inside predict until released
        if threading.current_thread() is first:
            entered.set()
            release.wait(10)
        return as_paths(value, name)

    monkeypatch.setattr(api, "as_paths", held)
    first = threading.Thread(target=mammofuse.predict, args=(real_dicoms["P_00820_lcc"],))
    first.start()
    assert entered.wait(10)
    second_done = threading.Event()
    calls = {"predict": lambda: mammofuse.predict(tmp_path / "scan.dcm", batch_size=0),
             "explain": lambda: mammofuse.explain(tmp_path, tmp_path / "out"),
             "evaluate": lambda: mammofuse.evaluate(None, "nonesuch", tmp_path),
             "load_dataset": lambda: mammofuse.load_dataset("nonesuch", tmp_path)}

    def second() -> None:
        with pytest.raises(mammofuse.MammofuseError):
            calls[call]()
        second_done.set()

    other = threading.Thread(target=second)
    other.start()
    assert not second_done.wait(0.5), f"{call} ran while another thread was in predict"
    release.set()
    first.join(60)
    other.join(60)
    assert second_done.is_set()


def test_predict_draws_nothing_from_torchs_random_stream(real_dicoms) -> None:
    """Was: each call's data loader drew its seed from torch's global generator, moving a caller's seeded stream."""
    import torch

    model = mammofuse.MammoFuse.from_pretrained("default")
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    model.predict(real_dicoms["P_00820_lcc"], density=2)
    assert torch.equal(torch.rand(3), expected)


def test_a_process_forked_while_another_thread_holds_the_lock_can_call_the_library(tmp_path: Path) -> None:
    """Was: the child inherited the lock held by a thread it does not have, and waited for it forever."""
    import os
    import threading

    from mammofuse.serial import one_at_a_time

    held, release = threading.Event(), threading.Event()

    @one_at_a_time
    def call() -> None:
        held.set()
        release.wait(10)

    holder = threading.Thread(target=call)
    holder.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: a wrapped call must not wait for the parent's thread
        one_at_a_time(lambda: None)()
        os._exit(0)
    try:
        for _ in range(100):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            threading.Event().wait(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child waited for a lock its parent's thread held")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        holder.join(10)
