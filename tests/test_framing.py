"""Request framing on raw sockets against a real ``bentoml serve``: every case of the RFC 9112
corpus (``reliability/framing.py``: malformed chunked bodies, chunk extensions, trailers, a
missing last chunk, Transfer-Encoding with Content-Length, unknown and repeated transfer
codings, obs-fold, bytes after the last chunk) on inference routes of each protocol, a GET
of ours, BentoML's own route and methods a route does not take, on fresh and kept-alive
connections. Each gets exactly the answer its RFC section requires, never a hang."""

from __future__ import annotations

import json
import socket
import time

import httpx
import numpy as np
import pytest

from reliability import framing
from reliability.scenarios.abuse import Responses

pytestmark = pytest.mark.slow

CASES = framing.cases()
ROUTES = framing.routes()


@pytest.fixture(scope="module")
def twins(service) -> dict:
    return framing.twin_answers(service.port, ROUTES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_framing_case_gets_exactly_its_answer(service, twins, case: framing.Case) -> None:
    failures = []
    for route in ROUTES:
        for kept_alive in (False, True):
            problem = framing.check(service.port, case, route, kept_alive, twins[route])
            if problem:
                where = "kept-alive" if kept_alive else "fresh"
                failures.append(f"{route.method} {route.path} ({where}): {problem}")
    assert not failures, f"{case.name} [{case.rfc}]:\n" + "\n".join(failures)


def test_the_corpus_covers_the_class() -> None:
    """The four forms reported, and each part of the class, are in the corpus."""
    names = " ".join(c.name for c in CASES).lower()
    for part in ("not hex", "beyond 64 bits", "negative", "longer than its size", "extension",
                 "trailer", "missing last chunk", "with content-length", "gzip, chunked",
                 "duplicate transfer-encoding", "obs-fold", "zero-size chunk, then"):  # fmt: skip
        assert part in names, part
    assert {c.expect for c in CASES} == {
        framing.REFUSED,
        framing.SERVED,
        framing.THEN_REQUEST,
        framing.THEN_GARBAGE,
        framing.SERVED_THEN_CLOSED,
    }
    assert all(c.rfc for c in CASES)


def _refusals(url: str, reason: str) -> float:
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    prefix = f'serving_connection_refusals_total{{reason="{reason}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def test_a_framing_refusal_is_counted_and_the_next_bytes_are_never_a_request(service) -> None:
    """A smuggled request after a broken chunk is never answered: one 400, then the close."""
    before = _refusals(service.url, "bad_framing")
    smuggled = b"GET /v2/models/digits HTTP/1.1\r\nhost: x\r\n\r\n"
    data = (
        b"POST /digits/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n5\r\nhelloEXTRA\r\n0\r\n\r\n" + smuggled
    )
    with socket.create_connection(("127.0.0.1", service.port), timeout=framing.HANG_S) as sock:
        sock.sendall(data)
        responses = Responses(sock)
        status, headers, body = responses.next(timeout=framing.HANG_S)
        assert status == 400 and headers["connection"] == "close", (status, body)
        assert json.loads(body)["code"] == "bad_framing"
        assert responses.next(timeout=framing.HANG_S) == (0, {}, b"")  # closed, nothing more
    assert _refusals(service.url, "bad_framing") == before + 1


def test_a_chunked_upload_streamed_slowly_is_still_served(service, twins) -> None:
    """The framing checks leave ordinary chunked uploads alone, chunk by chunk over time."""
    route = ROUTES[0]
    head = framing._head(route, b"transfer-encoding: chunked")
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(head)
        for start in range(0, len(route.body), 1000):
            part = route.body[start : start + 1000]
            sock.sendall(b"%x;n=%d\r\n" % (len(part), start) + part + b"\r\n")
            time.sleep(0.01)
        sock.sendall(b"0\r\nx-done: yes\r\n\r\n")
        status, _, body = Responses(sock).next(timeout=30)
    assert status == 200 and body == twins[route][2]


def _requests_counted(url: str, model: str) -> float:
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("serving_requests_total{") and f'model="{model}"' in line
    )


def test_a_request_refused_in_its_first_read_never_reaches_its_handler(service) -> None:
    """The four reported forms, each whole in one write: the 400 goes out before the
    handler's task runs, and the handler never runs (it would count the request, as 499)."""
    before = _requests_counted(service.url, "digits")
    forms = [b"zz\r\nhello\r\n", b"FFFFFFFFFFFFFFFFFFFF\r\nhello\r\n", b"-5\r\nhello\r\n",
             b"5\r\nhelloEXTRA\r\n"]  # fmt: skip
    for route in ROUTES[:2]:
        for form in forms:
            data = framing.broken(form)(route)
            with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
                sock.sendall(data)
                status, _, body = Responses(sock).next(timeout=framing.HANG_S)
            assert status == 400 and json.loads(body)["code"] == "bad_framing", body
    assert _requests_counted(service.url, "digits") == before
    good = httpx.post(f"{service.url}{ROUTES[1].path}", content=ROUTES[1].body,
                      headers={"content-type": "application/json"}, timeout=30)  # fmt: skip
    assert good.status_code == 200
    assert _requests_counted(service.url, "digits") == before + 1  # the counter does count


def _pipeline_unread_and_close(port: int, request: bytes, connections: int) -> None:
    """Each connection pipelines ``request`` as far as the buffers take it (several MB: the
    worker reads on as each answer completes), reads no answer, then closes."""
    socks = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        data, sent, started = request * 20, 0, time.monotonic()
        while sent < len(data) and time.monotonic() - started < 2:
            try:
                sent += sock.send(data[sent:])
            except BlockingIOError:
                time.sleep(0.05)
        socks.append(sock)
    time.sleep(1)  # the worker runs what it read, its answers stuck in unread buffers
    for sock in socks:
        sock.close()
    time.sleep(1)


def test_pipelined_requests_of_a_client_that_leaves_unread_are_freed(service) -> None:
    """uvicorn told only the request parsed last that the client left; the one running
    (another, when requests were pipelined behind it) never learnt, and its task, body and
    answer stayed in the worker for good: +33 MB per round of 20 such connections, round
    after round. Round 1 fills the allocator's pools; later rounds must not keep growing."""
    from reliability.scenarios.abuse import _worker_rss

    rng = np.random.default_rng(0)
    body = json.dumps({"inputs": rng.random((64, 784)).round(3).tolist()}).encode()
    request = (
        b"POST /autoencoder/reconstruct HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
        b"\r\ncontent-length: %d\r\n\r\n" % len(body)
    ) + body
    _pipeline_unread_and_close(service.port, request, 20)
    before = _worker_rss(service)
    for _ in range(4):
        _pipeline_unread_and_close(service.port, request, 20)
    growth_mb = (_worker_rss(service) - before) / 1e6
    assert growth_mb < 60, f"RSS +{growth_mb:.0f} MB over 4 rounds of 20 (leaking: ~130 MB)"
    assert httpx.post(f"{service.url}/autoencoder/reconstruct", content=body).status_code == 200
