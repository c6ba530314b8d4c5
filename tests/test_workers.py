"""Several workers in one server (SERVING_WORKERS=2) over a local repository: what the
repository API does through one worker, every worker does. One light server (a synthetic
ONNX graph, up in a few seconds); the object-storage side of two workers is in
tests/test_object_storage.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.servers import Server
from tests.test_object_storage import per_worker, wait_for
from tests.unit.synthetic import affine_onnx, manifest, publish

TOKEN = "workers-token"
POLL_S = 0.5


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workers-repository")
    publish(root, manifest("affine", 1), {"model.onnx": affine_onnx()})
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory):
    env = {
        "MODEL_REPOSITORY": str(repo),
        "SERVING_WORKERS": "2",
        "SERVING_POLL_INTERVAL": str(POLL_S),
        "SERVING_ADMIN_TOKEN": TOKEN,
        "SERVING_STATE_DIR": str(tmp_path_factory.mktemp("state")),
    }
    with Server(env=env, log=tmp_path_factory.mktemp("workers") / "serve.log") as started:
        started.wait_until("/readyz", timeout=300)
        yield started


def _per_worker(server: Server, name: str, **labels: str) -> dict[str, float]:
    return per_worker(httpx.get(server.url + "/metrics").text, name, **labels)


def test_a_load_call_tries_a_failed_version_again_on_every_worker(server, repo) -> None:
    """Version 2 fails on both workers (a file that does not match its manifest); the file
    is then put right with its size and mtime unchanged (``cp -p`` of a good copy over a
    bad one of the same size), so no scan sees a change, and an operator asks for a load.
    Only the worker that took the call tried again: the other kept version 2 failed and
    served version 1."""
    wait_for(lambda: len(_per_worker(server, "serving_model_ready")) == 2, 60, "two workers")
    good = affine_onnx()
    folder = publish(repo, manifest("affine", 2), {"model.onnx": good})
    graph = folder / "model.onnx"
    stamp = graph.stat()
    graph.write_bytes(good[:-8] + b"\0" * 8)  # the same size, other bytes
    os.utime(graph, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))

    def failed_on_both() -> bool:  # the events counter has no pid label: the workers' sum
        text = httpx.get(server.url + "/metrics").text
        line = 'serving_model_events_total{event="load_failed",model="affine"} '
        return any(
            row.startswith(line) and float(row.split()[-1]) >= 2 for row in text.splitlines()
        )

    wait_for(failed_on_both, 60, "version 2 refused by both workers")
    graph.write_bytes(good)
    os.utime(graph, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    time.sleep(3 * POLL_S)
    info = "serving_model_info"
    assert set(_per_worker(server, info, version="2").values()) <= {0.0}

    headers = {"authorization": f"Bearer {TOKEN}"}
    loaded = httpx.post(server.url + "/v2/repository/models/affine/load", headers=headers)
    assert loaded.status_code == 200, loaded.text
    pids = _per_worker(server, "serving_model_ready")
    wait_for(
        lambda: _per_worker(server, info, version="2") == dict.fromkeys(pids, 1.0),
        30,
        "version 2 on both workers after the load call",
    )
    log = server.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
