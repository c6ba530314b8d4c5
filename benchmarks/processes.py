"""A server as a process group on a loopback port: started, waited for, stopped cleanly.

Servers here fan out (uvicorn workers, MLServer's inference pool, LitServe's inference worker,
``tritonserver`` under PyTriton, Ray's GCS, raylet and actors), so a server is started in a
session of its own and signalled as a group. A few children leave the group (Ray starts its
daemons in sessions of their own); every process started here carries a marker in its
environment, inherited by all its descendants, and whatever still carries it after the group
is gone is killed by pid. Nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil

MARKER = "KMS_BENCH_SERVER"


class ServerExited(RuntimeError):
    pass


def exchange(
    url: str,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one POST; status 0 when nothing answered."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
    except (urllib.error.URLError, OSError):
        return 0, {}, b""


def post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of one JSON POST; status 0 when nothing answered."""
    status, _, answer = exchange(url, body, timeout=timeout)
    return status, answer


def reason(log: Path) -> str:
    """The most telling line of a server's log: its last error or exception, else its end."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"no log at {log}"
    telling = [line.strip() for line in lines if _TELLING.search(line)]
    return (telling or lines or [""])[-1].strip()[:300] + f" (log: {log})"


_TELLING = re.compile(r"^\s*[\w.]*(Error|Exception|Exit)\b.*:|\bERROR\b|\bFATAL\b|error:")


class ServerProcess:
    """One server command in its own process group, logging to ``log``; a context manager."""

    def __init__(
        self, command: list[str], cwd: Path, env: dict[str, str], log: Path, port: int
    ) -> None:
        self.command = command
        self.cwd = cwd
        self.marker = uuid.uuid4().hex
        self.env = {**os.environ, **env, MARKER: self.marker}
        self.log = log
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.strays: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, path: str, body: bytes, timeout: float) -> float:
        """Seconds until a POST of ``body`` to ``path`` answered 200: the model is serving.

        Servers differ in what their readiness routes mean (process up, model loaded, model
        registered with the router), so the one question asked of all is the real request.
        """
        assert self.process is not None
        started = time.monotonic()
        status, answer = 0, b""
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise ServerExited(
                    f"exited with {self.process.returncode} before serving: {reason(self.log)}"
                )
            status, answer = post(self.url + path, body, timeout=5)
            if status == 200:
                return time.monotonic() - started
            time.sleep(0.25)
        last = f"HTTP {status} {answer[:120]!r}" if status else "no answer"
        raise TimeoutError(f"not serving within {timeout:.0f} s, last: {last}; {reason(self.log)}")

    def wait_listening(self, timeout: float) -> float:
        """Seconds until the port accepts a connection: for servers asked nothing before use
        (the replay floors keep the first answer to each request)."""
        assert self.process is not None
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise ServerExited(f"exited with {self.process.returncode}: {reason(self.log)}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"port {self.port} not listening within {timeout:.0f} s")

    def _group_alive(self, pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _signal_group(self, pgid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signum)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the group; SIGKILL to what is left after ``grace`` s; then strays."""
        if self.process is None:
            return
        pgid = self.process.pid  # the session leader: its pid is the group id
        self._signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (
            self.process.poll() is None or self._group_alive(pgid)
        ):
            time.sleep(0.1)
        self._signal_group(pgid, signal.SIGKILL)
        self.process.wait()
        # Strays get the same courtesy: SIGTERM, a moment to exit, then SIGKILL.
        self.strays = self.signal_strays(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while self.strays and time.monotonic() < deadline and self.signal_strays(0):
            time.sleep(0.1)
        self.signal_strays(signal.SIGKILL)

    def signal_strays(self, signum: int) -> list[int]:
        """Signal (0: just find) the processes that left the group but carry this marker."""
        found = []
        for process in psutil.process_iter(["pid"]):
            try:
                if process.environ().get(MARKER) == self.marker and process.status() not in (
                    psutil.STATUS_ZOMBIE,
                    psutil.STATUS_DEAD,
                ):
                    if signum:
                        process.send_signal(signum)
                    found.append(process.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def stop_servers_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``with`` around a server stops its group."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
