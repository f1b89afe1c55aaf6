"""Files under a folder at any depth, without the recursion of ``Path.rglob`` (a deep tree overflowed it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator


def files_under(
    root: Path, prune: Callable[[Path], bool] | None = None, unlisted: Callable[[Path, OSError], None] | None = None,
) -> Iterator[Path]:
    """Every entry under ``root`` that is no folder, at any depth, unordered: what ``root.rglob("*")`` finds
    (folder symlinks listed, not followed) less the folders, with a stack of folders instead of recursion, which a
    tree over about 1,000 folders deep exhausts.

    ``prune``: a sub-folder for which it is true is left out, with everything under it.
    ``unlisted``: called with a sub-folder that cannot be listed (no permission, say) and the error, which is then
    left out; without it, the error is raised.

    Raises:
        OSError: ``root`` cannot be listed, or a sub-folder cannot be and no ``unlisted`` is given.
    """
    folders = [root]
    while folders:
        folder = folders.pop()
        if prune is not None and folder is not root and prune(folder):
            continue
        try:
            with os.scandir(folder) as scan:
                entries = list(scan)
        except OSError as exc:
            if folder is root or unlisted is None:
                raise
            unlisted(folder, exc)
            continue
        for entry in entries:
            path = folder / entry.name
            if entry.is_dir(follow_symlinks=False):
                folders.append(path)
            else:
                yield path
