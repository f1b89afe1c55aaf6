"""Training MammoFuse models: settings, the trainer, the frozen-feature cache, torchrun support."""

from mammofuse.training.settings import TrainSettings, load_settings
from mammofuse.training.trainer import TrainResult, train

__all__ = ["TrainResult", "TrainSettings", "load_settings", "train"]
