"""Hostile and broken input: one bad file never costs a batch, untrusted text never reaches the
terminal raw, and nothing read from a file is trusted before it is checked."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from conftest import make_tiny_model
from dicom_factory import JPEGLosslessSV1, breast_phantom, write_dicom
from PIL import Image
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless
from typer.testing import CliRunner

from mammofuse.cli import app
from mammofuse.errors import MammofuseError

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
MARKUP_NAME = "[red]x\x1b]0;pwned\x07.dcm"
HOSTILE_PATIENT = "\x1b[2J[link=http://evil.example]click[/link]"


def run(*args: str, **env: str):
    return runner.invoke(app, list(args), env={"OMP_NUM_THREADS": "1", "COLUMNS": "250", **env})


def _patched(path: Path, old: bytes, new: bytes) -> Path:
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    return path


@pytest.fixture(scope="module")
def tiny_roi_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny concat model on lesion crops."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-roi") / "model", "concat", "roi")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good, broken and hostile files side by side, keyed by what they are."""
    root = tmp_path_factory.mktemp("corpus")
    files: dict[str, Path] = {}
    files["good_dicom"] = write_dicom(root / "good.dcm", breast_phantom())
    Image.fromarray((breast_phantom(bits=8)).astype(np.uint8)).save(root / "good.png")
    files["good_png"] = root / "good.png"
    files["hostile_name"] = write_dicom(root / MARKUP_NAME, breast_phantom(), PatientID=HOSTILE_PATIENT)
    good = files["good_dicom"].read_bytes()
    (root / "truncated.dcm").write_bytes(good[: len(good) // 2])
    files["truncated"] = root / "truncated.dcm"
    encapsulated = write_dicom(root / "cut_rle.dcm", breast_phantom(), TransferSyntaxUID=RLELossless).read_bytes()
    (root / "cut_rle.dcm").write_bytes(encapsulated[:-20])  # ends inside its encapsulated pixel data
    files["truncated_encapsulated"] = root / "cut_rle.dcm"
    (root / "empty.dcm").write_bytes(b"")
    files["empty"] = root / "empty.dcm"
    (root / "text.dcm").write_text("this is not a DICOM file\n")
    files["text"] = root / "text.dcm"
    for name, size in (("bomb100mp.png", (10_000, 10_000)), ("bomb200mp.png", (20_000, 10_000))):
        Image.new("1", size).save(root / name)  # ~10-25 KB on disk, 100-200 MP decoded
        files[name] = root / name
    inf = np.ones((40, 30), np.float32)
    inf[5, 5] = np.inf
    Image.fromarray(inf, mode="F").save(root / "inf.tif")
    files["float_inf"] = root / "inf.tif"
    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(root / "colour.png")
    files["colour"] = root / "colour.png"
    frames = write_dicom(root / "frames.dcm", breast_phantom(), NumberOfFrames=1)
    files["bad_frames"] = _patched(frames, b"\x28\x00\x08\x00IS\x02\x001 ", b"\x28\x00\x08\x00IS\x02\x001A")
    import pydicom

    ds = pydicom.dcmread(write_dicom(root / "norows.dcm", breast_phantom()))
    del ds.Rows
    ds.save_as(root / "norows.dcm")
    files["no_rows"] = root / "norows.dcm"
    files["window_zero"] = write_dicom(root / "window0.dcm", breast_phantom(), WindowCenter=2000, WindowWidth=0)
    files["codec"] = write_dicom(root / "lossless.dcm", breast_phantom(), TransferSyntaxUID=JPEGLosslessSV1)
    return files


GOOD = ("good_dicom", "good_png", "hostile_name")


def _records(result) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in json.loads(result.stdout)}


def test_a_folder_of_broken_and_hostile_files_scores_every_good_one(corpus: dict[str, Path], tiny_roi_model: Path) -> None:
    result = run("predict", str(corpus["good_dicom"].parent), "--model", str(tiny_roi_model), "--format", "json", "--workers", "2")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    records = _records(result)
    assert len(records) == len(corpus)
    for key, path in corpus.items():
        record = records[path.name]
        assert (record["error"] is None) == (key in GOOD), (key, record)
        if key in GOOD:
            assert 0 <= record["probability"] <= 1
    assert "80 MP limit" in records["bomb100mp.png"]["error"]
    assert "NumberOfFrames is '1A'" in records["frames.dcm"]["error"]
    assert "no Rows" in records["norows.dcm"]["error"]
    assert "Window Width" in records["window0.dcm"]["error"]
    assert "NaN or infinity" in records["inf.tif"]["error"]
    assert "colour" in records["colour.png"]["error"]


def test_a_file_whose_image_is_not_used_is_still_checked_from_its_header(corpus: dict[str, Path], tmp_path: Path) -> None:
    """The default model looks at lesion crops: with no --roi it scores the findings, yet a file that is
    no mammogram fails (header read, no pixel decoded) instead of getting the findings' score."""
    folder = tmp_path / "files"
    folder.mkdir()
    broken = ("empty", "text", "bomb100mp.png", "bad_frames", "no_rows")
    for key in ("good_dicom", "good_png", *broken):
        shutil.copy(corpus[key], folder / corpus[key].name)
    result = run("predict", str(folder), "--density", "2", "--margin", "spiculated", "--format", "json")
    assert result.exit_code == 1, result.output
    records = _records(result)
    for key in ("good_dicom", "good_png"):
        assert records[corpus[key].name]["error"] is None and 0 <= records[corpus[key].name]["probability"] <= 1
    assert all(records[corpus[key].name]["probability"] is None for key in broken)
    assert "not a DICOM file" in records["text.dcm"]["error"] and "80 MP limit" in records["bomb100mp.png"]["error"]
    assert "no Rows" in records["norows.dcm"]["error"] and "NumberOfFrames is '1A'" in records["frames.dcm"]["error"]
    assert "7 files have no lesion region: their image is not used: each that can be read is scored on its clinical findings alone" in result.stderr
    assert "the clinical findings are scored" not in result.stderr  # not claimed of the files that fail


def test_an_image_over_80_mp_is_refused_from_its_header_before_any_pixel_is_decoded(corpus: dict[str, Path], tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom

    from mammofuse.errors import InputFileError
    from mammofuse.imaging.reader import check_header, read_mammogram

    def decode(*_: object) -> None:
        raise AssertionError("pixels were decoded")

    dicom_bomb = write_dicom(tmp_path / "bomb.dcm", breast_phantom(), TransferSyntaxUID=RLELossless, Rows=10_000, Columns=10_000)
    monkeypatch.setattr(Image.Image, "load", decode)
    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(decode))
    for path in (corpus["bomb100mp.png"], dicom_bomb):
        for read in (read_mammogram, check_header):
            with pytest.raises(InputFileError, match=r"image is 10000x10000 = 100 MP, over the 80 MP limit \(a decompression bomb\?\)"):
                read(path)


@pytest.mark.parametrize("roi", [("--roi", "20,10,5"), ()], ids=["pixels read", "header only"])
def test_an_unreadable_file_is_told_what_is_wrong_with_it(roi: tuple[str, ...], corpus: dict[str, Path], tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.dcm"
    os.mkfifo(fifo)
    expected = {
        corpus["truncated"]: r"DICOM file is truncated: \d+ of the 6144 bytes of its pixel data are there",
        corpus["truncated_encapsulated"]: "DICOM file is truncated: it ends before its data does",
        corpus["empty"]: re.escape("empty file (0 bytes)"),
        corpus["text"]: re.escape("not a DICOM file (no DICM header)"),
        fifo: "not a regular file",
    }
    result = run("predict", *map(str, expected), *roi, "--density", "2", "--format", "json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = {Path(r["path"]): r["error"] for r in json.loads(result.stdout)}
    for path, message in expected.items():
        assert re.match(message, errors[path]), (path, errors[path])
    assert "image suffix" not in result.output and "no such file" not in result.output


def test_a_postscript_file_named_png_is_refused_without_running_ghostscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow opened a file with any plugin it has: an EPS one hands its PostScript to Ghostscript (``gs``)."""
    from PIL import EpsImagePlugin

    from mammofuse.errors import InputFileError
    from mammofuse.imaging.reader import check_header, read_mammogram

    gs = tmp_path / "bin" / "gs"
    gs.parent.mkdir()
    gs.write_text(f"#!/bin/sh\ntouch {tmp_path / 'gs-ran'}\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{gs.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None, raising=False)  # looked for afresh, on this PATH (Pillow 10.1+ caches it)
    scan = tmp_path / "scan.png"
    scan.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 48\nshowpage\n%%EOF\n")
    for read in (read_mammogram, check_header):
        with pytest.raises(InputFileError, match=re.escape(f"{scan}: not a PNG, JPEG, TIFF or PGM/PPM image (the image formats read)")):
            read(scan)
    assert not (tmp_path / "gs-ran").exists()


def test_a_deflated_dicom_scores_and_inspects_as_the_uncompressed_one(corpus: dict[str, Path], tiny_roi_model: Path, tmp_path: Path) -> None:
    """Each was refused as truncated: the pixel data's place in the inflated dataset was set against the file's size."""
    deflated = write_dicom(tmp_path / "deflated.dcm", breast_phantom(), TransferSyntaxUID=DeflatedExplicitVRLittleEndian)
    scores = []
    for path in (corpus["good_dicom"], deflated):
        result = run("predict", str(path), "--model", str(tiny_roi_model), "--roi", "20,10,5", "--format", "json")
        assert result.exit_code == 0, result.output
        scores.append(json.loads(result.stdout)[0]["probability"])
    assert scores[0] == scores[1]
    result = run("inspect", str(deflated), "--format", "json")
    assert result.exit_code == 0 and (json.loads(result.stdout)[0]["rows"], json.loads(result.stdout)[0]["columns"]) == (64, 48)
    data = deflated.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-100])
    (tmp_path / "corrupt.dcm").write_bytes(data[:-300] + b"\xff" * 50 + data[-250:])
    result = run("inspect", str(tmp_path / "cut.dcm"), str(tmp_path / "corrupt.dcm"))
    assert result.exit_code == 1 and "cut.dcm: DICOM file is truncated: its deflated data ends early" in result.stderr
    assert "corrupt.dcm: not a readable DICOM file (its deflated data is corrupt: Error -3" in result.stderr


def test_a_deflated_dicom_bomb_is_refused_before_it_is_inflated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pydicom inflates a deflated dataset whole: a 1.4 MB file with a 1.5 GB private element took 3.5 GB."""
    import zlib

    import pydicom

    from mammofuse.errors import InputFileError
    from mammofuse.imaging import reader

    bomb = write_dicom(tmp_path / "bomb.dcm", breast_phantom(), TransferSyntaxUID=DeflatedExplicitVRLittleEndian)
    ds = pydicom.dcmread(bomb)
    ds.add_new(0x00091010, "OB", bytes(2_000_000))
    ds.save_as(bomb)

    def inflate_all(*_: object) -> None:
        raise AssertionError("inflated without a bound")

    monkeypatch.setattr(reader, "MAX_INFLATED_BYTES", 1_000_000)  # the real bound, about 390 MB, would be slow to reach
    monkeypatch.setattr(zlib, "decompress", inflate_all)
    for read in (reader.read_mammogram, reader.check_header):
        with pytest.raises(InputFileError, match=re.escape("bomb.dcm: deflated DICOM inflates to over 1 MB, more than an 80 MP image needs (a decompression bomb?)")):
            read(bomb)
    assert reader.read_header(bomb) is None and reader.image_shape(bomb) is None


def test_a_folder_given_as_clinical_csv_is_called_a_folder(corpus: dict[str, Path], tmp_path: Path) -> None:
    result = run("predict", str(corpus["good_png"]), "--clinical", str(tmp_path))
    assert result.exit_code == 2 and f"{tmp_path}: is a folder" in result.stderr


def test_a_case_with_nothing_the_model_uses_fails_instead_of_scoring_the_prior(corpus: dict[str, Path], tmp_path: Path) -> None:
    """No region for a lesion-crop model and no finding, or no finding for a clinical-only model: no score."""
    nothing = "nothing to score: the model got neither an image it uses nor a clinical finding it reads"
    result = run("predict", str(corpus["good_dicom"]), "--format", "json")
    assert result.exit_code == 1 and nothing in result.stderr
    assert json.loads(result.stdout)[0]["probability"] is None
    clinical = _clinical_only_model(tmp_path / "clinical")
    result = run("predict", str(corpus["good_dicom"]), "--model", str(clinical), "--format", "json")
    assert result.exit_code == 1 and nothing in result.stderr
    result = run("predict", str(corpus["good_dicom"]), "--model", str(clinical), "--density", "3", "--format", "json")
    assert result.exit_code == 0 and 0 <= json.loads(result.stdout)[0]["probability"] <= 1
    result = run("explain", str(corpus["good_dicom"]), "--model", str(clinical), "--out", str(tmp_path / "explained"))
    assert result.exit_code == 1 and nothing in result.stderr


def test_the_table_shows_untrusted_text_literally_and_without_escape_sequences(corpus: dict[str, Path], tiny_roi_model: Path) -> None:
    result = run("predict", str(corpus["good_dicom"].parent), "--model", str(tiny_roi_model))
    assert result.exit_code == 1
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "[red]x\\x1b]0;pwned\\x07.dcm" in result.stdout  # the name as it is, markup and all
    if "the codecs extra" in result.output:
        assert "pip install -U 'mammofuse[codecs]'" in result.output


def test_a_colon_name_in_a_file_name_is_shown_as_text_not_as_an_emoji(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Rich turned bad:-1:x.dcm into bad\N{THUMBS DOWN SIGN}x.dcm in every message naming it."""
    (tmp_path / "bad:-1:x.dcm").write_text("not a DICOM file")
    shutil.copy(corpus["good_png"], tmp_path / "ok:smile:.png")
    predicted = run("predict", str(tmp_path), "--density", "2")
    inspected = run("inspect", str(tmp_path), "--output", str(tmp_path / "o:-1:.txt"))
    assert f"failed: {tmp_path / 'bad:-1:x.dcm'}: " in predicted.stderr and f"wrote {tmp_path / 'o:-1:.txt'}" in inspected.stderr
    assert not re.search("[\U0001F300-\U0001FAFF]", predicted.output + inspected.output + (tmp_path / "o:-1:.txt").read_text())


def test_inspect_escapes_dicom_attributes_and_reports_each_bad_file(corpus: dict[str, Path]) -> None:
    result = run("inspect", str(corpus["hostile_name"]), str(corpus["bad_frames"]), str(corpus["empty"]))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "\x1b" not in result.output
    assert "\\x1b[2J[link=http://evil.example]click[/link]" in result.stdout
    assert result.stderr.count("failed:") == 2


def test_pretrain_and_train_show_hostile_file_names_without_escape_sequences(tmp_path: Path) -> None:
    """A manifest row whose file name holds an escape sequence, unreadable: pretrain skips it, train warns of it."""
    rng = np.random.default_rng(0)
    rows = ["path,label,patient_id,density"]
    for k in range(10):
        Image.fromarray(np.clip(120 + 40 * rng.standard_normal((300, 300)), 0, 255).astype(np.uint8)).save(tmp_path / f"{k}.png")
        rows.append(f"{k}.png,{k % 2},p{k},{k % 4 + 1}")
    (tmp_path / "bad\x1b[31m.png").write_bytes(b"not a png")
    (tmp_path / "manifest.csv").write_text("\n".join([*rows, "bad\x1b[31m.png,1,p0,2"]) + "\n")
    data = ("--dataset", "manifest", "--data", str(tmp_path / "manifest.csv"), "--image-size", "32", "--epochs", "1")
    pretrained = run("pretrain", *data, "--split", "all", "--patches-per-image", "2", "--out", str(tmp_path / "bb.safetensors"))
    trained = run("train", *data, "--fusion", "concat", "--proj-dim", "16", "--pretrained", "none", "--input", "full",
                  "--out", str(tmp_path / "run\x1b[31m[red]"))
    for result, line in ((pretrained, "skipped: "), (trained, "could not be read")):
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "bad\\x1b[31m.png" in next(x for x in result.stderr.splitlines() if line in x)
    assert "run\\x1b[31m[red]" in trained.stdout


@pytest.mark.parametrize("radius", ["0", "-3", "nan", "inf", "1e6", "1e308"])
def test_a_lesion_radius_that_cannot_be_one_is_refused_with_its_line(corpus: dict[str, Path], tiny_roi_model: Path, tmp_path: Path,
                                                                     radius: str) -> None:
    """Known bad before any image is read (1e6 pixels and more: larger than any image): the table is refused at its line
    (a radius larger than this image fails its file)."""
    table = tmp_path / "findings.csv"
    table.write_text(f"path,roi_row,roi_col,roi_radius\ngood.dcm,30,10,{radius}\n")
    result = run("predict", str(corpus["good_dicom"]), "--clinical", str(table), "--model", str(tiny_roi_model), "--format", "json")
    assert result.exit_code == 2 and f"findings.csv:2: roi_radius '{radius}'" in result.output and result.stdout == ""


def test_lesion_circles_outside_the_image_fail_only_their_file_and_nan_ones_the_table(corpus: dict[str, Path], tiny_roi_model: Path,
                                                                                      tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("far.dcm", "wide.dcm", "fine.dcm"):
        shutil.copy(corpus["good_dicom"], folder / name)
    table = tmp_path / "findings.csv"
    table.write_text("path,roi_row,roi_col,roi_radius\nfar.dcm,1e5,10,5\nwide.dcm,30,48,5\nfine.dcm,30,10,5\n")
    result = run("predict", str(folder), "--clinical", str(table), "--model", str(tiny_roi_model), "--format", "json")
    assert result.exit_code == 1, result.output
    records = _records(result)
    assert records["fine.dcm"]["error"] is None
    assert "not inside the 64x48 image" in records["far.dcm"]["error"] and "not inside" in records["wide.dcm"]["error"]
    for row in ("nan", "-1", "1e7"):  # known bad before any image is read: no image has such a row
        table.write_text(f"path,roi_row,roi_col,roi_radius\nfar.dcm,{row},10,5\nfine.dcm,30,10,5\n")
        result = run("predict", str(folder), "--clinical", str(table), "--model", str(tiny_roi_model), "--format", "json")
        assert result.exit_code == 2 and f"findings.csv:2: roi_row '{row}'" in result.output and result.stdout == "", row


@pytest.mark.parametrize(("radius", "problem"), [
    ("65", "roi_radius=65 is larger than the 64x48 image"),
    ("999999", "roi_radius=999999 is larger than the 64x48 image"),
])
def test_a_bad_lesion_radius_fails_its_file_naming_the_radius(corpus: dict[str, Path], tiny_roi_model: Path, tmp_path: Path,
                                                             radius: str, problem: str) -> None:
    """roi_radius=1e308 gave 'cannot read (OverflowError ...)', 1e6 a MemoryError (both now refused with the table's line),
    and 0 'not inside the image'."""
    table = tmp_path / "findings.csv"
    table.write_text(f"path,roi_row,roi_col,roi_radius\ngood.dcm,30,10,{radius}\n")
    result = run("predict", str(corpus["good_dicom"]), "--clinical", str(table), "--model", str(tiny_roi_model), "--format", "json")
    assert result.exit_code == 1, result.output
    assert _records(result)["good.dcm"]["error"] == f"lesion circle {problem}"


def test_pydicom_warnings_are_one_note_per_file_on_stderr(tmp_path: Path, tiny_roi_model: Path) -> None:
    scan = write_dicom(tmp_path / "uid.dcm", breast_phantom(), SOPInstanceUID="1.2.3.4")
    scan.write_bytes(scan.read_bytes().replace(b"1.2.3.4\x00", b"1.2.3.x\x00"))  # the instance UID and the file meta's copy
    result = run("predict", str(scan), "--model", str(tiny_roi_model), "--format", "json")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith(f"note: {scan}")]  # not the model's own notes
    assert notes == [f"note: {scan}: Invalid value for VR UI: '1.2.3.x'. Please see <https://dicom.nema.org/medical/dicom/current/output/html/part05.html#table_6.2-1> for allowed values for each VR."]
    assert "UserWarning" not in result.stderr
    broken = write_dicom(tmp_path / "uid_codec.dcm", breast_phantom(), SOPInstanceUID="1.2.3.4", TransferSyntaxUID=JPEGLosslessSV1)
    broken.write_bytes(broken.read_bytes().replace(b"1.2.3.4\x00", b"1.2.3.x\x00"))  # a file that fails keeps its notes
    result = run("predict", str(broken), "--model", str(tiny_roi_model), "--format", "json")
    assert result.exit_code == 1 and "cannot decode pixel data" in json.loads(result.stdout)[0]["error"]
    assert f"note: {broken}: Invalid value for VR UI: '1.2.3.x'" in result.stderr


def _pydicom_test_files() -> Path:
    import pydicom

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    if not folder.is_dir():
        pytest.skip("this pydicom ships no test files")
    return folder


def test_predict_over_pydicoms_own_test_files(tiny_roi_model: Path) -> None:
    folder = _pydicom_test_files()
    result = run("predict", str(folder), "--model", str(tiny_roi_model), "--format", "json", "--batch-size", "16")
    assert result.exit_code == 1 and "Traceback" not in result.output
    records = json.loads(result.stdout)
    files = sorted(p for p in folder.iterdir() if p.suffix == ".dcm")
    assert sorted(Path(r["path"]) for r in records) == files
    by_name = {Path(r["path"]).name: r for r in records}
    decoded = {"CT_small.dcm": "CT", "MR_small.dcm": "MR", "MR_small_RLE.dcm": "MR", "MR_small_bigendian.dcm": "MR", "JPEG2000.dcm": "NM"}
    for name, modality in decoded.items():  # no mammograms: refused, where inspect reads them (below)
        assert by_name[name]["error"] == f"modality is {modality}, not MG (mammography)", by_name[name]
    inspected = {Path(r["path"]).name: r for r in json.loads(run("inspect", str(folder), "--format", "json").stdout)}
    for name, modality in decoded.items():
        assert inspected[name]["error"] is None and inspected[name]["modality"] == modality, inspected[name]
    assert "colour" in by_name["SC_rgb_rle.dcm"]["error"]
    assert "NumberOfFrames is '1A'" in by_name["badVR.dcm"]["error"]
    assert "multi-frame" in by_name["rtdose.dcm"]["error"]
    assert "no pixel data" in by_name["rtplan.dcm"]["error"]
    assert by_name["MR_small_jpeg_ls_lossless.dcm"]["error"] == "modality is MR, not MG (mammography)"
    for error in (by_name["JPEGLSNearLossless_16.dcm"]["error"], inspected["MR_small_jpeg_ls_lossless.dcm"]["error"]):
        assert error is None or "mammofuse[codecs]" in error  # read with the codecs extra, else named
    assert all(r["error"] for r in records if r["probability"] is None)


# --- CSV output, formats, help ---------------------------------------------------------------


def test_csv_output_has_a_column_per_clinical_field_an_error_column_and_no_formulas() -> None:
    from mammofuse.cli.common import render_records

    records = [
        {"path": "=HYPERLINK(\"http://x\")", "probability": 0.5, "clinical": {"density": "2", "shape": None}, "error": None},
        {"path": "@SUM(A1)", "probability": None, "clinical": {"density": None, "shape": "-oval"}, "error": "+cmd"},
    ]
    rows = list(csv.DictReader(render_records(records, "csv").splitlines()))
    assert list(rows[0]) == ["path", "probability", "density", "shape", "error"]
    assert rows[0]["path"].startswith("'=") and rows[1]["path"] == "'@SUM(A1)"
    assert rows[1]["shape"] == "'-oval" and rows[1]["error"] == "'+cmd" and rows[0]["density"] == "2"


def test_help_shows_no_bool_and_every_format_its_choices() -> None:
    for command in ("predict", "inspect", "evaluate", "ablate", "train", "explain", "models", "schema"):
        text = run(command, "--help").output
        assert "<bool>" not in text, command
        if "--format" in text:
            assert "table|json" in text, command
    assert "table|json|jsonl|csv" in run("predict", "--help").output
    assert "table|json|jsonl|csv" in run("inspect", "--help").output


def test_an_output_suffix_that_contradicts_the_format_is_a_usage_error(corpus: dict[str, Path], tmp_path: Path) -> None:
    result = run("inspect", str(corpus["good_png"]), "--format", "json", "--output", str(tmp_path / "x.csv"))
    assert result.exit_code == 2 and "looks like csv" in result.stderr


def test_tables_show_paths_as_given(tmp_path: Path, tiny_roi_model: Path) -> None:
    for side in ("left", "right"):
        (tmp_path / side).mkdir()
        write_dicom(tmp_path / side / "scan.dcm", breast_phantom())
    result = run("predict", str(tmp_path / "left" / "scan.dcm"), str(tmp_path / "right" / "scan.dcm"), "--model", str(tiny_roi_model))
    assert result.exit_code == 0
    assert str(tmp_path / "left" / "scan.dcm") in result.stdout and str(tmp_path / "right" / "scan.dcm") in result.stdout


# --- environment errors ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_unwritable_output_is_exit_3_before_any_work(where: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    target = tmp_path if where == "folder" else blocker / "scores.json"
    # a model that does not exist: the output is checked first, so this never gets that far
    result = run("predict", str(corpus["good_png"]), "--model", str(tmp_path / "nope"), "--output", str(target), "--format", "json")
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1 and "cannot write" in result.stderr
    for command in (["inspect", str(corpus["good_png"]), "--output", str(target)],
                    ["explain", str(corpus["good_png"]), "--out", str(blocker)]):
        assert run(*command).exit_code == 3, command


def test_a_read_only_output_folder_is_named_not_its_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It said `ro/.mammofuse-write-test: cannot write (Read-only file system)`, naming a file the user never gave."""
    import errno
    import tempfile

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # as on a read-only mount, which root's permissions do not make
    folder = tmp_path / "ro"
    for command in (["train", "--dataset", "manifest", "--data", str(tmp_path / "m.csv"), "--out", str(folder)],
                    ["ablate", "--dataset", "manifest", "--data", str(tmp_path / "m.csv"), "--out", str(folder)]):
        result = run(*command)
        assert result.exit_code == 3 and result.stderr == f"error: {folder}: cannot write (Read-only file system)\n", result.output


@pytest.mark.parametrize("command", [
    ["predict", "scan.dcm", "--density", "2", "-f", "json", "-o", "scan.dcm"],
    ["predict", ".", "--density", "2", "-f", "jsonl", "-o", "scan.dcm"],  # a stream: it truncated the file before scoring
    ["predict", ".", "--density", "2", "-f", "csv", "-o", "./scan.dcm", "--resume"],
    ["predict", "link.png", "--density", "2", "-f", "json", "-o", "scan.dcm"],  # the same file by another path
    ["predict", "scan.dcm", "--clinical", "findings.csv", "-f", "csv", "-o", "findings.csv"],
    ["inspect", ".", "-r", "-o", "scan/gradcam.png"],
    ["explain", ".", "-r", "--density", "2", "--out", "."],  # explaining scan.dcm writes scan/gradcam.png
    ["data", "summary", "--dataset", "manifest", "--data", "manifest.csv", "-o", "scan/gradcam.png"],
    ["evaluate", "--dataset", "manifest", "--data", "manifest.csv", "--split", "all", "-o", "scan/gradcam.png"],
])
def test_an_output_that_is_an_input_is_a_usage_error_before_it_is_written(command: list[str], corpus: dict[str, Path], tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """predict scan.dcm -o scan.dcm replaced the mammogram by its scores; with jsonl or csv, before scoring it."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(corpus["good_dicom"], "scan.dcm")
    (tmp_path / "scan").mkdir()
    shutil.copy(corpus["good_png"], tmp_path / "scan" / "gradcam.png")
    os.symlink("scan.dcm", "link.png")
    Path("findings.csv").write_text("path,density\nscan.dcm,2\n")
    Path("manifest.csv").write_text("path,label,patient_id\nscan/gradcam.png,0,P1\nscan.dcm,1,P1\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = run(*command)
    error = [line for line in result.stderr.splitlines() if not line.startswith("note:")]  # explain notes the model's needs first
    assert result.exit_code == 2 and len(error) == 1 and "is also an input" in error[0], result.output
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before



def test_evaluate_again_over_its_output_with_a_manifest_path_holding_a_nul_fails_only_that_case(corpus: dict[str, Path],
                                                                                                tiny_roi_model: Path, tmp_path: Path) -> None:
    """The second run, with the output there, was "internal error (ValueError: embedded null byte)", exit 4."""
    shutil.copy(corpus["good_png"], tmp_path / "a.png")
    shutil.copy(corpus["good_png"], tmp_path / "b.png")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,patient_id,density\nscan\x001.dcm,1,P1,3\na.png,0,P2,2\nb.png,1,P3,3\n")
    output = tmp_path / "metrics.json"
    for _ in range(2):
        result = run("evaluate", "--model", str(tiny_roi_model), "--dataset", "manifest", "--data", str(manifest), "--split", "all",
                     "--bootstrap", "0", "-o", str(output))
        assert result.exit_code == 1 and f"failed: row2 ({tmp_path}/scan\\x001.dcm): cannot read" in result.stderr, result.output  # names the file
        assert output.is_file()


@pytest.mark.parametrize("name", ["scan\x00.dcm", "scan\ud800.dcm"])  # a NUL; a character the file-system encoding cannot represent
def test_a_path_no_file_can_have_is_neither_an_output_nor_an_input_of_another(name: str, tmp_path: Path) -> None:
    """os.stat raised ValueError (UnicodeEncodeError for '\u2013' under a Latin-1 locale): an internal error."""
    from mammofuse.atomic import check_not_input

    output = tmp_path / "metrics.json"
    output.write_text("{}")
    check_not_input([output, tmp_path / name], [tmp_path / name, tmp_path / "a.dcm"])
    with pytest.raises(MammofuseError, match="is also an input"):
        check_not_input([tmp_path / name, output], [tmp_path / name, output])

LONG_NAME = "a" * 300  # longer than the 255 bytes a file name may have: the OS answers "File name too long"


@pytest.mark.parametrize("where", ["input", "clinical", "model"])
def test_an_input_path_the_os_refuses_is_a_usage_error_naming_it(where: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    """It was exit 3 (an output that cannot be written), from an OSError met while finding the input."""
    long = tmp_path / LONG_NAME
    image = f"{long}.png" if where == "input" else str(corpus["good_png"])
    extra = {"input": [], "clinical": ["--clinical", f"{long}.csv"], "model": ["--model", str(long)]}[where]
    for command in (["predict", image, "--density", "2", *extra], ["explain", image, "--density", "2", "--out", str(tmp_path / "out"), *extra]):
        result = run(*command)
        assert result.exit_code == 2, (command[0], result.output)
        assert result.stderr.count("\n") == 1 and LONG_NAME in result.stderr and "File name too long" in result.stderr


def test_evaluate_with_a_model_or_data_path_the_os_refuses_is_a_usage_error(corpus: dict[str, Path], tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,label,patient_id,density\n{corpus['good_png']},0,P1,2\n{corpus['good_png']},1,P1,3\n")
    long = tmp_path / LONG_NAME
    for args in (["--model", str(long), "--data", str(manifest)], ["--data", f"{long}.csv"]):
        result = run("evaluate", "--dataset", "manifest", "--split", "all", *args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.count("\n") == 1 and "File name too long" in result.stderr


def test_a_config_threshold_run_or_images_folder_the_os_refuses_is_a_usage_error(tmp_path: Path) -> None:
    """They were exit 3 (an output that cannot be written), from an OSError met while reading the input."""
    (tmp_path / "afile").write_text("a file, not a folder")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,patient_id,density\n" + "".join(f",{i % 2},P{i},{1 + i % 4}\n" for i in range(10)))
    _cbis_rows(tmp_path / "mass_case_description_train_set.csv")
    long = str(tmp_path / LONG_NAME)
    train = ["train", "--dataset", "manifest", "--data", str(manifest), "--fusion", "clinical", "--val-fraction", "0", "--epochs", "1", "--out", str(tmp_path / "out")]
    for command, named, problem in (
        (["train", "--config", str(tmp_path / "afile" / "x.yaml"), "--out", str(tmp_path / "out")], tmp_path / "afile" / "x.yaml", "Not a directory"),
        ([*train, "--threshold-from", long], long, "File name too long"),
        (["data", "summary", "--dataset", "cbis-ddsm", "--data", str(tmp_path), "--images", long], long, "File name too long"),
    ):
        result = run(*command)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.splitlines()[-1] == f"error: {named}: cannot read ({problem})", result.stderr  # train says what it trains first


def test_a_config_that_is_a_folder_says_so(tmp_path: Path) -> None:
    """Was "not a UTF-8 text file (IsADirectoryError)"."""
    result = run("train", "--config", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.stderr == f"error: {tmp_path}: is a folder, not a YAML file\n", result.stderr


@pytest.mark.parametrize("dataset", ["mini-mias", "cbis-ddsm"])
def test_a_dataset_file_that_cannot_be_opened_is_a_usage_error_naming_it(dataset: str, corpus: dict[str, Path], tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Info.txt or the COCO boxes with no permission to read them (staged: the tests may run as root)."""
    from mammofuse.data import load_dataset
    from mammofuse.data.cbis_images import COCO_NAME

    (tmp_path / "Info.txt").write_text("mdb001 G CIRC B 535 425 197\n")
    _cbis_rows(tmp_path / "mass_case_description_train_set.csv")
    shutil.copy(corpus["good_png"], tmp_path / "00001_LEFT_CC.png")
    refused = tmp_path / ("Info.txt" if dataset == "mini-mias" else COCO_NAME)
    refused.write_text("{}")
    original = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self == refused:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(MammofuseError, match=f"^{re.escape(str(refused))}: cannot read .Permission denied.$"):
        load_dataset(dataset, tmp_path, tmp_path if dataset == "cbis-ddsm" else None)


def test_an_output_path_the_os_refuses_is_still_exit_3(corpus: dict[str, Path], tmp_path: Path) -> None:
    result = run("predict", str(corpus["good_png"]), "--density", "2", "--output", str(tmp_path / f"{LONG_NAME}.json"))
    assert result.exit_code == 3 and "cannot write" in result.stderr and "File name too long" in result.stderr


def test_a_csv_that_cannot_be_opened_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No permission to read it (the tests may run as root, where no file mode denies it: the refusal is staged)."""
    from mammofuse.tabular import csv_columns

    table = tmp_path / "findings.csv"
    table.write_text("path,density\n")

    def refused(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refused)
    with pytest.raises(MammofuseError, match=f"{table}: cannot read .Permission denied."):
        csv_columns(table)


def test_file_size_limit_is_exit_3_and_debug_shows_the_traceback(corpus: dict[str, Path], tmp_path: Path) -> None:
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    command = [sys.executable, "-m", "mammofuse", "inspect", str(corpus["good_dicom"].parent), "--format", "json", "--output", str(tmp_path / "big.json")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plain = subprocess.run(command, capture_output=True, text=True, preexec_fn=limit, env=env, timeout=120)
    assert plain.returncode == 3 and "Traceback" not in plain.stderr and "File too large" in plain.stderr
    assert not list(tmp_path.glob(".big.json*"))  # no temporary left behind
    debug = subprocess.run(command, capture_output=True, text=True, preexec_fn=limit, env={**env, "MAMMOFUSE_DEBUG": "1"}, timeout=120)
    assert debug.returncode == 3 and "Traceback" in debug.stderr


def _read_in_background(fifo: Path) -> tuple[threading.Thread, list[bytes]]:
    """A reader of ``fifo`` (a writer's open blocks until one comes): the thread and what it read."""
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, got


def test_an_output_symlink_is_kept_and_its_target_written_with_its_permissions(tmp_path: Path) -> None:
    from mammofuse.atomic import write_text

    target = tmp_path / "kept" / "scores.json"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o600)
    link = tmp_path / "scores.json"
    link.symlink_to(Path("kept") / "scores.json")
    old = os.umask(0o027)
    try:
        write_text(link, "new", follow_symlink=True)  # as --output FILE writes
        write_text(tmp_path / "new.json", "new")
    finally:
        os.umask(old)
    assert link.is_symlink() and target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o600  # kept: a private file stays so
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o640  # a new file follows the umask
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_symlink_planted_in_an_output_folder_is_replaced_and_its_target_left_untouched(corpus: dict[str, Path], tiny_roi_model: Path,
                                                                                        tmp_path: Path) -> None:
    from mammofuse.model import MammoFuse, save_model

    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    planted = [tmp_path / "out" / "good" / "explanation.json", tmp_path / "model" / "config.json"]  # explain --out, train --out
    for link in planted:
        link.parent.mkdir(parents=True)
        link.symlink_to(victim)
    result = run("explain", str(corpus["good_png"]), "--model", str(tiny_roi_model), "--methods", "shap", "--density", "2", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    save_model(MammoFuse.from_pretrained(tiny_roi_model), tmp_path / "model")
    assert victim.read_text() == "untouched"
    assert not any(link.is_symlink() for link in planted) and json.loads(planted[0].read_text())["source"] == str(corpus["good_png"])
    assert json.loads(planted[1].read_text())["fusion"] == "concat"


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_a_fifo_output_is_written_as_a_stream_never_replaced(fmt: str, corpus: dict[str, Path], tiny_roi_model: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "scores"
    os.mkfifo(fifo)
    thread, got = _read_in_background(fifo)
    result = run("predict", str(corpus["good_png"]), "--model", str(tiny_roi_model), "--format", fmt, "--output", str(fifo))
    thread.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.stat().st_mode) and got and str(corpus["good_png"]) in got[0].decode()
    if fmt == "csv":
        assert got[0].decode().startswith("path,probability,")


@pytest.fixture
def null_device(tmp_path: Path) -> Path:
    """A null character device: made in tmp_path where mknod is allowed (root), so that a regression
    replaces that one, never /dev/null; else /dev/null itself, which only root could replace."""
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except OSError:
        if os.geteuid() == 0:
            pytest.skip("root without mknod: /dev/null is not put at risk")
        return Path("/dev/null")
    return tmp_path / "null"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_full_disk_under_a_streamed_output_names_the_output(fmt: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    """It said only "error: No space left on device": closing the file flushed again, and that error replaced the named one."""
    full = tmp_path / "full"
    try:
        os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # a node of its own, never /dev/full
    except OSError:
        pytest.skip("no mknod here")
    result = run("predict", str(corpus["good_png"]), "--density", "2", "--format", fmt, "--output", str(full))
    assert result.exit_code == 3 and result.stderr.splitlines()[-1] == f"error: {full}: cannot write (No space left on device)", result.output


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_run_whose_engine_cannot_start_leaves_an_earlier_output_as_it_was(fmt: str, corpus: dict[str, Path], tiny_roi_model: Path,
                                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The output was opened (emptied) before the readers started: a full /dev/shm destroyed the last run's scores."""
    from mammofuse.scoring import run as scoring_run

    output = tmp_path / f"scores.{fmt}"
    assert run("predict", str(corpus["good_png"]), "--model", str(tiny_roi_model), "-f", fmt, "-o", str(output)).exit_code == 0
    earlier = output.read_bytes()

    def readers_cannot_start(*args: object, **kwargs: object) -> Iterator[object]:
        raise OSError(errno.ENOSPC, "No space left on device")
        yield  # a generator, as scored_batches is

    monkeypatch.setattr(scoring_run, "scored_batches", readers_cannot_start)
    result = run("predict", str(corpus["good_png"]), "--model", str(tiny_roi_model), "-f", fmt, "-o", str(output))
    assert result.exit_code == 3 and output.read_bytes() == earlier, result.output


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json"])
def test_records_to_stdout_on_a_full_disk_name_stdout(fmt: str, corpus: dict[str, Path], tiny_roi_model: Path) -> None:
    """``> full-disk/scores.csv`` said only "error: No space left on device"."""
    command = [sys.executable, "-m", "mammofuse", "predict", str(corpus["good_png"]), "--model", str(tiny_roi_model), "-f", fmt]
    with open("/dev/full", "w") as full:
        result = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 3 and result.stderr.splitlines()[-1] == "error: stdout: cannot write (No space left on device)", result.stderr


def test_a_device_and_a_piped_dev_stdout_are_written_in_place(null_device: Path, corpus: dict[str, Path], tiny_roi_model: Path) -> None:
    for fmt in ("json", "csv"):
        result = run("inspect", str(corpus["good_png"]), "--format", fmt, "--output", str(null_device))
        assert result.exit_code == 0 and stat.S_ISCHR(null_device.stat().st_mode), result.output
    command = [sys.executable, "-m", "mammofuse", "predict", str(corpus["good_png"]), "--model", str(tiny_roi_model), "-f", "csv", "-o", "/dev/stdout"]
    piped = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert list(csv.DictReader(piped.stdout.splitlines()))[0]["path"] == str(corpus["good_png"])


# --- tabular input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"path;density\nscan.dcm;2\n", "seems to use semicolons"),
        (b"path\tdensity\nscan.dcm\t2\n", "seems to use tabs"),  # was no hint: the column key made the tab a _
        (b"sep=;\r\npath;density\r\nscan.dcm;2\r\n", "seems to use semicolons"),  # Excel's line naming the delimiter
        (b"sep=\t\npath\tdensity\nscan.dcm\t2\n", "seems to use tabs"),
        (b"density,shape\n2,oval\n", "needs a 'path'"),
        ("path,density\nsc\u00e4n.dcm,2\n".encode("latin-1"), "not UTF-8"),
        (b"path,density,Density\ngood.png,2,4\n", "column(s) 'density' appear more than once"),  # was: the last one silently won
        (b"path,density,path\ngood.png,2,other.png\n", "column(s) 'path' appear more than once"),
        (b"path,density,breast density\ngood.png,2,4\n", "columns 'density' and 'breast_density' both give density"),  # was: density 4
    ],
)
def test_bad_clinical_csv_is_one_line_naming_the_file(content: bytes, message: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    table = tmp_path / "findings.csv"
    table.write_bytes(content)
    result = run("predict", str(corpus["good_png"]), "--clinical", str(table))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{table}: " in result.stderr and message in result.stderr


@pytest.mark.parametrize("start", ["sep=,\r\n", "sep=,\n", "\ufeffsep=,\r\n"])
def test_a_first_line_naming_the_comma_as_delimiter_is_skipped(start: str, tmp_path: Path) -> None:
    """Was: ``error: sep.csv: needs a 'path' ... column`` for a CSV that has one, after the ``sep=,`` line Excel writes when
    asked to name the delimiter (and a manifest or CBIS-DDSM CSV was refused likewise)."""
    from mammofuse.cases import read_clinical_csv
    from mammofuse.data import load_dataset
    from mammofuse.tabular import csv_records

    table = tmp_path / "sep.csv"
    table.write_bytes(f"{start}path,label,patient_id,density\r\na.png,1,p1,2\r\n".encode())
    assert list(csv_records(table, ("path",))) == [(3, {"path": "a.png", "label": "1", "patient_id": "p1", "density": "2"})]
    assert [row.clinical for row in read_clinical_csv(table).rows] == [{"density": "2"}]
    assert [sample.clinical for sample in load_dataset("manifest", table)] == [{"density": "2"}]
    cbis = tmp_path / "cbis" / "mass_case_description_test_set.csv"
    cbis.parent.mkdir()
    _cbis_rows(cbis)
    cbis.write_bytes(start.encode() + cbis.read_bytes())
    assert [sample.clinical["density"] for sample in load_dataset("cbis-ddsm", cbis.parent)] == ["2"]


@pytest.mark.parametrize(("start", "delimiter", "name"), [("sep=;\r\n", ";", "semicolons"), ("sep=\t\n", "\t", "tabs")])
def test_a_dataset_csv_naming_another_delimiter_is_refused_with_the_hint(start: str, delimiter: str, name: str, tmp_path: Path) -> None:
    """Was, for ``sep=\\t``: no hint, as the column key stripped the tab, and a manifest warned of a column ``sep=`` first."""
    from mammofuse.data import load_dataset

    manifest = tmp_path / "manifest.csv"
    manifest.write_text(start + delimiter.join(["path", "label", "patient_id"]) + "\n")
    cbis = tmp_path / "cbis" / "mass_case_description_test_set.csv"
    cbis.parent.mkdir()
    cbis.write_text(start + delimiter.join(["patient_id", "left or right breast", "image view", "pathology"]) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dataset, data, table in (("manifest", manifest, manifest), ("cbis-ddsm", cbis.parent, cbis)):
            with pytest.raises(MammofuseError, match=f"^{re.escape(str(table))}: missing column.*seems to use {name}"):
                load_dataset(dataset, data)


class _CountedName(str):
    """A column name that counts the comparisons made with it."""

    compared = 0
    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        _CountedName.compared += 1
        return str.__eq__(self, other)


def test_a_wide_header_is_checked_for_duplicates_in_one_pass(tmp_path: Path) -> None:
    """Each column was counted over the whole header (list.count): 40,000 columns took 14 s before the first row was
    read. The duplicates are now counted in one pass; the error is the same."""
    from mammofuse.tabular import _check_unique, csv_records

    names = [f"col{i}" for i in range(40_000)]
    table = tmp_path / "wide.csv"
    table.write_text(",".join(["path", *names, "col7"]) + "\n" + ",".join(["a.png", *("1" * len(names)), "2"]) + "\n")
    with pytest.raises(MammofuseError) as info:
        next(csv_records(table, ("path",)))
    assert str(info.value) == f"{table}: column(s) 'col7' appear more than once; keep one of each"
    columns = [_CountedName(c) for c in ["path", *names[:2000], "col7"]]
    _CountedName.compared = 0
    with pytest.raises(MammofuseError, match="'col7' appear more than once"):
        _check_unique(table, columns, {})
    assert _CountedName.compared < 10 * len(columns)  # was one comparison per pair of columns: 4 million


def test_a_clinical_row_with_more_cells_than_the_header_is_one_line(corpus: dict[str, Path], tmp_path: Path) -> None:
    """An unquoted comma in a compound finding dropped its last term (spiculated) and changed the probability."""
    table = tmp_path / "findings.csv"
    table.write_text("path,density,shape,margin\ngood.png,3,irregular,ill_defined,spiculated\n")
    result = run("predict", str(corpus["good_png"]), "--clinical", str(table))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == (
        f"error: {table}: line 2 has 5 cells, the header has 4; quote a value that holds a comma"
    ), result.stderr


def test_a_clinical_row_with_a_trailing_comma_is_read(tmp_path: Path) -> None:
    from mammofuse.cases import read_clinical_csv

    table = tmp_path / "findings.csv"
    table.write_text('path,density,shape,margin\ngood.png,3,irregular,"ill_defined,spiculated",,\n')
    [row] = read_clinical_csv(table).rows
    assert row.clinical == {"density": "3", "shape": "irregular", "margin": "ill_defined,spiculated"}


def test_clinical_matching_is_a_lookup_not_a_scan(tmp_path: Path) -> None:
    from mammofuse.cases import read_clinical_csv

    table = tmp_path / "findings.csv"
    table.write_text("path,density\n" + "".join(f"scans/f{i}.dcm,2\n" for i in range(5000)))
    start = time.perf_counter()
    clinical = read_clinical_csv(table)
    matched = [clinical.match(tmp_path / "scans" / f"f{i}.dcm") for i in range(0, 5000, 5)]
    assert all(len(m) == 1 for m in matched) and matched[1][0].line == 7
    assert time.perf_counter() - start < 5  # a scan of every row per file takes minutes here


def _cbis_rows(path: Path, **changes: str) -> None:
    header = "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path\n"
    row = {"patient_id": "P_1", "density": "2", "pathology": "BENIGN"} | changes
    path.write_text(header + f"{row['patient_id']},{row['density']},LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,3,{row['pathology']},4,a/b/c.dcm,\"a/b/d.dcm\n\",a/b/e.dcm\n")


def test_unknown_cbis_pathology_is_an_error_naming_file_line_and_value(tmp_path: Path) -> None:
    from mammofuse.data import load_dataset

    csv_path = tmp_path / "mass_case_description_test_set.csv"
    _cbis_rows(csv_path, pathology="MALIGANT")
    with pytest.raises(MammofuseError, match=r"mass_case_description_test_set.csv:2: unknown pathology 'MALIGANT'"):
        load_dataset("cbis-ddsm", tmp_path)


def test_cbis_csv_without_required_columns_names_them(tmp_path: Path) -> None:
    from mammofuse.data import load_dataset

    (tmp_path / "mass_case_description_test_set.csv").write_text("patient_id;pathology\nP_1;BENIGN\n")
    with pytest.raises(MammofuseError, match="missing column.*patient_id.*semicolons"):
        load_dataset("cbis-ddsm", tmp_path)


def _clinical_only_model(folder: Path) -> Path:
    import torch

    from mammofuse.model import MammoFuse, ModelConfig, save_model

    torch.manual_seed(0)
    return save_model(MammoFuse(ModelConfig(fusion="clinical", proj_dim=16, num_heads=2)), folder)


def test_evaluate_runs_on_official_csvs_with_density_0_rows(cbis_csv: Path, tmp_path: Path) -> None:
    data = tmp_path / "cbis"
    data.mkdir()
    lines = (cbis_csv / "mass_case_description_test_set.csv").read_text().splitlines(keepends=True)
    first = lines[1].split(",")
    first[1] = "0"  # as on two rows of the official Calc-Test CSV
    (data / "mass_case_description_test_set.csv").write_text(lines[0] + ",".join(first) + "".join(lines[2:]))
    model = _clinical_only_model(tmp_path / "model")
    result = run("evaluate", "--model", str(model), "--dataset", "cbis-ddsm", "--data", str(data), "--bootstrap", "20", "--format", "json")
    assert result.exit_code == 0, result.output
    with (data / "mass_case_description_test_set.csv").open(newline="") as fh:
        assert json.loads(result.stdout)["n"] == len(list(csv.DictReader(fh)))
    assert "breast density 0" in result.stderr and "line(s) 2" in result.stderr


# --- untrusted configs ---------------------------------------------------------------------------


BAD_CONFIGS = [
    {"threshold": float("nan")}, {"threshold": -0.2}, {"threshold": 1.5}, {"threshold": "0.5"}, {"num_heads": True},
    {"proj_dim": 0}, {"proj_dim": -16}, {"proj_dim": 10**9}, {"proj_dim": 16.5}, {"num_heads": 0},
    {"dropout": 1.0}, {"dropout": -0.1}, {"modality_dropout": float("inf")}, {"vocabulary": "../../x"},
    {"vocabulary": ["cbis-ddsm-v1"]}, {"field_sizes": "4,8"}, {"preprocessing": {"image_size": 0}},
    {"preprocessing": {"image_size": 12}},  # below training's 32: cnn4 crashed with "Output size is too small" (exit 4)
    {"preprocessing": {"std": 0}}, {"preprocessing": {"std": "0.25"}}, {"preprocessing": {"input": "whole"}}, {"provenance": []},
    {"fusion": None}, {"preprocessing": {"canvas": [16384, 16384]}},  # 268 MP: over the reader's 80 MP limit
    # provenance fields that mammofuse reads back (remarks, evaluate's report, the leakage check)
    {"provenance": {"abnormality": 5}}, {"provenance": {"abnormality": "mass"}}, {"provenance": {"abnormality": [1]}},
    {"provenance": {"train_patients": 5}}, {"provenance": {"val_patients": [["a"]]}}, {"provenance": {"init_patients": {}}},
    {"provenance": {"dataset": {"name": "x"}}}, {"provenance": {"n_val": "3"}}, {"provenance": {"threshold_from": []}},
    {"provenance": {"threshold_from": {"folds": 5}}}, {"provenance": {"threshold_from": {"arm_folder": 1, "folds": 5, "cases": 9}}},
]


@pytest.mark.parametrize("change", BAD_CONFIGS, ids=lambda c: json.dumps(c)[:40])
def test_malformed_model_configs_are_one_line_errors(change: dict, tmp_path: Path) -> None:
    from mammofuse.model import load_model

    folder = _clinical_only_model(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    for key, value in change.items():
        config[key] = {**config[key], **value} if key == "preprocessing" else value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MammofuseError, match=r"config.json: .*must be|config.json: unknown clinical vocabulary"):
        load_model(folder)


@pytest.mark.parametrize(("dtype", "message"), [("int64", "is int64, the model's is float32"), ("bool", "is bool, the model's is float32"),
                                                ("complex64", "is complex64, the model's is float32")])
def test_model_weights_of_another_kind_of_type_are_refused(dtype: str, message: str, tmp_path: Path) -> None:
    """Integer or bool weights were cast by load_state_dict and the model gave the same score to every case."""
    import torch
    from safetensors.torch import load_file, save_file

    from mammofuse.model import load_model

    folder = _clinical_only_model(tmp_path / "model")
    state = {k: v.clone() for k, v in load_file(str(folder / "model.safetensors")).items()}  # not mapped from the file it rewrites
    save_file({k: v.half() for k, v in state.items()}, str(folder / "model.safetensors"))
    load_model(folder)  # another floating type loads as before
    save_file({k: v.to(getattr(torch, dtype)) for k, v in state.items()}, str(folder / "model.safetensors"))
    with pytest.raises(MammofuseError, match=f"model.safetensors: {len(state)} weight tensor.s. of the wrong type .e.g. .* {message}"):
        load_model(folder)


def test_a_hostile_provenance_is_a_usage_error_not_an_internal_one(corpus: dict[str, Path], tmp_path: Path) -> None:
    """``abnormality: 5`` crashed the remark on calcification findings with exit 4 (TypeError)."""
    folder = _clinical_only_model(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"provenance": {"abnormality": 5}}))
    result = run("predict", str(corpus["good_png"]), "--model", str(folder), "--calc-type", "pleomorphic")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "provenance.abnormality must be a list of strings, not 5" in result.stderr


def test_staged_training_refuses_a_hostile_provenance_of_its_starting_model(tmp_path: Path) -> None:
    from mammofuse.evaluation.leakage import pretrained_patients

    folder = _clinical_only_model(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"provenance": {"train_patients": 5}}))
    with pytest.raises(MammofuseError, match="config.json: cannot read the model's provenance .provenance.train_patients must be"):
        pretrained_patients(str(folder))
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)  # RecursionError (exit 4) from `ablate --pretrained`
    with pytest.raises(MammofuseError, match="config.json: cannot read the model's provenance .maximum recursion depth"):
        pretrained_patients(str(folder))


def test_a_config_json_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    from mammofuse.model import load_model

    folder = _clinical_only_model(tmp_path / "model")
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(MammofuseError, match="config.json: expected a JSON object"):
        load_model(folder)


def test_a_vocabulary_is_a_registered_name_never_a_path(tmp_path: Path) -> None:
    from mammofuse.clinical import load_schema

    with pytest.raises(MammofuseError, match="unknown clinical vocabulary.*registered: cbis-ddsm-v1"):
        load_schema("../../../" + str(tmp_path / "x"))


@pytest.mark.parametrize("threshold", [float("nan"), -0.1])
def test_scoring_refuses_a_threshold_outside_0_1(threshold: float, corpus: dict[str, Path], tiny_roi_model: Path) -> None:
    from mammofuse.cases import cases_from_inputs, score_cases
    from mammofuse.model import load_model

    cases = cases_from_inputs([corpus["good_png"]], False, {}, None)
    with pytest.raises(MammofuseError, match="threshold must be a number in \\[0, 1\\]"):
        score_cases(load_model(tiny_roi_model), cases, "tiny", threshold=threshold)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--threshold", "nan", "--threshold must be a number in [0, 1], not nan"),
    ("--threshold", "1.5", "--threshold must be a number in [0, 1], not 1.5"),
    ("--roi", "-10,100,20", "--roi: ROW '-10': ROW, COL and RADIUS must be finite numbers of pixels, ROW and COL in [0, 1e6)"),
    ("--roi", "10,x,20", "--roi: COL 'x': ROW, COL and RADIUS must be finite numbers of pixels"),
    ("--roi", "10,10,0", "--roi: RADIUS '0': "),
    ("--roi", "10,10", "--roi: expected ROW,COL,RADIUS in pixels, got '10,10'"),
])
def test_bad_threshold_or_roi_says_which_part_is_wrong(flag: str, value: str, message: str, corpus: dict[str, Path]) -> None:
    result = run("predict", str(corpus["good_png"]), flag, value)
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.output


@pytest.mark.parametrize("circle", [(-10, 100, 20), (10, -0.5, 20), (10, 10, 0), (10, 10, -3), (1e6, 10, 20), (10, 10, 2e6),
                                    (float("nan"), 10, 20), (10, float("inf"), 20)])
def test_the_flag_the_api_and_a_csv_refuse_the_same_lesion_circles_in_the_same_words(circle: tuple[float, float, float]) -> None:
    """roi= and --roi refused a negative row that a CSV's roi_row took; only --roi refused 1e6 and more."""
    from mammofuse.api import as_region
    from mammofuse.cli.common import parse_roi
    from mammofuse.validation import REGION_COLUMNS, region_cells

    text = ",".join(map(str, circle))
    refusals = []
    for refuse in (lambda: as_region(circle), lambda: parse_roi(text), lambda: region_cells(dict(zip(REGION_COLUMNS, text.split(","))), "m.csv:2")):
        with pytest.raises(MammofuseError) as caught:
            refuse()
        refusals.append(str(caught.value))
    api, flag, row = refusals
    assert api.startswith("roi: ") and flag.startswith("--roi: ") and row.startswith("m.csv:2: ")
    flag_words = {"ROW": "row", "COL": "column", "RADIUS": "radius", "'": ""}
    row_words = {"roi_row": "row", "roi_col": "column", "roi_radius": "radius", "'": ""}
    as_api = [api.removeprefix("roi: "), _renamed(flag.removeprefix("--roi: "), flag_words), _renamed(row.removeprefix("m.csv:2: "), row_words)]
    assert as_api[0] == as_api[1] == as_api[2], refusals


def _renamed(text: str, words: dict[str, str]) -> str:
    for old, new in words.items():
        text = text.replace(old, new)
    return text


def test_a_manifest_row_with_a_negative_roi_row_is_refused_in_one_line_naming_file_and_row(tmp_path: Path) -> None:
    """region_cells took a centre above the image (roi_row -5) that --roi and roi= refused."""
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,patient_id,roi_row,roi_col,roi_radius\na.png,1,P1,10,20,5\nb.png,0,P2,-5,20,5\n")
    result = run("data", "summary", "--dataset", "manifest", "--data", str(manifest))
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {manifest}:3: roi_row '-5': roi_row, roi_col and roi_radius must be finite numbers of "
                                          "pixels, roi_row and roi_col in [0, 1e6), roi_radius in (0, 1e6)"], result.stderr


HUGE = "99999999999999999999"


@pytest.mark.parametrize("args", [
    ("predict", "x.png", "--batch-size", HUGE),
    ("predict", "x.png", "--workers", HUGE),
    ("evaluate", "--dataset", "manifest", "--data", "m.csv", "--batch-size", HUGE),
    ("evaluate", "--dataset", "manifest", "--data", "m.csv", "--workers", HUGE),
    ("evaluate", "--dataset", "manifest", "--data", "m.csv", "--bootstrap", HUGE),
    ("evaluate", "--dataset", "manifest", "--data", "m.csv", "--seed", "-1"),
    ("evaluate", "--dataset", "manifest", "--data", "m.csv", "--control", "away", "--away-patches", HUGE),
    ("explain", "x.png", "--out", "e", "--seed", "-5"),
    ("explain", "x.png", "--out", "e", "--seed", HUGE),
    ("explain", "x.png", "--out", "e", "--lime-samples", HUGE),
    ("ablate", "--dataset", "manifest", "--data", "m.csv", "--out", "a", "--bootstrap", HUGE),
])
def test_out_of_range_numbers_are_usage_errors_not_crashes_or_endless_runs(args: tuple[str, ...]) -> None:
    """A huge or negative count or seed overflowed (exit 4), failed every file, or ran without end."""
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{args[-2]}'" in result.output and "internal error" not in result.output


def test_billion_laughs_yaml_is_refused_at_once(tmp_path: Path) -> None:
    from mammofuse.training.settings import load_settings

    laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    laughs += [f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi")]
    (tmp_path / "laughs.yaml").write_text("\n".join(laughs) + "\nepochs: *i\n")
    start = time.perf_counter()
    with pytest.raises(MammofuseError, match="aliases"):
        load_settings(tmp_path / "laughs.yaml")
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize(("yaml_text", "message"), [("lr: .nan\n", "lr must be"), ("epochs: 1.5\n", "epochs must be"),
                                                    ("lr: fast\n", "lr must be"), ("pretrained: 3\n", "pretrained must be"),
                                                    ("amp: 3\n", "amp must be"),
                                                    ("seed: 99999999999\n", r"seed must be an integer in \[0, 4294967295\], not 99999999999"),
                                                    ("epochs: 5\nepochs: 50\n", "not valid YAML .epochs is given twice"),
                                                    ("{lr: 0.1, lr: 0.001}\n", "not valid YAML .lr is given twice"),
                                                    ("image-size: 32\nimage_size: 64\n", "not valid YAML .image_size is given twice"),
                                                    ("[" * 100_000, r"not valid YAML \(nested too deeply\)$")])
def test_bad_settings_yaml_names_the_setting(yaml_text: str, message: str, tmp_path: Path) -> None:
    from mammofuse.training.settings import load_settings

    (tmp_path / "train.yaml").write_text(yaml_text)
    with pytest.raises(MammofuseError, match=f"train.yaml: {message}"):
        load_settings(tmp_path / "train.yaml")


def test_yaml_numbers_in_exponent_form_are_numbers(tmp_path: Path) -> None:
    from mammofuse.training.settings import load_settings

    (tmp_path / "train.yaml").write_text("lr: 1e-3\n")
    assert load_settings(tmp_path / "train.yaml").lr == 0.001


def test_a_poisoned_hub_cache_ref_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from mammofuse.hub import resolve_model

    repo = tmp_path / "models--owner--tiny"
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (repo / "refs").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for ref in ("../../../../etc", "aaaa"):
        (repo / "refs" / "main").write_text(ref)
        (repo / "snapshots" / "aaaa").mkdir(exist_ok=True)
        (repo / "snapshots" / "aaaa" / "config.json").write_text("{}")
        with pytest.raises(MammofuseError, match="cache entry for owner/tiny is corrupt"):
            resolve_model("owner/tiny")


def test_a_mistyped_model_folder_is_not_blamed_on_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mammofuse.hub import resolve_model

    (tmp_path / "runs" / "clinical").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MammofuseError, match="runs/clinicl: no such model folder"):
        resolve_model("runs/clinicl")


# --- ImageNet weights never unpickle -------------------------------------------------------------


class _Planted:
    def __reduce__(self):
        return (os.system, ("touch planted-code-ran",))


def test_imagenet_weights_are_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    import torch
    import torchvision

    from mammofuse.model.encoders import resnet_backbone

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    name = torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    with pytest.raises(MammofuseError, match=f"put {name} .* in {checkpoints}"):
        resnet_backbone("resnet18", "imagenet")
    (checkpoints / name).write_bytes(pickle.dumps({"conv1.weight": _Planted()}, protocol=2))
    with pytest.raises(MammofuseError, match="refused as ImageNet weights"):
        resnet_backbone("resnet18", "imagenet")
    assert not (tmp_path / "planted-code-ran").exists()
    from safetensors.torch import save_file

    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    save_file(state, str(checkpoints / name.replace(".pth", ".safetensors")))
    body, channels = resnet_backbone("resnet18", "imagenet")
    assert channels == 512 and torch.equal(body.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_torch_is_new_enough_that_weights_only_loading_runs_no_code() -> None:
    """``torch.load(weights_only=True)`` reads a cached ImageNet ``.pth``; before torch 2.6 a file could get past it (CVE-2025-32434)."""
    import tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {"torch>=2.6", "torchvision>=0.21"} <= set(dependencies)


# --- leftovers ----------------------------------------------------------------------------------


def test_weights_follow_the_umask_and_the_next_run_removes_stale_temporaries(tmp_path: Path) -> None:
    import torch

    from mammofuse.atomic import write_together
    from mammofuse.model import MammoFuse, ModelConfig, save_model
    from mammofuse.training.checkpoint import checkpoint_files, load_checkpoint, remove_temporaries

    old = os.umask(0o027)
    try:
        folder = save_model(MammoFuse(ModelConfig(fusion="clinical", proj_dim=8, num_heads=2)), tmp_path / "run")
        write_together(checkpoint_files(tmp_path / "run", 1, {"w": torch.zeros(2)}, {}, {}))
    finally:
        os.umask(old)
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "run" / "last" / "epoch-0001.safetensors").stat().st_mode & 0o777 == 0o640
    orphan = tmp_path / "run" / "last" / ".epoch-0002.safetensors.k3j9.tmp"  # left by a kill -9
    orphan.write_bytes(b"x" * 100)
    remove_temporaries(tmp_path / "run")  # by the run holding the folder (a train run, rank 0 under torchrun)
    tensors, scalars = load_checkpoint(tmp_path / "run")
    assert scalars["epoch"] == 1 and not orphan.exists()


@pytest.mark.parametrize(("code", "in_use"), [(errno.ENOSYS, False), (errno.ENOLCK, False), (errno.EWOULDBLOCK, True)])
def test_only_a_held_lock_is_in_use_and_a_file_system_without_locks_runs_unlocked(code: int, in_use: bool, tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every flock error read as 'in use by another mammofuse process', so no train or ablate ran where flock is unsupported."""
    import fcntl

    from mammofuse.atomic import FOLDER_LOCK, folder_lock
    from mammofuse.errors import MammofuseWarning, OutputError

    def flock(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", flock)
    if in_use:
        with pytest.raises(OutputError, match="in use by another mammofuse process"), folder_lock(tmp_path / "out"):
            pass
        return
    with pytest.warns(MammofuseWarning, match=f"out: not locked \\({re.escape(os.strerror(code))}\\)"), folder_lock(tmp_path / "out"):
        (tmp_path / "out" / "written").touch()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["written"]  # the run went on; no lock file left
    assert FOLDER_LOCK not in os.listdir(tmp_path / "out")


def _refuse_writing(monkeypatch: pytest.MonkeyPatch, lock: Path, reading: bool = True) -> None:
    """``os.open`` of ``lock`` for writing (and for reading too, unless ``reading``) fails as for another user's file
    of mode 644 (600) does (the tests may run as root, where no mode denies it)."""
    original = os.open

    def refused(path: str | os.PathLike[str], flags: int, *args: object, **kwargs: object) -> int:
        if Path(path) == lock and (flags & os.O_RDWR or not reading):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return original(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refused)


def test_another_users_lock_that_can_be_read_is_taken_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``run: cannot write (Permission denied)``, the lock never named, the folder and its output the user's own."""
    import fcntl

    from mammofuse.atomic import FOLDER_LOCK, folder_lock, output_lock
    from mammofuse.errors import OutputError

    (tmp_path / "run").mkdir()
    for lock, held in ((tmp_path / "run" / FOLDER_LOCK, lambda: folder_lock(tmp_path / "run")),
                       (tmp_path / ".s.jsonl.lock", lambda: output_lock(tmp_path / "s.jsonl"))):
        lock.touch()
        _refuse_writing(monkeypatch, lock)
        with held():
            (tmp_path / "run" / "written").touch()
        assert not lock.exists()  # a stale one: removed as the user's own are
        lock.touch()
        with lock.open("rb") as other:  # their run, live
            fcntl.flock(other.fileno(), fcntl.LOCK_EX)
            with pytest.raises(OutputError, match="in use by another mammofuse process"), held():
                pass
    _refuse_writing(monkeypatch, tmp_path / "new" / FOLDER_LOCK)  # no lock there: the folder takes none
    with pytest.raises(OutputError, match=f"^{re.escape(str(tmp_path / 'new'))}: cannot write .Permission denied.$"), folder_lock(tmp_path / "new"):
        pass


def test_a_lock_that_can_be_neither_written_nor_read_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: ``run: cannot write (Permission denied)`` for another user's lock of mode 600 left in the user's folder."""
    from mammofuse.atomic import FOLDER_LOCK, folder_lock
    from mammofuse.errors import OutputError

    (tmp_path / "run").mkdir()
    lock = tmp_path / "run" / FOLDER_LOCK
    lock.touch()
    _refuse_writing(monkeypatch, lock, reading=False)
    monkeypatch.setattr(os, "geteuid", lambda: os.lstat(lock).st_uid + 1)  # the lock is another user's
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError) as refused, folder_lock(Path("run")):
        pass
    assert str(refused.value) == ("run/.mammofuse.lock: cannot open the lock (Permission denied: another user's; in use by their run, "
                                  "or left by it: remove it)")


# --- smaller ----------------------------------------------------------------------------------


def test_fewer_patients_than_folds_is_one_line() -> None:
    from mammofuse.data.sample import Sample
    from mammofuse.data.splits import kfold_splits, train_val_split

    samples = [Sample(id=str(i), patient_id=f"P{i % 3}", label=i % 2) for i in range(12)]
    with pytest.raises(MammofuseError, match="5 patient-grouped folds need at least 5 patients; the data has 3"):
        kfold_splits(samples, 5)
    with pytest.raises(MammofuseError, match="at least 5 patients"):
        train_val_split(samples, 0.2)


def test_fail_under_refuses_nan() -> None:
    from mammofuse.evaluation.evaluate import parse_bounds

    with pytest.raises(MammofuseError, match="auc needs a number from 0 to 1"):
        parse_bounds("auc=nan")


def test_compare_paper_cites_a_doc_the_project_has() -> None:
    source = (ROOT / "mammofuse" / "cli" / "evaluate_cmd.py").read_text() + (ROOT / "mammofuse" / "evaluation" / "reference.py").read_text()
    assert "docs/evaluation.md" in source and (ROOT / "docs" / "evaluation.md").is_file()
    for doc in (ROOT / "docs").glob("*.md"):
        assert "the issue" not in doc.read_text().lower(), doc


def test_readme_tells_cpu_users_how_to_get_cpu_wheels() -> None:
    assert "download.pytorch.org/whl/cpu" in (ROOT / "README.md").read_text()


def test_explain_reports_each_bad_file_and_writes_notes_to_stderr(corpus: dict[str, Path], tiny_roi_model: Path, tmp_path: Path) -> None:
    result = run("explain", str(corpus["good_png"]), str(corpus["bad_frames"]), "--model", str(tiny_roi_model),
                 "--methods", "shap,attention", "--density", "2", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "NumberOfFrames is '1A'" in result.stderr
    assert "attention skipped" in result.stderr and "attention skipped" not in result.stdout


def test_flag_bounds_match_the_training_settings_rules() -> None:
    """The CLI's bounds are constants (importing the settings would pull in torch at start-up): they must not drift."""
    from mammofuse.cli import pretrain_cmd
    from mammofuse.cli.common import MAX_BATCH_SIZE, MAX_WORKERS
    from mammofuse.training.settings import RULES
    from mammofuse.validation import MAX_SEED

    assert (MAX_SEED, MAX_BATCH_SIZE, MAX_WORKERS) == (RULES["seed"].high, RULES["batch_size"].high, RULES["workers"].high)
    assert (pretrain_cmd.MAX_PATCH_SIDE, pretrain_cmd.MAX_EPOCHS, pretrain_cmd.MAX_LR) == (
        RULES["image_size"].high, RULES["epochs"].high, RULES["lr"].high)


def test_the_cache_removes_a_killed_runs_entry_temporaries_once_they_are_an_hour_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: a kill -9 between a cache entry's write and its rename left its .tmp in the per-user cache for good."""
    from mammofuse.cache import cache_dir

    monkeypatch.setenv("MAMMOFUSE_CACHE", str(tmp_path / "cache"))
    entries = tmp_path / "cache" / "features" / "0123456789abcdef01234567" / "aa"
    entries.mkdir(parents=True)
    old, young = entries / ".aa47.safetensors._k5rubnh.tmp", entries / ".aa48.safetensors.x2f9_q1m.tmp"
    for tmp in (old, young):
        tmp.write_bytes(b"half an entry")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert cache_dir("features", keeps="features") == tmp_path / "cache" / "features"
    assert not old.exists() and young.exists()  # a young one may be another run's write in progress


@pytest.mark.parametrize("args", [
    ["predict", "{missing}", "-f", "jsonl", "-o", "{out}/a/x.jsonl"],
    ["train", "--dataset", "mini-mias", "--data", "{missing}", "--out", "{out}/run"],
    ["evaluate", "--dataset", "mini-mias", "--data", "{missing}", "--plots", "{out}/plots"],
    ["ablate", "--dataset", "mini-mias", "--data", "{missing}", "--out", "{out}/ab"],
    ["explain", "{missing}", "--out", "{out}/ex"],
])
def test_a_run_that_fails_on_its_input_leaves_no_output_folder(args: list[str], tmp_path: Path) -> None:
    """Was: the check that an output can be written (and an output folder's lock) made its folders, left behind empty."""
    result = runner.invoke(app, [a.format(missing=tmp_path / "missing", out=tmp_path / "nd") for a in args])
    assert result.exit_code == 2 and "missing" in result.stderr.splitlines()[-1], result.output
    assert not (tmp_path / "nd").exists()
