"""Request framing, byte by byte: the corpus of RFC 9112 message-body cases that no client
library will send, each with the answer RFC 9112 requires (or lets us choose, and we chose).

A case is raw bytes on a raw socket, sent to several routes and methods, on a fresh
connection and on one kept alive by an earlier request. Its outcome is asserted exactly:

- ``REFUSED``: one answer, the status and error ``code`` named, a JSON error body,
  ``connection: close``, and then the server closes the connection: no byte after the
  error is read as another request (RFC 9112 §11.2, request smuggling);
- ``SERVED``: answered exactly as the same request with a plain ``Content-Length`` body (its
  twin), and the connection stays usable;
- ``THEN_REQUEST``: served like the twin, then the bytes after the zero-size chunk are
  answered as the next request (RFC 9112 §9.3.2: answers in request order);
- ``THEN_GARBAGE``: served like the twin, then the garbage after the zero-size chunk gets
  400 ``invalid_http`` and the connection is closed (RFC 9112 §2.2);
- ``SERVED_THEN_CLOSED``: served like the twin though the client half-closed after it, then
  the connection is closed.

Every wait is bounded (``HANG_S``): a case that takes longer has hung, whatever it got.
Used by ``tests/test_framing.py`` and by the reliability suite's hostile scenario.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from reliability.scenarios.abuse import Responses

REFUSED, SERVED, THEN_REQUEST, THEN_GARBAGE = "refused", "served", "then_request", "then_garbage"
SERVED_THEN_CLOSED = "served_then_closed"
# Generous, only to tell an answer from a hang: refusals take ~1 ms on an idle machine,
# the hang this corpus was written for lasted until the client gave up (> 40 s).
HANG_S = 5.0


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    body: bytes  # a valid body for the route (or one it ignores)
    content_type: str = "application/json"
    # False for routes that answer without reading the body (BentoML's /livez, a 405): a
    # framing error that arrives after their answer gets the 400 after that answer.
    reads_body: bool = True


def routes() -> list[Route]:
    """Every kind of route: inference on each HTTP protocol, a GET of ours, BentoML's own,
    a method the route does not take, and a DELETE."""
    image = [[0.0] * 28 for _ in range(28)]
    v2 = {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                      "data": [0.0] * 784}]}  # fmt: skip
    return [
        Route("POST", "/v2/models/digits/infer", json.dumps(v2).encode()),
        Route("POST", "/digits/predict", json.dumps({"inputs": [image]}).encode()),
        Route("POST", "/v1/models/digits:predict", json.dumps({"instances": [image]}).encode()),
        Route("GET", "/v2/models/digits", b'{"ignored": true}'),
        Route("GET", "/livez", b"ignored", "text/plain", reads_body=False),
        Route("PUT", "/digits/predict", b"{}", reads_body=False),  # 405
        # 405, answered without reading the body (the repository API unloads by POST)
        Route("DELETE", "/models/digits", b"{}", reads_body=False),
    ]


Build = Callable[[Route], bytes]


@dataclass(frozen=True)
class Case:
    name: str
    rfc: str  # the section of RFC 9112 and what it requires (or lets us choose)
    build: Build  # the whole request's bytes for a route
    expect: str = REFUSED
    status: int = 400
    code: str = "bad_framing"
    # Send the headers, wait, then the rest: the handler is already waiting for the body
    # when the error arrives (the regression: it waited for ever).
    split: bool = False
    # After sending, half-close our side (shutdown SHUT_WR) instead of sending more.
    half_close: bool = False


def _head(route: Route, *fields: bytes, version: bytes = b"1.1") -> bytes:
    start = b"%s %s HTTP/%s" % (route.method.encode(), route.path.encode(), version)
    lines = [start, b"host: 127.0.0.1", b"content-type: " + route.content_type.encode(), *fields]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _chunks(body: bytes, size_line: Callable[[int], bytes] = lambda n: b"%x" % n) -> bytes:
    """The body in two chunks, then the last chunk (no trailers, no final CRLF)."""
    half = max(1, len(body) // 2)
    parts = [body[:half], body[half:]] if len(body) > 1 else [body]
    return b"".join(size_line(len(p)) + b"\r\n" + p + b"\r\n" for p in parts if p) + b"0\r\n"


def chunked(
    *,
    te: tuple[bytes, ...] = (b"chunked",),
    fields: tuple[bytes, ...] = (),
    size_line: Callable[[int], bytes] = lambda n: b"%x" % n,
    trailers: bytes = b"",
    after: bytes = b"",
    version: bytes = b"1.1",
) -> Build:
    """A chunked request built from the route's valid body, varied where the case says."""

    def build(route: Route) -> bytes:
        head = _head(route, *(b"transfer-encoding: " + t for t in te), *fields, version=version)
        return head + _chunks(route.body, size_line) + trailers + b"\r\n" + after

    return build


def broken(chunk_section: bytes, *, fields: tuple[bytes, ...] = ()) -> Build:
    """A chunked request whose body is exactly ``chunk_section`` (then a proper end)."""

    def build(route: Route) -> bytes:
        head = _head(route, b"transfer-encoding: chunked", *fields)
        return head + chunk_section + b"0\r\n\r\n"

    return build


def with_length(*fields: bytes, version: bytes = b"1.1") -> Build:
    """The route's body framed by Content-Length, with ``fields`` (None: the right one)."""

    def build(route: Route) -> bytes:
        own = fields or (b"content-length: %d" % len(route.body),)
        return _head(route, *own, version=version) + route.body

    return build


def twin(route: Route) -> bytes:
    return with_length()(route)


LIVEZ = b"GET /livez HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"


def cases() -> list[Case]:
    """The class, case by case. "§" is RFC 9112 unless it says RFC 9110."""
    garbage_rule = "§2.2: octets that do not match the grammar: 400, then close"
    return [
        # -- chunk size and chunk data (§7.1) --------------------------------------------
        Case("chunk size not hex (zz)", f"§7.1 chunk-size = 1*HEXDIG; {garbage_rule}",
             broken(b"zz\r\nhello\r\n")),
        Case("chunk size beyond 64 bits", "§7.1: recipients MUST prevent integer overflow "
             f"of large numerals; {garbage_rule}", broken(b"FFFFFFFFFFFFFFFFFFFF\r\nhello\r\n")),
        Case("negative chunk size (-5)", f"§7.1 1*HEXDIG has no sign; {garbage_rule}",
             broken(b"-5\r\nhello\r\n")),
        Case("chunk data longer than its size", "§7.1 chunk = chunk-size CRLF chunk-data CRLF: "
             f"CRLF must follow exactly chunk-size octets; {garbage_rule}",
             broken(b"5\r\nhelloEXTRA\r\n")),
        Case("chunk size with 0x prefix", f"§7.1 1*HEXDIG; {garbage_rule}",
             broken(b"0x5\r\nhello\r\n")),
        Case("chunk size with plus sign", f"§7.1 1*HEXDIG; {garbage_rule}",
             broken(b"+5\r\nhello\r\n")),
        Case("empty chunk size", f"§7.1 1*HEXDIG (at least one); {garbage_rule}",
             broken(b"\r\nhello\r\n")),
        Case("space before chunk size", f"§7.1 no whitespace before chunk-size; {garbage_rule}",
             broken(b" 5\r\nhello\r\n")),
        Case("bare LF after chunk size", "§7.1 CRLF; §2.2 lets a recipient accept a bare LF "
             "only as a line terminator of the start-line and fields: we refuse it in the body "
             "as llhttp and Node do (a front proxy may frame it differently: §11.2)",
             broken(b"5\nhello\n")),
        # -- chunk extensions (§7.1.1) -------------------------------------------------
        Case("chunk extension with a control character", "§7.1.1 chunk-ext-name = token; "
             f"{garbage_rule}", broken(b"5;\x01\r\nhello\r\n")),
        Case("chunk extension with an unterminated quoted value", "§7.1.1 chunk-ext-val = "
             f"token / quoted-string; {garbage_rule}", broken(b'5;a="x\r\nhello\r\n')),
        Case("chunk extension with whitespace around ; and =", "§7.1.1 allows BWS there, and "
             "RFC 9110 §5.6.3 says senders MUST NOT send it; refused (400, close), as llhttp "
             "and Node do: a parser that disagrees with a front proxy here is a smuggling "
             "vector (§11.2)", broken(b"5 ; a = b\r\nhello\r\n")),
        Case("valid chunk extensions", "§7.1.1: a recipient MUST ignore unrecognized chunk "
             "extensions: served", chunked(size_line=lambda n: b'%x;a=b;name="v a l";flag' % n),
             SERVED),
        Case("60 KB chunk extension", "§7.1.1: ignored (llhttp skips it without buffering; "
             "the body deadline bounds its time): served",
             chunked(size_line=lambda n: b"%x;x=" % n + b"a" * 60_000), SERVED),
        # -- trailers (§7.1.2) ----------------------------------------------------------
        Case("trailer fields", "§7.1.2: trailers are allowed; a recipient MAY discard them: "
             "served", chunked(fields=(b"trailer: x-checksum",), trailers=b"x-checksum: 1\r\n"),
             SERVED),
        Case("trailer that names a header (content-type)", "§7.1.2: a recipient MUST NOT merge "
             "a trailer into the header section: served as if it were absent",
             chunked(trailers=b"content-type: text/plain\r\n"), SERVED),
        Case("malformed trailer line", f"§7.1.2 trailer-section = *( field-line CRLF ); "
             f"{garbage_rule}", chunked(trailers=b"not a field line\r\n")),
        Case("obs-fold in a trailer", "§5.2: obs-fold MUST be rejected (400) or replaced by "
             "SP; we reject", chunked(trailers=b"x-a: 1\r\n folded\r\n")),
        Case("1 MiB trailer field", "§7.1.2 trailers are fields: the header limits apply "
             "(431, RFC 6585), checked while they arrive",
             chunked(trailers=b"x-big: " + b"a" * (1 << 20) + b"\r\n"),
             status=431, code="headers_too_large"),
        # -- the last chunk (§7.1, §8) ----------------------------------------------------
        Case("missing last chunk, then half-close", "§8: a chunked body without its "
             "zero-size chunk is incomplete; a server MAY answer before closing: 400, close",
             lambda r: _head(r, b"transfer-encoding: chunked") + b"5\r\nhello\r\n",
             half_close=True),
        Case("whole chunked body, then half-close", "§9.6: a client that half-closes still "
             "reads its answer; nothing more can come, so then close",
             chunked(), SERVED_THEN_CLOSED, half_close=True),
        Case("whole Content-Length body, then half-close", "as above, Content-Length framing",
             with_length(), SERVED_THEN_CLOSED, half_close=True),
        Case("zero-size chunk with leading zeros", "§7.1 1*HEXDIG: 000 is zero: served",
             chunked(size_line=lambda n: b"000000%x" % n), SERVED),
        Case("zero-size chunk, then a request", "§9.3.2: the bytes after the last chunk are "
             "the next request; answers in order", chunked(after=LIVEZ), THEN_REQUEST),
        Case("zero-size chunk, then garbage", f"the bytes after the last chunk are the next "
             f"message (§9.3.2), never the body; {garbage_rule}",
             chunked(after=b"GARBAGE\x00\r\n\r\n"), THEN_GARBAGE),
        # -- Transfer-Encoding and Content-Length (§6) -------------------------------------
        Case("Transfer-Encoding with Content-Length", "§6.1: a server MAY reject it and MUST "
             "close after answering; §6.3: a smuggling attempt (§11.2): 400, close",
             chunked(fields=(b"content-length: 5",))),
        Case("Content-Length before Transfer-Encoding", "§6.1, §6.3 as above, either order",
             lambda r: _head(r, b"content-length: 5", b"transfer-encoding: chunked")
             + _chunks(r.body) + b"\r\n"),
        Case("Transfer-Encoding: gzip, chunked", "§6.1: a transfer coding the server does not "
             "understand SHOULD get 501; we implement only chunked; close (§9.6)",
             chunked(te=(b"gzip, chunked",)), status=501, code="unsupported_transfer_coding"),
        Case("Transfer-Encoding: gzip, then chunked (two lines)", "RFC 9110 §5.3: repeated "
             "lines are one list (gzip, chunked): 501 as above",
             chunked(te=(b"gzip", b"chunked")), status=501, code="unsupported_transfer_coding"),
        Case("Transfer-Encoding: chunked, gzip", "§6.3 item 4: chunked not final in a request: "
             "MUST answer 400 and close", chunked(te=(b"chunked, gzip",))),
        Case("Transfer-Encoding: chunked, chunked", "§6.1: chunked MUST NOT be applied more "
             "than once: faulty framing, 400, close", chunked(te=(b"chunked, chunked",))),
        Case("duplicate Transfer-Encoding: chunked lines", "RFC 9110 §5.3: one list, "
             "chunked twice (§6.1): 400, close", chunked(te=(b"chunked", b"chunked"))),
        Case("Transfer-Encoding: gzip alone", "§6.3 item 4: no chunked last in a request: "
             "400, close", lambda r: _head(r, b"transfer-encoding: gzip") + r.body),
        Case("Transfer-Encoding in HTTP/1.0", "§6.1: MUST be treated as faulty framing, then "
             "close: 400", chunked(version=b"1.0")),
        Case("Transfer-Encoding: Chunked (capitals)", "§7: coding names are case-insensitive: "
             "served", chunked(te=(b"Chunked",)), SERVED),
        Case("Transfer-Encoding with an empty list element", "RFC 9110 §5.6.1: recipients "
             "MUST accept empty list elements: served", chunked(te=(b", chunked",)), SERVED),
        Case("chunked body (baseline)", "§7.1: served like its Content-Length twin",
             chunked(), SERVED),
        Case("two Content-Length lines", "§6.3 item 5: an invalid Content-Length MUST get 400 "
             "and close", with_length(b"content-length: 5", b"content-length: 5")),
        Case("Content-Length list (5, 5)", "§6.3 item 5 (a list is invalid unless a proxy "
             "folds it; we do not): 400, close", with_length(b"content-length: 5, 5")),
        Case("negative Content-Length", "§6.3 item 5: 400, close",
             with_length(b"content-length: -5")),
        # -- header fields (§5) -------------------------------------------------------------
        Case("obs-fold header line", "§5.2: a server MUST reject obs-fold with 400 (or replace "
             "it by SP); we reject and close", with_length(b"content-length: 0",
             b"x-a: 1\r\n  folded"), code="invalid_http"),
        Case("obs-fold in Transfer-Encoding", "§5.2 as above; the framing field folded",
             chunked(te=(b"\r\n chunked",)), code="invalid_http"),
        # -- split: the handler already waits for the body -----------------------------------
        Case("chunk size not hex (zz), after the headers", "as above, sent after the handler "
             "started reading the body", broken(b"zz\r\nhello\r\n"), split=True),
        Case("chunk size beyond 64 bits, after the headers", "as above",
             broken(b"FFFFFFFFFFFFFFFFFFFF\r\nhello\r\n"), split=True),
        Case("negative chunk size, after the headers", "as above", broken(b"-5\r\nhello\r\n"),
             split=True),
        Case("chunk data longer than its size, after the headers", "as above",
             broken(b"5\r\nhelloEXTRA\r\n"), split=True),
    ]  # fmt: skip


# -- running a case --------------------------------------------------------------------------


@dataclass
class Outcome:
    answers: list[tuple[int, dict, bytes]]
    closed: bool  # the server closed the connection after the last answer
    seconds: float


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _closed(responses: Responses, deadline: float) -> bool:
    """Whether the server closes the connection (EOF or reset) before ``deadline``."""
    if responses.buffer:
        return False  # bytes past the last answer: something more was said
    try:
        responses.sock.settimeout(max(0.05, deadline - time.monotonic()))
        while True:
            data = responses.sock.recv(65536)
            if not data:
                return True
            responses.buffer += data
            return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    except OSError:
        return False  # timed out: still open


def exchange(port: int, case: Case, route: Route, kept_alive: bool) -> Outcome:
    """Send the case to the route, read every answer it gets and whether the connection is
    then closed (a ``SERVED`` case is not waited on for a close: it must stay open)."""
    started = time.monotonic()
    deadline = started + HANG_S
    sock = _connect(port)
    responses = Responses(sock)
    answers: list[tuple[int, dict, bytes]] = []
    try:
        if kept_alive:
            sock.sendall(LIVEZ)
            first = responses.next(timeout=HANG_S)
            if first[0] != 200:
                return Outcome([first], False, time.monotonic() - started)
        data = case.build(route)
        with contextlib.suppress(OSError):  # the server may answer before all is sent
            if case.split:
                cut = data.index(b"\r\n\r\n") + 4
                sock.sendall(data[:cut])
                time.sleep(0.2)
                data = data[cut:]
            sock.sendall(data)
            if case.half_close:
                time.sleep(0.2)  # the handler (if any) is waiting for the rest of the body
                sock.shutdown(socket.SHUT_WR)
        wanted = {REFUSED: 1, SERVED: 1, THEN_REQUEST: 2, THEN_GARBAGE: 2}.get(case.expect, 1)
        if case.expect == REFUSED and not route.reads_body:
            wanted = 2  # the route's own answer may come first (the loop ends at a close)
        while len(answers) < wanted:
            answer = responses.next(timeout=max(0.05, deadline - time.monotonic()))
            if answer[0] == 0:
                break
            answers.append(answer)
            if answer[1].get("connection", "").lower() == "close":
                break
        closed = case.expect not in (SERVED, THEN_REQUEST) and _closed(responses, deadline)
        if case.expect == SERVED and answers:  # still usable: one more request on it
            sock.sendall(LIVEZ)
            answers.append(responses.next(timeout=max(0.05, deadline - time.monotonic())))
        return Outcome(answers, closed, time.monotonic() - started)
    finally:
        sock.close()


def _describe(answer: tuple[int, dict, bytes]) -> str:
    status, headers, body = answer
    return f"{status} {body[:120]!r}" + (" (close)" if headers.get("connection") == "close" else "")


def _refusal_problem(answer: tuple[int, dict, bytes], status: int, code: str) -> str | None:
    got, headers, body = answer
    if got != status:
        return f"status {got}, not {status}"
    if headers.get("content-type") != "application/json":
        return f"content type {headers.get('content-type')!r}"
    try:
        error = json.loads(body)
    except ValueError:
        return f"no JSON body: {body[:80]!r}"
    if error.get("code") != code or not error.get("error"):
        return f"error body {error}, not code {code!r}"
    if headers.get("connection", "").lower() != "close":
        return "no connection: close"
    return None


def check(port: int, case: Case, route: Route, kept_alive: bool, twin_answer: tuple) -> str | None:
    """None when the case got exactly what it must; else what went wrong."""
    outcome = exchange(port, case, route, kept_alive)
    got = "; ".join(_describe(a) for a in outcome.answers) or "no answer"
    if outcome.seconds > HANG_S:
        return f"took {outcome.seconds:.1f} s (bound {HANG_S} s, a hang): {got}"
    answers = list(outcome.answers)
    # A route that answers without reading the body has answered before an error that
    # arrives later (always so for split and half-closed cases; for a large body, when
    # its answer wins the race with the next read): that answer is the twin's.
    answered_first = not route.reads_body and case.expect == REFUSED
    must_answer_first = case.expect != REFUSED or (
        answered_first and (case.split or case.half_close)
    )
    if must_answer_first or (answered_first and len(answers) == 2):
        if not answers or answers[0][0] != twin_answer[0]:
            return f"first answer {got}, not the twin's {twin_answer[0]}"
        if b"probabilities" in twin_answer[2] and answers[0][2] != twin_answer[2]:
            return "first answer differs from the twin's"
        answers = answers[1:]
    if case.expect in (SERVED, THEN_REQUEST):
        # SERVED: a follow-up on the same connection; THEN_REQUEST: the pipelined one.
        if len(answers) != 1 or answers[0][0] != 200:
            return f"the next request on the connection was not answered 200: {got}"
        return None
    if case.expect == SERVED_THEN_CLOSED or (case.half_close and answered_first):
        return None if not answers and outcome.closed else f"after the answer: {got}"
    status, code = (
        (400, "invalid_http") if case.expect == THEN_GARBAGE else (case.status, case.code)
    )
    if len(answers) != 1:
        return f"{len(answers)} answers where one {status} was due: {got}"
    problem = _refusal_problem(answers[0], status, code)
    if problem:
        return f"{problem}: {got}"
    if not outcome.closed:
        return f"connection left open after the {status}"
    return None


def twin_answers(port: int, routes_: list[Route]) -> dict[Route, tuple[int, dict, bytes]]:
    """Each route's answer to its valid body framed by Content-Length."""
    result = {}
    for route in routes_:
        sock = _connect(port)
        try:
            sock.sendall(twin(route))
            result[route] = Responses(sock).next(timeout=30)
        finally:
            sock.close()
    return result


def run(port: int, routes_: list[Route] | None = None) -> tuple[int, list[str]]:
    """Every case on every route, fresh and kept alive: (exchanges, failures)."""
    routes_ = routes_ or routes()
    twins = twin_answers(port, routes_)
    failures = []
    count = 0
    for case in cases():
        for route in routes_:
            for kept_alive in (False, True):
                count += 1
                problem = check(port, case, route, kept_alive, twins[route])
                if problem:
                    where = "kept-alive" if kept_alive else "fresh"
                    failures.append(f"{case.name} | {route.method} {route.path} {where}: {problem}")
    return count, failures
