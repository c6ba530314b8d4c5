"""Faults: a worker killed under load, SIGTERM under load, a model corrupted on disk, and
load beyond capacity. Each starts its own ``bentoml serve``."""

from __future__ import annotations

import asyncio
import shutil
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
import yaml

from benchmarks.loadgen import build_request, load
from benchmarks.servers import Server
from modelspec import repository
from reliability.report import ScenarioResult
from reliability.traffic import Exchange, answer_is_correct

WORKER_MARK = "_bentoml_impl.worker"
DEPLOYMENT = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "deployment.yaml"


def deployment_grace_seconds(deployment: Path = DEPLOYMENT) -> float:
    """Seconds a pod has after SIGTERM: the grace period minus the preStop pause."""
    pod = yaml.safe_load(deployment.read_text())["spec"]["template"]["spec"]
    pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    return float(pod["terminationGracePeriodSeconds"] - pause)


def workers(server: Server) -> list[psutil.Process]:
    """The live worker processes (a killed one may linger as a zombie until reaped)."""
    found = []
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and WORKER_MARK in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue  # gone between listing and looking
    return found


def _requests(server: Server, traffic: list[Exchange]) -> list[bytes]:
    return [
        build_request("127.0.0.1", server.port, e.path, e.payload.body, e.payload.content_type)
        for e in traffic
    ]


def kill_worker_under_load(
    repository_root: Path, traffic: list[Exchange], seconds: float, concurrency: int = 32
) -> ScenarioResult:
    """kill -9 one of two workers mid-load: the arbiter restarts it, the other keeps serving.

    Only the requests the killed worker held may fail: at most one per client connection
    (each has one request outstanding, then reconnects). A rate would depend on how many
    requests the machine fits into the run (1.11% on a busy machine, 0.017% in a long run)."""
    with Server(env=two_workers_env(repository_root)) as server:
        server.wait_until("/readyz")
        return kill_worker_on(server, traffic, seconds, concurrency)


def two_workers_env(repository_root: Path) -> dict[str, str]:
    return {"MODEL_REPOSITORY": str(repository_root), "SERVING_WORKERS": "2"}


def kill_worker_on(
    server: Server, traffic: list[Exchange], seconds: float, concurrency: int = 32
) -> ScenarioResult:
    """:func:`kill_worker_under_load` on a running server of two workers (left ready)."""
    result = ScenarioResult(
        "kill -9 a worker under load",
        f"at most one failed request per client ({concurrency}), worker restarted",
    )
    before = workers(server)
    victim = before[0]
    killer = threading.Timer(seconds / 3, victim.kill)
    killer.start()
    outcome = load("127.0.0.1", server.port, _requests(server, traffic), concurrency, seconds)
    killer.join()
    restarted = _wait_for(
        lambda: victim.pid not in {w.pid for w in workers(server)} and len(workers(server)) == 2,
        60,
    )
    server.wait_until("/readyz", timeout=600)  # loading its models again: a hang guard only
    summary = outcome.summary()
    total = summary["requests"] + outcome.errors
    error_rate = summary["failed"] / total if total else 1.0
    result.figures = {
        "requests": total,
        "failed": summary["failed"],
        "error_rate_pct": round(100 * error_rate, 3),
        "worker_restarted": restarted,
        "statuses": dict(outcome.statuses),
    }
    result.require(
        summary["failed"] <= concurrency,
        f"{summary['failed']} of {total} requests failed ({error_rate:.2%}); limit "
        f"{concurrency}, one per client",
    )
    result.require(restarted, "the killed worker's process was not replaced within 60 s")
    return result


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@dataclass(frozen=True)
class Outcome:
    started: float
    finished: float
    result: str  # "200", another status, or the exception's name


async def _flowers_until_stopped(
    url: str, files: list[bytes], clients: int, stop: asyncio.Event
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    upload = [("image", (f"{i}.jpg", f, "image/jpeg")) for i, f in enumerate(files)]

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = await client.post("/flowers/predict", files=upload)
                result = str(response.status_code)
            except httpx.HTTPError as error:
                result = type(error).__name__
            outcomes.append(Outcome(started, time.monotonic(), result))
            if result != "200":
                return  # the server is going away; a real client would go elsewhere

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return outcomes


def sigterm_under_load(
    repository_root: Path, files: list[bytes], grace_seconds: float, clients: int = 16
) -> ScenarioResult:
    """SIGTERM to the main process (as the kubelet sends it) while clients are mid-request."""
    with Server(env={"MODEL_REPOSITORY": str(repository_root)}) as server:
        server.wait_until("/readyz")
        return sigterm_on(server, files, grace_seconds, clients)


def sigterm_on(
    server: Server, files: list[bytes], grace_seconds: float, clients: int = 16
) -> ScenarioResult:
    """:func:`sigterm_under_load` on a running server, which it stops."""
    result = ScenarioResult(
        "SIGTERM under load", "every request sent before SIGTERM answered 200, clean exit in grace"
    )

    async def scenario() -> tuple[list[Outcome], float, int, float]:
        stop = asyncio.Event()
        load_task = asyncio.create_task(_flowers_until_stopped(server.url, files, clients, stop))
        await asyncio.sleep(3)
        sigterm_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        stop.set()
        outcomes = await load_task
        # Judged against its budget below; waited for longer, so a slow exit is measured.
        code = await asyncio.to_thread(server.process.wait, 4 * grace_seconds)
        return outcomes, sigterm_at, code, time.monotonic() - sigterm_at

    outcomes, sigterm_at, code, exit_seconds = asyncio.run(scenario())
    before = [o for o in outcomes if o.started < sigterm_at]
    in_flight = [o for o in before if o.finished > sigterm_at]
    # The grace budget, or on a machine so busy that a request takes a sizeable part of it,
    # twice the slowest request sent before the signal (draining waits for such) + 5 s.
    slowest = max((o.finished - o.started for o in before), default=0)
    exit_budget = max(grace_seconds, 2 * slowest + 5)
    after = [o for o in outcomes if o.started >= sigterm_at]
    failed_before = [o.result for o in before if o.result != "200"]
    result.figures = {
        "sent_before": len(before),
        "in_flight_at_sigterm": len(in_flight),
        "failed_before": len(failed_before),
        "after_sigterm": dict(Counter(o.result for o in after)),
        "exit_code": code,
        "exit_seconds": round(exit_seconds, 2),
        "slowest_request_before_s": round(slowest, 2),
        "exit_budget_s": round(exit_budget, 2),
    }
    result.require(
        len(in_flight) >= clients // 2,
        f"the load did not overlap the SIGTERM: {len(in_flight)} of {clients} clients in "
        f"flight, at least {clients // 2} needed",
    )
    result.require(not failed_before, f"requests sent before SIGTERM failed: {failed_before}")
    result.require(
        not [o for o in after if o.result.startswith("5")], "a request after SIGTERM got a 5xx"
    )
    result.require(code == 0, f"exit code {code}")
    result.require(
        exit_seconds < exit_budget,
        f"exit took {exit_seconds:.1f} s; budget {exit_budget:.1f} s (grace {grace_seconds:.0f} "
        f"s, slowest request {slowest:.1f} s)",
    )
    return result


def corrupted_model_at_start(
    repository_root: Path, workdir: Path, probe: Exchange
) -> ScenarioResult:
    """One byte of digits' ONNX file flipped on disk: digits refused, the others serve."""
    result = ScenarioResult(
        "model file corrupted on disk", "that model not ready (reason given), the others serve"
    )
    copy = workdir / "corrupted-repository"
    shutil.copytree(repository_root, copy)
    version = repository.latest_version(copy, "digits")
    graph = repository.version_dir(copy, "digits", version) / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with Server(env={"MODEL_REPOSITORY": str(copy)}) as server:
        states = _model_states(server)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ready = client.get("/readyz").status_code
            digits = client.post("/digits/predict", json={"inputs": [np.zeros((28, 28)).tolist()]})
            other = client.post(probe.path, content=probe.payload.body,
                                headers={"content-type": probe.payload.content_type})  # fmt: skip
            v2_ready = client.get("/v2/models/digits/ready").status_code
    result.figures = {
        "states": {name: state for name, (state, _) in states.items()},
        "digits_reason": states.get("digits", ("", ""))[1],
        "readyz": ready,
        "digits_request": digits.status_code,
        "other_model_request": other.status_code,
        "v2_digits_ready": v2_ready,
    }
    result.require(states.get("digits", ("",))[0] == "failed", "digits was not refused")
    result.require("integrity" in str(states.get("digits", ("", ""))[1]), "no integrity reason")
    others = [state for name, (state, _) in states.items() if name != "digits"]
    result.require(others and set(others) == {"ready"}, f"other models not ready: {states}")
    result.require(ready == 503, f"/readyz answered {ready}")
    result.require(digits.status_code == 503 and "error" in digits.json(), "digits not a 503")
    result.require(answer_is_correct(probe, other.status_code, other.content), "others wrong")
    result.require(v2_ready != 200, "V2 said digits is ready")
    return result


def _model_states(server: Server, timeout: float = 120) -> dict[str, tuple[str, str]]:
    """Each model's (state, reason) once none is still loading."""
    server.wait_until("/livez")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            models = httpx.get(f"{server.url}/models", timeout=10).json()["models"]
        except (httpx.HTTPError, ValueError, KeyError):
            models = []
        states = {m["name"]: (m["state"], m.get("reason") or "") for m in models}
        if states and "loading" not in {s for s, _ in states.values()}:
            return states
        time.sleep(0.5)
    raise TimeoutError("models still loading")


def overload(
    repository_root: Path, workdir: Path, files: list[bytes], seconds: float, clients: int = 64
) -> ScenarioResult:
    """Far more flower requests than the model can run, with a short queue: the excess gets
    a fast 503 + Retry-After, accepted requests still get answers, nothing hangs or crashes."""
    config = workdir / "overload.yaml"
    config.write_text(yaml.safe_dump(OVERLOAD_CONFIG))
    env = {"MODEL_REPOSITORY": str(repository_root), "SERVING_CONFIG": str(config)}
    with Server(env=env) as server:
        server.wait_until("/readyz")
        return overload_on(server, files, seconds, clients)


# The serving configuration :func:`overload` runs with: a queue of 8 flower images.
OVERLOAD_CONFIG = {"models": {"flowers": {"batching": {"max_queued_items": 8}}}}


def overload_on(
    server: Server, files: list[bytes], seconds: float, clients: int = 64
) -> ScenarioResult:
    """:func:`overload` on a running server configured with ``OVERLOAD_CONFIG``."""
    result = ScenarioResult(
        "overload beyond capacity", "fast 503 with Retry-After, no timeouts, no other errors"
    )
    records = asyncio.run(_flood(server.url, files, clients, seconds))
    healthy = httpx.get(f"{server.url}/livez", timeout=10).status_code
    statuses = Counter(status for status, _, _ in records)
    refused = [(latency, retry) for status, latency, retry in records if status == 503]
    refusal_ms = np.array([latency for latency, _ in refused]) * 1000 if refused else np.zeros(1)
    served_ms = np.array([latency for status, latency, _ in records if status == 200] or [0.0])
    result.figures = {
        "requests": len(records),
        "statuses": dict(statuses),
        "rejected_pct": round(100 * len(refused) / max(1, len(records)), 1),
        "503_p50_ms": round(float(np.percentile(refusal_ms, 50)), 2),
        "503_p99_ms": round(float(np.percentile(refusal_ms, 99)), 2),
        "200_p50_ms": round(float(np.percentile(served_ms * 1000, 50)), 2),
        "live_after": healthy,
    }
    result.require(statuses.get(503, 0) > 0, "never overloaded: no 503")
    result.require(statuses.get(200, 0) > 0, "no request served during overload")
    result.require(set(statuses) <= {200, 503}, f"unexpected statuses {dict(statuses)}")
    result.require(all(retry == "1" for _, retry in refused), "a 503 without Retry-After")
    # A refusal costs no decoding or inference, so it must come back faster than an answer;
    # both wait for the same saturated event loop (and, here, a client on the same cores).
    refused_p50 = float(np.percentile(refusal_ms, 50))
    served_p50 = float(np.percentile(served_ms * 1000, 50))
    result.require(
        refused_p50 < served_p50,
        f"503s were not faster than served requests: p50 {refused_p50:.0f} ms vs {served_p50:.0f}",
    )
    result.require(healthy == 200, "service not live after the overload")
    return result


async def _flood(
    url: str, files: list[bytes], clients: int, seconds: float
) -> list[tuple[int | str, float, str | None]]:
    records: list[tuple[int | str, float, str | None]] = []
    deadline = time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient, k: int) -> None:
        upload = [("image", ("f.jpg", files[k % len(files)], "image/jpeg"))]
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response = await client.post("/flowers/predict", files=upload)
                status, retry = response.status_code, response.headers.get("retry-after")
            except httpx.HTTPError as error:
                status, retry = type(error).__name__, None
            records.append((status, time.monotonic() - started, retry))

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(client_loop(client, k) for k in range(clients)))
    return records
