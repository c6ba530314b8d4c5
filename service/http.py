"""The little of HTTP the hot path needs, on plain ASGI: no framework objects per request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.responses import Response

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


@dataclass
class Reply:
    body: bytes
    status: int = 200
    media_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", self.media_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})

    def to_response(self) -> Response:
        return Response(self.body, self.status, self.headers, self.media_type)


def json_reply(content: dict[str, Any], status: int = 200) -> Reply:
    return Reply(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status)
