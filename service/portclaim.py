"""One server per gRPC port: the workers of a server share theirs, other servers may not.

The workers bind the gRPC port with SO_REUSEPORT so that each has its own listener, and the
kernel would as gladly let a second ``bentoml serve`` on the same machine join them: it
would take half of the first server's gRPC calls, silently. (A process that is not ours
cannot join: SO_REUSEPORT needs every socket to set it.) So each worker first claims the
port in a lock file that names its server, the process that started it: the workers of one
server hold the lock together (shared), and a worker of another finds it held for someone
else. A server that dies releases it with its workers.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import IO


class PortTaken(RuntimeError):
    """The port is served by another server's workers."""


def claim(port: int, server: int | None = None, wait_s: float = 2.0) -> IO[str] | None:
    """Hold ``port`` for ``server`` (default: this worker's parent) until the returned file
    is closed or the process ends; None when no lock file can be made (read-only /tmp),
    where sharing cannot be detected and is not prevented."""
    owner = str(server if server is not None else os.getppid())
    try:
        lock = open(Path(tempfile.gettempdir()) / f"keras-model-serving-grpc-{port}.lock", "a+")  # noqa: SIM115 (held open)
    except OSError:
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(lock, wait_s)  # another worker is writing its server's pid
        if holder != owner:
            lock.close()
            raise PortTaken(
                f"gRPC port {port} is served by another server (process {holder or '?'}); "
                "give each server its own SERVING_GRPC_PORT (0 turns gRPC off)"
            ) from None
        fcntl.flock(lock, fcntl.LOCK_SH)
        return lock
    lock.truncate(0)
    lock.write(owner)
    lock.flush()
    fcntl.flock(lock, fcntl.LOCK_SH)  # now the other workers of this server can join
    return lock


def _holder(lock: IO[str], wait_s: float) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        lock.seek(0)
        holder = lock.read().strip()
        if holder or time.monotonic() > deadline:
            return holder
        time.sleep(0.05)
