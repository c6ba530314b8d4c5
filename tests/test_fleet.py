"""The fleet, end to end: three ``bentoml serve`` replicas follow one S3 bucket (moto's
server on loopback) under steady load. A version exported straight to the bucket goes live
on all three; deleting it rolls all three back; stopping the store leaves all three serving.
No request may fail at any point. ``make test-long`` runs it (about a minute and a half).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import obstore
import pytest

from benchmarks.servers import Server
from modelspec import storage
from tests.storage_servers import Moto
from tests.test_object_storage import export, metric, tiny_onnx

pytestmark = pytest.mark.long
POLL_S = 1.0
REPLICAS = 3
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}


class Load:
    """One client thread per replica, back to back; records every answer's version."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.failures: list[str] = []
        self.answers = 0
        self.seen: list[list[tuple[float, str]]] = [[] for _ in urls]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(len(urls))]

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.urls[index], timeout=30) as client:
            while not self._stop.is_set():
                try:
                    reply = client.post("/v2/models/tiny/infer", json=BODY)
                except httpx.HTTPError as error:
                    self.failures.append(f"replica {index}: {error!r}")
                    continue
                if reply.status_code != 200:
                    self.failures.append(f"replica {index}: {reply.status_code} {reply.text[:200]}")
                    continue
                self.answers += 1
                self.seen[index].append((time.monotonic(), reply.json()["model_version"]))
                time.sleep(0.01)

    def first(self, index: int, version: str, after: float) -> float | None:
        """When replica ``index`` first answered with ``version`` after ``after``, and only
        that version since (the swap is one step: no flapping back)."""
        found = None
        for stamp, seen in self.seen[index]:
            if stamp < after:
                continue
            if seen == version and found is None:
                found = stamp
            elif seen != version and found is not None:
                return None
        return found

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _wait_all(load: Load, version: str, after: float, timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        firsts = [load.first(i, version, after) for i in range(REPLICAS)]
        if all(f is not None for f in firsts):
            time.sleep(1)  # and they stay there
            if all(load.first(i, version, after) is not None for i in range(REPLICAS)):
                return [f - after for f in firsts]  # type: ignore[operator]
        time.sleep(0.2)
    raise AssertionError(f"version {version} not on every replica within {timeout} s")


def test_three_replicas_follow_one_bucket_without_failing_a_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Moto(tmp_path) as moto:
        for key, value in moto.env.items():
            monkeypatch.setenv(key, value)
        url = moto.url("fleet")
        remote = storage.parse(url)
        export(tiny_onnx(tmp_path / "v1" / "tiny.onnx", 2), url, moto.env)
        servers = [
            Server(
                env={
                    **moto.env,
                    "MODEL_REPOSITORY": url,
                    "SERVING_POLL_INTERVAL": str(POLL_S),
                    "SERVING_CACHE_DIR": str(tmp_path / f"cache{i}"),
                    "SERVING_STATE_DIR": str(tmp_path / f"state{i}"),
                },
                log=tmp_path / f"serve{i}.log",
            ).start()
            for i in range(REPLICAS)
        ]
        try:
            for server in servers:  # three starts at once on a busy machine: minutes
                server.wait_until("/readyz", timeout=600)
            figures = _roll_out_roll_back_outage(moto, remote, url, servers, tmp_path)
        finally:
            for server in servers:
                server.stop()
    print("fleet figures: " + json.dumps(figures))
    (tmp_path / "fleet.json").write_text(json.dumps(figures, indent=2))


def _roll_out_roll_back_outage(
    moto: Moto, remote: storage.Remote, url: str, servers: list[Server], tmp_path: Path
) -> dict:
    urls = [s.url for s in servers]
    source = tiny_onnx(tmp_path / "v2" / "tiny.onnx", 5)
    with Load(urls) as load:
        time.sleep(2)
        polls_before = [_polls(u) for u in urls]
        lists_before = moto.list_requests_logged()
        requests_before = moto.requests_logged()
        time.sleep(10)
        polls = sum(_polls(u) for u in urls) - sum(polls_before)
        lists = moto.list_requests_logged() - lists_before
        requests = moto.requests_logged() - requests_before

        started = time.monotonic()
        export(source, url, moto.env)
        exported_s = time.monotonic() - started
        # From the export's start: the CLI's process exits a while after its last upload
        # (the manifest), so a replica may serve the version before the command returns.
        live = _wait_all(load, "2", started, 120)
        since = [_since(u, "2") for u in urls]
        assert all(s > 0 for s in since), since
        cache_bytes = [_cache_bytes(u) for u in urls]

        deleted = time.monotonic()
        for key in [k for k in remote.list().objects if k.startswith("tiny/2/")]:
            obstore.delete(remote.store, key)
        gone = _wait_all(load, "1", deleted, 60)

        moto.stop()
        stopped = time.monotonic()
        deadline = stopped + 60
        while time.monotonic() < deadline:
            states = [httpx.get(u + "/models").json()["repository"]["reachable"] for u in urls]
            if not any(states):
                break
            time.sleep(0.5)
        reported = time.monotonic() - stopped
        time.sleep(5)  # serving on through the outage
        ready = [httpx.get(u + "/readyz").status_code for u in urls]
        outage_answers = sum(1 for i in range(REPLICAS) for t, _ in load.seen[i] if t > stopped)

    assert not load.failures, f"{len(load.failures)} failed requests: {load.failures[:5]}"
    assert ready == [200] * REPLICAS, ready
    assert not any(states), "the outage was not reported by every replica"
    assert outage_answers > 0
    # A poll in flight at either end of the window, on any replica, may be counted by the
    # metrics and not moto's log (or the reverse): one either way per replica.
    assert abs(lists - polls) <= REPLICAS and requests == lists, (
        f"{requests} requests, {lists} LIST, {polls} polls"
    )
    return {
        "poll_interval_s": POLL_S,
        "export_cli_s": round(exported_s, 2),
        "export_start_to_live_s": [round(x, 2) for x in live],
        "export_exit_to_live_s": [round(x - exported_s, 2) for x in live],
        "delete_to_gone_s": [round(x, 2) for x in gone],
        "outage_reported_after_s": round(reported, 2),
        "store_requests_per_poll": round(requests / polls, 2),
        "list_requests_per_poll": round(lists / polls, 2),
        "cache_bytes_per_replica": cache_bytes,
        "requests_answered": load.answers,
        "requests_failed": len(load.failures),
        "answers_during_outage": outage_answers,
    }


def _since(url: str, version: str) -> float:
    text = httpx.get(url + "/metrics").text
    return metric(text, "serving_model_version_serving_since_seconds", version=version)


def _cache_bytes(url: str) -> int:
    return httpx.get(url + "/models").json()["repository"]["cache"]["bytes"]


def _polls(url: str) -> float:
    return metric(httpx.get(url + "/metrics").text, "serving_repository_polls_total")
