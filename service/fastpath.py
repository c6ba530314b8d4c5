"""The hot path around BentoML's HTTP middleware stack.

BentoML wraps every request in tracing, access-log, metrics, timeout and concurrency
middleware: about 0.6 ms per request, more than decoding, batching and running the digits
model together. Inference requests (native endpoints, V2 ``infer``, TF Serving ``predict``)
therefore go straight to ``inference.handle``; everything else (``/livez``, ``/readyz``,
``/metrics``, the OpenAPI page, ``/models``, protocol metadata) keeps BentoML's full stack.
The fast path keeps its own metrics (requests by status, latency) and request ids.
"""

from __future__ import annotations

from typing import Any

import bentoml
import orjson

from service.http import RawRequest, Reply
from service.inference import Runtime, handle
from service.protocols import tfserving, v2
from service.protocols.catalog import run_call
from service.routes import NATIVE_CALLS
from service.routes import app as routes_app

Scope = dict[str, Any]


class FastPath:
    def __init__(self, bentoml_app: Any) -> None:
        self.bentoml_app = bentoml_app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.bentoml_app(scope, receive, send)
            return
        runtime = routes_app.state.runtime
        if scope["method"] != "POST" or runtime is None:
            await self.bentoml_app(scope, receive, JsonRoutingErrors(send, scope))
            return
        reply = await self.infer(scope["path"], RawRequest.from_scope(scope, receive), runtime)
        if reply is None:
            await self.bentoml_app(scope, receive, JsonRoutingErrors(send, scope))
        elif reply.status != 499:
            await reply.send(send)

    @staticmethod
    async def infer(path: str, request: RawRequest, runtime: Runtime) -> Reply | None:
        """The answer to an inference request, or None when ``path`` is not one."""
        call = NATIVE_CALLS.get(path)
        if call is not None:
            return await handle(request, call, runtime)
        target = v2.infer_target(path)
        if target is not None:
            return await run_call(request, v2.infer_call, *target, runtime)
        target = tfserving.predict_target(path)
        if target is not None:
            return await run_call(request, tfserving.predict_call, *target, runtime)
        return None


class JsonRoutingErrors:
    """Turns the router's plain-text 404 and 405 answers into the service's JSON errors."""

    def __init__(self, send: Any, scope: Scope) -> None:
        self._send = send
        self._scope = scope
        self._replaced = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] in (404, 405):
            headers = dict(message.get("headers", []))
            if message["status"] == 405 or b"json" not in headers.get(b"content-type", b""):
                await self._replace(message, headers)
                return
        if self._replaced:
            return  # the original body of a replaced answer
        await self._send(message)

    async def _replace(self, message: dict[str, Any], headers: dict[bytes, bytes]) -> None:
        self._replaced = True
        path, method = self._scope["path"], self._scope["method"]
        if message["status"] == 404:
            error = {"error": f"no route {path!r}", "code": "not_found", "field": "path"}
        else:
            allowed = headers.get(b"allow", b"").decode()
            error = {
                "error": f"method {method} not allowed on {path!r}",
                "code": "method_not_allowed",
                "expected": allowed,
            }
        body = orjson.dumps(error)
        new_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]
        if b"allow" in headers:
            new_headers.append((b"allow", headers[b"allow"]))
        await self._send({**message, "headers": new_headers})
        await self._send({"type": "http.response.body", "body": body})


class FastPathService(bentoml.Service):
    """A BentoML service whose ASGI app puts ``FastPath`` in front of BentoML's own."""

    def to_asgi(self, *args: Any, **kwargs: Any) -> Any:
        return FastPath(super().to_asgi(*args, **kwargs))
