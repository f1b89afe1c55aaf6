"""The MammoFuse network: image encoder, clinical tokens, five fusion variants."""

from mammofuse.model.config import FUSIONS, ModelConfig
from mammofuse.model.io import load_model, save_model
from mammofuse.model.mammofuse import MammoFuse

__all__ = ["FUSIONS", "MammoFuse", "ModelConfig", "load_model", "save_model"]
