"""mini-MIAS: 322 films, 123 abnormalities (69 benign, 54 malignant), 1024x1024 PNG or PGM."""

from __future__ import annotations

import re
from pathlib import Path

from mammofuse.clinical import load_schema
from mammofuse.clinical.schema import DEFAULT_VOCABULARY
from mammofuse.data.sample import Sample
from mammofuse.errors import MammofuseError, reading

SIZE = 1024  # mini-MIAS films are 1024x1024; Y is measured from the bottom edge
_REFNUM = re.compile(r"mdb[0-9]+")


def _find_image(images: Path, refnum: str) -> str | None:
    for suffix in (".png", ".pgm", ".PNG", ".PGM"):
        candidate = images / f"{refnum}{suffix}"
        if candidate.is_file():
            return str(candidate)
    return None


def patient_of(refnum: str) -> str:
    """Films come in pairs (mdb001+mdb002 are one patient)."""
    return f"mias_{(int(refnum[3:]) + 1) // 2:03d}"


def side_of(refnum: str) -> str:
    """``L`` or ``R``: Info.txt gives even film numbers to left breasts and odd ones to right breasts."""
    return "R" if int(refnum[3:]) % 2 else "L"


def load_mini_mias(data: str | Path) -> list[Sample]:
    """One sample per abnormality row of ``Info.txt`` with a severity (B or M); normal films are left out."""
    data = Path(data)
    info = data / "Info.txt"
    if not info.is_file():
        raise MammofuseError(f"{data}: no Info.txt here (expected the mini-MIAS folder with Info.txt and images/)")
    mapping = load_schema(DEFAULT_VOCABULARY).extra["mini_mias"]
    images = data / "images" if (data / "images").is_dir() else data
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    with reading(info):  # no permission
        lines = info.read_text(encoding="latin-1").splitlines()
    for n, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or not parts[0].startswith("mdb") or len(parts) < 3:
            continue
        refnum, tissue, klass = parts[0], parts[1], parts[2]
        if not _REFNUM.fullmatch(refnum):
            raise MammofuseError(f"{info}:{n}: film {refnum[:40]!r} is not 'mdb' and its number (e.g. mdb001)")
        severity = parts[3] if len(parts) > 3 and parts[3] in {"B", "M"} else None
        if klass == "NORM" or severity is None:
            continue
        region = None
        if len(parts) >= 7 and all(p.isdigit() for p in parts[4:7]):
            x, y, radius = (float(p) for p in parts[4:7])
            region = (SIZE - y, x, radius)
        clinical = {**mapping["tissue"].get(tissue, {}), **mapping["class"].get(klass, {})}
        seen[refnum] = seen.get(refnum, 0) + 1
        samples.append(
            Sample(
                id=f"{refnum}_{seen[refnum]}",
                patient_id=patient_of(refnum),
                label=int(severity == "M"),
                clinical={k: str(v) for k, v in clinical.items()},
                image_path=_find_image(images, refnum),
                region=region,
                image_id=refnum,
                abnormality="calc" if klass == "CALC" else "mass",
                split="all",
            )
        )
    if not samples:
        raise MammofuseError(f"{info}: no abnormality rows found")
    return samples
