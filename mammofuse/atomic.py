"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

A file replaced keeps its permissions, a new one follows the umask; a file this user may not write (mode 444) is
refused, never replaced, as ``cp`` refuses it. A file the user named
(``--output FILE``) is written with ``follow_symlink``: a symlink is kept and its target written, and
a target that is not a regular file (``/dev/null``, a FIFO, a terminal, ``/dev/stdout``) cannot be
replaced and its reader wants the bytes: it is written directly. Without it (the files a command
writes inside an output folder) whatever lies at the path, a symlink included, is replaced, so
that a file link planted in the folder cannot redirect the write (the folders on the way are used as
they are: an output folder is the user's own). Every failure to write
(the target is a folder or lies under a file, read-only, disk full, file-size limit) is an
:class:`~mammofuse.errors.OutputError` naming the target.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
import time
import warnings
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from mammofuse.errors import MammofuseError, MammofuseWarning, OutputError
from mammofuse.interrupts import held_back

TMP_SUFFIX = ".tmp"
FOLDER_LOCK = ".mammofuse.lock"
IN_USE = "in use by another mammofuse process"


@contextmanager
def atomic_path(path: str | Path, follow_symlink: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    With ``follow_symlink`` (a file the user named), a symlink's target is replaced instead and a
    stream (see :func:`is_stream`) is yielded itself, to be written directly.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        if follow_symlink and is_stream(path):
            yield path
            return
        target = Path(os.path.realpath(path)) if follow_symlink else path
        tmp = _temporary_beside(target)
        yield Path(tmp)
        os.chmod(tmp, _mode_for(target))  # mkstemp (and writers that replace the file) make 0600
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(path, _reason(exc)) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def is_stream(path: str | Path) -> bool:
    """Whether ``path`` (its target, for a symlink) exists and is neither a regular file nor a folder:
    a device, FIFO or socket, written in place, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _temporary_beside(path: Path) -> str:
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(21, "it is a folder")
    if _read_only(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    return tmp


def _read_only(path: Path) -> bool:
    """Whether ``path`` is a file this user may not write (mode 444), which its folder would let be replaced. Root may
    write any file, so replaces it; a symlink there is not looked through; on a read-only file system the temporary
    file's creation says so instead."""
    try:
        regular = stat.S_ISREG(os.lstat(path).st_mode)
        return regular and not os.access(path, os.W_OK) and not os.statvfs(path).f_flag & os.ST_RDONLY
    except OSError:
        return False


def _reason(exc: OSError) -> str:
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return "a part of its folder path is a file"
    return exc.strerror or str(exc)


def _mode_for(target: Path) -> int:
    """The permissions of the file replacing ``target``: those it has (a 0600 file stays private), else (none, or a
    symlink replaced) the usual ones."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return 0o666 & ~_umask()
    return 0o666 & ~_umask() if stat.S_ISLNK(mode) else stat.S_IMODE(mode) & 0o777


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str, follow_symlink: bool = False) -> None:
    """Write text atomically (UTF-8; the undecodable bytes of a file name, held as surrogates, written back as
    they were, as streamed records are); ``follow_symlink``: see :func:`atomic_path`."""
    with atomic_path(path, follow_symlink) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def write_bytes(path: str | Path, data: bytes, follow_symlink: bool = False) -> None:
    """Write bytes atomically; ``follow_symlink``: see :func:`atomic_path`."""
    with atomic_path(path, follow_symlink) as tmp:
        tmp.write_bytes(data)


def write_together(files: Mapping[Path, bytes]) -> None:
    """Write ``files`` atomically and as one: each to a temporary beside it, then every one moved into place in a row,
    in the order given (the file that names the others last), Ctrl-C and SIGTERM held back meanwhile, so that none is
    replaced when writing another fails or a run is stopped."""
    with ExitStack() as replacements:
        for path, data in reversed(list(files.items())):  # an ExitStack moves the last one entered first
            replacements.enter_context(atomic_path(path)).write_bytes(data)
        with held_back():
            replacements.close()


def check_writable(path: str | Path) -> None:
    """Fail now, before any work, when ``path`` could not be written (an existing file is kept; folders made for the
    test are removed again, so a run that fails later leaves none: its writes make them)."""
    path = Path(path)
    if is_stream(path):
        if not os.access(path, os.W_OK):
            raise OutputError(path, "permission denied")
        return
    target = Path(os.path.realpath(path))
    try:
        with _removed_if_left_empty(target.parent):
            os.unlink(_temporary_beside(target))
    except OSError as exc:
        raise OutputError(path, _reason(exc)) from exc


def check_writable_folder(folder: str | Path, keep: bool = False) -> None:
    """Fail now, naming ``folder``, when files cannot be written inside it; the folders made for the test are removed
    again unless ``keep`` (as :func:`check_writable`)."""
    folder = Path(folder)
    with nullcontext() if keep else _removed_if_left_empty(folder):
        _make_folder(folder)
        try:
            check_writable(folder / ".mammofuse-write-test")
        except OutputError as exc:
            raise OutputError(folder, exc.problem) from exc


@contextmanager
def _removed_if_left_empty(folder: Path) -> Iterator[None]:
    """Remove, at the end of the block, ``folder`` and those of its parents that are missing now, where still empty."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        yield
    finally:
        for made in missing:  # the deepest first
            with suppress(OSError):
                made.rmdir()


def _make_folder(folder: Path) -> None:
    """Create ``folder`` and its parents if missing; an OutputError naming it when that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, "it is a file" if folder.is_file() else _reason(exc)) from exc


@contextmanager
def output_lock(output: Path | None) -> Iterator[None]:
    """Hold the output file ``output`` for this process alone while it is written: another run writing the same file
    (two ``--shard`` jobs given one ``-o``) fails at once, rather than both mixing and losing records.

    The lock is ``.NAME.lock`` beside the file (resuming may replace the file itself); any path to the file, a
    symlink's included, takes the same lock. stdout and streams (a FIFO, ``/dev/stdout``) are not locked; None locks
    nothing.

    Raises:
        OutputError: another process holds the output, or the lock cannot be made (naming the output), or is there but
            can be neither written nor read (naming the lock: another user's, say). One that can be read (another
            user's, left by their run) is taken read-only.
    """
    if output is None or is_stream(output):
        yield
        return
    target = Path(os.path.realpath(output))
    _make_folder(target.parent)
    lock = target.with_name(f".{target.name}.lock")
    with _exclusive(lock, output, Path(output).with_name(lock.name) if target == Path(os.path.abspath(output)) else lock):
        yield


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold the output folder ``folder`` (created if missing; removed again if the run left it empty) for this process alone, for a whole run: another run
    given the same folder (a job submitted twice) fails at once, rather than both writing, resuming or deleting
    each other's files. The lock is ``.mammofuse.lock`` inside the folder.

    Raises:
        OutputError: naming ``folder``: another process holds it, or it or its lock cannot be made; naming the lock:
            it is there but can be neither written nor read (another user's, say; one that can be read is taken read-only).
    """
    folder = Path(folder)
    with _removed_if_left_empty(folder):  # a run that wrote nothing in it (failed, say) leaves no folder it made
        _make_folder(folder)
        with _exclusive(Path(os.path.realpath(folder)) / FOLDER_LOCK, folder, folder / FOLDER_LOCK):
            yield


@contextmanager
def _exclusive(lock: Path, output: str | Path, shown: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the file ``lock`` (``shown`` in messages), for ``output``; the file is removed at the
    end, while still locked, so that a process that opened it meanwhile sees it gone. The lock goes with its process
    (``kill -9`` included). A file system without ``flock`` (some network ones) runs unlocked, with a warning."""
    fd = _open_lock(lock, output, shown)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(output, IN_USE) from None
            warnings.warn(MammofuseWarning(f"{output}: not locked ({exc.strerror or exc}): another mammofuse run given it "
                                           "at the same time would not be refused"), stacklevel=3)
        else:
            if not _is_file(fd, lock):  # removed by its holder as this process opened it: that run has the output
                raise OutputError(output, IN_USE)
        try:
            yield
        finally:
            with suppress(FileNotFoundError, PermissionError):  # another user's, in a folder with the sticky bit (/tmp)
                os.unlink(lock)
    finally:
        os.close(fd)


def _open_lock(lock: Path, output: str | Path, shown: Path) -> int:
    """A descriptor of the file ``lock``, made if missing; read-only where it cannot be written (another user's, left
    by their run: ``flock`` takes a read-only file as well, so that their run, if live, is still seen).

    Raises:
        OutputError: naming ``output`` where the lock cannot be made there, or ``shown`` where it is there but cannot
            be opened at all.
    """
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # a link planted there is refused, never followed
    except PermissionError as exc:
        refused = exc
    except OSError as exc:
        raise OutputError(output, exc.strerror or str(exc)) from exc
    try:
        return os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:  # no lock there: the folder cannot take one
        raise OutputError(output, refused.strerror or str(refused)) from refused
    except OSError as exc:
        raise OutputError(shown, exc.strerror or str(exc),
                          f"{shown}: cannot open the lock ({exc.strerror or exc}{_whose(lock)})") from exc


def _whose(lock: Path) -> str:
    """What to do about a lock file that cannot be opened, by its owner: the remark after the reason."""
    with suppress(OSError):
        if os.lstat(lock).st_uid != os.geteuid():
            return ": another user's; in use by their run, or left by it: remove it"
    return ": remove it if no mammofuse run uses it"


def _is_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def remove_stale_temporaries(folder: str | Path, depth: int = 0, older_than_s: float = 0.0) -> list[Path]:
    """Delete temporaries that an interrupted atomic write (``kill -9``) left in ``folder``, and in its sub-folders
    ``depth`` levels down (links to folders are not followed). ``older_than_s``: only those unchanged for that long, in
    a folder that other processes may be writing meanwhile (a cache)."""
    removed = []
    now = time.time()
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        with suppress(OSError):
            if tmp.is_file() and now - tmp.stat().st_mtime >= older_than_s:
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    if depth > 0:
        with suppress(OSError):
            for sub in Path(folder).iterdir():
                if sub.is_dir() and not sub.is_symlink():
                    removed += remove_stale_temporaries(sub, depth - 1, older_than_s)
    return removed


def check_not_input(outputs: Iterable[Path | None], inputs: Iterable[str | Path | None], flag: str = "--output") -> None:
    """Refuse, before anything is written, an output that is one of the inputs (the same file, by any path):
    writing it would destroy that input.

    Raises:
        MammofuseError: naming the output and the input it would overwrite.
    """
    existing: dict[tuple[int, int], Path] = {}
    for output in filter(None, outputs):
        found = _stat(output)
        if found is None:
            continue  # not there yet: no input can be it
        if stat.S_ISREG(found.st_mode):
            existing[found.st_dev, found.st_ino] = output
    if not existing:
        return
    for path in filter(None, inputs):
        found = _stat(path)
        if found is None:
            continue
        output = existing.get((found.st_dev, found.st_ino))
        if output is not None:
            raise MammofuseError(f"{flag} {output} is also an input ({path}): writing it would destroy that file; name another one")


def _stat(path: str | Path) -> os.stat_result | None:
    """``os.stat(path)``, or None where no file is there: missing, unreachable, or a name no file can have (a NUL byte,
    a character the file-system encoding cannot represent)."""
    try:
        return os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte; UnicodeEncodeError (a ValueError): not in the encoding
        return None
