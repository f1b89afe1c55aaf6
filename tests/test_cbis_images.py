"""CBIS-DDSM keyed image folders with COCO boxes: how files and boxes map to CSV rows, and the canvas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammofuse.data import load_dataset, summarize
from mammofuse.data.cbis_images import box_region, parse_key
from mammofuse.errors import MammofuseError
from mammofuse.evaluation.evaluate import rows_notes


def test_image_keys_short_and_full():
    assert parse_key("00001_LEFT_CC") == ("P_00001", "LEFT", "CC", None)
    assert parse_key("Mass-Training_P_00001_LEFT_CC") == ("P_00001", "LEFT", "CC", "Mass-Training_P_00001_LEFT_CC")
    assert parse_key("calc-test_p_00077_right_mlo")[3] == "Calc-Test_P_00077_RIGHT_MLO"
    assert parse_key("README") is None and parse_key("00001_LEFT_CC_1") is None


def test_real_folder_matches_every_image_and_pins_the_box_rules(cbis_csv, cbis_800):
    report: dict = {}
    samples = load_dataset("cbis-ddsm", cbis_csv, [cbis_800], "mass", report)
    summary = summarize("cbis-ddsm", samples, report)
    assert report["images"] == {"matched": 1231, "missing": 8, "unused_files": 0}  # the 8 missing are Mass-Test films
    assert report["lesions"] == {"matched": 1173, "ambiguous": 131, "left_out": 14, "mixed_pathology": 14, "box_count": 0, "without_region": 0}
    assert summary["splits"]["train"]["lesions"] == 1173 + 131
    assert report["rows"] == {"train": {"rows": 1318, "left_out": 14, "mixed_pathology": 14, "box_count": 0, "ambiguous": 131},
                              "test": {"rows": 10, "left_out": 0, "mixed_pathology": 0, "box_count": 0, "ambiguous": 0}}
    assert rows_notes(report["rows"]["train"]) == [
        "14 of the split's 1318 CSV rows are left out: 14 on films holding lesions of both pathologies, whose boxes cannot be told apart",
        "131 of the split's 1318 CSV rows lie on films with several lesions of one pathology: each box is scored as a case with the "
        "findings its film's rows share",
    ]
    assert rows_notes(report["rows"]["test"]) == []
    coco = json.loads((cbis_800 / "_annotations.coco.json").read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    boxes = {}
    for ann in coco["annotations"]:
        boxes.setdefault(files[ann["image_id"]], []).append(ann["bbox"])
    first = next(s for s in samples if s.id == "Mass-Training_P_00001_LEFT_CC_1")
    assert Path(first.image_path).name == "00001_LEFT_CC.jpg"
    assert first.region == pytest.approx(box_region(tuple(boxes["00001_LEFT_CC.jpg"][0])))
    assert first.clinical == {"density": "3", "shape": "IRREGULAR-ARCHITECTURAL_DISTORTION", "margin": "SPICULATED"}
    multi = [s for s in samples if s.id.endswith("_box1")]
    assert multi, "multi-lesion images of one pathology give one sample per box"
    for sample in multi[:20]:
        siblings = [s for s in samples if s.image_id == sample.image_id]
        assert len(siblings) == len(boxes[Path(sample.image_path).name]) >= 2
        assert len({s.label for s in siblings}) == 1
    assert all(s.abnormality == "mass" for s in samples)


def _folder(tmp_path: Path, names: list[str], boxes: dict[str, list[list[float]]], category: str = "Mass", name: str = "images") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    images, annotations = [], []
    for k, name in enumerate(names):
        Image.fromarray(np.full((80, 80), 100, np.uint8)).save(folder / name)
        images.append({"id": k, "file_name": name, "height": 80, "width": 80})
        annotations += [{"id": len(annotations) + j, "image_id": k, "category_id": 0, "bbox": b} for j, b in enumerate(boxes.get(name, []))]
    coco = {"categories": [{"id": 0, "name": category}], "images": images, "annotations": annotations}
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    return folder


def _csv(tmp_path: Path, rows: list[tuple[str, str, str, str, str, str]], split: str = "train") -> Path:
    data = tmp_path / "csv"
    data.mkdir(exist_ok=True)
    folder = {"train": "Mass-Training", "test": "Mass-Test"}[split]
    head = "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,mass margins,pathology,image file path\n"
    body = "".join(
        f"{p},{d},{side},{view},{aid},mass,{shape},OVAL,{path_},{folder}_{p}_{side}_{view}/1.2/1.3/000000.dcm\n"
        for p, side, view, aid, shape, path_, d in [(r[0], r[1], r[2], r[3], r[4], r[5], "2") for r in rows]
    )
    (data / f"mass_case_description_{split}_set.csv").write_text(head + body)
    return data


def test_mixed_pathology_and_box_count_mismatch_are_left_out(tmp_path):
    data = _csv(tmp_path, [
        ("P_00001", "LEFT", "CC", "1", "ROUND", "BENIGN"),
        ("P_00001", "LEFT", "CC", "2", "OVAL", "MALIGNANT"),  # mixed pathology on one image
        ("P_00002", "LEFT", "CC", "1", "ROUND", "BENIGN"),  # two boxes for one row
        ("P_00003", "RIGHT", "MLO", "1", "ROUND", "MALIGNANT"),
        ("P_00003", "RIGHT", "MLO", "2", "OVAL", "MALIGNANT"),  # two lesions, one pathology
    ])
    folder = _folder(tmp_path, ["00001_LEFT_CC.png", "00002_LEFT_CC.png", "Mass-Training_P_00003_RIGHT_MLO.png"], {
        "00001_LEFT_CC.png": [[1, 1, 5, 5], [20, 20, 5, 5]],
        "00002_LEFT_CC.png": [[1, 1, 5, 5], [20, 20, 5, 5]],
        "Mass-Training_P_00003_RIGHT_MLO.png": [[10, 20, 6, 4], [40, 40, 8, 8]],
    })
    report: dict = {}
    samples = load_dataset("cbis-ddsm", data, [folder], "mass", report)
    assert report["lesions"] == {"matched": 0, "ambiguous": 2, "left_out": 3, "mixed_pathology": 2, "box_count": 1, "without_region": 0}
    assert [s.id for s in samples] == ["Mass-Training_P_00003_RIGHT_MLO_box1", "Mass-Training_P_00003_RIGHT_MLO_box2"]
    assert all(s.label == 1 for s in samples)
    assert samples[0].clinical == {"density": "2", "margin": "OVAL"}  # shape differs between the rows: dropped
    assert samples[0].region == pytest.approx((22.0, 13.0, 3.0))


def test_images_may_be_given_twice_and_a_folder_without_boxes_gives_no_region(tmp_path):
    data = _csv(tmp_path, [("P_00001", "LEFT", "CC", "1", "ROUND", "BENIGN"), ("P_00002", "LEFT", "MLO", "1", "ROUND", "MALIGNANT")])
    first = _folder(tmp_path, ["00001_LEFT_CC.png"], {"00001_LEFT_CC.png": [[1, 1, 5, 5]]})
    second = tmp_path / "other"
    second.mkdir()
    Image.fromarray(np.full((80, 80), 90, np.uint8)).save(second / "00002_LEFT_MLO.png")
    report: dict = {}
    samples = load_dataset("cbis-ddsm", data, [first, second], "all", report)
    assert {Path(s.image_path).parent.name for s in samples} == {"images", "other"}
    assert report["lesions"] == {"matched": 1, "ambiguous": 0, "left_out": 0, "mixed_pathology": 0, "box_count": 0, "without_region": 1}
    with pytest.raises(MammofuseError, match=r"csv: no calc case-description CSV here \(it has mass_case_description_train_set.csv\); choose another --abnormality$"):
        load_dataset("cbis-ddsm", data, [first, second], "calc")
    with pytest.raises(MammofuseError, match="--abnormality"):
        load_dataset("cbis-ddsm", data, [first], "masses")


def test_a_short_key_in_the_training_and_the_test_folder_takes_the_file_of_its_split(tmp_path):
    """A patient's breast and view in both splits: each film is matched in its split's folder, whatever the order."""
    data = _csv(tmp_path, [("P_00001", "LEFT", "CC", "1", "ROUND", "BENIGN"), ("P_00002", "LEFT", "MLO", "1", "ROUND", "BENIGN")])
    _csv(tmp_path, [("P_00001", "LEFT", "CC", "1", "OVAL", "MALIGNANT"), ("P_00003", "RIGHT", "CC", "1", "OVAL", "MALIGNANT")], split="test")
    train = _folder(tmp_path, ["00001_LEFT_CC.png", "00002_LEFT_MLO.png"], {"00001_LEFT_CC.png": [[1, 1, 5, 5]], "00002_LEFT_MLO.png": [[1, 1, 5, 5]]}, name="a")
    test = _folder(tmp_path, ["00001_LEFT_CC.png", "00003_RIGHT_CC.png"], {"00001_LEFT_CC.png": [[30, 30, 9, 9]], "00003_RIGHT_CC.png": [[1, 1, 5, 5]]}, name="b")
    for folders in ([train, test], [test, train]):
        samples = {s.id: s for s in load_dataset("cbis-ddsm", data, folders, "mass")}
        assert Path(samples["Mass-Training_P_00001_LEFT_CC_1"].image_path).parent == train
        assert Path(samples["Mass-Test_P_00001_LEFT_CC_1"].image_path).parent == test
        assert samples["Mass-Test_P_00001_LEFT_CC_1"].region == pytest.approx(box_region((30, 30, 9, 9)))
    (train / "00002_LEFT_MLO.png").unlink()  # neither folder is known to be of one split: refused, naming both files
    (test / "00003_RIGHT_CC.png").unlink()
    with pytest.raises(MammofuseError, match=r"^Mass-Training_P_00001_LEFT_CC: .*a/00001_LEFT_CC.png and .*b/00001_LEFT_CC.png both hold it by short key"):
        load_dataset("cbis-ddsm", data, [train, test], "mass")
    assert len(load_dataset("cbis-ddsm", data, [train, train / ".." / "a"], "mass")) == 4  # one folder given twice is one folder


_IMAGE = '{"id": 0, "file_name": "00001_LEFT_CC.png"}'


@pytest.mark.parametrize(("content", "problem"), [
    ('{"images": 3}', "TypeError: 'images' is not a list of objects"),
    ("[]", "TypeError: the top level is a JSON list, not an object"),  # was AttributeError (exit 4)
    ('"x"', "TypeError: the top level is a JSON str, not an object"),
    ('{"categories": {}, "images": [], "annotations": []}', "TypeError: 'categories' is not a list of objects"),
    ('{"categories": [[]], "images": [], "annotations": []}', "TypeError: 'categories' is not a list of objects"),
    ('{"images": [], "annotations": [3]}', "TypeError: 'annotations' is not a list of objects"),
    ('{"images": []}', "KeyError: 'annotations'"),
    (f'{{"images": [{_IMAGE}], "annotations": [{{"image_id": 0, "bbox": "1234"}}]}}', "TypeError: bbox 1234 is not .x, y, width, height.."),
    (f'{{"images": [{_IMAGE}], "annotations": [{{"image_id": 0, "bbox": [1, 2, 3, NaN]}}]}}', "TypeError: bbox .1, 2, 3, nan. is not"),
    (f'{{"images": [{_IMAGE}], "annotations": [{{"image_id": 0, "bbox": [1, 2, 3, true]}}]}}', "TypeError: bbox .1, 2, 3, True. is not"),
    ("[" * 100_000 + "]" * 100_000, "RecursionError: maximum recursion depth"),
])
def test_a_broken_coco_file_is_a_one_line_error(content: str, problem: str, tmp_path):
    data = _csv(tmp_path, [("P_00001", "LEFT", "CC", "1", "ROUND", "BENIGN")])
    folder = _folder(tmp_path, ["00001_LEFT_CC.png"], {})
    (folder / "_annotations.coco.json").write_text(content)
    with pytest.raises(MammofuseError, match=f"_annotations.coco.json: not a COCO annotation file .{problem}") as info:
        load_dataset("cbis-ddsm", data, [folder])
    assert "\n" not in str(info.value)


def test_full_resolution_dicom_is_brought_onto_the_training_canvas(real_dicoms):
    """The 800 px images were made from the DICOMs by min-max scaling and stretching: the canvas must reproduce that."""
    import pydicom

    from mammofuse.imaging.preprocess import PreprocessRecipe, model_space
    from mammofuse.imaging.reader import read_mammogram

    path = real_dicoms["P_00173_lcc"]
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    scaled = (raw - raw.min()) / (raw.max() - raw.min()) * 255
    jpeg_like = np.asarray(Image.fromarray(scaled.astype(np.float32), mode="F").resize((800, 800), Image.Resampling.BILINEAR))
    mammogram = read_mammogram(path)
    recipe = PreprocessRecipe(canvas=(800, 800))
    region_file = (raw.shape[0] * 0.5, raw.shape[1] * 0.25, 200.0)
    pixels, region = model_space(mammogram, recipe, region_file)
    assert pixels.shape == (800, 800)
    reference = jpeg_like[:, ::-1] if mammogram.info.flipped else jpeg_like
    assert np.corrcoef(pixels.ravel(), reference.ravel())[0, 1] > 0.99
    col = 799 - region_file[1] * 800 / raw.shape[1] if mammogram.info.flipped else region_file[1] * 800 / raw.shape[1]
    assert region[0] == pytest.approx(400.0) and region[1] == pytest.approx(col, abs=1.0)
    assert region[2] == pytest.approx(200.0 * max(800 / raw.shape[0], 800 / raw.shape[1]))


def test_tcia_tree_roi_mask_gives_the_lesion_region(tmp_path):
    """In a TCIA tree the ROI series holds a crop and a full-size mask: the mask's bounding box is the region."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from dataclasses import replace

    from dicom_factory import breast_phantom, write_dicom

    from mammofuse.imaging.preprocess import PreprocessRecipe, preprocess
    from mammofuse.imaging.reader import read_mammogram
    from mammofuse.inference import lesion_regions, load_input, mask_region

    study, series, roi_series = "1.2.3", "1.2.3.4", "1.2.3.5"
    full = breast_phantom(400, 300)
    mask = np.zeros((400, 300), np.uint16)
    mask[100:140, 50:110] = 4095
    root = tmp_path / "tcia"
    crop_dir = root / "Mass-Training_P_00001_LEFT_CC_1" / "c" / "d"
    for folder in (root / "Mass-Training_P_00001_LEFT_CC" / "a" / "b", crop_dir):
        folder.mkdir(parents=True)
    write_dicom(root / "Mass-Training_P_00001_LEFT_CC" / "a" / "b" / "000000.dcm", full, StudyInstanceUID=study, SeriesInstanceUID=series,
                PatientID="Mass-Training_P_00001_LEFT_CC")
    write_dicom(crop_dir / "000000.dcm", breast_phantom(40, 60), StudyInstanceUID="9.8", SeriesInstanceUID=roi_series)
    write_dicom(crop_dir / "000001.dcm", mask, StudyInstanceUID="9.8", SeriesInstanceUID=roi_series)
    data = tmp_path / "csv"
    data.mkdir()
    (data / "mass_case_description_train_set.csv").write_text(
        "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,mass margins,pathology,"
        "image file path,cropped image file path,ROI mask file path\n"
        f"P_00001,2,LEFT,CC,1,mass,ROUND,OVAL,BENIGN,Mass-Training_P_00001_LEFT_CC/{study}/{series}/000000.dcm,"
        f"Mass-Training_P_00001_LEFT_CC_1/9.8/{roi_series}/000000.dcm,\"Mass-Training_P_00001_LEFT_CC_1/9.8/{roi_series}/000001.dcm\n\"\n"
    )
    (sample,) = load_dataset("cbis-ddsm", data, [root])
    assert sample.roi_mask_path.endswith("000001.dcm") and sample.roi_path.endswith("000000.dcm")
    assert mask_region(sample.roi_mask_path) == pytest.approx((120.0, 80.0, 30.0))
    recipe = PreprocessRecipe(image_size=32, canvas=(800, 600), roi_min_size=8)
    image, _ = load_input(sample, recipe)
    assert image.shape == (1, 32, 32)
    # Without a canvas too, the mask's region is cropped from the full image (the cropped ROI file is only for
    # lesions without a mask), so plain scores and the shortcut controls read the lesion the same way.
    recipe = PreprocessRecipe(image_size=32, roi_min_size=8)
    expected = preprocess(read_mammogram(sample.image_path), recipe, mask_region(sample.roi_mask_path))
    assert np.array_equal(load_input(sample, recipe)[0], expected)
    assert lesion_regions([sample, replace(sample, roi_mask_path=str(root / "missing.dcm")), replace(sample, roi_mask_path=None)], None) == [
        pytest.approx((120.0, 80.0, 30.0))
    ]


@pytest.mark.parametrize("flipped", [False, True])
def test_a_region_lands_on_the_canvas_as_the_box_of_a_canvas_image_would(flipped: bool) -> None:
    """Training regions come from boxes drawn on the stretched 800 px images: a circle given in a full-size
    file's pixels must become the region of its bounding square stretched the same way, not a shrunken one."""
    from mammofuse.imaging.preprocess import region_in_model_space

    shape, canvas, (row, col, radius) = (4600, 2800), (800, 800), (2400.0, 1145.0, 100.0)
    sy, sx = canvas[0] / shape[0], canvas[1] / shape[1]
    left = (shape[1] - col - radius) if flipped else (col - radius)
    stretched_box = (left * sx, (row - radius) * sy, 2 * radius * sx, 2 * radius * sy)
    mapped = region_in_model_space((row, col, radius), shape, flipped, canvas)
    assert mapped[2] == pytest.approx(box_region(stretched_box)[2])
    assert mapped[:2] == pytest.approx(box_region(stretched_box)[:2], abs=sx)


def test_a_mask_region_on_a_canvas_covers_the_stretched_box_of_the_mask(tmp_path: Path) -> None:
    from mammofuse.imaging.preprocess import region_in_model_space
    from mammofuse.inference import mask_region

    mask = np.zeros((460, 280), np.uint8)
    mask[100:200, 50:90] = 255  # 100 rows tall, 40 columns wide
    path = tmp_path / "mask.png"
    Image.fromarray(mask).save(path)
    assert mask_region(str(path)) == pytest.approx((150.0, 70.0, 50.0))
    on_canvas = region_in_model_space(mask_region(str(path), (80, 80)), (460, 280), False, (80, 80))
    assert on_canvas == pytest.approx((150 * 80 / 460, 70 * 80 / 280, max(100 * 80 / 460, 40 * 80 / 280) / 2))


def test_a_mask_saved_at_another_size_than_its_image_is_scaled_onto_it(tmp_path: Path) -> None:
    """Several CBIS-DDSM Mass-Test masks are 0.87 times their film: their box must land on the film's lesion."""
    from mammofuse.data.sample import Sample
    from mammofuse.imaging.preprocess import PreprocessRecipe
    from mammofuse.inference import with_mask_region

    mask = np.zeros((400, 240), np.uint8)
    mask[100:200, 50:90] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(np.zeros((500, 300), np.uint8)).save(tmp_path / "film.png")
    sample = Sample(id="c", patient_id="P", label=0, clinical={}, image_path=str(tmp_path / "film.png"), roi_mask_path=str(tmp_path / "mask.png"))
    assert with_mask_region(sample, PreprocessRecipe()).region == pytest.approx((187.5, 87.5, 62.5))


@pytest.mark.parametrize("layout", ["one series", "two series", "two series, paths swapped", "mask alone"])
def test_tcia_crop_and_mask_are_told_apart_by_size_not_by_the_csv_column(tmp_path: Path, layout: str) -> None:
    """In about 7% of the official mass rows the crop and the mask lie in different series; the CSV could also swap the two paths."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from dicom_factory import breast_phantom, write_dicom

    root, film = tmp_path / "tcia", "Mass-Training_P_00001_LEFT_CC"
    series = {"full": ("1.2", "1.2.3"), "crop": ("9.8", "9.8.1"), "mask": ("9.8", "9.8.1" if layout == "one series" else "9.8.2")}
    names = {"full": "000000.dcm", "crop": "000000.dcm", "mask": "000001.dcm" if layout == "one series" else "000000.dcm"}
    mask = np.zeros((400, 300), np.uint16)
    mask[100:140, 50:110] = 4095
    pixels = {"full": breast_phantom(400, 300), "crop": breast_phantom(40, 60), "mask": mask}
    paths = {}
    for kind in ("full", "mask") if layout == "mask alone" else ("full", "crop", "mask"):
        study, uid = series[kind]
        folder = root / (film if kind == "full" else f"{film}_1") / study / uid
        folder.mkdir(parents=True, exist_ok=True)
        write_dicom(folder / names[kind], pixels[kind], StudyInstanceUID=study, SeriesInstanceUID=uid, PatientID=folder.relative_to(root).parts[0])
    for kind in ("full", "crop", "mask"):
        study, uid = series[kind]
        paths[kind] = f"{film if kind == 'full' else film + '_1'}/{study}/{uid}/{names[kind]}"
    if layout == "two series, paths swapped":
        paths["crop"], paths["mask"] = paths["mask"], paths["crop"]
    data = tmp_path / "csv"
    data.mkdir()
    (data / "mass_case_description_train_set.csv").write_text(
        "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,mass margins,pathology,"
        "image file path,cropped image file path,ROI mask file path\n"
        f"P_00001,2,LEFT,CC,1,mass,ROUND,OVAL,BENIGN,{paths['full']},{paths['crop']},{paths['mask']}\n"
    )
    (sample,) = load_dataset("cbis-ddsm", data, [root])
    assert sample.image_path == str(root / film / "1.2" / "1.2.3" / "000000.dcm")
    assert sample.roi_mask_path == str(root / f"{film}_1" / "9.8" / series["mask"][1] / names["mask"])
    assert sample.roi_path == (None if layout == "mask alone" else str(root / f"{film}_1" / "9.8" / "9.8.1" / "000000.dcm"))


def test_the_shipped_backbone_records_the_patients_whose_films_it_was_pretrained_on(cbis_csv: Path, cbis_800: Path) -> None:
    """``ablate`` says whose held-out films a backbone has seen from this record: the shipped one's is the Mass-Training patients'."""
    from mammofuse.data import load_dataset
    from mammofuse.data.sample import patient_digest
    from mammofuse.training.pretrain import pretraining_patients

    training = [s for s in load_dataset("cbis-ddsm", cbis_csv, [cbis_800], "mass") if s.split == "train" and s.image_path]
    assert pretraining_patients("cbis-texture-cnn4") == {patient_digest(s.patient_id) for s in training}


def test_a_mask_rewritten_in_place_is_read_again(tmp_path: Path) -> None:
    """Was: a ROI mask's region was cached by its path for the life of the process (a notebook kept open)."""
    import os

    from mammofuse.inference import mask_region

    path = tmp_path / "mask.png"
    for top, stamp in ((10, 1_000_000_000), (60, 2_000_000_000)):
        mask = np.zeros((100, 100), np.uint8)
        mask[top:top + 10, 10:20] = 255
        Image.fromarray(mask).save(path)
        os.utime(path, ns=(stamp, stamp))
        assert mask_region(str(path)) == pytest.approx((top + 5.0, 15.0, 5.0))
