"""Clinical findings: the versioned vocabulary and its multi-hot encoding."""

from mammofuse.clinical.schema import ClinicalSchema, ClinicalValueError, load_schema

__all__ = ["ClinicalSchema", "ClinicalValueError", "load_schema"]
