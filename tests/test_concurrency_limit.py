"""The per-worker concurrency limit (``SERVING_MAX_CONCURRENCY``) against a real ``bentoml
serve``: requests beyond it get a fast 503 with ``Retry-After``, and requests still sending
their bodies take no place (the reliability suite's long profile found 4,100 stalled uploads
filling all 512 places and locking every client out)."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from benchmarks.payloads import bank_records, flower_files, multipart
from benchmarks.servers import Server

pytestmark = pytest.mark.slow
LIMIT = 2
BODY_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def server(quick_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    env = {
        "MODEL_REPOSITORY": str(quick_repository),
        "SERVING_MAX_CONCURRENCY": str(LIMIT),
        "SERVING_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    log = tmp_path_factory.mktemp("limit") / "serve.log"
    with Server(env=env, log=log) as started:
        started.wait_until("/readyz", timeout=300)
        yield started


def test_stalled_uploads_take_no_place(server: Server, data_dir: Path) -> None:
    head = (
        b"POST /bank/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n{"
    )
    stalled = []
    for _ in range(10 * LIMIT):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=BODY_TIMEOUT_S + 10)
        sock.sendall(head)
        stalled.append(sock)
    try:
        record = bank_records(data_dir, 1)
        answer = httpx.post(f"{server.url}/bank/predict", json=record, timeout=30)
        assert answer.status_code == 200, answer.text
        for sock in stalled:  # at the body deadline, each its catalogued refusal
            answer = b""
            while chunk := sock.recv(4096):  # the server closes after answering
                answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer[:300]
            assert json.loads(body)["code"] == "body_timeout", body[:300]
    finally:
        for sock in stalled:
            sock.close()


def test_requests_beyond_the_limit_get_a_fast_503(server: Server, data_dir: Path) -> None:
    photos = [
        (f"image{i}", p.read_bytes(), "image/jpeg") for i, p in enumerate(flower_files(data_dir, 8))
    ]
    payload = multipart(photos)

    def send(_: int) -> httpx.Response:
        return httpx.post(
            f"{server.url}/flowers/predict",
            content=payload.body,
            headers={"content-type": payload.content_type},
            timeout=60,
        )

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, range(48)))
    statuses = {a.status_code for a in answers}
    assert statuses == {200, 503}, statuses
    refused = [a for a in answers if a.status_code == 503]
    assert all(a.headers["retry-after"] == "1" for a in refused)
    assert any("requests in progress" in json.loads(a.content)["error"] for a in refused)
    assert httpx.get(f"{server.url}/livez").status_code == 200
