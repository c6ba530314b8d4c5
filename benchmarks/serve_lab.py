"""The servers of a ``serve_bench`` run, and the measurements taken of them.

A ``Spec`` names a server (ours with some settings, the stock baseline, or the HTTP floor with
some workers); the ``Lab`` starts it when a measurement needs it, keeping one service and one
floor at most alive at a time (the one not measured sits idle), and stops them all at the end.
A ``Body`` is one request body with the check of its answer: before a server is timed with a
body, our client asks it once and checks the answer. hey then warms it up and measures it; a
measurement is kept, so a row that another group needs again (the default service on V2 JSON,
the floor on the same body) is measured once and the server is not started again for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import floors, hey
from benchmarks.payloads import Payload
from benchmarks.processes import ServerProcess, exchange
from benchmarks.servers import BASELINE, Server, free_port

Measurement = dict[str, Any]


def progress(label: str, step: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {label}: {step}", flush=True)


@dataclass
class Body:
    """One request body, in a file for hey, and the check of its answer."""

    name: str
    label: str
    path: str
    payload: Payload
    items: int
    check: Callable[[bytes, dict[str, str]], str | None]
    file: Path = Path()

    @property
    def content(self) -> str:
        """What a floor sees of it (the floor answers any path alike): the same for two
        bodies of the same bytes, so the floor is measured once for both."""
        payload = self.payload
        return hashlib.sha1(payload.content_type.encode() + payload.body).hexdigest()[:16]


class Unavailable(RuntimeError):
    """A server that could not be started: every row needing it says so."""


@dataclass(frozen=True)
class Spec:
    """A server to measure: ours with some settings, the stock baseline, or a floor."""

    key: str
    label: str
    kind: str  # "ours", "baseline", "floor"
    env: tuple[tuple[str, str], ...] = ()
    workers: int = 1  # floors only


OURS = Spec("ours", "ours", "ours")
STOCK = Spec("baseline", "stock BentoML (batchable API)", "baseline")


def floor_spec(workers: int = 1) -> Spec:
    label = "bare ASGI (uvicorn+httptools)" + (f", {workers} workers" if workers > 1 else "")
    return Spec(f"floor-{workers}", label, "floor", workers=workers)


def ours_with(label: str, **env: str) -> Spec:
    settings = tuple(sorted(env.items()))
    return Spec("ours " + " ".join(f"{k}={v}" for k, v in settings), label, "ours", settings)


def fatal(problem: str | None) -> bool:
    """No answer, or not a 200: nothing to measure (a wrong answer is measured, and marked)."""
    return bool(problem) and problem.startswith(("HTTP", "no answer"))


@dataclass
class LabSettings:
    logs: Path
    repository: Path
    checkout: Path  # the code our service runs
    baseline_onnx: Path
    seconds: float
    warmup: float
    ready_timeout: float


class Lab:
    """The servers (one service and one floor at most at a time) and the measurements."""

    def __init__(self, settings: LabSettings) -> None:
        self.settings = settings
        settings.logs.mkdir(parents=True, exist_ok=True)
        self.slots: dict[str, tuple[Spec, Any, contextlib.ExitStack]] = {}
        self.failed: dict[str, str] = {}
        self.measured: dict[tuple[str, str, int], Measurement] = {}
        self.checked: dict[tuple[str, str], str | None] = {}
        self.warmed: set[tuple[str, str]] = set()  # (server, body): warmed up

    # -- servers
    def server(self, spec: Spec) -> Any:
        """``spec``'s server, started (and the one in its slot stopped) if need be."""
        slot = "floor" if spec.kind == "floor" else "service"
        held = self.slots.get(slot)
        if held and held[0] == spec:
            return held[1]
        self.release(slot)
        if spec.key in self.failed:
            raise Unavailable(self.failed[spec.key])
        stack = contextlib.ExitStack()
        progress(spec.label, "starting")
        try:
            server, seconds = self._start(spec, stack)
        except (RuntimeError, TimeoutError, OSError) as error:
            stack.close()
            self.failed[spec.key] = f"{type(error).__name__}: {error}"[:400]
            progress(spec.label, f"start failed: {self.failed[spec.key]}")
            raise Unavailable(self.failed[spec.key]) from None
        progress(spec.label, f"serving after {seconds:.1f} s")
        self.slots[slot] = (spec, server, stack)
        return server

    def _start(self, spec: Spec, stack: contextlib.ExitStack) -> tuple[Any, float]:
        settings = self.settings
        log = settings.logs / (re.sub(r"[^\w.-]+", "-", spec.label).strip("-") + ".log")
        if spec.kind == "floor":
            port = free_port()
            command = floors.http_floor_command(port, spec.workers)
            floor = stack.enter_context(ServerProcess(command, floors.ROOT, {}, log, port))
            return floor, floor.wait_ready("/", b"{}", settings.ready_timeout)
        if spec.kind == "baseline":
            env = {"BASELINE_ONNX": str(settings.baseline_onnx)}
            server = stack.enter_context(Server(BASELINE, env=env, log=log))
        else:
            env = {
                "MODEL_REPOSITORY": str(settings.repository.resolve()),
                "OTEL_TRACES_EXPORTER": "none",  # whatever this shell has: off unless asked
                **dict(spec.env),
            }
            server = stack.enter_context(Server(env=env, log=log, cwd=settings.checkout))
        try:
            return server, server.wait_until("/readyz", timeout=settings.ready_timeout)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error} (log: {log})") from None

    def release(self, slot: str) -> None:
        """Stop the server in ``slot`` ("service" or "floor"), if any."""
        held = self.slots.pop(slot, None)
        if held:
            held[2].close()

    def close(self) -> None:
        for slot in list(self.slots):
            self.release(slot)

    # -- measurements
    def check(self, spec: Spec, url: str, body: Body) -> str | None:
        """Our client's question before any timing: None when the answer is right."""
        key = (spec.key, body.name)
        if key not in self.checked:
            payload = body.payload
            status, headers, answer = exchange(
                url, payload.body, payload.content_type, payload.headers, timeout=60
            )
            if status != 200:
                problem = f"HTTP {status}: {answer[:160]!r}" if status else "no answer"
            else:
                problem = body.check(answer, headers)
            self.checked[key] = problem
        return self.checked[key]

    def measure(
        self, spec: Spec, body: Body, concurrency: int
    ) -> tuple[Measurement | None, str | None]:
        """hey's figures for ``body`` on ``spec`` at ``concurrency`` (measured once), and what
        is wrong with the server's answer (None: right; floors answer a fixed JSON, unchecked).
        No figures when the server did not answer 200. Raises ``Unavailable``."""
        key = (spec.key, body.content if spec.kind == "floor" else body.name, concurrency)
        if key in self.measured:
            return self.measured[key], self.checked.get((spec.key, body.name))
        url = self.server(spec).url + body.path
        problem = None if spec.kind == "floor" else self.check(spec, url, body)
        if fatal(problem):
            return None, problem
        options = {"content_type": body.payload.content_type, "headers": body.payload.headers}
        if key[:2] not in self.warmed and self.settings.warmup > 0:
            hey.run(url, body.file, max(concurrency, 8), self.settings.warmup, **options)
            self.warmed.add(key[:2])
        result = hey.run(url, body.file, concurrency, self.settings.seconds, **options)
        summary = result.summary()
        measured = {
            "client": "hey",
            "concurrency": concurrency,
            "requests_per_s": summary["requests_per_s"],
            "throughput": round(result.requests_per_s * body.items, 1),
            "p50_ms": summary["p50_ms"],
            "p99_ms": summary["p99_ms"],
            # Little's law: finer than hey's percentiles (printed to 0.1 ms), which are coarse
            # at low concurrency.
            "mean_ms": mean_ms(concurrency, result.requests_per_s),
            "ok": result.ok,
            "failed": result.failed,
            "seconds": result.seconds,
        }
        if result.errors:
            measured["errors"] = result.errors
        self.measured[key] = measured
        return measured, problem


def mean_ms(concurrency: int, requests_per_s: float) -> float | None:
    return round(concurrency * 1000 / requests_per_s, 3) if requests_per_s else None
