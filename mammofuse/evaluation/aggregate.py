"""Two views of one breast: combine the probabilities of a breast's images into one score.

CBIS-DDSM images most masses in both CC and MLO. A breast is (patient, laterality); its
score is the mean of its cases' probabilities and its label is malignant when any of its
lesions is. Laterality comes from the CBIS-DDSM image key, the DICOM header, the file name, or
a mini-MIAS film's number (one view per breast there, so a breast is one film).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Hashable, Sequence

import numpy as np

from mammofuse.data.sample import Sample

if TYPE_CHECKING:
    from mammofuse.imaging.reader import MammogramInfo


def breast_of_sample(sample: Sample) -> str | None:
    """``patient/L`` or ``patient/R`` for a dataset sample (a CBIS-DDSM image key or a mini-MIAS film), None
    when the laterality is unknown."""
    from mammofuse.data.cbis_images import parse_key
    from mammofuse.data.mini_mias import side_of

    film = sample.image_id or ""
    if parsed := parse_key(film):
        return f"{sample.patient_id or parsed[0]}/{parsed[1][0]}"
    if re.fullmatch(r"mdb\d{3}", film) and sample.patient_id:
        return f"{sample.patient_id}/{side_of(film)}"
    return None


def breast_of_file(path: str, header: MammogramInfo | None, patient_id: str = "") -> str | None:
    """``patient/L|R`` of an image file from its DICOM header (:func:`~mammofuse.imaging.reader.read_header`) or CBIS-DDSM file name.

    ``patient_id`` (e.g. from a clinical CSV) wins over the header's.
    """
    from mammofuse.imaging.reader import patient_and_side

    patient, side = patient_and_side(path, header)
    patient = patient_id or patient
    return f"{patient}/{side}" if patient and side else None


def aggregate(
    keys: Sequence[str | None], probs: Sequence[float], labels: Sequence[int] | None = None, images: Sequence[str | None] | None = None,
) -> dict[str, dict]:
    """Per breast key: mean probability, number of cases, of images (``views``) and (when labels are given) any-malignant label.

    With ``images`` (what identifies each case's image), the cases of one image (one file under two names) are averaged
    first, so that each image counts once in the mean; without, each case is its own image.
    """
    groups: dict[str, dict[Hashable, list[int]]] = {}
    for i, key in enumerate(keys):
        if key is not None and np.isfinite(probs[i]):
            image = i if images is None or images[i] is None else images[i]
            groups.setdefault(key, {}).setdefault(image, []).append(i)
    out = {}
    for key, views in groups.items():
        rows = [i for view in views.values() for i in view]
        entry = {"probability": float(np.mean([np.mean([probs[i] for i in view]) for view in views.values()])), "cases": len(rows),
                 "views": len(views)}
        if labels is not None:
            entry["label"] = int(max(labels[i] for i in rows))
        out[key] = entry
    return out
