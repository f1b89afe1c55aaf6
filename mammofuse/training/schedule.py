"""The learning rate and the batches of each epoch: pure functions of (settings, epoch).

The rate follows ``settings.schedule`` over the whole run (cosine by default; ``step`` decays
by ``LR_DECAY`` per epoch within each phase). Shuffling is a seeded permutation per epoch, so
a resumed run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math

import torch

from mammofuse.training.distributed import Distributed, padded_shard
from mammofuse.training.settings import TrainSettings

LR_DECAY = 0.9  # per epoch, within a phase


def lr_factor(epoch_index: int, settings: TrainSettings) -> float:
    """Multiplier of ``settings.lr`` for the 0-based epoch ``epoch_index``."""
    freeze = settings.freeze_epochs if settings.uses_image else 0
    base = settings.finetune_lr / settings.lr if 0 < freeze <= epoch_index else 1.0
    if settings.schedule == "step":
        return base * LR_DECAY ** (epoch_index - (freeze if epoch_index >= freeze else 0))
    last = max(settings.epochs - 1, 1)
    if settings.schedule == "onecycle":
        peak = max(1, round(0.3 * settings.epochs))
        if epoch_index < peak - 1:
            return base * (0.1 + 0.9 * (epoch_index + 1) / peak)
        start = peak - 1
    else:
        if epoch_index < settings.warmup_epochs:
            return base * (epoch_index + 1) / (settings.warmup_epochs + 1)
        start = settings.warmup_epochs
    progress = min(1.0, (epoch_index - start) / max(last - start, 1))
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def epoch_batches(n: int, epoch: int, settings: TrainSettings, dist: Distributed) -> list[list[int]]:
    """This rank's batches for ``epoch``: a seeded permutation, sharded, a lone last sample merged."""
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
    order = padded_shard(torch.randperm(n, generator=generator).tolist(), dist.rank, dist.world)
    batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:  # BatchNorm cannot train on one sample
        batches[-2].extend(batches.pop())
    return batches


def chunks(items: list[int], size: int) -> list[list[int]]:
    """``items`` in consecutive batches of ``size`` (validation: no shuffling)."""
    return [items[i : i + size] for i in range(0, len(items), size)]
