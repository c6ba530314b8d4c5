"""Graceful shutdown: SIGTERM to a loaded ``bentoml serve`` (as the kubelet sends it to the
container's main process) lets every request already sent finish with its answer, and the
process exits well inside the Deployment's termination grace period."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from benchmarks.payloads import flower_files
from benchmarks.servers import Server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 16
IMAGES_PER_REQUEST = 8


@dataclass(frozen=True)
class Outcome:
    started: float
    finished: float
    result: str  # "200", another status, or the exception's name


def grace_budget() -> float:
    """Seconds the process has after SIGTERM: the Deployment's grace period minus preStop."""
    deployment = yaml.safe_load((ROOT / "deploy/k8s/base/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    return pod["terminationGracePeriodSeconds"] - pause


async def load_until_stopped(url: str, files: list[bytes], stop: asyncio.Event) -> list[Outcome]:
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
        await asyncio.gather(*(client_loop(client) for _ in range(CLIENTS)))
    return outcomes


def test_sigterm_under_load_finishes_in_flight_requests(quick_repository, data_dir) -> None:
    files = [f.read_bytes() for f in flower_files(data_dir, IMAGES_PER_REQUEST)]
    with Server(env={"MODEL_REPOSITORY": str(quick_repository)}) as server:
        server.wait_until("/readyz")

        async def scenario() -> tuple[list[Outcome], float, int, float]:
            stop = asyncio.Event()
            load = asyncio.create_task(load_until_stopped(server.url, files, stop))
            await asyncio.sleep(3)
            sigterm_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)  # the main process only, as the kubelet
            await asyncio.sleep(0.5)
            stop.set()
            outcomes = await load
            code = await asyncio.to_thread(server.process.wait, grace_budget())
            return outcomes, sigterm_at, code, time.monotonic() - sigterm_at

        outcomes, sigterm_at, code, exit_seconds = asyncio.run(scenario())

    before = [o for o in outcomes if o.started < sigterm_at]
    in_flight = [o for o in before if o.finished > sigterm_at]
    assert len(before) > CLIENTS
    assert len(in_flight) >= CLIENTS // 2, "the load did not overlap the SIGTERM"
    assert {o.result for o in before} == {"200"}, [o.result for o in before if o.result != "200"]
    after = [o for o in outcomes if o.started >= sigterm_at]
    # New requests on a closing server see their connection closed, never a 5xx.
    assert not [o for o in after if o.result.startswith("5")]
    assert code == 0
    assert exit_seconds < grace_budget()
