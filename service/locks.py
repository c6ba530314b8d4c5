"""An exclusive lock on a file, for what a server's workers (separate processes) share: the
repository API's state files (``service.admin``) and the cache of a bucket repository
(``service.mirror``). The lock is the kernel's (``flock``): released when its file closes,
also when the process holding it dies."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the lock on ``path`` (created if missing) while in the block; yields whether it
    is held (``wait=False``: not when another process holds it)."""
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
