"""Small synthetic DICOMs written with pydicom, for reader edge cases (never as model evidence)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def breast_phantom(rows: int = 64, cols: int = 48, bits: int = 12) -> np.ndarray:
    """A bright half-disc against the left edge (the 'breast') on a dark background."""
    yy, xx = np.mgrid[:rows, :cols]
    inside = (yy - rows / 2) ** 2 / (rows / 2.2) ** 2 + xx**2 / (cols * 0.7) ** 2 < 1
    return np.where(inside, 2**bits - 200, 100).astype(np.uint16)


def write_dicom(path: Path, pixels: np.ndarray, **attributes) -> Path:
    """A single-frame MG DICOM; keyword attributes override the defaults."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = attributes.pop("TransferSyntaxUID", ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = "SYNTH_001"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    raw = pixels.astype(np.uint16 if ds.BitsAllocated == 16 else np.uint8)
    if meta.TransferSyntaxUID == JPEGBaseline8Bit:  # a real baseline JPEG frame, encapsulated
        buffer = io.BytesIO()
        Image.fromarray(raw.astype(np.uint8)).save(buffer, format="JPEG")
        ds.PixelData = encapsulate([buffer.getvalue()])
    elif meta.TransferSyntaxUID.is_compressed:  # bytes only a codec plugin could read
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + bytes(64)])
    else:
        ds.PixelData = raw.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


__all__ = ["JPEGBaseline8Bit", "JPEGLosslessSV1", "breast_phantom", "write_dicom"]
