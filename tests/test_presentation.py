"""What a DICOM header says the image is: another modality is refused, other kinds of mammogram are scored with a note."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from dicom_factory import breast_phantom, write_dicom
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from mammofuse.cli import app
from mammofuse.errors import InputFileError
from mammofuse.imaging.reader import ReaderWarning, check_header, read_mammogram

runner = CliRunner()
ROI = "32,8,6"  # inside the phantom's breast
TRAINED_ON = "mammofuse's bundled models were trained on digitised screen-film mammograms processed for presentation (CBIS-DDSM)"
UNTESTED = "how they score a digital detector's images is untested"
DIGITAL_MAMMOGRAPHY = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "250"})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


def csv_records(text: str) -> dict[str, dict[str, str]]:
    return {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(text))}


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def view(*modifiers: Dataset) -> list[Dataset]:
    """A View Code Sequence (cranio-caudal) whose item holds ``modifiers``, as the mammography IOD nests them."""
    item = code("399162004", "SCT", "cranio-caudal")
    item.ViewModifierCodeSequence = list(modifiers)
    return [item]


@pytest.mark.parametrize("modality", ["CT", "US", "MR", "PT"])
def test_a_dicom_of_another_modality_is_refused_rather_than_scored(modality: str, tmp_path: Path) -> None:
    """A CT slice given no --roi got its findings' score, exit 0 and no remark; given one, a note on stderr only."""
    scan = write_dicom(tmp_path / "scan.dcm", breast_phantom(), Modality=modality)
    for read in (read_mammogram, check_header):
        with pytest.raises(InputFileError, match=f"scan.dcm: modality is {modality}, not MG \\(mammography\\)$"):
            read(scan)
    for region in ([], ["--roi", ROI]):  # the header alone (a lesion-crop model without region), or the pixels too
        status, out, err = run("predict", str(scan), *region, "--density", "2", "--shape", "lobulated", "--margin", "circumscribed", "-f", "csv")
        record = csv_records(out)["scan.dcm"]
        assert status == 1 and record["probability"] == "" and record["error"] == f"modality is {modality}, not MG (mammography)", region
        assert f"failed: {scan}: modality is {modality}, not MG (mammography)" in err


def test_inspect_reports_another_modality_as_a_warning(tmp_path: Path) -> None:
    scan = write_dicom(tmp_path / "ct.dcm", breast_phantom(), Modality="CT")
    status, out, _ = run("inspect", str(scan), "-f", "json")
    record = json.loads(out)[0]
    assert status == 0 and record["error"] is None and record["modality"] == "CT"
    assert record["warnings"] == ["modality is CT, not MG (mammography)"]


@pytest.mark.parametrize(("modality", "remark"), [
    ("CR", "modality is CR, not MG (mammography): read as a mammogram"),
    ("DX", "modality is DX, not MG (mammography): read as a mammogram"),
    ("OT", "modality is OT, not MG (mammography): read as a mammogram"),
    ("", "the DICOM header gives no modality: read as a mammogram (MG)"),
])
def test_a_modality_that_may_be_mammography_is_scored_with_a_note_in_its_record(modality: str, remark: str, tmp_path: Path) -> None:
    scan = write_dicom(tmp_path / "scan.dcm", breast_phantom(), Modality=modality)
    with pytest.warns(ReaderWarning, match=re.escape(f"scan.dcm: {remark}")):
        assert read_mammogram(scan).info.warnings == [remark]
    for region in ([], ["--roi", ROI]):
        status, out, err = run("predict", str(scan), *region, "--density", "2", "--margin", "spiculated", "-f", "csv")
        record = csv_records(out)["scan.dcm"]
        assert status == 0 and record["probability"] and remark in record["note"], region
        assert f"note: {scan}: {remark}" in err
    status, out, err = run("predict", str(scan), "--roi", ROI, "--density", "2", "--margin", "spiculated", "-f", "json")
    assert status == 0 and json.loads(out)[0]["note"] == remark
    assert err.count(remark) == 1  # the record's note, shown once: not also as the reader's warning


@pytest.mark.parametrize(("attributes", "remark"), [
    ({"PresentationIntentType": "FOR PROCESSING"}, "a FOR PROCESSING image"),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.2.1"}, "a FOR PROCESSING image"),  # Digital Mammography - For Processing
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.13.1.5", "NumberOfFrames": 1}, "a FOR PROCESSING image"),  # Breast Projection - For Processing
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.13.1.3", "NumberOfFrames": 1}, "a breast tomosynthesis slice"),
    ({"ViewCodeSequence": view(code("399163009", "SCT", "Magnification"))}, "a magnification view"),
    ({"ViewCodeSequence": view(code("R-102D7", "SRT", "Spot Compression"))}, "a spot compression view"),
    ({"ViewModifierCodeSequence": [code("99LOCAL", "99X", "spot magnification")]}, "a magnification and spot compression view"),
])
def test_raw_data_and_spot_or_magnification_views_are_scored_with_a_note(attributes: dict, remark: str, tmp_path: Path) -> None:
    scan = write_dicom(tmp_path / "scan.dcm", breast_phantom(), **attributes)
    status, out, err = run("predict", str(scan), "--roi", ROI, "--density", "2", "--margin", "spiculated", "-f", "csv")
    note = csv_records(out)["scan.dcm"]["note"]
    assert status == 0 and note.startswith(remark) and TRAINED_ON in note
    status, out, _ = run("inspect", str(scan), "-f", "json")
    assert status == 0 and json.loads(out)[0]["warnings"] == [note]


def test_a_full_field_mammogram_for_presentation_gets_no_remark(tmp_path: Path) -> None:
    scan = write_dicom(tmp_path / "scan.dcm", breast_phantom(), PresentationIntentType="FOR PRESENTATION",
                       ViewCodeSequence=view(code("399161006", "SCT", "Cleavage")))
    assert read_mammogram(scan).info.warnings == []  # a Secondary Capture, as a scanned film is
    film = write_dicom(tmp_path / "film.dcm", breast_phantom(), SOPClassUID=DIGITAL_MAMMOGRAPHY, DetectorType="FILM")
    assert read_mammogram(film).info.warnings == []  # a scanned film/screen, whatever its SOP class


@pytest.mark.parametrize(("attributes", "remarks"), [
    ({"SOPClassUID": DIGITAL_MAMMOGRAPHY, "DetectorType": "SCINTILLATOR"},
     ["a digital mammogram (SOP class Digital Mammography X-Ray Image Storage - For Presentation)"]),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.13.1.4", "NumberOfFrames": 1},  # a 2D projection, not a tomosynthesis slice
     ["a digital mammogram (SOP class Breast Projection X-Ray Image Storage - For Presentation)"]),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1", "Modality": "DX"},
     ["modality is DX, not MG (mammography): read as a mammogram",
      "a digital mammogram (SOP class Digital X-Ray Image Storage - For Presentation)"]),
    ({"DetectorType": "DIRECT"}, ["a digital mammogram (detector type DIRECT)"]),  # a generic SOP class (Secondary Capture)
    ({"DetectorType": ["storage", "X"]}, ["a digital mammogram (detector type STORAGE)"]),
])
def test_a_digital_mammogram_is_scored_with_a_note(attributes: dict, remarks: list[str], tmp_path: Path) -> None:
    """A digital detector's mammogram was scored with no remark, although every model was trained on digitised film."""
    import mammofuse
    from mammofuse.errors import MammofuseWarning

    scan = write_dicom(tmp_path / "scan.dcm", breast_phantom(), **attributes)
    remarks = [*remarks[:-1], f"{remarks[-1]}: {TRAINED_ON}; {UNTESTED}"]
    with pytest.warns(ReaderWarning, match=re.escape(f"scan.dcm: {remarks[-1]}")):
        assert read_mammogram(scan).info.warnings == remarks
    with pytest.warns(MammofuseWarning, match=re.escape(remarks[-1])):
        prediction = mammofuse.predict(scan, roi=(32, 8, 6), density=2, margin="spiculated")
    assert prediction.error is None and remarks[-1] in prediction.note
    for region in ([], ["--roi", ROI]):
        status, out, err = run("predict", str(scan), *region, "--density", "2", "--margin", "spiculated", "-f", "csv")
        record = csv_records(out)["scan.dcm"]
        assert status == 0 and record["probability"] and remarks[-1] in record["note"], region
        assert f"note: {scan}: {remarks[-1]}" in err and err.count(UNTESTED) == 1
    status, out, _ = run("inspect", str(scan), "-f", "json")
    assert status == 0 and json.loads(out)[0]["warnings"] == remarks
    status, _, err = run("explain", str(scan), "--roi", ROI, "--density", "2", "--margin", "spiculated", "--methods", "shap",
                         "--out", str(tmp_path / "out"))
    assert status == 0 and err.count(UNTESTED) == 1
    notes = json.loads(next((tmp_path / "out").rglob("explanation.json")).read_text())["notes"]
    assert [n for n in notes if remarks[-1] in n], notes


@pytest.mark.parametrize(("attributes", "remark"), [
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.2.1"}, "a FOR PROCESSING image"),  # digital too: one remark says what it is
    ({"SOPClassUID": DIGITAL_MAMMOGRAPHY, "PresentationIntentType": "FOR PROCESSING"}, "a FOR PROCESSING image"),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.13.1.3", "NumberOfFrames": 1, "DetectorType": "DIRECT"}, "a breast tomosynthesis slice"),
])
def test_raw_data_and_tomosynthesis_from_a_digital_detector_get_one_remark(attributes: dict, remark: str, tmp_path: Path) -> None:
    scan = write_dicom(tmp_path / "scan.dcm", breast_phantom(), **attributes)
    warnings = read_mammogram(scan).info.warnings
    assert len(warnings) == 1 and warnings[0].startswith(remark) and TRAINED_ON in warnings[0]


def test_the_digital_remark_comes_from_the_header_not_the_pixels(real_dicoms: dict[str, Path], tmp_path: Path) -> None:
    """CBIS-DDSM's scanned films (Secondary Capture images, as the models were trained on) and a PNG get no remark; the
    same film's pixels under a Digital Mammography header get it."""
    import pydicom
    from PIL import Image

    for name, path in real_dicoms.items():
        assert read_mammogram(path).info.warnings == [], name
    ds = pydicom.dcmread(real_dicoms["P_00173_lcc"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.Modality == "MG"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DIGITAL_MAMMOGRAPHY
    ds.save_as(tmp_path / "digital.dcm")
    assert read_mammogram(tmp_path / "digital.dcm").info.warnings == [
        f"a digital mammogram (SOP class Digital Mammography X-Ray Image Storage - For Presentation): {TRAINED_ON}; {UNTESTED}"]
    Image.fromarray((breast_phantom() >> 4).astype("uint8")).save(tmp_path / "scan.png")
    assert read_mammogram(tmp_path / "scan.png").info.warnings == []


def test_a_damaged_or_multi_valued_header_attribute_is_read_as_the_standard_means_it(tmp_path: Path) -> None:
    """A view sequence stored as text made the file unreadable ('str' has no .get); a second value hid FOR PROCESSING
    and turned Modality into its list's text."""
    from pydicom.dataelem import DataElement

    from mammofuse.imaging.presentation import header_remarks, not_mammography

    path = write_dicom(tmp_path / "view.dcm", breast_phantom(), Modality="MG")
    import pydicom

    ds = pydicom.dcmread(path)
    ds.add(DataElement(0x00540220, "LO", "L CC"))  # ViewCodeSequence as text
    ds.PresentationIntentType = ["FOR PROCESSING", "X"]
    ds.Modality = ["MG", "DX"]
    ds.save_as(path)
    mammogram = read_mammogram(path)
    assert mammogram.info.modality == "MG"
    assert [r for r in mammogram.info.warnings if "FOR PROCESSING" in r]
    assert header_remarks(pydicom.dcmread(path, stop_before_pixels=True), "MG")
    assert not_mammography("X" * 500) == "modality is " + "X" * 32 + "..., not MG (mammography)"


def test_an_explanation_carries_the_files_remark_once(tmp_path: Path) -> None:
    """explain reads a file twice (the model's input, the view shown): its remark reached stderr twice and explanation.json never."""
    scan = write_dicom(tmp_path / "scan.dcm", breast_phantom(), PresentationIntentType="FOR PROCESSING")
    status, _, err = run("explain", str(scan), "--roi", ROI, "--density", "2", "--margin", "spiculated", "--methods", "shap",
                         "--out", str(tmp_path / "out"))
    assert status == 0 and err.count("a FOR PROCESSING image") == 1
    notes = json.loads(next((tmp_path / "out").rglob("explanation.json")).read_text())["notes"]
    assert [n for n in notes if n.startswith("a FOR PROCESSING image")]


def test_a_file_that_fails_to_explain_keeps_its_remark(tmp_path: Path) -> None:
    """A file whose explanation failed lost its reader's remarks: they were held for notes no result carried."""
    from dicom_factory import JPEGLosslessSV1

    scan = write_dicom(tmp_path / "scan.dcm", breast_phantom(), PresentationIntentType="FOR PROCESSING", TransferSyntaxUID=JPEGLosslessSV1)
    status, _, err = run("explain", str(scan), "--roi", ROI, "--density", "2", "--margin", "spiculated", "--methods", "shap",
                         "--out", str(tmp_path / "out"))
    assert status == 1 and f"failed: {scan}" in err
    assert err.count("a FOR PROCESSING image") == 1, err
