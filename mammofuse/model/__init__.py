"""The MammoFuse network: image encoder, clinical tokens, five fusion variants."""

from mammofuse.model.config import FUSIONS, ModelConfig
from mammofuse.model.mammofuse import MammoFuse
from mammofuse.model.io import load_model, save_model

__all__ = ["FUSIONS", "MammoFuse", "ModelConfig", "load_model", "save_model"]
