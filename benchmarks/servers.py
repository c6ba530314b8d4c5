"""Start and stop real ``bentoml serve`` processes for benchmarks and tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "service.service:KerasModels"
BASELINE = "benchmarks.baseline_service:StockDigits"


def ood_off_config(folder: Path) -> Path:
    """A ``SERVING_CONFIG`` file turning digits' OOD flag off: the classifier alone, the
    work every peer does (ours runs the autoencoder its manifest pairs it with by default)."""
    path = folder / "ood-off.yaml"
    path.write_text("models:\n  digits:\n    ood:\n      enabled: false\n")
    return path.resolve()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


class Server:
    """One ``bentoml serve`` child process on a free port; a context manager.

    Each server gets its own ``BENTOML_HOME`` unless one is given: BentoML clears the
    Prometheus multiprocess folder under it at start, which would wipe the metrics of any
    other server sharing that home.
    """

    started: ClassVar[list[Server]] = []  # every one this process started, in order

    def __init__(
        self,
        target: str = SERVICE,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.target = target
        self.cwd = Path(cwd).resolve()
        self.port = free_port()
        # Our own gRPC port too: workers share theirs with SO_REUSEPORT, so two servers on
        # one port would silently split each other's calls.
        self.grpc_port = int((env or {}).get("SERVING_GRPC_PORT") or free_port())
        self.env = {**os.environ, "SERVING_GRPC_PORT": str(self.grpc_port), **(env or {})}
        if self.cwd != ROOT:
            # Another checkout of the repository: its code is served in every worker, whatever
            # the venv's editable install points at.
            paths = [str(self.cwd), *filter(None, [self.env.get("PYTHONPATH")])]
            self.env["PYTHONPATH"] = os.pathsep.join(paths)
        self._own_home = None
        if "BENTOML_HOME" not in (env or {}):
            self._own_home = tempfile.mkdtemp(prefix="bentoml-home-")
            self.env["BENTOML_HOME"] = self._own_home
        # Always a log: the tests read every server's for tracebacks (tests/conftest.py).
        if log is None:
            handle, name = tempfile.mkstemp(prefix="serve-", suffix=".log")
            os.close(handle)
            log = Path(name)
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        Server.started.append(self)
        with open(self.log_path, "wb") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", self.target, "--port", str(self.port)],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_until(self, path: str, status: int = 200, timeout: float = 600.0) -> float:
        """Seconds until ``path`` answered ``status``; raises if the server died or timed out.

        The default timeout only guards against a hang: a start-up loading four models took
        up to 149 s on a busy two-core machine (6 s on a quiet one)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.target} exited with {self.process.returncode}")
            if http_status(self.url + path) == status:
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"{self.url}{path} did not answer {status} within {timeout} s")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.process.wait()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        if self._own_home is not None:
            shutil.rmtree(self._own_home, ignore_errors=True)
