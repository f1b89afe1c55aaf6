"""CBIS-DDSM full-field images in a plain folder, named by image key, with COCO lesion boxes.

A file is found by its CBIS-DDSM image key: the full one (``Mass-Training_P_00001_LEFT_CC.jpg``,
the first component of the CSV's ``image file path``) or the short one (``00001_LEFT_CC.jpg``:
patient number, breast, view). Lesion boxes come from ``_annotations.coco.json`` in the folder
(``bbox`` = x, y, width, height in the file's pixels); a COCO category named like ``Mass`` or
``Calcification`` says which kind of lesion its boxes are.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mammofuse.errors import MammofuseError, reading
from mammofuse.imaging.reader import IMAGE_SUFFIXES

COCO_NAME = "_annotations.coco.json"
_KEY = re.compile(
    r"^(?:(?P<kind>mass|calc)-(?P<split>training|test)_)?(?:p_)?(?P<patient>\d{5})_(?P<side>left|right)_(?P<view>cc|mlo)$",
    re.I,
)

Box = tuple[float, float, float, float]
"""A lesion box (x, y, width, height) in the file's pixels."""
ShortKey = tuple[str, str, str]
"""(patient, breast, view) of a short image key: ``("P_00016", "LEFT", "CC")``."""


@dataclass
class FolderImage:
    """One image file of a folder and the lesion boxes drawn on it (by abnormality kind)."""

    path: Path
    boxes: dict[str | None, list[Box]] = field(default_factory=dict)
    kinds: frozenset[str | None] = frozenset()
    used: bool = False

    def boxes_for(self, kind: str) -> list[Box] | None:
        """Boxes of lesions of ``kind`` (mass/calc); None when no annotation file covers that kind here."""
        for key in (kind, None):
            if key in self.kinds:
                return self.boxes.get(key, [])
        return None


def _kind(category: str) -> str | None:
    name = category.strip().lower()
    return "mass" if name.startswith("mass") else ("calc" if name.startswith("calc") else None)


def parse_key(stem: str) -> tuple[str, str, str, str | None] | None:
    """``(patient, side, view, film)`` of an image key (film only for full keys), None if not one."""
    match = _KEY.match(stem)
    if not match:
        return None
    patient = f"P_{match['patient']}"
    side, view = match["side"].upper(), match["view"].upper()
    film = None
    if match["kind"]:
        film = f"{match['kind'].capitalize()}-{match['split'].capitalize()}_{patient}_{side}_{view}"
    return patient, side, view, film


class ImageFolder:
    """Files of one folder indexed by image key, with their COCO boxes."""

    def __init__(self, root: Path, images: list[FolderImage], keys: dict[ShortKey, list[FolderImage]], films: dict[str, FolderImage]) -> None:
        self.root, self.images, self._keys, self._films = root, images, keys, films

    @classmethod
    def scan(cls, root: Path) -> "ImageFolder | None":
        """The folder's keyed images, or None when no file in it is named by an image key."""
        images: list[FolderImage] = []
        keys: dict[ShortKey, list[FolderImage]] = {}
        films: dict[str, FolderImage] = {}
        by_name: dict[str, FolderImage] = {}
        for path in sorted(root.iterdir()):
            parsed = parse_key(path.stem) if path.suffix.lower() in IMAGE_SUFFIXES - {""} else None
            if parsed is None or not path.is_file():
                continue
            image = FolderImage(path)
            images.append(image)
            by_name[path.name] = image
            patient, side, view, film = parsed
            if film:
                films[film] = image
            else:
                keys.setdefault((patient, side, view), []).append(image)
        if not images:
            return None
        coco = root / COCO_NAME
        if coco.is_file():
            _read_boxes(coco, by_name)
        return cls(root, images, keys, films)

    @property
    def short_keys(self) -> Iterable[ShortKey]:
        """The (patient, breast, view) of each file named by a short key."""
        return self._keys.keys()

    def by_film(self, film: str) -> FolderImage | None:
        """The file named by a CSV film's full key (``Mass-Test_P_00016_LEFT_CC``)."""
        return self._films.get(film)

    def by_key(self, key: ShortKey) -> FolderImage | None:
        """The file named by a short key (``00016_LEFT_CC``), which does not say its split or lesion type."""
        found = self._keys.get(key, [])
        return found[0] if found else None


def _read_boxes(coco: Path, by_name: dict[str, FolderImage]) -> None:
    try:
        with reading(coco):  # no permission
            data = json.loads(coco.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"the top level is a JSON {type(data).__name__}, not an object")
        kinds = {c["id"]: _kind(str(c.get("name", ""))) for c in _objects(data, "categories")}
        files = {im["id"]: Path(str(im["file_name"])).name for im in _objects(data, "images")}
        covered = frozenset(kinds.values()) or frozenset({None})
        for name in files.values():
            if name in by_name:
                by_name[name].kinds = covered
        for ann in _objects(data, "annotations"):
            image = by_name.get(files.get(ann["image_id"], ""))
            if image is None:
                continue
            bbox = ann["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite_number(v) for v in bbox)):
                raise TypeError(f"bbox {str(bbox)[:60]} is not [x, y, width, height]")
            x, y, w, h = (float(v) for v in bbox)
            image.boxes.setdefault(kinds.get(ann.get("category_id")), []).append((x, y, w, h))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise MammofuseError(f"{coco}: not a COCO annotation file ({type(exc).__name__}: {str(exc)[:100]})") from None


def _objects(data: dict, key: str) -> list[dict]:
    """The list of objects under ``key`` of a COCO file (``categories`` may be absent); TypeError for anything else."""
    value = data.get(key, []) if key == "categories" else data[key]
    if not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
        raise TypeError(f"{key!r} is not a list of objects")
    return value


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def box_region(box: Box) -> tuple[float, float, float]:
    """The lesion circle (row, column, radius) that a square crop around ``box`` should cover."""
    x, y, w, h = box
    return (y + h / 2, x + w / 2, max(w, h) / 2)
