"""The hot path around BentoML's HTTP middleware stack.

BentoML wraps every request in tracing, access-log, metrics, timeout and concurrency
middleware: about 0.6 ms per request, more than decoding, batching and running the digits
model together. Model endpoints therefore go straight to ``routes.handle``; everything else
(``/livez``, ``/readyz``, ``/metrics``, the OpenAPI page, ``/models``) keeps BentoML's full
stack. The fast path keeps its own metrics (requests by status, latency) and request ids.
"""

from __future__ import annotations

from typing import Any

import bentoml
from starlette.requests import Request

from service.endpoints import ENDPOINTS
from service.routes import app as routes_app
from service.routes import handle

Scope = dict[str, Any]


class FastPath:
    def __init__(self, bentoml_app: Any) -> None:
        self.bentoml_app = bentoml_app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        endpoint = ENDPOINTS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST" or routes_app.state.runtime is None:
            await self.bentoml_app(scope, receive, send)
            return
        scope["app"] = routes_app
        response = await handle(Request(scope, receive), scope["path"], endpoint)
        await response(scope, receive, send)


class FastPathService(bentoml.Service):
    """A BentoML service whose ASGI app puts ``FastPath`` in front of BentoML's own."""

    def to_asgi(self, *args: Any, **kwargs: Any) -> Any:
        return FastPath(super().to_asgi(*args, **kwargs))
