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
  the 400.

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

logger = logging.getLogger(__name__)

LINGER_S = 2.0  # how long a refused connection's remaining bytes are read and dropped

# Set once per worker by the service (config and metrics are built after this module loads).
limits = Limits()
on_refusal: Callable[[str], None] = lambda reason: None  # noqa: E731


class _Refused(Exception):
    """Stops the parser after a refusal was sent."""


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


def install() -> None:
    """Make uvicorn build this protocol for every HTTP connection of this process.

    BentoML creates uvicorn's Config itself, with ``http="auto"``, after importing the
    service module; uvicorn resolves the name through this table when the server starts.
    ``tests/test_connection_limits.py`` fails if a BentoML or uvicorn upgrade bypasses it.
    """
    import uvicorn.config

    target = f"{__name__}:{BoundedHttpProtocol.__name__}"
    uvicorn.config.HTTP_PROTOCOLS["auto"] = target
    uvicorn.config.HTTP_PROTOCOLS["httptools"] = target


class BoundedHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = limits.keepalive_timeout_s
        self._awaiting_headers = True
        self._header_bytes = 0  # raw bytes of reads that ended inside the header section
        self._parsed_bytes = 0  # the request line and header fields parsed so far
        self._header_count = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._malformed_after_pipeline = False

    # -- connections --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport))  # type: ignore[arg-type]
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        self._stop_body_timer()
        super().connection_lost(exc)

    # -- bytes in -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused or self._malformed_after_pipeline:
            return  # the connection is closing, or its last answers are still being written
        self._unset_keepalive_if_required()
        if self._awaiting_headers and self._header_timer is None:
            self._start_header_timer()
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
            if self._refused:
                return
            if self._answers_pending():
                # A request already read is still being answered: answer it first.
                self._malformed_after_pipeline = True
                self.flow.pause_reading()
                return
            self._refuse(400, "invalid_http", f"malformed HTTP request ({error})")
            return
        if self._body_incomplete() and self._body_timer is None:
            self._body_timer = self.loop.call_later(limits.body_timeout_s, self._body_late)
        if self._awaiting_headers:
            self._header_bytes += len(data)
            if self._header_bytes > limits.max_header_bytes:
                self._refuse(
                    431,
                    "headers_too_large",
                    "request line and headers too large",
                    f"at most {limits.max_header_bytes} bytes",
                )

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
        if self._header_count > limits.max_headers:
            self._refuse(
                431, "too_many_headers", "too many headers", f"at most {limits.max_headers}"
            )
            raise _Refused
        self._check_header_bytes(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_bytes = self._parsed_bytes = 0
        self._stop_header_timer()
        if len(self.connections) > limits.max_connections:
            self._refuse(
                503,
                "too_many_connections",
                "this worker holds too many open connections; retry shortly",
                f"at most {limits.max_connections} per worker",
                retry_after=True,
            )
            raise _Refused
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_body_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.transport.flush()  # a response with no body write (HEAD) still goes out
        super().on_response_complete()
        if self._malformed_after_pipeline and not self._answers_pending():
            self._refuse(400, "invalid_http", "malformed HTTP request after a pipelined one")

    # -- helpers ------------------------------------------------------------------------------

    def _check_header_bytes(self, more: int) -> None:
        # Fields completed within one read are measured here; the per-read count in
        # data_received bounds what the parser buffers for a field still arriving.
        self._parsed_bytes += more
        if self._parsed_bytes > limits.max_header_bytes:
            self._refuse(
                431,
                "headers_too_large",
                "request line and headers too large",
                f"at most {limits.max_header_bytes} bytes",
            )
            raise _Refused

    def _answers_pending(self) -> bool:
        busy = self.cycle is not None and not self.cycle.response_complete
        return busy or bool(self.pipeline)

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
        cycle.disconnected = True  # the app's receive() now says http.disconnect
        cycle.message_event.set()
        if cycle.response_started:
            self.transport.close()
            return
        self._refuse(
            408,
            "body_timeout",
            "the body did not arrive in time",
            f"the whole body within {limits.body_timeout_s:g} s of the headers",
        )

    def _start_header_timer(self) -> None:
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(limits.header_timeout_s, self._headers_late)

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
                408,
                "header_timeout",
                "request headers did not arrive in time",
                f"all headers within {limits.header_timeout_s:g} s",
            )

    def _refuse(
        self,
        status: int,
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
        logger.info("connection refused with %d: %s", status, code)
        error: dict[str, Any] = {"error": message, "code": code}
        if expected is not None:
            error["expected"] = expected
        body = orjson.dumps(error)
        head = [
            STATUS_LINE[status],
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
