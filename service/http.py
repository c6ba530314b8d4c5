"""The little of HTTP the hot path needs, on plain ASGI: no framework objects per request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

if TYPE_CHECKING:
    from service.config import Limits

JSON = "application/json"
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class RawRequest:
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    receive: Receive

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
        """The whole body, within the size and time limits (``inputs.body.read_body``)."""
        from service.inputs.body import read_body

        return await read_body(self, limits)


@dataclass
class Reply:
    """An answer: bytes for HTTP; ``message`` carries the same answer for another transport
    (gRPC's protobuf response)."""

    body: bytes
    status: int = 200
    media_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    message: Any = None

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
