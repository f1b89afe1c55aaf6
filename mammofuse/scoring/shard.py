"""Deterministic shards: ``--shard i/N`` keeps the files whose stable hash of the path falls in part i.

The hash is BLAKE2b of the UTF-8 path, not Python's ``hash()`` (salted per process), so N jobs on
any scheduler, machine or Python cover every file exactly once when given the same paths.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mammofuse.errors import MammofuseError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"1/4"`` -> Shard(1, 4).

        Raises:
            MammofuseError: not I/N with 0 <= I < N.
        """
        match = _SHARD.match(text)
        if not match or not 0 <= int(match[1]) < int(match[2]):
            raise MammofuseError(f"--shard: expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
        return cls(int(match[1]), int(match[2]))

    def holds(self, key: str) -> bool:
        """Whether the file (or breast) named ``key`` belongs to this shard."""
        digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
