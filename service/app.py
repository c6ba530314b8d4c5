"""The service's ASGI app: every request is matched once against the route table, and ours
are answered here, on plain ASGI, ahead of BentoML's middleware.

BentoML wraps each request in tracing, access-log, metrics, timeout and concurrency
middleware: about 0.6 ms per request, more than decoding, batching and running the digits
model together. This app gives its own routes what of that they need (request ids, metrics,
the timeout and concurrency limit in ``service.inference``, tracing in ``service.tracing``)
and hands only BentoML's own routes (``/livez``, ``/readyz``, ``/metrics``, static files) to
BentoML. Its plain-text 404 and 405 answers become the service's JSON errors.
"""

from __future__ import annotations

import logging
from typing import Any

import bentoml
import orjson

from service import auth
from service.errors import RequestError
from service.http import ClientGone, RawRequest, Reply, json_reply
from service.inference import OVERLOADED, Runtime, error_reply
from service.logs import client_request_id, request_id
from service.metrics import protocol_of
from service.routes import TABLE
from service.routing import Match

Scope = dict[str, Any]
logger = logging.getLogger(__name__)


def service_runtime() -> Runtime | None:
    """The Runtime of this worker's service instance (``service.service``), once BentoML has
    made it: BentoML builds this app before the instance that builds the Runtime."""
    try:
        return bentoml.get_current_service().runtime
    except Exception:  # not made yet (BentoMLException), or a service without one
        return None


class App:
    """``runtime``: handed by whoever builds the app with one (tests); otherwise the service
    instance's, taken on the first request after it exists."""

    def __init__(self, bentoml_app: Any, runtime: Runtime | None = None) -> None:
        self.bentoml_app = bentoml_app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        runtime = self.runtime
        if runtime is None:
            runtime = self.runtime = service_runtime()
        if scope["type"] != "http" or runtime is None:
            await self.bentoml_app(scope, receive, send)
            return
        match = TABLE.match(scope["method"], scope["path"])
        guard = runtime.guard
        if match is None or not _ours(match, runtime):
            if guard is not None and guard.enabled:
                refusal = auth.http_refusal(guard, _headers(scope), *_unserved(match, scope))
                if refusal is not None:
                    await _refuse(refusal, runtime, scope, receive, send)
                    return
            if scope["path"] == "/metrics":
                runtime.metrics.flush()  # this worker's counts, up to this request
            if _first_segment(scope["path"]) not in BENTOML_SEGMENTS:
                await _refuse(_not_found(scope["path"]), runtime, scope, receive, send)
                return
            await self.bentoml_app(scope, receive, JsonRoutingErrors(send, scope))
            return
        refusal = None
        if guard is not None and guard.enabled:  # who may call what (service.auth), before
            # the 405: /{name}/{signature} exists for served models only, so a 405 first
            # told a caller without a key which models exist
            route = match.route or match.any_route
            template = route.template if route is not None else None
            refusal = auth.http_refusal(guard, _headers(scope), template, match.parameters)
        if refusal is None and match.route is None:
            await _method_not_allowed(scope, match).send(send)
            return
        request = RawRequest.from_scope(scope, receive)
        if refusal is not None:
            reply = error_reply(refusal)
        elif not match.route.infer:
            try:
                reply = await match.route.handler(request, runtime, **match.parameters)
            except ClientGone:  # left mid-body (any route that reads one): nobody to answer
                return
            except Exception:  # a fault of ours: logged, and no path or traceback answered
                rid = client_request_id(request.headers.get("x-request-id"))
                request_id.set(rid)  # the log line carries the id the answer gives
                logger.exception("%s %s failed", scope["method"], scope["path"][:200])
                reply = error_reply(RequestError("internal", "internal error", request_id=rid))
                reply.headers["x-request-id"] = rid
        elif runtime.full():  # shed before reading the body; counted again once it is read
            reply = error_reply(OVERLOADED)
            protocol = protocol_of(scope["path"])
            runtime.metrics.shed.labels("", "any", protocol, "concurrency").inc()
        else:
            reply = await match.route.handler(request, runtime, **match.parameters)
        if reply.status != 499:  # 499: the client left; nobody to answer
            await request.drain(runtime.config.limits)
            await reply.send(send)


# The first path segments of BentoML's own routes (its health, metrics, schema and static
# files). Any other unmatched path is answered here: BentoML's request metrics label each path
# it sees, so hostile names (``/v1/models/../../etc:predict``) sent to it would grow
# ``bentoml_service_request_total`` by one series each.
BENTOML_SEGMENTS = frozenset(
    ("livez", "healthz", "readyz", "metrics", "schema.json", "assets", "static_content")
)


def _unserved(match: Match | None, scope: Scope) -> tuple[str | None, dict[str, str]]:
    """The route an unserved path is checked as: BentoML's paths as BentoML's; a two-segment
    path of ours as the native route it looks like, naming a model, so that a key that may
    not call that model gets 403 whether it exists or not (a 404 told it which exist)."""
    route = match and (match.route or match.any_route)
    if route is None or _first_segment(scope["path"]) in BENTOML_SEGMENTS:
        return None, {"path": scope["path"]}
    return route.template, match.parameters


def _first_segment(path: str) -> str:
    return path[1:].split("/", 1)[0]


def _not_found(path: str) -> RequestError:
    return RequestError("not_found", f"no route {path[:200]!r}", field="path")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def _refuse(
    error: RequestError, runtime: Runtime, scope: Scope, receive: Any, send: Any
) -> None:
    request = RawRequest.from_scope(scope, receive)
    await request.drain(runtime.config.limits)
    await error_reply(error).send(send)


def _ours(match: Match, runtime: Runtime) -> bool:
    route = match.route or match.any_route
    return route is None or route.known is None or route.known(runtime, match.parameters)


def _method_not_allowed(scope: Scope, match: Match) -> Reply:
    allowed = ", ".join(match.allowed)
    error = RequestError(
        "method_not_allowed",
        f"method {scope['method']} not allowed on {scope['path'][:200]!r}",
        expected=allowed,
        headers={"Allow": allowed},
    )
    return error_reply(error)


class JsonRoutingErrors:
    """Turns BentoML's plain-text 404 and 405 answers into the service's JSON errors."""

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
        path, method = self._scope["path"][:200], self._scope["method"]
        if message["status"] == 404:
            error = RequestError("not_found", f"no route {path!r}", field="path")
        else:
            allowed = headers.get(b"allow", b"").decode()
            error = RequestError(
                "method_not_allowed", f"method {method} not allowed on {path!r}", expected=allowed
            )
        body = orjson.dumps(error.body())
        new_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]
        if b"allow" in headers:
            new_headers.append((b"allow", headers[b"allow"]))
        await self._send({**message, "headers": new_headers})
        await self._send({"type": "http.response.body", "body": body})


class AppService(bentoml.Service):
    """A BentoML service whose ASGI app puts ``App`` in front of BentoML's own."""

    def to_asgi(self, *args: Any, **kwargs: Any) -> Any:
        return App(super().to_asgi(*args, **kwargs))


__all__ = ["App", "AppService", "json_reply"]
