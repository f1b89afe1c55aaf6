"""mini-MIAS: 322 films, 123 abnormalities (69 benign, 54 malignant), 1024x1024 PNG or PGM."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from mammofuse.clinical import load_schema
from mammofuse.clinical.schema import DEFAULT_VOCABULARY
from mammofuse.data.sample import Sample
from mammofuse.errors import DatasetWarning, MammofuseError, reading

SIZE = 1024  # mini-MIAS films are 1024x1024; Y is measured from the bottom edge
_REFNUM = re.compile(r"mdb[0-9]+")
# Kinds of Info.txt problems, each warned of once with its lines
_BAD_SEVERITY = "severity not B or M: row(s) left out"
_BAD_TISSUE = "background tissue not {tissue}: density not recorded"
_BAD_CLASS = "abnormality class not {classes}: its findings not recorded"
_BAD_CIRCLE = "coordinates not three whole numbers (x, y, radius): no lesion circle"


def _find_image(images: Path, refnum: str) -> str | None:
    for suffix in (".png", ".pgm", ".PNG", ".PGM"):
        candidate = images / f"{refnum}{suffix}"
        with reading(candidate):  # a folder that cannot be searched
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
    """One sample per abnormality row of ``Info.txt`` with a severity (B or M); normal films are left out.

    A row with another severity is left out, and an unknown tissue or class code or coordinates that are not three
    whole numbers leave the case without that density, those findings or its circle: one :class:`DatasetWarning`
    per kind of problem names their lines.
    """
    data = Path(data)
    info = data / "Info.txt"
    with reading(info):  # a folder that cannot be searched
        found = info.is_file()
    if not found:
        raise MammofuseError(f"{data}: no Info.txt here (expected the mini-MIAS folder with Info.txt and images/)")
    mapping = load_schema(DEFAULT_VOCABULARY).extra["mini_mias"]
    images = data / "images" if (data / "images").is_dir() else data
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    problems: dict[str, list[int]] = {}
    with reading(info):  # no permission
        lines = info.read_text(encoding="latin-1").splitlines()
    for n, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or not parts[0].startswith("mdb") or len(parts) < 3:
            continue
        refnum, tissue, klass = parts[0], parts[1], parts[2]
        if not _REFNUM.fullmatch(refnum):
            raise MammofuseError(f"{info}:{n}: film {refnum[:40]!r} is not 'mdb' and its number (e.g. mdb001)")
        if klass == "NORM":
            continue
        severity = parts[3] if len(parts) > 3 else None
        if severity not in {"B", "M"}:
            problems.setdefault(_BAD_SEVERITY, []).append(n)
            continue
        for kind, known in ((_BAD_TISSUE, tissue in mapping["tissue"]), (_BAD_CLASS, klass in mapping["class"])):
            if not known:
                problems.setdefault(kind, []).append(n)
        region, readable = _region(parts[4:])
        if not readable:
            problems.setdefault(_BAD_CIRCLE, []).append(n)
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
    _warn(info, problems, mapping)
    if not samples:
        raise MammofuseError(f"{info}: no abnormality rows found")
    return samples


def _region(cells: list[str]) -> tuple[tuple[float, float, float] | None, bool]:
    """(the lesion circle (row, column, radius) of the coordinate cells, whether they read): none given, or
    Info.txt's ``*NOTE 3*`` (scattered calcifications, no centre), is no circle and no problem."""
    if not cells or cells[0].startswith("*"):
        return None, True
    if len(cells) < 3 or not all(c.isdigit() for c in cells[:3]):
        return None, False
    x, y, radius = (float(c) for c in cells[:3])
    return (SIZE - y, x, radius), True


def _warn(info: Path, problems: dict[str, list[int]], mapping: dict[str, Any]) -> None:
    """One DatasetWarning per kind of problem, naming its lines (the first ten, and how many in all)."""
    codes = {"tissue": ", ".join(mapping["tissue"]), "classes": ", ".join([*mapping["class"], "NORM"])}
    for kind, lines in problems.items():
        shown = ", ".join(map(str, lines[:10])) + (f" ... ({len(lines)} in all)" if len(lines) > 10 else "")
        warnings.warn(f"{info}: line(s) {shown}: {kind.format(**codes)}", DatasetWarning, stacklevel=3)
