"""The little of HTTP the hot path needs, on plain ASGI: no framework objects per request.

The body is read here, within its size limit (``read_body``), or drained when no handler
read it (``RawRequest.drain``): one module for both ends of the same stream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from service.errors import PayloadTooLarge, RequestError
from service.inputs.numbers import ascii_int

if TYPE_CHECKING:
    from service.config import Limits

JSON = "application/json"
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class RawRequest:
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    receive: Receive
    unread: bool = True  # no byte of the body taken yet

    @classmethod
    def from_scope(cls, scope: dict[str, Any], receive: Receive) -> RawRequest:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        raw_query = scope.get("query_string", b"")
        query = (
            dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True))
            if raw_query
            else {}
        )
        return cls(headers, query, receive)

    async def body(self, limits: Limits) -> bytes:
        """The whole body, within the size and time limits (``read_body``)."""
        return await read_body(self, limits)

    async def drain(self, limits: Limits) -> None:
        """Read and drop a body no handler read (a request refused before its body: 503,
        404), up to the body limit, so the connection stays in step. Answering first and
        closing with the body unread resets the connection, and the client saw a
        ReadError instead of its 503 (1 request in ~3,000 of the overload scenario)."""
        if not self.unread:
            return
        self.unread = False
        left = limits.max_body_bytes
        while left >= 0:
            message = await self.receive()
            left -= len(message.get("body", b""))
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return


class ClientGone(Exception):
    """The client disconnected before its body arrived; there is nobody to answer."""


async def read_body(request: RawRequest, limits: Limits) -> bytes:
    """The whole body, refused as soon as it passes ``limits.max_body_bytes`` (declared or
    streamed, 413). Its deadline (408) is the connection's (``service.connection``)."""
    request.unread = False  # whatever comes of it, ``RawRequest.drain`` leaves it alone
    declared = ascii_int(request.headers.get("content-length"))
    if declared is not None and declared > limits.max_body_bytes:
        raise _too_large(limits.max_body_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise _too_large(limits.max_body_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        "body_too_large", "request body too large", expected=f"at most {max_bytes} bytes"
    )


@dataclass
class Reply:
    """An answer: bytes for HTTP; ``message`` carries the same answer for another transport
    (gRPC's protobuf response), ``error`` the refusal it was written from (gRPC aborts with
    its catalogued status)."""

    body: bytes
    status: int = 200
    media_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    message: Any = None
    error: RequestError | None = None

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", self.media_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_reply(content: dict[str, Any], status: int = 200) -> Reply:
    return Reply(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status)
