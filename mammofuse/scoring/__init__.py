"""Scoring files at scale: one front door (:func:`score_files`), two engines, streaming resumable output, shards.

- :func:`score_files`: predictions of samples, by any engine, as they are done.
- :class:`LocalEngine`: this process (and DataLoader reader processes); :class:`RayEngine`: a Ray
  Data pipeline on a local or existing Ray cluster (``pip install "mammofuse[ray]"``).
- :class:`ScoringRun`: listed files into a JSONL/CSV output written record by record, ``--resume``-able.
- :class:`Shard`: ``--shard i/N`` by a stable hash of the path.

Nothing here imports torch or Ray until something is scored.
"""

from mammofuse.scoring.local import LocalEngine
from mammofuse.scoring.predictions import Engine, score_files
from mammofuse.scoring.ray_engine import RayEngine
from mammofuse.scoring.run import ScoringRun, Summary
from mammofuse.scoring.shard import Shard

__all__ = ["Engine", "LocalEngine", "RayEngine", "ScoringRun", "Shard", "Summary", "score_files"]
