"""HTTP routes: every model endpoint goes decode -> validate -> batch -> run -> encode here.

A FastAPI app (for its OpenAPI page) mounted into the BentoML service; handlers take the raw
``Request`` and answer with prepared bytes, so no per-request model validation layer sits on
the hot path.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from service import openapi
from service.config import ServiceConfig
from service.endpoints import ENDPOINTS, Endpoint, Incoming
from service.errors import NotFound, RequestError
from service.http import RawRequest, Reply, json_reply
from service.inputs.body import ClientGone, read_body
from service.logs import request_id
from service.metrics import EndpointMetrics, Metrics
from service.registry import Registry

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the handlers need, built once per worker process by the BentoML service."""

    config: ServiceConfig
    metrics: Metrics
    registry: Registry


def error_reply(error: RequestError) -> Reply:
    reply = json_reply(error.body(), status=error.status)
    reply.headers.update(error.headers)
    return reply


NOT_STARTED = RequestError(
    "model_loading", "the service is starting", status=503, headers={"Retry-After": "5"}
)


async def handle(
    request: RawRequest, path: str, endpoint: Endpoint, runtime: Runtime | None
) -> Reply:
    """The whole life of one inference request."""
    if runtime is None:
        return error_reply(NOT_STARTED)
    started = time.perf_counter()
    rid = request.headers.get("x-request-id") or os.urandom(12).hex()
    request_id.set(rid)
    recorder = runtime.metrics.endpoint(endpoint.model, path)
    try:
        reply = await _infer(request, runtime, endpoint, recorder)
    except RequestError as error:
        recorder.refused(error.code)
        logger.info("%s %s refused: %s (%s)", path, error.status, error.code, error.message)
        reply = error_reply(error)
    except ClientGone:
        reply = Reply(b"", status=499)  # nobody is listening; counted, not sent
    except Exception:
        logger.exception("%s failed", path)
        reply = json_reply({"error": "internal error", "request_id": rid}, status=500)
    reply.headers["x-request-id"] = rid
    elapsed = time.perf_counter() - started
    recorder.answered(reply.status, elapsed)
    if runtime.config.access_log:
        logger.info("%s %d %.2f ms", path, reply.status, elapsed * 1000)
    return reply


async def _infer(
    request: RawRequest, runtime: Runtime, endpoint: Endpoint, recorder: EndpointMetrics
) -> Reply:
    limits = runtime.config.limits
    model = runtime.registry.require(endpoint.model)
    batcher = model.batchers[endpoint.signature]
    with batcher.arriving():
        body = await read_body(request, limits.max_body_bytes)
        incoming = Incoming(
            body=body,
            content_type=request.headers.get("content-type", ""),
            query=request.query,
            accept=request.headers.get("accept", ""),
            limits=limits,
        )
        endpoint.check(incoming, model)
        inputs = endpoint.decode(incoming, model)
    outputs = await batcher.infer(inputs)
    if endpoint.classify is not None:
        recorder.predicted(model.labels, endpoint.classify(outputs, model))
    return endpoint.encode(outputs, incoming, model)


def _route(path: str, endpoint: Endpoint):
    """The same handler behind FastAPI, for when a request does not take the fast path."""

    async def route(request: Request) -> Response:
        raw = RawRequest.from_scope(request.scope, request.receive)
        reply = await handle(raw, path, endpoint, request.app.state.runtime)
        return reply.to_response()

    route.__name__ = path.strip("/").replace("/", "_")
    return route


def create_app() -> FastAPI:
    app = FastAPI(
        title="Keras model serving",
        description="Digits, flowers, bank and autoencoder models over HTTP.",
        docs_url=None,  # BentoML's own page at / shows this app's endpoints
        redoc_url=None,
        openapi_url=None,
    )
    app.state.runtime = None
    for path, endpoint in ENDPOINTS.items():
        app.add_api_route(
            path,
            _route(path, endpoint),
            methods=["POST"],
            summary=endpoint.summary,
            description=openapi.DESCRIPTIONS[path],
            openapi_extra=openapi.OPERATIONS[path],
            tags=[endpoint.model],
        )

    @app.get(
        "/models", summary="Every model: version, schema, labels, metrics, state", tags=["models"]
    )
    async def list_models(request: Request) -> Response:
        registry = request.app.state.runtime.registry
        return json_reply(
            {"models": [m.describe() for m in registry.models.values()]}
        ).to_response()

    @app.get("/models/{name}", summary="One model's description", tags=["models"])
    async def describe_model(request: Request, name: str) -> Response:
        model = request.app.state.runtime.registry.models.get(name)
        if model is None:
            return error_reply(NotFound("unknown_model", f"no model named {name!r}")).to_response()
        return json_reply(model.describe()).to_response()

    return app


app = create_app()
