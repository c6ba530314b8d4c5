"""What the ``bentoml serve`` process itself does before BentoML starts the workers: one
line, not a traceback, when the HTTP port is taken, and a metrics folder of its own.

BentoML imports the service module in that process (``bentoml serve`` loads it to find the
service) before it binds the port and prepares the Prometheus folder, so both can be decided
here. Workers import the module too; they run none of this (no ``serve`` command there).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

METRICS_PREFIX = "prometheus_multiproc_dir-"


def serve_command() -> Any:
    """The ``bentoml serve`` click context when this process is that command, else None."""
    try:
        import click
    except ImportError:
        return None
    context = click.get_current_context(silent=True)
    if context is None or context.command.name != "serve":
        return None
    return context


def prepare_server() -> None:
    context = serve_command()
    if context is None:
        return
    from bentoml._internal.configuration.containers import BentoMLContainer

    port = context.params.get("port") or BentoMLContainer.http.port.get()
    host = context.params.get("host") or BentoMLContainer.http.host.get()
    check_http_port(host, int(port))
    own_metrics_dir(Path(BentoMLContainer.bentoml_home.get()), BentoMLContainer)


def check_http_port(host: str, port: int) -> None:
    """Stop with one line when the port is taken: BentoML's own bind fails later with a
    50-line traceback that never names the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as BentoML binds
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return  # BentoML reports anything else itself
            print(
                f"error: HTTP port {port} ({host}) is already in use: stop what serves it, or "
                f"choose another port with `bentoml serve --port N` (`make serve PORT=N`)",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1) from None


def own_metrics_dir(home: Path, container: Any) -> Path:
    """A Prometheus multiprocess folder for this server alone.

    BentoML empties ``$BENTOML_HOME/prometheus_multiproc_dir`` whenever a server starts, so
    a second server on the machine wiped the first one's counts. Each server gets
    ``prometheus_multiproc_dir-<its pid>`` instead (its workers inherit it), removed when it
    exits; folders of servers no longer running are removed at start.
    """
    for stale in home.glob(METRICS_PREFIX + "*"):
        pid = stale.name.removeprefix(METRICS_PREFIX)
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    own = home / f"{METRICS_PREFIX}{os.getpid()}"
    container.prometheus_multiproc_dir.set(str(own))
    atexit.register(shutil.rmtree, own, True)
    return own


def alive(pid: int) -> bool:
    """A process still running (someone else's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def forget_dead_workers(folder: str | None) -> None:
    """In a worker as it starts: drop the live gauges and drift counts of the server's
    workers no longer running. BentoML starts a killed worker again, and prometheus_client
    keeps a dead process's ``live*`` gauges until ``mark_process_dead`` is called, which no
    one did: after a kill -9, /metrics showed the dead worker's serving_model_ready and
    serving_model_info at 1 beside its replacement's (3 workers of 2), and a livesum gauge
    (serving_requests_in_flight) kept the value it had when the worker died. Its counters
    and histograms stay: what it counted happened."""
    if not folder or not Path(folder).is_dir():
        return
    from prometheus_client import multiprocess

    dead = set()
    for path in Path(folder).iterdir():
        pid = path.stem.rsplit("_", 1)[-1].removeprefix("drift-")
        if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
            dead.add(int(pid))
    for pid in dead:
        # Two workers started again at once may both remove the same files.
        with contextlib.suppress(FileNotFoundError):
            multiprocess.mark_process_dead(pid, folder)
        (Path(folder) / f"drift-{pid}.json").unlink(missing_ok=True)
