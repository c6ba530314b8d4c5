"""Open Inference Protocol (V2, KServe / Triton REST) on the service's own port.

``POST /v2/models/{name}[/versions/{v}]/infer`` decodes the V2 request (``v2_codec``: JSON
tensors, or the binary tensor data extension), hands the named tensors to the shared catalog,
and runs through the same batchers as the native endpoints. Errors are ``{"error": ...}`` with
400 or 404 (413 and 503 keep their meaning: too large, or come back later).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from service import openapi
from service.config import Limits
from service.errors import RequestError
from service.http import RawRequest, Reply, json_reply
from service.inference import Call, Runtime
from service.inputs.tensors import might_hold_booleans
from service.protocols.catalog import (
    BYTES,
    MODELS,
    ProtocolModel,
    Tensor,
    Version,
    lookup,
    name_parameter,
    protocol_errors,
    routed,
    served_model,
    version_number,
)
from service.protocols.v2_codec import (
    HEADER_LENGTH,
    InferRequest,
    encode_answer,
    read_columns,
    requested_outputs,
    split_body,
)
from service.registry import READY, ServedModel

SERVER_NAME = "keras-model-serving"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "parameters"]
ModelName = name_parameter(list(MODELS))
PLATFORMS = {"onnx": "onnxruntime_onnx", "saved_model": "tensorflow_savedmodel"}


def infer_call(name: str, version: str | None) -> Call:
    """A V2 infer request as a ``Call`` on the model's shared batcher."""
    model = lookup(name)

    async def decode(
        request: RawRequest, body: bytes, served: ServedModel, limits: Limits
    ) -> tuple[np.ndarray, InferRequest]:
        document, binary = split_body(body, request.headers.get(HEADER_LENGTH))
        check = might_hold_booleans(body)
        columns = read_columns(document["inputs"], binary, model, limits, check)
        wanted = requested_outputs(document, model)
        rid = document.get("id")
        batch = await model.batch(columns, served, limits)
        return batch, InferRequest(rid if isinstance(rid, str) else None, wanted)

    def encode(outputs: np.ndarray, request: InferRequest, served: ServedModel) -> Reply:
        return encode_answer(outputs, request, served, model)

    return Call(
        model.model,
        model.signature,
        f"/v2/models/{name}/infer",
        decode,
        encode,
        model.classify,
        version_number(version),
        protocol_errors,
    )


def infer_target(path: str) -> tuple[str, str | None] | None:
    """``(name, version)`` when ``path`` is a V2 infer URL (for the fast path)."""
    parts = path.split("/")
    if len(parts) == 5 and parts[1:3] == ["v2", "models"] and parts[4] == "infer":
        return parts[3], None
    if len(parts) == 7 and parts[1:3] == ["v2", "models"] and parts[4:7:2] == ["versions", "infer"]:
        return parts[3], parts[5]
    return None


# -- metadata, health and configuration -----------------------------------------------------


def _served(runtime: Runtime, name: str, version: str | None) -> tuple[ProtocolModel, ServedModel]:
    model = lookup(name)
    return model, served_model(runtime, model.model, version)


def _platform(served: ServedModel) -> str:
    return PLATFORMS.get(served.backend or "onnx", "onnxruntime_onnx")


def model_metadata(model: ProtocolModel, served: ServedModel) -> dict[str, Any]:
    def describe(tensor: Tensor) -> dict[str, Any]:
        return {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape_for(served)}

    return {
        "name": model.name,
        "versions": [str(served.version)] if served.version is not None else [],
        "platform": _platform(served),
        "inputs": [describe(t) for t in model.inputs],
        "outputs": [describe(t) for t in model.outputs],
    }


def model_config(model: ProtocolModel, served: ServedModel) -> dict[str, Any]:
    """Triton's model configuration (what perf_analyzer asks for): dims without the batch."""

    def describe(tensor: Tensor) -> dict[str, Any]:
        return {
            "name": tensor.name,
            "data_type": f"TYPE_{'STRING' if tensor.datatype == BYTES else tensor.datatype}",
            "dims": tensor.shape_for(served)[1:] or [1],
        }

    batching = served.config.batching
    config: dict[str, Any] = {
        "name": model.name,
        "platform": _platform(served),
        "max_batch_size": batching.max_batch_size,
        "input": [describe(t) for t in model.inputs],
        "output": [describe(t) for t in model.outputs],
    }
    if served.version is not None:
        config["version_policy"] = {"specific": {"versions": [served.version]}}
    if batching.enabled:
        delay = int(batching.max_wait_ms * 1000)
        config["dynamic_batching"] = {"max_queue_delay_microseconds": delay}
    return config


def _json(content: dict[str, Any], status: int = 200) -> Response:
    return json_reply(content, status).to_response()


def _error(error: RequestError) -> Response:
    return protocol_errors(error).to_response()


router = APIRouter(prefix="/v2", tags=["v2 (KServe / Triton)"], responses=openapi.LOOKUP_ERRORS)


@router.get("", summary="Server metadata and the protocol extensions it supports")
async def server_metadata() -> Response:
    return _json({"name": SERVER_NAME, "version": _version(), "extensions": EXTENSIONS})


def _version() -> str:
    try:
        return importlib.metadata.version(SERVER_NAME)
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@router.get("/health/live", summary="The server is running")
async def server_live() -> Response:
    return _json({"live": True})


@router.get("/health/ready", summary="Every model is loaded and warmed up")
async def server_ready(request: Request) -> Response:
    registry = request.app.state.runtime.registry
    if registry.ready:
        return _json({"ready": True})
    reasons = registry.not_ready_reasons()
    error = {"error": "not every model is ready", "code": "not_ready", "models": reasons}
    return _json({**error, "ready": False}, status=503)


def _metadata_route(request: Request, name: str, version: str | None) -> Response:
    try:
        model, served = _served(request.app.state.runtime, name, version)
    except RequestError as error:
        return _error(error)
    return _json(model_metadata(model, served))


def _ready_route(request: Request, name: str, version: str | None) -> Response:
    try:
        model, served = _served(request.app.state.runtime, name, version)
    except RequestError as error:
        return _error(error)
    if served.state == READY:
        return _json({"name": model.name, "ready": True})
    reason = served.reason or served.state
    error = f"model {model.name!r} is not ready: {reason}"
    return _json({"error": error, "code": "model_not_ready", "ready": False}, status=503)


@router.get("/models/{name}", summary="Model metadata: versions, platform, input/output tensors")
async def metadata(request: Request, name: ModelName) -> Response:
    return _metadata_route(request, name, None)


@router.get("/models/{name}/versions/{version}", summary="Metadata of one version")
async def version_metadata(request: Request, name: ModelName, version: Version) -> Response:
    return _metadata_route(request, name, version)


@router.get("/models/{name}/ready", summary="The model can take requests")
async def ready(request: Request, name: ModelName) -> Response:
    return _ready_route(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="One version can take requests")
async def version_ready(request: Request, name: ModelName, version: Version) -> Response:
    return _ready_route(request, name, version)


@router.get("/models/{name}/config", summary="Triton-style model configuration")
async def config(request: Request, name: ModelName) -> Response:
    try:
        model, served = _served(request.app.state.runtime, name, None)
    except RequestError as error:
        return _error(error)
    return _json(model_config(model, served))


@router.post(
    "/models/{name}/infer",
    summary="Run the model on V2 tensors (JSON or binary)",
    openapi_extra=openapi.V2_INFER,
)
async def infer_route(request: Request, name: ModelName) -> Response:
    return await routed(request, infer_call, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Run one version",
    openapi_extra=openapi.V2_INFER,
)
async def version_infer_route(request: Request, name: ModelName, version: Version) -> Response:
    return await routed(request, infer_call, name, version)
