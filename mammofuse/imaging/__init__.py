"""Reading mammograms (DICOM and image files) and preparing them for the model."""

from mammofuse.imaging.reader import IMAGE_SUFFIXES, Mammogram, read_mammogram

__all__ = ["IMAGE_SUFFIXES", "Mammogram", "read_mammogram"]
