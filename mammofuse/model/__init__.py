"""The MammoFuse network: image encoder, clinical tokens, five fusion variants."""

from mammofuse.fusion import FUSIONS, Fusion
from mammofuse.model.config import ModelConfig
from mammofuse.model.io import load_model, save_model
from mammofuse.model.mammofuse import MammoFuse

__all__ = ["FUSIONS", "Fusion", "MammoFuse", "ModelConfig", "load_model", "save_model"]
