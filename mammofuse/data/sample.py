"""One lesion: where its image is, its clinical findings, its label and its patient."""

from __future__ import annotations

from dataclasses import dataclass, field

from mammofuse.imaging.preprocess import Region


@dataclass(frozen=True, slots=True)  # slots: a million-row CSV stays lean
class Sample:
    """A lesion to classify.

    Attributes:
        id: unique lesion id within the dataset.
        patient_id: the patient; every split keeps a patient's lesions on one side.
        label: 1 malignant, 0 benign.
        clinical: raw clinical values keyed by schema field name (normalised by the schema).
        image_path: the full mammogram file, or None when no image is available.
        roi_path: a file holding only the lesion crop (CBIS-DDSM's cropped ROI), if known.
        roi_mask_path: a full-size binary lesion mask of ``image_path`` (CBIS-DDSM's ROI mask), if known;
            its bounding box gives the lesion region when ``region`` is not given.
        region: the lesion circle (row, column, radius) in ``image_path``'s pixels, if known.
        image_id: the film the lesion is on (several lesions may share one).
        abnormality: ``mass`` or ``calc`` when the dataset says.
        split: the dataset's own split (``train``, ``test``, ``all``).
    """

    id: str
    patient_id: str
    label: int
    clinical: dict[str, str] = field(default_factory=dict)
    image_path: str | None = None
    roi_path: str | None = None
    roi_mask_path: str | None = None
    region: Region | None = None
    image_id: str | None = None
    abnormality: str | None = None
    split: str = "all"

    @property
    def has_image(self) -> bool:
        return self.image_path is not None or self.roi_path is not None

    @property
    def has_lesion_region(self) -> bool:
        """Whether the sample says where its lesion is: a region, or a TCIA ROI crop or mask file."""
        return self.region is not None or bool(self.roi_path or self.roi_mask_path)


def patient_digest(patient_id: str) -> str:
    """A short digest of a patient id: models record these, not the ids, to flag overlap (pseudonymous, not anonymous:
    whoever holds an id can compute its digest)."""
    import hashlib

    return hashlib.sha256(patient_id.strip().encode("utf-8")).hexdigest()[:16]


def case_digest(sample: Sample) -> str:
    """A short digest of what a case is: id, patient, label, findings, region and image name (stored results of
    a case whose data changed since must not be reused)."""
    import hashlib
    import json
    from pathlib import Path

    image = Path(sample.image_path).name if sample.image_path else None
    facts = [sample.id, sample.patient_id, int(sample.label), sorted(sample.clinical.items()), sample.region, image, sample.abnormality]
    return hashlib.sha256(json.dumps(facts, default=str).encode("utf-8")).hexdigest()[:16]
