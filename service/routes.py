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
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from service import openapi
from service.config import ServiceConfig
from service.endpoints import ENDPOINTS, Endpoint, Incoming, json_response
from service.errors import NotFound, RequestError
from service.inputs.body import read_body
from service.logs import request_id
from service.metrics import Metrics
from service.registry import Registry

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the handlers need, built once per worker process by the BentoML service."""

    config: ServiceConfig
    metrics: Metrics
    registry: Registry


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def error_response(error: RequestError) -> Response:
    response = json_response(error.body(), status=error.status)
    response.headers.update(error.headers)
    return response


async def handle(request: Request, path: str, endpoint: Endpoint) -> Response:
    """The whole life of one inference request."""
    runtime = _runtime(request)
    started = time.perf_counter()
    rid = request.headers.get("x-request-id") or os.urandom(12).hex()
    request_id.set(rid)
    try:
        response = await _infer(request, runtime, endpoint)
    except RequestError as error:
        runtime.metrics.validation_errors.labels(endpoint.model, path, error.code).inc()
        logger.info("%s %s refused: %s (%s)", path, error.status, error.code, error.message)
        response = error_response(error)
    except Exception:
        logger.exception("%s failed", path)
        response = json_response({"error": "internal error", "request_id": rid}, status=500)
    response.headers["x-request-id"] = rid
    elapsed = time.perf_counter() - started
    runtime.metrics.request_latency.labels(endpoint.model, path).observe(elapsed)
    runtime.metrics.requests.labels(endpoint.model, path, str(response.status_code)).inc()
    if runtime.config.access_log:
        logger.info("%s %d %.2f ms", path, response.status_code, elapsed * 1000)
    return response


async def _infer(request: Request, runtime: Runtime, endpoint: Endpoint) -> Response:
    limits = runtime.config.limits
    model = runtime.registry.require(endpoint.model)
    batcher = model.batchers[endpoint.signature]
    with batcher.arriving():
        body = await read_body(request, limits.max_body_bytes)
        incoming = Incoming(
            body=body,
            content_type=request.headers.get("content-type", ""),
            query=dict(request.query_params),
            accept=request.headers.get("accept", ""),
            limits=limits,
        )
        endpoint.check(incoming, model)
        inputs = endpoint.decode(incoming, model)
    outputs = await batcher.infer(inputs)
    if endpoint.classify is not None:
        classes = endpoint.classify(outputs, model)
        runtime.metrics.count_predictions(model.name, model.labels, classes)
    return endpoint.encode(outputs, incoming, model)


def _route(path: str, endpoint: Endpoint):
    async def route(request: Request) -> Response:
        return await handle(request, path, endpoint)

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
            openapi_extra=openapi.operation(path),
            tags=[endpoint.model],
        )

    @app.get(
        "/models", summary="Every model: version, schema, labels, metrics, state", tags=["models"]
    )
    async def list_models(request: Request) -> Response:
        registry = _runtime(request).registry
        return json_response({"models": [m.describe() for m in registry.models.values()]})

    @app.get("/models/{name}", summary="One model's description", tags=["models"])
    async def describe_model(request: Request, name: str) -> Response:
        model = _runtime(request).registry.models.get(name)
        if model is None:
            return error_response(NotFound("unknown_model", f"no model named {name!r}"))
        return json_response(model.describe())

    return app


def readiness(runtime: Runtime | None) -> dict[str, Any]:
    if runtime is None:
        return {"ready": False, "models": {"*": "starting"}}
    return {"ready": runtime.registry.ready, "models": runtime.registry.not_ready_reasons()}


app = create_app()
