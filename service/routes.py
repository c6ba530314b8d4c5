"""HTTP routes: the native endpoints as ``Call``s, ``/models``, and the protocol routers.

A FastAPI app (for its OpenAPI page) mounted into the BentoML service; handlers take the raw
``Request`` and answer with prepared bytes (``inference.handle``), so no per-request model
validation layer sits on the hot path.
"""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from service import openapi
from service.config import Limits
from service.endpoints import ENDPOINTS, Endpoint, Incoming
from service.errors import RequestError
from service.http import RawRequest, json_reply
from service.inference import Call, error_reply, handle
from service.protocols import tfserving, v2
from service.registry import ServedModel


def native_call(path: str, endpoint: Endpoint) -> Call:
    """A native endpoint as a ``Call``: options checked before any decoding work."""

    async def decode(
        request: RawRequest, body: bytes, model: ServedModel, limits: Limits
    ) -> tuple[np.ndarray, Incoming]:
        incoming = Incoming(
            body=body,
            content_type=request.headers.get("content-type", ""),
            query=request.query,
            accept=request.headers.get("accept", ""),
            limits=limits,
        )
        endpoint.check(incoming, model)
        return await endpoint.decode(incoming, model), incoming

    return Call(
        endpoint.model, endpoint.signature, path, decode, endpoint.encode, endpoint.classify
    )


NATIVE_CALLS: dict[str, Call] = {path: native_call(path, e) for path, e in ENDPOINTS.items()}


def _route(path: str, call: Call):
    """The same handler behind FastAPI, for when a request does not take the fast path."""

    async def route(request: Request) -> Response:
        raw = RawRequest.from_scope(request.scope, request.receive)
        reply = await handle(raw, call, request.app.state.runtime)
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
            _route(path, NATIVE_CALLS[path]),
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

    @app.get(
        "/models/{name}",
        summary="One model's description",
        tags=["models"],
        responses=openapi.LOOKUP_ERRORS,
    )
    async def describe_model(request: Request, name: str) -> Response:
        try:
            model = request.app.state.runtime.registry.find(name)
        except RequestError as error:
            return error_reply(error).to_response()
        return json_reply(model.describe()).to_response()

    app.include_router(v2.router)
    app.include_router(tfserving.router)
    return app


app = create_app()
