"""Dataset adapters by name, and their summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from mammofuse.data.cbis_ddsm import ABNORMALITIES, load_cbis_ddsm
from mammofuse.data.manifest import load_manifest
from mammofuse.data.mini_mias import load_mini_mias
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError, reading
from mammofuse.serial import one_at_a_time

Images = str | Path | Sequence[str | Path] | None

DATASETS: dict[str, Callable[..., list[Sample]]] = {
    "cbis-ddsm": lambda data, images, abnormality, report: load_cbis_ddsm(data, images, abnormality=abnormality, report=report),
    "mini-mias": lambda data, images, abnormality, report: load_mini_mias(data),
    "manifest": lambda data, images, abnormality, report: load_manifest(data),
}


@one_at_a_time
def load_dataset(
    name: str, data: str | Path, images: Images = None, abnormality: str = "all", report: dict[str, Any] | None = None,
) -> list[Sample]:
    """All samples of a dataset (every split it has) of the chosen lesion type (mass, calc or all).

    ``images``: one folder or several (CBIS-DDSM: TCIA DICOM trees or keyed image folders).
    ``report``: filled with how files were matched to rows, where the dataset says.
    """
    if name not in DATASETS:
        raise MammofuseError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if abnormality not in ABNORMALITIES:
        raise MammofuseError(f"abnormality (--abnormality) must be one of {', '.join(ABNORMALITIES)}, not {abnormality!r}")
    with reading(data):  # a name too long
        if not Path(data).exists():
            raise MammofuseError(f"{data}: data folder not found")
    samples = DATASETS[name](data, images or None, abnormality, report)
    if not samples:
        raise MammofuseError(f"{data}: no cases in this {name} data")
    chosen = [s for s in samples if abnormality == "all" or s.abnormality == abnormality]
    if not chosen:
        kinds = ", ".join(sorted({s.abnormality or "none given" for s in samples}))
        raise MammofuseError(f"{data}: none of its {len(samples)} cases is a {abnormality} lesion (their abnormality: {kinds}); "
                             "choose another abnormality (--abnormality)")
    return chosen


def summarize(name: str, samples: list[Sample], report: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts per split: lesions, malignant, benign, patients, images (image files found).

    ``report`` (from :func:`load_dataset`) adds how image files were matched to rows.
    """
    splits: dict[str, Any] = {}
    for split in sorted({s.split for s in samples}):
        part = [s for s in samples if s.split == split]
        malignant = sum(s.label for s in part)
        splits[split] = {
            "lesions": len(part),
            "malignant": malignant,
            "benign": len(part) - malignant,
            "patients": len({s.patient_id for s in part}),
            "images": len({s.image_path for s in part if s.image_path and _is_file(s.image_path)}),
        }
    return {"dataset": name, "splits": splits, **({"matching": report} if report else {})}


def _is_file(path: str) -> bool:
    """Whether ``path`` names a file; False where no file can have that name (a NUL, a name too long)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False
