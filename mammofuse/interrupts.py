"""Ctrl-C and SIGTERM stop a command in the main process alone, reported in one line (:func:`mammofuse.cli.common.guarded`).

The command line takes SIGTERM the way it takes Ctrl-C, so that clean-up runs (atomic writes remove
their temporaries). A terminal's Ctrl-C (and ``kill -- -PGID``) signals the whole process group, the
DataLoader's image-reading processes included: those leave at once and quietly, so that the
interruption is the main process's alone to report (never "worker exited unexpectedly"). While they
are forked the main process holds both signals back: one landing in the fork's bookkeeping would be
swallowed there (the run would go on) or would leave a half-built loader that cannot be shut down.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the stop signals this process's handlers took, first first


def handle_stop_signals() -> None:
    """Make Ctrl-C and SIGTERM raise KeyboardInterrupt in the main thread, each noted for :func:`interrupted_status`."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)


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


def loader_batches(dataset: Any, **options: Any) -> Iterator[Any]:
    """The batches of a ``torch.utils.data.DataLoader(dataset, **options)``; its reader processes
    (``num_workers``) are started with Ctrl-C and SIGTERM held back, leave quietly on either, and are
    shut down however the loop ends."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, worker_init_fn=_reader_process, **options)
    if not loader.num_workers:
        yield from loader
        return
    with held_back():
        batches = iter(loader)  # forks the readers
    try:
        yield from batches
    finally:
        del batches  # its readers are shut down now, however the loop ended, not when a traceback lets go of it


@contextmanager
def held_back(signals: Iterable[int] = STOP_SIGNALS) -> Iterator[None]:
    """Hold ``signals`` back in the block (the main thread's, where Python runs handlers; elsewhere a no-op), then deliver them.

    The handlers are swapped, not the signal mask: the kernel gives a signal to any thread that does not
    block it (torch runs several), and Python raises it in the main thread all the same.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)  # to the handler it was meant for


def _reader_process(worker_id: int) -> None:
    """A reader process's start (it was forked with the stop signals held back): from now on they end it, quietly."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _leave)


def _leave(signum: int, frame: FrameType | None) -> None:
    os._exit(0)  # the main process reports the interruption; an exit status 0 keeps torch from calling it a crash
