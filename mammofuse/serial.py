"""One library call at a time in a process.

Reading a file records the remarks it gives with :func:`warnings.catch_warnings`, which swaps the process's warning
machinery and is not thread-safe; a model scores in eval mode and gets its own mode back after; Grad-CAM hooks a
layer of the model. So the front door's calls (:func:`mammofuse.predict`, ``explain``, ``evaluate``,
``load_dataset``) take one lock: threads sharing a model (a web server's) each wait for the call before theirs to
end. The lock is re-entrant, so one call may make another, and a process forked while another thread holds it
starts with a free one (the holder is not in the child).
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Callable, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_LOCK = threading.RLock()


def _new_lock() -> None:
    """A free lock for a forked child: a lock held by another thread of the parent would never be released there."""
    global _LOCK
    _LOCK = threading.RLock()


os.register_at_fork(after_in_child=_new_lock)


def one_at_a_time(function: Callable[P, R]) -> Callable[P, R]:
    """``function``, waiting while another thread is in any call so wrapped."""

    @functools.wraps(function)
    def serialised(*args: P.args, **kwargs: P.kwargs) -> R:
        with _LOCK:
            return function(*args, **kwargs)

    return serialised
