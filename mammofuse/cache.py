"""The per-user cache folder (never beside the data, which may be read-only)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$MAMMOFUSE_CACHE`` or ``$XDG_CACHE_HOME/mammofuse`` (default ``~/.cache/mammofuse``), created."""
    root = os.environ.get("MAMMOFUSE_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mammofuse"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
