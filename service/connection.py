"""The HTTP connection layer: uvicorn's httptools protocol with the bounds it lacks.

uvicorn, as BentoML runs it, accepts request headers of any size and number, waits for them
forever, takes any number of connections, and answers a malformed request that follows a
pipelined one by closing the connection before the first request's answer is written. Each
is a way to exhaust a worker's memory or to lose an answer. This protocol bounds or fixes
them below the ASGI app, so no route can forget to:

- header bytes and header count per request: 431, checked while the headers arrive, so a
  connection never buffers more than the limit plus one read (256 KiB);
- a deadline for a request's headers, from the connection's first byte or the request's
  first byte: 408 (slow or silent clients cannot hold a connection slot);
- open connections per worker: past the cap a new connection's request gets 503 at once;
- a deadline for a request's body, from the end of its headers: 408 (a timer only for the
  bodies still arriving after the read that completed the headers, so the common small
  request pays nothing for it);
- a malformed request after a pipelined one: the earlier requests are answered first, then
  the 400;
- a request whose framing is broken (a malformed chunked body, a conflicting or unknown
  Transfer-Encoding, a body cut short by the client's half-close) is answered 400 (501 for
  a transfer coding other than chunked) at once and the connection closed: the rest of the
  body can never be read, so no handler may wait for it, no handler runs for it, and no
  byte after it is read as another request (RFC 9112 §6.1, §6.3, §7.1, §8);
- trailer fields count against the header limits and are never merged into the request's
  headers (RFC 9112 §7.1.2).

Each refusal is a small JSON body like the app's own errors, with ``connection: close``, and
is counted in ``serving_connection_refusals_total{reason}``.

It also writes each response in one piece: uvicorn writes the status line and headers, then
the body, as two socket writes (two system calls, two TCP segments); a response's header
write is held until its body arrives. Measured with py-spy under load, the writes were 25%
of a worker's time on single-digit requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.config import Limits
from service.errors import RequestError

logger = logging.getLogger(__name__)

LINGER_S = 2.0  # how long a refused connection's remaining bytes are read and dropped

# Set once per worker by the service, once its metrics exist (after ``install``). Like
# ``BoundedHttpProtocol.limits``, a module-level hook because uvicorn builds each protocol
# itself, so nothing can be handed to one; it carries no setting.
on_refusal: Callable[[str], None] = lambda reason: None  # noqa: E731


class _Refused(Exception):
    """Stops the parser after a refusal was sent."""


def _unless_abandoned(cycle: Any, app: Any) -> Any:
    """``app``, run only if the request was not refused before its task started: a request
    whose framing fails in the same read as its headers is refused before the app sees it,
    so a handler with side effects never runs for a request that got a 400."""

    async def run(scope: Any, receive: Any, send: Any) -> None:
        if not cycle.disconnected:
            await app(scope, receive, send)

    return run


class OneWriteTransport:
    """The connection's transport, holding a response's status line and headers until its
    first body write, so the two go out together. Everything else passes through."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100"):
            self._held = data  # headers of a response: its body follows in the same turn
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def install(limits: Limits) -> None:
    """Make uvicorn build this protocol, with these limits, for every HTTP connection of
    this process.

    BentoML creates uvicorn's Config itself, with ``http="auto"``, after importing the
    service module; uvicorn resolves the name through this table when the server starts.
    ``tests/test_connection_limits.py`` fails if a BentoML or uvicorn upgrade bypasses it.
    """
    import uvicorn.config

    BoundedHttpProtocol.limits = limits  # uvicorn builds the protocol: no way to pass them
    target = f"{__name__}:{BoundedHttpProtocol.__name__}"
    uvicorn.config.HTTP_PROTOCOLS["auto"] = target
    uvicorn.config.HTTP_PROTOCOLS["httptools"] = target


class BoundedHttpProtocol(HttpToolsProtocol):
    # The settings' limits, from ``install``: a class attribute because uvicorn builds each
    # protocol itself (from the name in HTTP_PROTOCOLS), so they cannot be handed to one.
    limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keepalive_timeout_s
        self._awaiting_headers = True
        self._header_bytes = 0  # raw bytes of reads that ended inside the header section
        self._parsed_bytes = 0  # the request line and header fields parsed so far
        self._header_count = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._malformed_after_pipeline = False
        self._pending_refusal: tuple[str, str, str] | None = None  # after the answers
        self._close_when_answered = False  # the client half-closed (``eof_received``)
        self._running: Any = None  # the request whose app task was started last
        # Inside a chunk's header with no data yet: the last chunk's trailer section, whose
        # fields httptools buffers whole (``_trailer_bytes`` bounds them, read by read).
        self._after_chunk_header = False
        self._trailer_bytes = 0

    # -- connections --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport))  # type: ignore[arg-type]
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        self._stop_body_timer()
        # uvicorn tells only the request parsed last (``self.cycle``) that the client left.
        # With requests pipelined behind it, the one running is another: its app never
        # learnt and wrote its answer to the closed uvloop transport (RuntimeError "the
        # handler is closed", a traceback per connection), and a client that pipelined large
        # requests, read nothing and closed left ~1.5 MB in the worker for good: 9 rounds
        # of 20 such connections took a worker from 1,023 to 1,377 MB (now +1 to +7 MB a
        # round, the allocator's noise).
        running = self._running
        if running is not None and not running.response_complete:
            running.disconnected = True
            running.message_event.set()
        for cycle, _ in self.pipeline:
            cycle.disconnected = True
        self.pipeline.clear()  # never started: nobody is there to answer
        super().connection_lost(exc)

    # -- bytes in -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused or self._malformed_after_pipeline:
            return  # the connection is closing, or its last answers are still being written
        self._unset_keepalive_if_required()
        if self._awaiting_headers and self._header_timer is None:
            self._start_header_timer()
        in_trailers = self._after_chunk_header
        try:
            self.parser.feed_data(data)
        except _Refused:
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as error:
            if not self._refused:
                self._malformed(error)
            return
        if self._body_incomplete() and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_late)
        if self._awaiting_headers:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(
                    "headers_too_large",
                    "request line and headers too large",
                    f"at most {self.limits.max_header_bytes} bytes",
                )
        elif in_trailers and self._after_chunk_header:
            # A whole read inside the trailer section (one ending in it is at most one
            # read more): the field still arriving is buffered by httptools until it ends.
            self._trailer_bytes += len(data)
            if self._trailer_bytes > self.limits.max_header_bytes:
                if self._body_incomplete() and not self.cycle.response_started:
                    self._abandon(self.cycle)  # its body will not be read to the end
                self._refuse_in_turn(
                    "headers_too_large",
                    "trailer fields too large",
                    f"at most {self.limits.max_header_bytes} bytes",
                )

    def eof_received(self) -> bool | None:
        """The client half-closed its side (``shutdown(SHUT_WR)``, ``nc -N``): it sends no
        more, but still reads. uvicorn closed at once, so even a complete request lost its
        answer (the 200 was computed, then dropped). True keeps our side open to answer.

        A body still incomplete can never complete: RFC 9112 §8 lets a server answer such a
        request before closing, and a 400 says why. Requests already read are answered,
        then the connection is closed."""
        cycle = self.cycle
        if self._refused:
            return None
        if self._body_incomplete() and not cycle.response_started:
            self._abandon(cycle)
            self._refuse_in_turn(
                "bad_framing",
                "the connection was half-closed before the request body was complete",
                "the whole body (a chunked body ends with a zero-size chunk)",
            )
            return True
        if self._answers_pending() or self._malformed_after_pipeline:
            self._close_when_answered = True
            return True
        return None

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True
        self._parsed_bytes = 0
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._check_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(
                "too_many_headers", "too many headers", f"at most {self.limits.max_headers}"
            )
            raise _Refused
        self._check_header_bytes(len(name) + len(value))
        if self._awaiting_headers:
            super().on_header(name, value)
        # Otherwise a trailer field (RFC 9112 §7.1.2): bounded like a header, then dropped.
        # uvicorn would append it to the request's headers, where a trailer could replace
        # a header the handler reads (content-type, say); §7.1.2 forbids that merge.

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_bytes = self._parsed_bytes = 0
        self._stop_header_timer()
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                "too_many_connections",
                "this worker holds too many open connections; retry shortly",
                f"at most {self.limits.max_connections} per worker",
                retry_after=True,
            )
            raise _Refused
        self._check_transfer_codings()
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        self._after_chunk_header = True
        self._trailer_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._after_chunk_header = False
        super().on_body(body)

    def on_chunk_complete(self) -> None:
        self._after_chunk_header = False

    def on_message_complete(self) -> None:
        self._stop_body_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.transport.flush()  # a response with no body write (HEAD) still goes out
        super().on_response_complete()
        if self._malformed_after_pipeline and not self._answers_pending():
            self._refuse(*(self._pending_refusal or ("invalid_http", "malformed HTTP")))
        elif self._close_when_answered and not self._answers_pending():
            self.transport.close()  # the client half-closed: nothing more will come

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, _unless_abandoned(cycle, app))

    # -- framing ------------------------------------------------------------------------------

    def _check_transfer_codings(self) -> None:
        """What llhttp lets through of Transfer-Encoding. It already refuses chunked twice
        or not last, any coding without chunked, and Transfer-Encoding with Content-Length
        (HttpParserError, see ``_malformed``)."""
        codings = [v for n, v in self.headers if n == b"transfer-encoding"]
        if not codings:
            return
        if self.parser.get_http_version() != "1.1":
            # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message MUST be treated as
            # faulty framing, and the connection closed.
            self._refuse_in_turn(
                "bad_framing",
                "Transfer-Encoding in an HTTP/1.0 request",
                "HTTP/1.1 for a chunked body, or a Content-Length",
            )
            raise _Refused
        names = [c for c in (c.strip().lower() for v in codings for c in v.split(b",")) if c]
        if not names or names[-1] != b"chunked" or names.count(b"chunked") > 1:
            # RFC 9112 §6.3 item 4: chunked not final in a request: 400 and close; §6.1:
            # chunked applied twice is faulty framing.
            self._refuse_in_turn(
                "bad_framing",
                "Transfer-Encoding must end with chunked, once",
                "Transfer-Encoding: chunked",
            )
            raise _Refused
        unknown = sorted({c.decode("latin-1") for c in names if c != b"chunked"})
        if unknown:
            # RFC 9112 §6.1: a server that receives a transfer coding it does not understand
            # SHOULD answer 501. Only chunked is implemented; the connection is closed since
            # the body after it cannot be skipped safely.
            self._refuse_in_turn(
                "unsupported_transfer_coding",
                f"transfer coding {', '.join(unknown)[:100]!r} is not implemented",
                "Transfer-Encoding: chunked alone (Content-Encoding for compression)",
            )
            raise _Refused

    def _malformed(self, error: httptools.HttpParserError) -> None:
        """The parser found bytes that are not HTTP/1.1; where they lie decides the answer.

        In the body of the request being read (chunk sizes, chunk data, chunk extensions,
        trailers), the rest of that body can never be read. That request used to count as
        an answer still pending, so the connection waited for its answer, its handler waited
        for the rest of its body, and the body deadline, armed only after a read that parsed,
        never fired: no answer, ever. Now the request is abandoned (its handler sees the
        client gone, or never runs) and the 400 goes out at once, after any answers to
        requests before it. RFC 9112 §6.3 and §8: invalid framing gets 400 and the connection
        is closed, so nothing after the error is read as another request.
        """
        cycle = self.cycle
        in_body = cycle is not None and cycle.more_body  # answered already or not
        text = str(error)[:200]
        framing = in_body or "Transfer-Encoding" in text or "Content-Length" in text
        code = "bad_framing" if framing else "invalid_http"
        what = "request body framing" if in_body else "HTTP request"
        refusal = (code, f"malformed {what} ({text})", "a well-formed HTTP/1.1 request")
        if in_body and cycle.response_started and not cycle.response_complete:
            # Its answer is on the wire (a route that answers without reading the body):
            # finish it, then close (keep_alive off: no 400 after it; the refusal below is
            # only a fallback should the connection still be open).
            cycle.keep_alive = False
            self._malformed_after_pipeline = True
            self._pending_refusal = refusal
            self.flow.pause_reading()
            return
        if in_body and not cycle.response_complete:
            self._abandon(cycle)
        self._refuse_in_turn(*refusal)

    def _refuse_in_turn(self, code: str, message: str, expected: str) -> None:
        """Refuse now, or, while a request read earlier is still being answered, right after
        its answer (answers go out in request order); nothing more is read meanwhile."""
        if self._answers_pending():
            self._malformed_after_pipeline = True
            self._pending_refusal = (code, message, expected)
            self.flow.pause_reading()
        else:
            self._refuse(code, message, expected)

    def _queued(self, cycle: Any) -> bool:
        return any(queued is cycle for queued, _ in self.pipeline)

    def _abandon(self, cycle: Any) -> None:
        """The request's body will never arrive whole: its app sees the client gone (or
        never runs), whatever it sends is dropped, and a queued one never starts."""
        self._stop_body_timer()
        for entry in self.pipeline:
            if entry[0] is cycle:
                self.pipeline.remove(entry)
                break
        cycle.disconnected = True  # receive() says http.disconnect; send() drops answers
        cycle.message_event.set()

    # -- helpers ------------------------------------------------------------------------------

    def _check_header_bytes(self, more: int) -> None:
        # Fields completed within one read are measured here; the per-read count in
        # data_received bounds what the parser buffers for a field still arriving.
        self._parsed_bytes += more
        if self._parsed_bytes > self.limits.max_header_bytes:
            self._refuse(
                "headers_too_large",
                "request line and headers too large",
                f"at most {self.limits.max_header_bytes} bytes",
            )
            raise _Refused

    def _answers_pending(self) -> bool:
        """A request read earlier is still being answered, or waits its turn (an abandoned
        one will never answer)."""
        if self.pipeline:
            return True
        running = self._running
        return running is not None and not running.response_complete and not running.disconnected

    def _body_incomplete(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_complete

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_late(self) -> None:
        """The body did not arrive in time: a 408 (unless the app already answered), and
        the app sees the client gone."""
        self._body_timer = None
        cycle = self.cycle
        if not self._body_incomplete() or self._refused:
            return
        self._abandon(cycle)  # the app's receive() now says http.disconnect
        if cycle.response_started:
            self.transport.close()
            return
        self._refuse(
            "body_timeout",
            "the body did not arrive in time",
            f"the whole body within {self.limits.body_timeout_s:g} s of the headers",
        )

    def _start_header_timer(self) -> None:
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self._answers_pending() and not self._refused:
            if self._header_bytes == 0 and self._header_count == 0 and self.cycle is None:
                # A connection that never sent a byte: nobody to answer, just close it.
                on_refusal("idle_connection")
                self._refused = True
                self.transport.close()
                return
            self._refuse(
                "header_timeout",
                "request headers did not arrive in time",
                f"all headers within {self.limits.header_timeout_s:g} s",
            )

    def _refuse(
        self,
        code: str,
        message: str,
        expected: str | None = None,
        retry_after: bool = False,
    ) -> None:
        """Answer with a JSON error and close; later bytes of this connection are ignored."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._stop_header_timer()
        on_refusal(code)
        error = RequestError(code, message, expected=expected)  # the status from the catalogue
        logger.info("connection refused with %d: %s", error.status, code)
        body = orjson.dumps(error.body())
        head = [
            STATUS_LINE[error.status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        self.transport.write(b"".join([*head, b"\r\n", body]))
        # A lingering close: a client still sending (a 1 MB header, say) would get a reset
        # instead of the answer if we closed now. Its bytes are read and dropped (see
        # data_received) for LINGER_S, then the connection is closed regardless.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
