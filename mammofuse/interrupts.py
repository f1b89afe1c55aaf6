"""Ctrl-C and SIGTERM stop a command in the main process alone, reported in one line (:func:`mammofuse.cli.common.guarded`).

The command line takes SIGTERM the way it takes Ctrl-C, so that clean-up runs (atomic writes remove
their temporaries). A terminal's Ctrl-C (and ``kill -- -PGID``) signals the whole process group, the
DataLoader's image-reading processes included: those ignore Ctrl-C and leave quietly on SIGTERM,
so that the interruption is the main process's alone to report (never "worker exited unexpectedly"). While they
are forked the main process holds both signals back: one landing in the fork's bookkeeping would be
swallowed there (the run would go on) or would leave a half-built loader that cannot be shut down.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any, Iterable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the stop signals this process's handlers took, first first
_said: list[bool] = []  # whether the stop they made has been reported


def handle_stop_signals() -> None:
    """Make Ctrl-C and SIGTERM raise KeyboardInterrupt in the main thread, each noted for :func:`interrupted_status`; the
    KeyboardInterrupt that a stop raises in a finalizer (a DataLoader's ``__del__`` joining its readers) is not printed
    as "Exception ignored": the interruption is reported once, in one line."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)
    sys.unraisablehook = _unraisable


def _unraisable(unraisable: Any) -> None:
    if not (_received and issubclass(unraisable.exc_type, KeyboardInterrupt)):
        sys.__unraisablehook__(unraisable)


def _stop(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def interrupted_status(exc: BaseException) -> int | None:
    """The exit status of a command that ``exc`` ended, when Ctrl-C (130) or SIGTERM (143) ended it, else None.

    That is ``exc`` a KeyboardInterrupt, or any error raised after :func:`handle_stop_signals` took a
    signal: C code, torch's among it, can turn the KeyboardInterrupt raised inside it into another error.
    """
    if _received:
        return 128 + _received[0]
    return 128 + signal.SIGINT if isinstance(exc, KeyboardInterrupt) else None


def first_report() -> bool:
    """Whether to report the interruption now: always for a KeyboardInterrupt raised in code, once a process for stop
    signals. A SIGTERM to a process group reaches the command from its readers too: a second one, arriving as the first
    is reported, raises KeyboardInterrupt again (so that a second Ctrl-C still breaks a clean-up that hangs), but is
    not said twice."""
    if not _received:
        return True
    if _said:
        return False
    _said.append(True)
    return True


def loader_batches(dataset: Any, **options: Any) -> Iterator[Any]:
    """The batches of a ``torch.utils.data.DataLoader(dataset, **options)``; its reader processes
    (``num_workers``) are started with Ctrl-C and SIGTERM held back, ignore Ctrl-C, and are shut down
    however the loop ends. A shared memory they cannot hand batches over in (read-only, full) is an
    :class:`~mammofuse.errors.OutputError` naming it (:mod:`mammofuse.shared_memory`)."""
    import torch.multiprocessing
    from torch.utils.data import DataLoader

    from mammofuse.shared_memory import batch_handover, check_shared_memory

    loader = DataLoader(dataset, worker_init_fn=_reader_process, **options)
    if not loader.num_workers:
        yield from loader
        return
    check_shared_memory(loader.multiprocessing_context or torch.multiprocessing)  # the context torch's loader uses
    with held_back():
        batches = iter(loader)  # forks the readers
    try:
        with batch_handover():
            yield from batches
    finally:
        del batches  # its readers are shut down now, however the loop ended, not when a traceback lets go of it


@contextmanager
def held_back(signals: Iterable[int] = STOP_SIGNALS) -> Iterator[None]:
    """Hold ``signals`` back in the block, then deliver them (in the main thread, where Python runs handlers; elsewhere a no-op).

    Their handlers are swapped for ones that note them, since the kernel gives a signal to any thread that does not block
    it (torch runs several) and Python raises it in the main thread all the same; they are also blocked in this thread,
    so that a process forked in the block starts with them blocked (a reader unblocks them once it is ready for them).
    """
    signals = [s for s in signals if signal.getsignal(s) is not None]  # None: a handler not installed from Python (embedded)
    if threading.current_thread() is not threading.main_thread() or not signals:
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in signals}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s, handler in previous.items():
            signal.signal(s, handler)  # runs the noting handler first, for one that came while blocked
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)  # to the handler it was meant for


def load_torch(*, vision: bool = False) -> None:
    """Import torch (and torchvision, with ``vision``) once, with Ctrl-C and SIGTERM held back until it is loaded: a stop
    signal landing inside the import leaves it half-initialised, and the process then aborts at exit (SIGABRT) instead
    of ending with 130 (143). Called before the first use of torch (of torchvision: a ResNet); the signal is raised after.
    torchvision is only loaded where it is used: its import costs a second or more, and a cnn4 model needs none."""
    names = ("torch", "torchvision") if vision else ("torch",)
    if all(name in sys.modules for name in names):
        return
    with held_back():
        for name in names:
            importlib.import_module(name)


def _reader_process(worker_id: int) -> None:
    """A reader process's start (forked with the stop signals held back and blocked): Ctrl-C ignored, SIGTERM a quiet exit.

    A reader that left on Ctrl-C could leave in the middle of handing a batch over (the main process then fails on a
    closed connection); it finishes its batch and ends when the main process shuts the loader down. SIGTERM is also
    how that shutdown stops a reader that does not end (and how a job manager stops the group); until now it was
    blocked, for torch's own handler would have let one from anyone but the main process kill the reader.
    """
    global _given_folder
    _given_folder = _multiprocessing_folder()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _leave)
    sys.excepthook = _quiet_when_cut_off
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


_given_folder: str | None = None  # a reader's multiprocessing folder at its start: its parent's, which is not its own to remove


def _multiprocessing_folder() -> str | None:
    """The folder (``pymp-*``) multiprocessing made for this process, or that it was started with; None before there is one."""
    import multiprocessing

    return multiprocessing.current_process()._config.get("tempdir")  # no public getter


def _leave(signum: int, frame: FrameType | None) -> None:
    """A reader's quiet exit. ``os._exit`` skips the clean-up of a normal exit, which removes the folder (``pymp-*``,
    holding the socket that passes batches' file descriptors) multiprocessing made for this process: it is removed here,
    unless it is the one the reader was started with (a forkserver's children, Python 3.14's default, are given the
    command's), which the command removes."""
    import shutil

    folder = _multiprocessing_folder()
    if folder and folder != _given_folder:
        shutil.rmtree(folder, ignore_errors=True)
    os._exit(0)  # the main process reports the interruption; an exit status 0 keeps torch from calling it a crash


def _quiet_when_cut_off(kind: type[BaseException], value: BaseException, trace: TracebackType | None) -> None:
    """A reader's report of an error in a helper thread, but for a connection the main process cut: interrupted while
    it took a batch's shared memory from the thread that hands it over, it is reporting that itself. Cut during the
    connection's handshake, the thread meets the end of the stream (EOFError) rather than a reset."""
    if not issubclass(kind, (ConnectionError, EOFError)):
        sys.__excepthook__(kind, value, trace)
