"""The shared memory (``/dev/shm``) through which a DataLoader's reader processes hand their batches over.

A full or read-only one is a one-line :class:`~mammofuse.errors.OutputError` naming it and ``--workers 0`` (images then
read in the main process, with no shared memory), never torch's traceback of the reader.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator

from mammofuse.errors import OutputError

SHARED_MEMORY = "/dev/shm"
# torch's failure (ATen's MapAllocator) to make a batch's shared memory, ending with the C library's reason and errno;
# raised in a reader, it reaches the main process as a RuntimeError holding the reader's traceback
_TORCH_FAILURE = re.compile(r"unable to (?:allocate shared memory\(shm\) for file|open shared memory object) <[^>\n]*>[^:\n]*: ([^\n]+?) \(\d+\)")


def shared_memory_error(problem: str) -> OutputError:
    """The error for a shared memory that cannot take the readers' batches for ``problem`` (the C library's reason)."""
    problem = problem[:1].lower() + problem[1:]
    return OutputError(
        SHARED_MEMORY, problem,
        f"{SHARED_MEMORY} (shared memory, through which image-reading processes hand their batches over): {problem}; "
        "use --workers 0 to read the images in this process",
    )


def check_shared_memory(context: Any) -> None:
    """Fail before the readers start when ``context`` (a multiprocessing context) cannot make the locks of the queues
    they need in shared memory (a read-only one): torch's loader would fail half built, and report a second error when
    collected."""
    try:
        context.Lock()
    except OSError as exc:
        raise shared_memory_error(exc.strerror or str(exc)) from exc


@contextmanager
def batch_handover() -> Iterator[None]:
    """A reader's failure to put a batch in shared memory (a full one), raised again in the main process by torch, as
    :func:`shared_memory_error`; any other error as it is."""
    try:
        yield
    except RuntimeError as exc:
        if not (found := _TORCH_FAILURE.search(str(exc))):
            raise
        raise shared_memory_error(found[1]) from exc
