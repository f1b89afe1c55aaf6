"""Dataset adapters by name, and their summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mammofuse.data.cbis_ddsm import load_cbis_ddsm
from mammofuse.data.manifest import load_manifest
from mammofuse.data.mini_mias import load_mini_mias
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError

DATASETS: dict[str, Callable[..., list[Sample]]] = {
    "cbis-ddsm": lambda data, images=None: load_cbis_ddsm(data, images),
    "mini-mias": lambda data, images=None: load_mini_mias(data),
    "manifest": lambda data, images=None: load_manifest(data),
}


def load_dataset(name: str, data: str | Path, images: str | Path | None = None) -> list[Sample]:
    """All samples of a dataset (every split it has)."""
    if name not in DATASETS:
        raise MammofuseError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if not Path(data).exists():
        raise MammofuseError(f"{data}: data folder not found")
    return DATASETS[name](data, images)


def summarize(name: str, samples: list[Sample]) -> dict[str, Any]:
    """Counts per split: lesions, malignant, benign, patients, images (films with a file found)."""
    splits: dict[str, Any] = {}
    for split in sorted({s.split for s in samples}):
        part = [s for s in samples if s.split == split]
        malignant = sum(s.label for s in part)
        splits[split] = {
            "lesions": len(part),
            "malignant": malignant,
            "benign": len(part) - malignant,
            "patients": len({s.patient_id for s in part}),
            "images": len({s.image_path for s in part if s.image_path}),
        }
    return {"dataset": name, "splits": splits}
