"""Sustained concurrent load across the endpoints: failures, wrong answers (a sample checked
against ONNX Runtime run directly) and the server's resident memory growth."""

from __future__ import annotations

import psutil

from benchmarks.loadgen import build_request, load
from benchmarks.servers import Server
from reliability.report import ScenarioResult
from reliability.traffic import Exchange, answer_is_correct

MEMORY_GROWTH_TARGET_PCT = 10.0


def resident_mb(server: Server) -> float:
    """RSS of the server's whole process tree (arbiter and workers)."""
    main = psutil.Process(server.process.pid)
    processes = [main, *main.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes if p.is_running()) / 2**20


def run_sustained_load(
    server: Server,
    traffic: list[Exchange],
    total_requests: int,
    concurrency: int,
    max_seconds: float,
    check_every: int = 25,
    warm_up: int | None = None,
) -> ScenarioResult:
    result = ScenarioResult(
        f"sustained load (c={concurrency})",
        "0 failed, 0 wrong answers, resident memory growth <= 10% after warm-up",
    )
    requests = [
        build_request("127.0.0.1", server.port, e.path, e.payload.body, e.payload.content_type)
        for e in traffic
    ]
    checked = {"count": 0, "wrong": 0}

    def inspect(index: int, status: int, body: bytes) -> None:
        checked["count"] += 1
        if not answer_is_correct(traffic[index], status, body):
            checked["wrong"] += 1

    # Steady state first: allocator arenas, thread pools and caches fill in the first few
    # thousand requests; growth is measured from there.
    warm_up = max(5_000, total_requests // 20) if warm_up is None else warm_up
    load("127.0.0.1", server.port, requests, concurrency, max_seconds, warm_up)
    before = resident_mb(server)
    outcome = load(
        "127.0.0.1", server.port, requests, concurrency, max_seconds, total_requests,
        inspect, check_every,
    )  # fmt: skip
    after = resident_mb(server)
    summary = outcome.summary()
    growth = 100 * (after - before) / before
    result.figures = {
        "requests": summary["requests"],
        "failed": summary["failed"],
        "wrong": checked["wrong"],
        "answers_checked": checked["count"],
        "requests_per_s": summary["requests_per_s"],
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "rss_after_warm_up_mb": round(before, 1),
        "rss_after_load_mb": round(after, 1),
        "rss_growth_pct": round(growth, 2),
    }
    # The request count is the sample; time is what a slower machine spends on it, up to the
    # profile's cap (generous: a busy two-core machine serves a few hundred per second).
    result.require(
        summary["requests"] >= total_requests,
        f"{summary['requests']} requests of {total_requests} planned within the {max_seconds:.0f}"
        f" s cap ({summary['requests_per_s']} req/s)",
    )
    result.require(summary["failed"] == 0, f"{summary['failed']} failed requests")
    result.require(checked["wrong"] == 0, f"{checked['wrong']} wrong answers")
    result.require(checked["count"] > 0, "no answer was checked")
    result.require(growth <= MEMORY_GROWTH_TARGET_PCT, f"memory grew {growth:.1f}%")
    return result
