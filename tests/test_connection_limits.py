"""The connection layer of a real ``bentoml serve``: header limits, pipelining, and that the
bounded protocol is the one uvicorn really runs (a BentoML or uvicorn upgrade that bypassed
``service.connection.install`` would fail here, not silently drop the limits)."""

from __future__ import annotations

import contextlib
import json
import socket

import httpx
import pytest

from reliability.scenarios.abuse import Responses
from service.config import Limits

pytestmark = pytest.mark.slow


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _exchange(url: str, data: bytes, responses: int = 1) -> list[tuple[int, dict, bytes]]:
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=30) as sock:
        # The server may refuse before everything is sent: its answer still counts.
        with contextlib.suppress(OSError):
            sock.sendall(data)
        answers = Responses(sock)
        return [answers.next(timeout=15) for _ in range(responses)]


def _refusals(url: str, reason: str) -> float:
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    prefix = f'serving_connection_refusals_total{{reason="{reason}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def test_oversized_headers_get_a_json_431(service_url: str) -> None:
    before = _refusals(service_url, "headers_too_large")
    big = "a" * (Limits().max_header_bytes + 1)
    ((status, headers, body),) = _exchange(
        service_url, f"GET /livez HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n".encode()
    )
    assert status == 431 and headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == "headers_too_large"
    assert _refusals(service_url, "headers_too_large") == before + 1


def test_too_many_headers_get_a_json_431(service_url: str) -> None:
    many = "".join(f"x-h{i}: 1\r\n" for i in range(Limits().max_headers + 1))
    ((status, _, body),) = _exchange(
        service_url, f"GET /livez HTTP/1.1\r\nhost: x\r\n{many}\r\n".encode()
    )
    assert status == 431 and json.loads(body)["code"] == "too_many_headers"


def test_a_pipelined_request_is_answered_before_the_garbage_after_it(service_url: str) -> None:
    body = json.dumps({"inputs": [[0.0] * 784]}).encode()
    valid = (
        b"POST /digits/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    ) + body
    first, second = _exchange(service_url, valid + b"GARBAGE\x00\r\n\r\n", responses=2)
    assert first[0] == 200 and len(json.loads(first[2])["predictions"]) == 1
    assert second[0] == 400 and json.loads(second[2])["code"] == "invalid_http"


def test_ordinary_keep_alive_traffic_is_untouched(service_url: str) -> None:
    """Many requests on one connection, with headers near (not over) the limit."""
    near = "a" * (Limits().max_header_bytes - 1000)
    with httpx.Client(base_url=service_url, timeout=30) as client:
        for _ in range(20):
            assert client.get("/livez", headers={"x-near": near}).status_code == 200
