"""Datasets as lists of lesion samples, and patient-grouped splits."""

from mammofuse.data.registry import DATASETS, load_dataset, summarize
from mammofuse.data.sample import Sample
from mammofuse.data.splits import kfold_splits, train_val_split

__all__ = ["DATASETS", "Sample", "kfold_splits", "load_dataset", "summarize", "train_val_split"]
