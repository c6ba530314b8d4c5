"""TensorFlow Serving REST API on the service's own port.

``POST /v1/models/{name}[/versions/{v}]:predict`` takes the row format (``instances``) or the
columnar format (``inputs``), ``{"b64": ...}`` for image files, and ``signature_name`` to pick
one of a model's signatures (``serving_default`` is its first). Tensors go to the signature's
input kind and through the same batchers as every other request; errors are
``{"error": ...}`` with 400 or 404. Status and metadata cover every version the service knows.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from service.config import Limits
from service.descriptor import TF_DEFAULT, SignatureView, Version
from service.errors import BadRequest, RequestError
from service.http import RawRequest, Reply, json_reply
from service.inference import Call, Decoded, Runtime
from service.inputs.body import parse_json
from service.inputs.tensors import holds_boolean, might_hold_booleans
from service.interfaces.base import BYTES, Columns, Tensor
from service.monitoring.names import OOD_OUTPUTS
from service.protocols.common import serve, tfserving_errors
from service.protocols.v2_codec import check_inputs
from service.registry.lookup import (
    FAILED,
    LOADING,
    READY,
    UNLOADING,
    Loaded,
    ServedModel,
    version_number,
)

DTYPES = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    BYTES: "DT_STRING",
}
REQUEST_KEYS = {"signature_name", "instances", "inputs"}


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


def rows_to_columns(instances: Any, view: SignatureView) -> Columns:
    """Row format: one instance per item; a bare value when the signature has one input."""
    if not isinstance(instances, list) or not instances:
        raise _bad("'instances' must be a non-empty list", "instances")
    only = view.inputs[0].name if len(view.inputs) == 1 else None
    if only is not None and not all(_is_named(i) for i in instances):
        return {only: _unwrap_b64(instances, only)}
    if not all(_is_named(i) for i in instances):
        raise _bad(
            "each instance must be an object of named inputs",
            "instances",
            expected=str([t.name for t in view.inputs]),
        )
    names = list(dict.fromkeys(key for instance in instances for key in instance))
    check_inputs(names, view)
    for item, instance in enumerate(instances):
        missing = [n for n in names if n not in instance]
        if missing:
            raise RequestError(
                "missing_input", f"input {missing[0]!r} is missing", field=missing[0], item=item
            )
    return {n: [_unwrap_b64(i[n], n) for i in instances] for n in names}


def columnar_inputs(inputs: Any, view: SignatureView) -> Columns:
    """Columnar format: one batch per input; a bare batch when the signature has one input."""
    if not _is_named(inputs):
        if len(view.inputs) != 1:
            raise _bad(
                "'inputs' must name each input",
                "inputs",
                expected=str([t.name for t in view.inputs]),
            )
        name = view.inputs[0].name
        return {name: _unwrap_b64(inputs, name)}
    check_inputs(list(inputs), view)
    return {name: _unwrap_b64(value, name) for name, value in inputs.items()}


def signature_of(version: Version, name: Any) -> SignatureView:
    if not isinstance(name, str):
        raise _bad("'signature_name' must be a string", "signature_name")
    view = version.views.get(version.tf_signature(name))
    if view is None:
        raise BadRequest(
            "unknown_signature",
            f"model {version.name!r} has no signature {name[:60]!r}",
            field="signature_name",
            expected=str([TF_DEFAULT, *version.views]),
        )
    return view


def read_request(body: bytes, version: Version) -> tuple[SignatureView, Columns, bool]:
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
    view = signature_of(version, document.get("signature_name", TF_DEFAULT))
    if "instances" in document:
        columns, rows = rows_to_columns(document["instances"], view), True
    else:
        columns, rows = columnar_inputs(document["inputs"], view), False
    if might_hold_booleans(body):
        for tensor in view.inputs:
            wants_bool = tensor.datatype in (BYTES, "BOOL")
            if not wants_bool and holds_boolean(columns.get(tensor.name)):
                raise BadRequest(
                    "invalid_dtype",
                    f"input {tensor.name!r} holds booleans",
                    field=tensor.name,
                    expected="numbers",
                )
    return view, columns, rows


# -- answers ------------------------------------------------------------------------------


def _plain(value: np.ndarray) -> Any:
    if value.dtype == object:
        return value.astype(str).tolist()
    if value.dtype == np.float16:
        return value.astype(np.float32)
    return value


def encode_predictions(named: dict[str, np.ndarray], rows: bool) -> Reply:
    if not rows:
        if len(named) == 1:
            return json_reply({"outputs": _plain(next(iter(named.values())))})
        return json_reply({"outputs": {k: _plain(v) for k, v in named.items()}})
    if len(named) == 1:
        return json_reply({"predictions": _plain(next(iter(named.values())))})
    lists = {
        k: _plain(v).tolist() if isinstance(_plain(v), np.ndarray) else _plain(v)
        for k, v in named.items()
    }
    count = len(next(iter(named.values())))
    return json_reply({"predictions": [{k: v[i] for k, v in lists.items()} for i in range(count)]})


class TfPredict:
    """A TF Serving predict request: the signature comes from the body, so it is chosen in
    ``decode``; every signature of a version has its own batcher."""

    def __init__(self, name: str, version: str | None) -> None:
        label = f"/v1/models/{name}:predict"
        number = version_number(version)
        self.call = Call(name, number, "", label, tfserving_errors, "tfserving")

    async def decode(
        self, request: RawRequest, body: bytes, served: Version, limits: Limits
    ) -> Decoded:
        view, columns, rows = read_request(body, served)
        feed = await view.kind.from_columns(columns, served, view.name, limits)
        return Decoded(view.name, feed, rows)

    def encode(self, outputs: Any, decoded: Decoded, served: Version) -> Reply:
        named = served.views[decoded.signature].answer.present(outputs, served)
        if served.views[decoded.signature].flagged:
            # The OOD flags are V2 and native extras: a TF Serving answer keeps its one-output
            # form (rows of values, not of {name: value}) that its clients read.
            named = {k: v for k, v in named.items() if k not in OOD_OUTPUTS}
        return encode_predictions(named, decoded.context)


async def predict(
    request: RawRequest, runtime: Runtime, name: str, version: str | None = None
) -> Reply:
    try:
        adapter = runtime.call(("tf", name, version), lambda: TfPredict(name, version))
    except RequestError as error:
        return tfserving_errors(error)
    return await serve(request, runtime, adapter)


# -- status and metadata ------------------------------------------------------------------

_STATES = {READY: "AVAILABLE", LOADING: "LOADING", UNLOADING: "UNLOADING"}


def version_status(loaded: Loaded) -> dict[str, Any]:
    status = {"error_code": "OK", "error_message": ""}
    if loaded.state == FAILED:
        status = {"error_code": "UNKNOWN", "error_message": loaded.reason or "load failed"}
    state = _STATES.get(loaded.state, "END")
    return {"version": str(loaded.number), "state": state, "status": status}


def model_status(model: ServedModel, number: int | None) -> dict[str, Any]:
    if number is None:
        return {
            "model_version_status": [
                version_status(v) for _, v in sorted(model.versions.items(), reverse=True)
            ]
        }
    number = model.number_of(number)  # a label: its version
    loaded = model.versions.get(number)
    if loaded is None:
        raise model.unknown_version(number)
    return {"model_version_status": [version_status(loaded)]}


def _tensor_info(tensor: Tensor) -> dict[str, Any]:
    return {
        "dtype": DTYPES.get(tensor.datatype, "DT_INVALID"),
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in tensor.shape]},
        "name": tensor.name,
    }


def signature_def(view: SignatureView) -> dict[str, Any]:
    # A flagged signature's OOD outputs are V2 and native extras; elsewhere an output of one
    # of their names is the model's own.
    hidden = OOD_OUTPUTS if view.flagged else ()
    return {
        "inputs": {t.name: _tensor_info(t) for t in view.inputs},
        "outputs": {t.name: _tensor_info(t) for t in view.outputs if t.name not in hidden},
        "method_name": "tensorflow/serving/predict",
    }


def model_metadata(version: Version) -> dict[str, Any]:
    defs = {name: signature_def(view) for name, view in version.views.items()}
    defs[TF_DEFAULT] = signature_def(version.views[version.default_signature])
    return {
        "model_spec": {"name": version.name, "signature_name": "", "version": str(version.number)},
        "metadata": {"signature_def": {"signature_def": defs}},
    }


async def labelled_status(request: RawRequest, runtime: Runtime, name: str, label: str) -> Reply:
    """``/v1/models/{name}/labels/{label}``: as ``/versions/{v}`` for the labelled version."""
    return await status(request, runtime, name, _as_label(label))


async def labelled_metadata(request: RawRequest, runtime: Runtime, name: str, label: str) -> Reply:
    return await metadata(request, runtime, name, _as_label(label))


async def labelled_predict(request: RawRequest, runtime: Runtime, name: str, label: str) -> Reply:
    return await predict(request, runtime, name, _as_label(label))


def _as_label(label: str) -> str:
    """TF Serving's labels are never numbers; ``/labels/2`` is no label (404), not version 2."""
    return label if not label.isdigit() else "#" + label[:40]


async def status(
    request: RawRequest, runtime: Runtime, name: str, version: str | None = None
) -> Reply:
    try:
        return json_reply(model_status(runtime.registry.find(name), version_number(version)))
    except RequestError as error:
        return tfserving_errors(error)


async def metadata(
    request: RawRequest, runtime: Runtime, name: str, version: str | None = None
) -> Reply:
    try:
        loaded = runtime.registry.resolve(name, version_number(version))
    except RequestError as error:
        return tfserving_errors(error)
    assert loaded.version is not None
    return json_reply(model_metadata(loaded.version))
