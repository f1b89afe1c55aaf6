"""Training MammoFuse models: settings, the trainer and its callbacks, the frozen-feature cache, torchrun support."""

from mammofuse.training.callbacks import EpochRow, TrainCallback
from mammofuse.training.settings import TrainSettings, load_settings
from mammofuse.training.trainer import TrainResult, train

__all__ = ["EpochRow", "TrainCallback", "TrainResult", "TrainSettings", "load_settings", "train"]
