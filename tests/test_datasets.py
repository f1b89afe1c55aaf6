"""Dataset adapters on the real shared data, and patient-grouped splits."""

import csv

import numpy as np
import pytest

from mammofuse.data import kfold_splits, load_dataset, summarize, train_val_split
from mammofuse.errors import MammofuseError
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


def test_cbis_ddsm_finds_images_by_uid_not_by_csv_path(cbis_csv, dicom_root):
    samples = [s for s in load_dataset("cbis-ddsm", cbis_csv, dicom_root) if s.split == "test"]
    assert all(s.image_path for s in samples)
    for s in samples:
        info = read_mammogram(s.image_path).info
        assert info.patient_id == s.image_id  # e.g. Mass-Test_P_00173_LEFT_CC
    assert summarize("cbis-ddsm", samples)["splits"]["test"]["images"] == 8


def test_cbis_ddsm_index_is_cached_per_user_not_beside_the_data(cbis_csv, dicom_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMOFUSE_CACHE", str(tmp_path))
    load_dataset("cbis-ddsm", cbis_csv, dicom_root)
    assert list((tmp_path / "index").glob("cbis-*.json"))


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


def test_manifest_rejects_bad_labels(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label,patient_id\na.png,maybe,p1\n")
    with pytest.raises(MammofuseError, match="manifest.csv:2"):
        load_dataset("manifest", tmp_path)


def test_manifest_names_the_line_of_an_unknown_clinical_value(tmp_path):
    """The value was refused only when training encoded it, naming neither the file nor the line."""
    (tmp_path / "manifest.csv").write_text("path,label,patient_id,margin\na.png,1,p1,spiculated\nb.png,0,p2,wavy\n")
    with pytest.raises(MammofuseError, match=r"manifest.csv:3: unknown mass margins 'wavy' \(valid: "):
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
