"""A small, fast HTTP/1.1 load generator: keep-alive connections, prepared request bytes.

Python HTTP clients spend more CPU per request than the service does on these small models,
which would measure the client, not the server. This one writes prepared bytes and parses
only the status line and Content-Length, so on the same two cores it stays out of the way.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# Called with (payload index, status, body) for a sample of responses, to check answers.
Inspect = Callable[[int, int, bytes], None]


def build_request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def summary(self, items_per_request: int = 1) -> dict[str, float]:
        lat = np.asarray(self.latencies) * 1000 if self.latencies else np.zeros(1)
        rps = self.requests / self.seconds if self.seconds else 0.0
        ok = sum(n for s, n in self.statuses.items() if 200 <= s < 300)
        return {
            "requests": self.requests,
            "ok": ok,
            "failed": self.requests - ok + self.errors,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(rps, 1),
            "items_per_s": round(rps * items_per_request, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p95_ms": round(float(np.percentile(lat, 95)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
        }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return status, b"".join(parts)
        parts.append(data[:-2])


async def _client(
    host: str,
    port: int,
    requests: Sequence[bytes],
    offset: int,
    deadline: float,
    result: LoadResult,
    max_requests: int | None,
    inspect: Inspect | None = None,
    inspect_every: int = 0,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    try:
        while time.perf_counter() < deadline:
            if max_requests is not None and result.requests >= max_requests:
                break
            index = i % len(requests)
            i += 1
            started = time.perf_counter()
            writer.write(requests[index])
            try:
                status, body = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                result.errors += 1
                writer.close()
                reader, writer = await _reconnect(host, port, deadline)
                continue
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] += 1
            if inspect is not None and i % inspect_every == 0:
                inspect(index, status, body)
    finally:
        writer.close()


async def _reconnect(
    host: str, port: int, deadline: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A new connection, retried while the server (or a restarting worker) refuses one."""
    while True:
        try:
            return await asyncio.open_connection(host, port)
        except OSError:
            if time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0.05)


async def run_load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    seconds: float,
    max_requests: int | None = None,
    inspect: Inspect | None = None,
    inspect_every: int = 50,
) -> LoadResult:
    """``concurrency`` connections, each sending requests back to back for ``seconds`` (or
    until ``max_requests``); ``inspect`` sees every ``inspect_every``-th answer."""
    result = LoadResult()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _client(host, port, requests, k, deadline, result, max_requests, inspect, inspect_every)
            for k in range(concurrency)
        )
    )
    result.seconds = time.perf_counter() - started
    return result


def load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    seconds: float,
    max_requests: int | None = None,
    inspect: Inspect | None = None,
    inspect_every: int = 50,
) -> LoadResult:
    """Run the load with the collector paused: its pauses would be charged to the server."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        runner = asyncio.run
    gc.disable()
    try:
        return runner(
            run_load(
                host, port, requests, concurrency, seconds, max_requests, inspect, inspect_every
            )
        )
    finally:
        gc.enable()
