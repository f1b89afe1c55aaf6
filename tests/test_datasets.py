"""Dataset adapters on the real shared data, and patient-grouped splits."""

import csv
import os
import re

import numpy as np
import pytest
from dicom_factory import breast_phantom, write_dicom

from mammofuse.data import kfold_splits, load_dataset, summarize, train_val_split
from mammofuse.data.cbis_ddsm import ImageIndex
from mammofuse.data.sample import Sample
from mammofuse.errors import DatasetWarning, MammofuseError
from mammofuse.imaging import read_mammogram


def test_cbis_ddsm_counts_match_the_official_csvs(cbis_csv):
    summary = summarize("cbis-ddsm", load_dataset("cbis-ddsm", cbis_csv))
    train, test = summary["splits"]["train"], summary["splits"]["test"]
    assert (train["lesions"], train["malignant"], train["benign"]) == (2864, 1181, 1683)
    assert (test["lesions"], test["malignant"], test["patients"]) == (10, 2, 2)


def test_cbis_ddsm_quirks_are_handled(cbis_csv):
    samples = load_dataset("cbis-ddsm", cbis_csv)
    calc = [s for s in samples if s.abnormality == "calc"]
    assert len(calc) == 1546 and all("density" in s.clinical for s in calc)  # 'breast density' with a space
    first = next(s for s in samples if s.id == "Mass-Training_P_00001_LEFT_CC_1")
    assert first.label == 1 and first.clinical["shape"] == "IRREGULAR-ARCHITECTURAL_DISTORTION"
    # BENIGN_WITHOUT_CALLBACK is benign
    with open(cbis_csv / "calc_case_description_train_set.csv", newline="") as fh:
        bwc = sum(r["pathology"] == "BENIGN_WITHOUT_CALLBACK" for r in csv.DictReader(fh))
    assert bwc > 0 and sum(s.label for s in calc) == 544


def test_cbis_ddsm_warns_once_of_columns_it_does_not_read(cbis_csv, tmp_path):
    """Was: ``mass.shape`` and ``mass.margins`` for the official ``mass shape`` and ``mass margins`` were left out without a
    word, and every mass was scored on its breast density alone (AUC 1.0 -> 0.06 on the ten test rows)."""
    import warnings

    renamed = tmp_path / "mass_case_description_test_set.csv"
    renamed.write_bytes((cbis_csv / renamed.name).read_bytes().replace(b"mass shape,mass margins", b"mass.shape,mass.margins", 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = load_dataset("cbis-ddsm", tmp_path)
    assert [str(w.message) for w in caught] == [
        f"{renamed}: column(s) not read: mass.shape (did you mean mass_shape?), mass.margins (did you mean mass_margins?); "
        "no mass_shape or mass_margins column: its lesions have no finding but the breast density"
    ]
    assert len(samples) == 10 and all(set(s.clinical) == {"density"} for s in samples)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the official CSVs' columns left alone (abnormality type, assessment, subtlety) are no problem
        assert len(load_dataset("cbis-ddsm", cbis_csv)) == 2874


def test_a_required_cbis_ddsm_column_spelt_otherwise_is_named_with_its_spelling(cbis_csv, tmp_path):
    """Was "missing column(s) patient_id, left_or_right_breast" with no word of the ``patient.id`` and
    ``left-or-right-breast`` columns the file has."""
    renamed = tmp_path / "mass_case_description_test_set.csv"
    header, rest = (cbis_csv / renamed.name).read_bytes().split(b"\n", 1)
    renamed.write_bytes(header.replace(b"patient_id", b"patient.id").replace(b"left or right breast", b"left-or-right-breast") + b"\n" + rest)
    with pytest.raises(MammofuseError) as raised:
        load_dataset("cbis-ddsm", tmp_path)
    assert str(raised.value) == (f"{renamed}: missing column(s) patient_id (did you mean patient.id?), "
                                 "left_or_right_breast (did you mean left-or-right-breast?)")


@pytest.mark.parametrize("damage", ['{"broken', "{}", "[1]", '[{"path": "x"}]', '[{"path": "x", "pixels": "many"}]', "[" * 100_000, b"\xff"])
def test_a_damaged_cbis_ddsm_index_cache_is_made_again(damage, cbis_csv, dicom_root, tmp_path, monkeypatch):
    """A truncated cache file crashed every later load with JSONDecodeError or KeyError (exit 4)."""
    monkeypatch.setenv("MAMMOFUSE_CACHE", str(tmp_path))
    expected = [s.image_path for s in load_dataset("cbis-ddsm", cbis_csv, dicom_root)]
    [cached] = (tmp_path / "index").glob("cbis-*.json")
    good = cached.read_text()
    cached.write_bytes(damage if isinstance(damage, bytes) else damage.encode())
    assert [s.image_path for s in load_dataset("cbis-ddsm", cbis_csv, dicom_root)] == expected
    assert cached.read_text() == good


def test_cbis_ddsm_finds_images_by_uid_not_by_csv_path(cbis_csv, dicom_root):
    samples = [s for s in load_dataset("cbis-ddsm", cbis_csv, dicom_root) if s.split == "test"]
    assert all(s.image_path for s in samples)
    for s in samples:
        info = read_mammogram(s.image_path).info
        assert info.patient_id == s.image_id  # e.g. Mass-Test_P_00173_LEFT_CC
    assert summarize("cbis-ddsm", samples)["splits"]["test"]["images"] == 8


@pytest.mark.parametrize(("env", "cache"), [({"MAMMOFUSE_CACHE": "mine"}, "mine"), ({"XDG_CACHE_HOME": "xdg"}, "xdg/mammofuse"),
                                          ({"HOME": "home"}, "home/.cache/mammofuse")])  # the README's order
def test_cbis_ddsm_index_is_cached_per_user_not_beside_the_data(env, cache, cbis_subset, dicom_root, tmp_path, monkeypatch):
    images = tmp_path / "images"  # the real DICOMs, linked into a folder that can be written to
    for dicom in dicom_root.rglob("*.dcm"):
        (images / dicom.parent.name).mkdir(parents=True, exist_ok=True)
        (images / dicom.parent.name / dicom.name).symlink_to(dicom)
    before = sorted(images.rglob("*")) + sorted(cbis_subset.rglob("*"))
    for name in ("MAMMOFUSE_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value))
    load_dataset("cbis-ddsm", cbis_subset, images)
    assert list((tmp_path / cache / "index").glob("cbis-*.json"))
    assert sorted(images.rglob("*")) + sorted(cbis_subset.rglob("*")) == before


def test_mini_mias_counts(mini_mias):
    summary = summarize("mini-mias", load_dataset("mini-mias", mini_mias))
    assert summary["splits"]["all"] == {"lesions": 123, "malignant": 54, "benign": 69, "patients": 108, "images": 115}


def test_mini_mias_pairs_films_into_patients_and_maps_tissue_and_class(mini_mias):
    samples = {s.id: s for s in load_dataset("mini-mias", mini_mias)}
    assert samples["mdb001_1"].patient_id == samples["mdb002_1"].patient_id
    assert samples["mdb001_1"].clinical == {"density": "2", "shape": "ROUND", "margin": "CIRCUMSCRIBED"}
    assert samples["mdb005_2"].region == (1024 - 168, 500, 26)  # second lesion on the same film
    assert samples["mdb059_1"].region is None  # a row without coordinates


def test_mini_mias_films_are_breasts_even_left_odd_right(mini_mias):
    from mammofuse.evaluation.aggregate import breast_of_sample

    samples = {s.id: s for s in load_dataset("mini-mias", mini_mias)}
    assert breast_of_sample(samples["mdb001_1"]) == "mias_001/R" and breast_of_sample(samples["mdb002_1"]) == "mias_001/L"
    assert breast_of_sample(samples["mdb005_1"]) == breast_of_sample(samples["mdb005_2"])  # two lesions of one film


@pytest.mark.parametrize("refnum", ["mdbabc", "mdb", "mdb1x"])
def test_mini_mias_names_a_film_number_that_is_not_one(refnum, tmp_path):
    """``mdbabc G CIRC B 535 425 197`` crashed on int('abc') (exit 4)."""
    (tmp_path / "Info.txt").write_text(f"header\nmdb001 G CIRC B 535 425 197\n{refnum} G CIRC B 535 425 197\n")
    with pytest.raises(MammofuseError, match=f"Info.txt:3: film '{refnum}' is not 'mdb' and its number .e.g. mdb001.$"):
        load_dataset("mini-mias", tmp_path)


@pytest.mark.parametrize("refnum", ["mdb001", "mdb023", "mdb028", "mdb058", "mdb315"])
def test_mini_mias_lesion_centre_lies_on_breast_tissue(mini_mias, refnum):
    sample = next(s for s in load_dataset("mini-mias", mini_mias) if s.image_id == refnum)
    pixels = read_mammogram(sample.image_path, canonical=False).pixels
    row, col, _ = sample.region
    patch = pixels[int(row) - 5 : int(row) + 6, int(col) - 5 : int(col) + 6]
    background = np.median(pixels[pixels < 0.05]) if (pixels < 0.05).any() else 0.0
    assert patch.mean() > 0.25 > background  # tissue, not the dark background
    # with the origin wrongly taken at the top-left the same test fails for most rows
    flipped = pixels[1024 - int(row) - 5 : 1024 - int(row) + 6, int(col) - 5 : int(col) + 6]
    assert not np.isclose(flipped.mean(), patch.mean())


def test_mini_mias_warns_of_rows_and_values_it_cannot_use_once_per_kind_naming_their_lines(mini_mias, tmp_path):
    """A bad severity dropped the row, and an unknown code or coordinates left the case without them, without a word."""
    import warnings

    rows = ["mdb001 G CIRC B 535 425 197", "mdb002 G CIRC X 535 425 197", "mdb003 Q SPIC M 1 2 3", "mdb004 G BLOB B 1 2 3",
            "mdb005 G CIRC B a b c", "mdb006 G CALC M *NOTE 3*", "mdb007 F CIRC B", "mdb008 G NORM",
            *(f"mdb{n:03d} G CIRC Z" for n in range(10, 22))]
    (tmp_path / "Info.txt").write_text("header\n" + "\n".join(rows) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = {s.id: s for s in load_dataset("mini-mias", tmp_path)}
    info = tmp_path / "Info.txt"
    assert [str(w.message) for w in caught] == [
        f"{info}: line(s) 3, 10, 11, 12, 13, 14, 15, 16, 17, 18 ... (13 in all): severity not B or M: row(s) left out",
        f"{info}: line(s) 4: background tissue not F, G, D: density not recorded",
        f"{info}: line(s) 5: abnormality class not CIRC, SPIC, MISC, ARCH, ASYM, CALC, NORM: its findings not recorded",
        f"{info}: line(s) 6: coordinates not three whole numbers (x, y, radius): no lesion circle",
    ]
    assert all(issubclass(w.category, DatasetWarning) for w in caught)
    assert sorted(samples) == ["mdb001_1", "mdb003_1", "mdb004_1", "mdb005_1", "mdb006_1", "mdb007_1"]
    assert samples["mdb003_1"].clinical == {"margin": "SPICULATED"} and samples["mdb005_1"].region is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real Info.txt: its *NOTE 3* rows and the one without coordinates are no problem
        assert len(load_dataset("mini-mias", mini_mias)) == 123


def test_manifest(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "manifest.csv").write_text(
        "path,label,patient_id,breast_density,mass margins\n"
        "a.png,malignant,p1,3,SPICULATED\n"
        ",0,p2,,\n"
    )
    samples = load_dataset("manifest", tmp_path)
    assert [s.label for s in samples] == [1, 0]
    assert samples[0].clinical == {"density": "3", "margin": "SPICULATED"}
    assert samples[1].image_path is None


def test_a_manifest_separated_by_semicolons_is_refused_without_a_note_on_its_columns(tmp_path):
    """Was "column(s) not read: path;label;patient_id (did you mean patient_id?)" before the error."""
    import warnings

    (tmp_path / "manifest.csv").write_text("path;label;patient_id\na.png;1;p1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(MammofuseError, match="the header seems to use semicolons"):
            load_dataset("manifest", tmp_path)


def test_manifest_rejects_bad_labels(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label,patient_id\na.png,maybe,p1\n")
    with pytest.raises(MammofuseError, match="manifest.csv:2"):
        load_dataset("manifest", tmp_path)


def test_manifest_names_the_line_of_an_unknown_clinical_value(tmp_path):
    """The value was refused only when training encoded it, naming neither the file nor the line."""
    (tmp_path / "manifest.csv").write_text("path,label,patient_id,margin\na.png,1,p1,spiculated\nb.png,0,p2,wavy\n")
    with pytest.raises(MammofuseError, match=r"manifest.csv:3: unknown mass margins 'wavy' \(valid: "):
        load_dataset("manifest", tmp_path)


@pytest.mark.parametrize(("rows", "message"), [
    ("a.png,1\n", r"manifest.csv:2: no patient_id cell: the row has fewer cells"),  # was a KeyError, an internal error
    ("a.png\n", r"manifest.csv:2: no label or patient_id cell"),
    ("a.png,,p1\n", r"manifest.csv:2: label is empty"),
    ("a.png,1,p1\nb.png,0,\n", r"manifest.csv:3: patient_id is empty: every row needs its patient"),  # was one patient ''
])
def test_manifest_refuses_a_short_row_and_an_empty_label_or_patient(tmp_path, rows, message):
    (tmp_path / "manifest.csv").write_text("path,label,patient_id\n" + rows)
    with pytest.raises(MammofuseError, match=message):
        load_dataset("manifest", tmp_path)


def test_manifest_refuses_a_row_with_more_cells_than_the_header(tmp_path):
    """An unquoted comma in a compound finding silently dropped its last term; a trailing comma is still read."""
    (tmp_path / "manifest.csv").write_text("path,label,patient_id,margin\na.png,1,p1,ill_defined,spiculated\n")
    with pytest.raises(MammofuseError, match=r"manifest.csv: line 2 has 5 cells, the header has 4; quote a value that holds a comma$"):
        load_dataset("manifest", tmp_path)
    (tmp_path / "manifest.csv").write_text('path,label,patient_id,margin\na.png,1,p1,"ill_defined,spiculated",\n')
    [sample] = load_dataset("manifest", tmp_path)
    assert sample.clinical == {"margin": "ill_defined,spiculated"}


def test_manifest_allows_an_empty_path_and_short_optional_cells(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label,patient_id,split,abnormality\n,1,p1\n")
    [sample] = load_dataset("manifest", tmp_path)
    assert (sample.image_path, sample.patient_id, sample.split, sample.abnormality) == (None, "p1", "all", None)


def test_manifest_refuses_two_columns_for_one_clinical_field(tmp_path):
    """The last of mass shape and shape silently won."""
    (tmp_path / "manifest.csv").write_text("path,label,patient_id,mass shape,shape\na.png,1,p1,oval,round\n")
    with pytest.raises(MammofuseError, match=r"manifest.csv: columns 'mass shape' and 'shape' both give shape; keep one"):
        load_dataset("manifest", tmp_path)


def test_manifest_normalises_abnormality_in_any_case(tmp_path):
    """``Mass`` and ``calcification`` were kept as written, so --abnormality mass|calc left them out."""
    kinds = ["Mass", "mass", "MASS", "calc", "Calcification", "CALC", ""]
    rows = [f"a{k}.png,{k % 2},p{k},{kind}" for k, kind in enumerate(kinds)]
    (tmp_path / "manifest.csv").write_text("path,label,patient_id,abnormality\n" + "\n".join(rows) + "\n")
    assert [s.abnormality for s in load_dataset("manifest", tmp_path)] == ["mass"] * 3 + ["calc"] * 3 + [None]
    assert len(load_dataset("manifest", tmp_path, abnormality="mass")) == 3
    assert len(load_dataset("manifest", tmp_path, abnormality="calc")) == 3


def test_manifest_refuses_an_unknown_abnormality(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label,patient_id,abnormality\na.png,1,p1,mass\nb.png,0,p2,cyst\n")
    with pytest.raises(MammofuseError, match=r"manifest.csv:3: abnormality 'cyst' is not mass, calc or calcification"):
        load_dataset("manifest", tmp_path)


def test_manifest_refuses_an_image_given_to_two_patients(tmp_path):
    """Patient-grouped splits keep a patient's rows together: an image under two patients could sit on both sides."""
    (tmp_path / "m.csv").write_text("path,label,patient_id\na.png,1,P1\na.png,0,P1\nb.png,0,P2\na.png,1,P3\n")
    with pytest.raises(MammofuseError, match=r"m.csv:5: image 'a.png' belongs to patient 'P1' on line 2, not 'P3'"):
        load_dataset("manifest", tmp_path / "m.csv")


@pytest.mark.parametrize("spelling", ["./a.png", "sub/../a.png", "{root}/a.png", "sub//../a.png"])
def test_manifest_refuses_an_image_given_to_two_patients_under_another_spelling(spelling: str, tmp_path):
    """The check compared the cells as written, so ``./a.png`` under another patient got through."""
    other = spelling.format(root=tmp_path)
    (tmp_path / "m.csv").write_text(f"path,label,patient_id\na.png,1,P1\n{other},0,P2\n")
    with pytest.raises(MammofuseError, match=f"m.csv:3: image '{re.escape(other)}' belongs to patient 'P1' on line 2, not 'P2'"):
        load_dataset("manifest", tmp_path / "m.csv")


def test_manifest_refuses_an_image_given_to_two_patients_through_a_link(tmp_path):
    """The check compared absolute paths, so a symbolic link to an image under another patient got through."""
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "link.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label,patient_id\na.png,1,P1\nlink.png,0,P2\n")
    with pytest.raises(MammofuseError, match=r"m.csv:3: image 'link.png' belongs to patient 'P1' on line 2, not 'P2'"):
        load_dataset("manifest", tmp_path / "m.csv")


def test_manifest_refuses_a_lesion_given_twice_and_warns_of_a_repeated_row(tmp_path):
    """Both loaded without a word; the same image and circle with two labels trained on both."""
    head = "path,label,patient_id,margin,roi_row,roi_col,roi_radius\n"
    (tmp_path / "m.csv").write_text(head + "a.png,1,P1,spiculated,10,20,5\nb.png,0,P2,,,,\na.png,0,P1,,10,20,5\n")
    with pytest.raises(MammofuseError, match=r"m.csv:4: the lesion of line 2 again \(the same image and circle\): give each lesion once$"):
        load_dataset("manifest", tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text(head + "a.png,1,P1,spiculated,,,\nb.png,0,P2,,,,\na.png,1,P1,spiculated,,,\n,0,P3,,,,\n,0,P3,,,,\n")
    with pytest.warns(DatasetWarning, match=r"m.csv: line\(s\) 4 \(of 2\), 6 \(of 5\) repeat an earlier row: each counts as a case of its own"):
        assert len(load_dataset("manifest", tmp_path / "m.csv")) == 5


def test_manifest_names_the_columns_it_does_not_read(tmp_path):
    """A misspelt finding (``densty``) was dropped without a word."""
    (tmp_path / "m.csv").write_text("path,label,patient_id,densty,margins,Assessment,notes\na.png,1,P1,2,spiculated,5,x\nb.png,0,P2,3,oval,2,y\n")
    with pytest.warns(DatasetWarning) as caught:
        samples = load_dataset("manifest", tmp_path / "m.csv")
    assert [str(w.message) for w in caught] == [f"{tmp_path / 'm.csv'}: column(s) not read: densty (did you mean density?), "
                                                "margins (did you mean margin?), assessment (never an input: it would give the label away), notes"]
    assert samples[0].clinical == {}


def test_manifest_splits_are_read_in_any_case_and_train_never_takes_a_test_split_by_default(tmp_path):
    """``Train``/``Test`` were not the train split, so train took every row, the test rows too."""
    from mammofuse.cli.train_cmd import load_training_samples
    from mammofuse.evaluation.evaluate import select_split
    from mammofuse.training import TrainSettings

    rows = "".join(f"a{i}.png,{i % 2},P{i},{split}\n" for i, split in enumerate(["Train", "TRAIN ", "train"] * 4 + ["Test", "Dev"] * 3))
    (tmp_path / "m.csv").write_text("path,label,patient_id,split\n" + rows)
    samples = load_dataset("manifest", tmp_path / "m.csv")
    assert sorted({s.split for s in samples}) == ["dev", "test", "train"]
    assert len(select_split(samples, "Test")) == 3
    settings = TrainSettings(dataset="manifest", fusion="clinical", val_fraction=0.25)
    train, val, split = load_training_samples(settings, tmp_path / "m.csv", None, None)
    assert split == "train" and len(train) + len(val) == 12
    (tmp_path / "m.csv").write_text("path,label,patient_id,split\n" + re.sub("(?i)train", "Tune", rows))
    with pytest.raises(MammofuseError, match=r"m.csv: its splits are dev, test, tune, none of them 'train': choose one with --split"):
        load_training_samples(settings, tmp_path / "m.csv", None, None)


def test_a_dataset_without_cases_or_without_the_chosen_lesion_type_says_so(tmp_path):
    """An empty manifest or one without the --abnormality asked for said '0 patient(s)' or 'no test split'."""
    (tmp_path / "m.csv").write_text("path,label,patient_id,abnormality\n")
    with pytest.raises(MammofuseError, match=r"m.csv: no cases in this manifest data$"):
        load_dataset("manifest", tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("path,label,patient_id,abnormality\na.png,1,P1,mass\nb.png,0,P2,\n")
    with pytest.raises(MammofuseError, match=r"m.csv: none of its 2 cases is a calc lesion \(their abnormality: mass, none given\)"):
        load_dataset("manifest", tmp_path / "m.csv", abnormality="calc")


def test_summary_counts_the_image_files_found(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,label,patient_id\na.png,1,P1\nmissing.png,0,P2\n")
    assert summarize("manifest", load_dataset("manifest", tmp_path / "m.csv"))["splits"]["all"]["images"] == 1


def test_too_few_cases_of_a_class_for_the_folds_is_said_in_counts():
    """scikit-learn's 'n_splits=5 cannot be greater than the number of members in each class' came through as it was."""
    samples = [Sample(id=f"c{i}", patient_id=f"P{i}", label=int(i < 3)) for i in range(7)]
    with pytest.raises(MammofuseError, match=r"^5 patient-grouped stratified folds need at least 5 cases of one class; the data has 3 "
                                             r"malignant and 4 benign: make fewer folds"):
        kfold_splits(samples, 5, 0)
    assert len(kfold_splits(samples + [Sample(id="c7", patient_id="P7", label=0)], 5, 0)) == 5  # 5 benign: uneven folds, as before


def test_too_few_cases_of_a_class_for_a_validation_part_asks_for_what_the_val_fraction_can_give() -> None:
    """Was: --val-fraction 0.5 on two patients said "make fewer folds (--folds, or a larger --val-fraction)": 0.5 is the
    largest, and train has no --folds."""
    two = [Sample(id=f"c{i}", patient_id=f"P{i}", label=i) for i in range(2)]
    with pytest.raises(MammofuseError, match=r"the data has 1 malignant and 1 benign: give more cases, or --val-fraction 0 \(no validation part\)$"):
        train_val_split(two, 0.5, 0)
    with pytest.raises(MammofuseError, match=r"the data has 1 malignant and 4 benign: give a larger --val-fraction \(0.5 at most\)$"):
        train_val_split([*two, *(Sample(id=f"c{i}", patient_id=f"P{i}", label=0) for i in range(2, 5))], 0.2, 0)


def test_manifest_reads_a_lesion_circle(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label,patient_id,roi_row,roi_col,roi_radius\na.png,1,p1,10,20.5,3\nb.png,0,p2,,,\n")
    assert [s.region for s in load_dataset("manifest", tmp_path)] == [(10.0, 20.5, 3.0), None]


@pytest.mark.parametrize(("circle", "message"), [
    ("10,20,", r"manifest.csv:2: roi_radius is empty: a lesion circle needs roi_row, roi_col and roi_radius \(or none of them\)"),
    (",,5", r"manifest.csv:2: roi_row and roi_col are empty"),  # a partial circle was dropped without a word
    ("10,x,5", r"manifest.csv:2: roi_col 'x': roi_row, roi_col and roi_radius must be finite numbers of pixels"),
    ("nan,20,5", r"manifest.csv:2: roi_row 'nan': roi_row, roi_col and roi_radius must be finite"),
    ("10,20,inf", r"manifest.csv:2: roi_radius 'inf': .* must be finite"),
    ("10,20,0", r"manifest.csv:2: roi_radius '0': .* roi_radius in \(0, 1e6\)$"),
    ("10,20,-4", r"manifest.csv:2: roi_radius '-4': .* roi_radius in \(0, 1e6\)$"),
    ("-5,20,4", r"manifest.csv:2: roi_row '-5': .* roi_row and roi_col in \[0, 1e6\)"),  # was taken: a centre above the image
    ("5,-0.5,4", r"manifest.csv:2: roi_col '-0.5': .* roi_row and roi_col in \[0, 1e6\)"),
    ("5,20,1e6", r"manifest.csv:2: roi_radius '1e6': .* roi_radius in \(0, 1e6\)$"),  # as --roi caps it
])
def test_manifest_refuses_a_partial_or_bad_lesion_circle(tmp_path, circle, message):
    (tmp_path / "manifest.csv").write_text(f"path,label,patient_id,roi_row,roi_col,roi_radius\na.png,1,p1,{circle}\n")
    with pytest.raises(MammofuseError, match=message):
        load_dataset("manifest", tmp_path)


def test_unknown_dataset_and_missing_folder_are_clear_errors(tmp_path):
    with pytest.raises(MammofuseError, match="unknown dataset"):
        load_dataset("ddsm", tmp_path)
    with pytest.raises(MammofuseError, match="no CBIS-DDSM"):
        load_dataset("cbis-ddsm", tmp_path)


def _no_shared_patients(a, b):
    return not ({s.patient_id for s in a} & {s.patient_id for s in b})


def test_validation_split_is_grouped_by_patient_and_stratified(cbis_csv):
    train = [s for s in load_dataset("cbis-ddsm", cbis_csv) if s.split == "train"]
    fit, val = train_val_split(train, 0.2, seed=0)
    assert _no_shared_patients(fit, val)
    assert len(fit) + len(val) == len(train)
    assert 0.15 < len(val) / len(train) < 0.25
    rate = lambda xs: sum(s.label for s in xs) / len(xs)  # noqa: E731
    assert abs(rate(fit) - rate(val)) < 0.05


def test_kfold_is_grouped_by_patient_and_covers_every_lesion_once(mini_mias):
    samples = load_dataset("mini-mias", mini_mias)
    folds = kfold_splits(samples, 5, seed=1)
    held = [s.id for _, test in folds for s in test]
    assert sorted(held) == sorted(s.id for s in samples)
    assert all(_no_shared_patients(train, test) for train, test in folds)


def test_the_cbis_ddsm_index_cache_keeps_one_index_per_images_folder(tmp_path, monkeypatch):
    """Each change to a download tree's files wrote one more index and none was ever deleted: the newest one of a
    folder is kept now, other folders' indexes stay, and those named as before (never read again) go."""
    monkeypatch.setenv("MAMMOFUSE_CACHE", str(tmp_path / "cache"))
    roots = [tmp_path / "tcia-a", tmp_path / "tcia-b"]
    for root in roots:
        (root / "Mass-Training_P_00001_LEFT_CC").mkdir(parents=True)
        write_dicom(root / "Mass-Training_P_00001_LEFT_CC" / "1-1.dcm", breast_phantom())
    index = tmp_path / "cache" / "index"
    index.mkdir(parents=True)
    legacy = index / "cbis-0123456789abcdef0123.json"  # as an earlier version named its indexes
    legacy.write_text("[]")
    ImageIndex.build(roots[1])
    [other] = set(index.glob("cbis-*.json")) - {legacy}
    for k in range(3):
        dicom = roots[0] / "Mass-Training_P_00001_LEFT_CC" / "1-1.dcm"
        os.utime(dicom, ns=(10**18 + k, 10**18 + k))  # a changed file: another index
        assert ImageIndex.build(roots[0]).pixels == {str(dicom): 64 * 48}
        kept = sorted(index.glob("cbis-*.json"))
        assert len(kept) == 2 and other in kept and legacy not in kept, kept
    assert ImageIndex.build(roots[0]).pixels and len(list(index.glob("cbis-*.json"))) == 2  # read back, not written again


def test_the_image_index_warns_once_of_the_folders_it_cannot_list(tmp_path, monkeypatch, refuse_listing):
    """Was: a sub-folder of a DICOM tree that cannot be listed was left out without a word, its films not found."""
    monkeypatch.setenv("MAMMOFUSE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "tcia"
    for name in ("Mass-Training_P_00001_LEFT_CC", "closed-a", "closed-b"):
        (root / name).mkdir(parents=True)
    write_dicom(root / "Mass-Training_P_00001_LEFT_CC" / "1-1.dcm", breast_phantom())
    refuse_listing(root / "closed-a", root / "closed-b")
    with pytest.warns(DatasetWarning) as caught:
        assert len(ImageIndex.build(root).pixels) == 1
    assert [str(w.message) for w in caught] == [f"{root}: 2 folders under it cannot be read, their images left out: "
                                                f"{root / 'closed-a'} (Permission denied), {root / 'closed-b'} (Permission denied)"]
    refuse_listing(root)
    with pytest.raises(MammofuseError, match=f"^{re.escape(str(root))}: cannot read .Permission denied.$"):
        ImageIndex.build(root)


def test_a_dicom_rewritten_with_the_same_size_and_mtime_is_indexed_again(tmp_path, monkeypatch):
    """The index was keyed on each file's mtime alone: a DICOM replaced by another of the same dimensions (`cp -p`,
    `tar -x`) kept the old one's patient and series."""
    import time

    from pydicom import dcmread

    monkeypatch.setenv("MAMMOFUSE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "tcia"
    dicom = root / "Mass-Training_P_00001_LEFT_CC" / "1-1.dcm"
    dicom.parent.mkdir(parents=True)
    write_dicom(dicom, breast_phantom(), PatientID="PATIENT_A")
    assert "PATIENT_A" in ImageIndex.build(root).by_folder
    before = dicom.stat()
    ds = dcmread(dicom)
    ds.PatientID = "PATIENT_B"
    time.sleep(0.05)  # a clock tick, so that the change time can differ
    ds.save_as(dicom)  # in place, as `cp -p` writes
    os.utime(dicom, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (dicom.stat().st_size, dicom.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    index = ImageIndex.build(root).by_folder
    assert "PATIENT_B" in index and "PATIENT_A" not in index


def test_an_images_file_is_said_to_be_a_file_not_a_missing_folder(cbis_csv, tmp_path):
    """Was "images folder not found" for a file that is there."""
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(MammofuseError, match=f"^{re.escape(str(tmp_path / 'a.png'))}: is a file, not an images folder"):
        load_dataset("cbis-ddsm", cbis_csv, images=tmp_path / "a.png", abnormality="mass")
    with pytest.raises(MammofuseError, match="images folder not found"):
        load_dataset("cbis-ddsm", cbis_csv, images=tmp_path / "absent", abnormality="mass")
    with pytest.raises(MammofuseError, match=f"^{re.escape(str(tmp_path / 'a.png'))}: is a file, not an images folder"):
        ImageIndex.build(tmp_path / "a.png")
