"""The per-user cache folder (never beside the data, which may be read-only).

A cache is best-effort: where its folder cannot be written (a read-only home, ``HOME`` under a file), what it
would keep is kept in memory for the run, after one warning naming the folder and ``MAMMOFUSE_CACHE``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from mammofuse.atomic import check_writable_folder, remove_stale_temporaries
from mammofuse.errors import MammofuseWarning, OutputError

CACHE_VARIABLE = "MAMMOFUSE_CACHE"
FileIdentity = tuple[int, int, int, int, int]
"""(device, inode, size, modification time, change time) of a file: see :func:`file_identity`."""
STALE_AFTER_S = 3600.0  # an entry's temporary unchanged this long was left by a killed run (a write takes seconds)


def file_identity(path: str | os.PathLike[str]) -> FileIdentity | None:
    """What a cache entry keys a file on: (device, inode, size, modification time, change time), times in ns; None
    when it cannot be stat'ed.

    New bytes written in place change the change time (ctime), which ``touch``, ``cp -p`` and ``tar -x`` cannot set
    back, and a file replaced (``cp``, ``tar -x``, a move) is a new inode with a new ctime: either is a miss, even
    with the same size and modification time. Not seen: a rewrite within one tick of the kernel's clock (file times
    advance by milliseconds, whatever their nanosecond field) of the file's previous change, and a network file
    system's attributes cached from before another machine wrote the file. A file renamed, linked or chmod-ed is a
    miss too (its ctime changes): computed again, never served stale.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def cache_root() -> Path:
    """``$MAMMOFUSE_CACHE``, else ``$XDG_CACHE_HOME/mammofuse``, else ``~/.cache/mammofuse``; an empty or relative
    ``XDG_CACHE_HOME`` is ignored, as the XDG Base Directory specification says (it would be the working folder)."""
    root = os.environ.get(CACHE_VARIABLE)
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "mammofuse"


def cache_dir(*parts: str, keeps: str) -> Path | None:
    """The cache folder ``parts`` under :func:`cache_root`, created; None, after a warning, when it cannot be
    created or written. ``keeps``: what the folder would hold, named in the warning. The temporaries of entries that
    a killed run was writing (over an hour old; other runs may be writing theirs now) are removed from it."""
    path = cache_root().joinpath(*parts)
    try:
        check_writable_folder(path, keep=True)
    except OutputError as exc:
        warn_uncached(exc, keeps)
        return None
    remove_stale_temporaries(path, depth=2, older_than_s=STALE_AFTER_S)  # entries lie up to two folders down
    return path


def warn_uncached(error: OutputError, keeps: str) -> None:
    """Warn that the cache could not be written (``error``), so ``keeps`` lives in memory for this run only."""
    warnings.warn(f"{error.path}: cannot write the cache ({error.problem}): this run keeps {keeps} in memory only; "
                  f"set {CACHE_VARIABLE} to a writable folder", MammofuseWarning, stacklevel=3)
