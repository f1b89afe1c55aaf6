"""What a DICOM header says an image is: its modality, and whether it is a mammogram like the training images.

mammofuse's bundled models were trained on digitised screen-film mammograms processed for presentation (CBIS-DDSM: scanned films,
stored as Secondary Capture images of modality ``MG``). A file of another imaging modality (CT, MR, US...) is no
mammogram and is refused; a header that leaves the question open (computed or digital radiography, ``OT``, no
modality) or describes another kind of mammogram (raw FOR PROCESSING data, a breast tomosynthesis slice, a spot
compression or magnification view, a digital mammogram from a digital detector) gets a remark, which reaches the
record's note.
"""

from __future__ import annotations

from typing import Any

MAMMOGRAPHY = "MG"
PROJECTION_MODALITIES = frozenset({"CR", "DX", "RG", "OT", "SC"})
"""Modalities a mammogram may carry besides MG, read with a remark: computed, digital and film radiography (older
and general-purpose systems write them for mammograms), OT (other) and SC (secondary capture, e.g. a scanned film).
Any other modality (CT, MR, US, PT, NM, XA...) names an examination that is no mammogram."""
FOR_PROCESSING_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.13.1.5",  # Breast Projection X-Ray Image Storage - For Processing
})
TOMOSYNTHESIS_CLASS = "1.2.840.10008.5.1.4.1.1.13.1.3"
"""Breast Tomosynthesis Image Storage: one frame of it (more are refused as multi-frame) is a slice of a 3D reconstruction."""
SPOT_OR_MAGNIFICATION = {
    "399055006": "spot compression", "R-102D7": "spot compression",  # SNOMED CT and the retired SNOMED RT code (CID 4015)
    "399163009": "magnification", "R-102D6": "magnification",
}
DIGITAL_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
}
"""SOP classes of images from a digital detector, processed for presentation (a scanned film is a Secondary Capture)."""
DIGITAL_DETECTORS = frozenset({"DIRECT", "SCINTILLATOR", "STORAGE"})
"""Detector Type (0018,7004) values of a digital detector: X-ray photoconductor, phosphor, storage phosphor. The fourth
value, FILM, is a scanned film/screen: a digitised film like the training images, whatever the SOP class."""
TRAINED_ON = "mammofuse's bundled models were trained on digitised screen-film mammograms processed for presentation (CBIS-DDSM)"


def not_mammography(modality: str | None) -> str | None:
    """Why a file of this DICOM modality is no mammogram to score; None for MG, the projection modalities and none given."""
    if not modality or modality.strip().upper() in {MAMMOGRAPHY, *PROJECTION_MODALITIES}:
        return None
    shown = modality if len(modality) <= 32 else modality[:32] + "..."
    return f"modality is {shown}, not MG (mammography)"


def single_value(value: Any) -> str:
    """An attribute of one value (VM 1) as text: the first of several a file gives anyway."""
    from pydicom.multival import MultiValue

    return str(value[0] if isinstance(value, MultiValue) and len(value) else value or "")


def header_remarks(ds: Any, modality: str | None) -> list[str]:
    """Remarks on a mammogram's header that a score of it should carry: a modality that may not be mammography,
    raw FOR PROCESSING data, a breast tomosynthesis slice, a digital mammogram (one remark for these three: FOR
    PROCESSING data and tomosynthesis slices come from a digital detector too), a spot compression or magnification view."""
    remarks = []
    if not modality:
        remarks.append("the DICOM header gives no modality: read as a mammogram (MG)")
    elif modality.strip().upper() in PROJECTION_MODALITIES:
        remarks.append(f"modality is {modality}, not MG (mammography): read as a mammogram")
    intent = single_value(ds.get("PresentationIntentType")).strip().upper()
    sop_class = single_value(ds.get("SOPClassUID")).strip()
    raw = intent == "FOR PROCESSING" or sop_class in FOR_PROCESSING_CLASSES
    if raw:
        remarks.append(f"a FOR PROCESSING image (the detector's data before the vendor's processing): {TRAINED_ON}")
    if sop_class == TOMOSYNTHESIS_CLASS:
        remarks.append(f"a breast tomosynthesis slice (one slice of a 3D reconstruction, not a projection mammogram): {TRAINED_ON}")
    elif not raw and (source := _digital_source(ds, sop_class)):
        remarks.append(f"a digital mammogram ({source}): {TRAINED_ON}; how they score a digital detector's images is untested")
    views = sorted(set(_view_modifiers(ds)))
    if views:
        remarks.append(f"a {' and '.join(views)} view: {TRAINED_ON}, not spot compression or magnification views")
    return remarks


def _digital_source(ds: Any, sop_class: str) -> str | None:
    """What says a digital detector made the image: its SOP class, else its Detector Type; None for a scanned film
    (Detector Type FILM) and a header that does not say (a Secondary Capture of a film, as CBIS-DDSM's)."""
    detector = single_value(ds.get("DetectorType")).strip().upper()
    if detector == "FILM":
        return None
    if sop_class in DIGITAL_CLASSES:
        return f"SOP class {DIGITAL_CLASSES[sop_class]}"
    return f"detector type {detector}" if detector in DIGITAL_DETECTORS else None


def _view_modifiers(ds: Any) -> list[str]:
    """The spot compression and magnification modifiers of the view, by code or by meaning (in the View Code Sequence's
    items, where the mammography IOD puts them, or at the top level)."""
    items = _items(ds.get("ViewModifierCodeSequence"))
    for view in _items(ds.get("ViewCodeSequence")):
        items.extend(_items(view.get("ViewModifierCodeSequence")))
    found = []
    for item in items:
        code, meaning = str(item.get("CodeValue", "")).strip(), str(item.get("CodeMeaning", "")).lower()
        found += [SPOT_OR_MAGNIFICATION[code]] if code in SPOT_OR_MAGNIFICATION else []
        found += ["spot compression"] * ("spot" in meaning) + ["magnification"] * ("magnif" in meaning)
    return found


def _items(value: Any) -> list[Any]:
    """The items of a sequence attribute; none where a damaged file gives it another type (text, a number)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    return [item for item in value if isinstance(item, Dataset)] if isinstance(value, Sequence) else []
