"""TensorFlow Serving REST API on the service's own port.

``POST /v1/models/{name}[/versions/{v}]:predict`` takes the row format (``instances``) or the
columnar format (``inputs``), ``{"b64": ...}`` for image files, and ``signature_name`` to
pick one of a model's signatures (the autoencoder's ``encode``, ``decode``,
``reconstruct``). Tensors go through the shared catalog and the same batchers as every
other request; errors are ``{"error": ...}`` with 400 or 404.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from service import openapi
from service.config import Limits
from service.errors import BadRequest, NotFound, RequestError
from service.http import RawRequest, Reply, json_reply
from service.inference import Call, Runtime
from service.inputs.body import parse_json
from service.inputs.tensors import holds_boolean, might_hold_booleans
from service.protocols.catalog import (
    BYTES,
    INT64,
    MODELS,
    Columns,
    ProtocolModel,
    Tensor,
    Version,
    name_parameter,
    protocol_errors,
    routed,
    served_model,
    version_number,
)
from service.registry import FAILED, LOADING, ServedModel

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_SIGNATURES = {"autoencoder": "reconstruct"}  # every other model has only ``predict``
DTYPES = {"FP32": "DT_FLOAT", INT64: "DT_INT64", BYTES: "DT_STRING"}
ModelName = name_parameter(sorted({m.model for m in MODELS.values()}))
REQUEST_KEYS = {"signature_name", "instances", "inputs"}


def signatures_of(name: str) -> dict[str, ProtocolModel]:
    """Each TF Serving model is one of our models; its signatures are our signatures."""
    found = {m.signature: m for m in MODELS.values() if m.model == name}
    if not found:
        raise NotFound(
            "unknown_model",
            f"no model named {name!r}",
            expected=str(sorted({m.model for m in MODELS.values()})),
        )
    return found


def signature(name: str, signature_name: str) -> ProtocolModel:
    signatures = signatures_of(name)
    if signature_name == DEFAULT_SIGNATURE:
        signature_name = DEFAULT_SIGNATURES.get(name, "predict")
    if signature_name not in signatures:
        raise BadRequest(
            "unknown_signature",
            f"model {name!r} has no signature {signature_name!r}",
            field="signature_name",
            expected=str([DEFAULT_SIGNATURE, *signatures]),
        )
    return signatures[signature_name]


# -- requests -----------------------------------------------------------------------------


def _bad(message: str, field: str, expected: str | None = None) -> BadRequest:
    return BadRequest("invalid_request", message, field=field, expected=expected)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _unwrap_b64(value: Any, field: str) -> Any:
    """``{"b64": "..."}`` anywhere in a value becomes the bytes it encodes."""
    if _is_b64(value):
        if not isinstance(value["b64"], str):
            raise _bad("'b64' must be a string", field)
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise _bad("'b64' is not valid base64", field) from None
    if isinstance(value, list):
        return [_unwrap_b64(v, field) for v in value]
    return value


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def rows_to_columns(instances: Any, model: ProtocolModel) -> Columns:
    """Row format: one instance per item; a bare value when the signature has one input."""
    if not isinstance(instances, list) or not instances:
        raise _bad("'instances' must be a non-empty list", "instances")
    only = model.inputs[0].name if len(model.inputs) == 1 else None
    if only is not None and not all(_is_named(i) for i in instances):
        return {only: _unwrap_b64(instances, only)}
    if not all(_is_named(i) for i in instances):
        raise _bad(
            "each instance must be an object of named inputs",
            "instances",
            expected=str([t.name for t in model.inputs]),
        )
    names = list(dict.fromkeys(key for instance in instances for key in instance))
    model.check_inputs(names)
    for item, instance in enumerate(instances):
        missing = [n for n in names if n not in instance]
        if missing:
            raise RequestError(
                "missing_input", f"input {missing[0]!r} is missing", field=missing[0], item=item
            )
    return {n: [_unwrap_b64(i[n], n) for i in instances] for n in names}


def columnar_inputs(inputs: Any, model: ProtocolModel) -> Columns:
    """Columnar format: one batch per input; a bare batch when the signature has one input."""
    if not _is_named(inputs):
        if len(model.inputs) != 1:
            raise _bad(
                "'inputs' must name each input",
                "inputs",
                expected=str([t.name for t in model.inputs]),
            )
        name = model.inputs[0].name
        return {name: _unwrap_b64(inputs, name)}
    model.check_inputs(list(inputs))
    return {name: _unwrap_b64(value, name) for name, value in inputs.items()}


def read_request(body: bytes, name: str) -> tuple[ProtocolModel, Columns, bool]:
    """The signature, its named inputs, and whether the answer is in row format."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise _bad("body must be a JSON object", "body")
    unknown = sorted(set(document) - REQUEST_KEYS)
    if unknown:
        raise _bad(f"unknown field {unknown[0]!r}", unknown[0], expected=str(sorted(REQUEST_KEYS)))
    if ("instances" in document) == ("inputs" in document):
        raise _bad(
            "give exactly one of 'instances' (row format) or 'inputs' (columnar format)", "body"
        )
    signature_name = document.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature_name, str):
        raise _bad("'signature_name' must be a string", "signature_name")
    model = signature(name, signature_name)
    if "instances" in document:
        columns, rows = rows_to_columns(document["instances"], model), True
    else:
        columns, rows = columnar_inputs(document["inputs"], model), False
    if might_hold_booleans(body):
        for tensor in model.inputs:
            if tensor.datatype != BYTES and holds_boolean(columns.get(tensor.name)):
                raise BadRequest(
                    "invalid_dtype",
                    f"input {tensor.name!r} holds booleans",
                    field=tensor.name,
                    expected="numbers",
                )
    return model, columns, rows


# -- answers ------------------------------------------------------------------------------


def _plain(value: np.ndarray) -> Any:
    return value.astype(str).tolist() if value.dtype == object else value


def encode_predictions(named: dict[str, np.ndarray], rows: bool) -> Reply:
    if not rows:
        if len(named) == 1:
            return json_reply({"outputs": _plain(next(iter(named.values())))})
        return json_reply({"outputs": {k: _plain(v) for k, v in named.items()}})
    if len(named) == 1:
        return json_reply({"predictions": _plain(next(iter(named.values())))})
    lists = {k: _plain(v) for k, v in named.items()}
    count = len(next(iter(named.values())))
    return json_reply({"predictions": [{k: v[i] for k, v in lists.items()} for i in range(count)]})


def predict_call(name: str, version: str | None) -> Call:
    """A TF Serving predict request as a ``Call``: the signature comes from the body, so it
    is chosen in ``decode``; every signature of one model shares the model's batchers."""
    default = signature(name, DEFAULT_SIGNATURE)

    async def decode(
        request: RawRequest, body: bytes, served: ServedModel, limits: Limits
    ) -> tuple[np.ndarray, tuple[ProtocolModel, bool]]:
        model, columns, rows = read_request(body, name)
        return await model.batch(columns, served, limits), (model, rows)

    def encode(
        outputs: np.ndarray, context: tuple[ProtocolModel, bool], served: ServedModel
    ) -> Reply:
        model, rows = context
        return encode_predictions(model.present(outputs, served), rows)

    return Call(
        default.model,
        default.signature,
        f"/v1/models/{name}:predict",
        decode,
        encode,
        default.classify,
        version_number(version),
        protocol_errors,
        chosen_signature=lambda context: context[0].signature,
    )


def predict_target(path: str) -> tuple[str, str | None] | None:
    """``(name, version)`` when ``path`` is a TF Serving predict URL (for the fast path)."""
    if not path.startswith("/v1/models/") or not path.endswith(":predict"):
        return None
    parts = path[: -len(":predict")].split("/")
    if len(parts) == 4:
        return parts[3], None
    if len(parts) == 6 and parts[4] == "versions":
        return parts[3], parts[5]
    return None


# -- status and metadata ------------------------------------------------------------------


def _served(runtime: Runtime, name: str, version: str | None) -> ServedModel:
    signatures_of(name)
    return served_model(runtime, name, version)


def version_status(served: ServedModel) -> dict[str, Any]:
    state = {LOADING: "LOADING", FAILED: "END"}.get(served.state, "AVAILABLE")
    error = {"error_code": "OK", "error_message": ""}
    if served.state == FAILED:
        error = {"error_code": "UNKNOWN", "error_message": served.reason or "load failed"}
    return {"version": str(served.version or 0), "state": state, "status": error}


def _tensor_info(tensor: Tensor, served: ServedModel) -> dict[str, Any]:
    shape = tensor.shape_for(served)
    return {
        "dtype": DTYPES[tensor.datatype],
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in shape]},
        "name": tensor.name,
    }


def signature_def(model: ProtocolModel, served: ServedModel) -> dict[str, Any]:
    return {
        "inputs": {t.name: _tensor_info(t, served) for t in model.inputs},
        "outputs": {t.name: _tensor_info(t, served) for t in model.outputs},
        "method_name": "tensorflow/serving/predict",
    }


def model_metadata(name: str, served: ServedModel) -> dict[str, Any]:
    signatures = signatures_of(name)
    defs = {s: signature_def(m, served) for s, m in signatures.items()}
    defs[DEFAULT_SIGNATURE] = signature_def(signature(name, DEFAULT_SIGNATURE), served)
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(served.version or 0)},
        "metadata": {"signature_def": {"signature_def": defs}},
    }


router = APIRouter(
    prefix="/v1/models", tags=["TensorFlow Serving"], responses=openapi.LOOKUP_ERRORS
)


def _answer(request: Request, name: str, version: str | None, metadata: bool) -> Response:
    try:
        served = _served(request.app.state.runtime, name, version)
    except RequestError as error:
        return protocol_errors(error).to_response()
    if metadata:
        return json_reply(model_metadata(name, served)).to_response()
    return json_reply({"model_version_status": [version_status(served)]}).to_response()


# Predict routes first: for a path like /v1/models/x:predict they are the router's first
# match, so a wrong method gets 405 with Allow: POST, not GET's.
@router.post(
    "/{name}:predict",
    summary="Predict: row (instances) or columnar (inputs) format",
    openapi_extra=openapi.TF_PREDICT,
)
async def predict_route(request: Request, name: ModelName) -> Response:
    return await routed(request, predict_call, name, None)


@router.post(
    "/{name}/versions/{version}:predict",
    summary="Predict with one version",
    openapi_extra=openapi.TF_PREDICT,
)
async def version_predict_route(request: Request, name: ModelName, version: Version) -> Response:
    return await routed(request, predict_call, name, version)


@router.get("/{name}", summary="Model status (TF Serving)")
async def status(request: Request, name: ModelName) -> Response:
    return _answer(request, name, None, metadata=False)


@router.get("/{name}/versions/{version}", summary="Status of one version")
async def version_status_route(request: Request, name: ModelName, version: Version) -> Response:
    return _answer(request, name, version, metadata=False)


@router.get("/{name}/metadata", summary="Signatures, inputs and outputs (TF Serving)")
async def metadata(request: Request, name: ModelName) -> Response:
    return _answer(request, name, None, metadata=True)


@router.get("/{name}/versions/{version}/metadata", summary="Metadata of one version")
async def version_metadata(request: Request, name: ModelName, version: Version) -> Response:
    return _answer(request, name, version, metadata=True)
