"""The OpenAPI document, written from the route table and the models being served.

Each route carries its operation here (summary, errors, the protocol's body schema). Paths
with ``{name}`` list the names served now; the native routes are written out per model and
signature, with the request and answer schemas of its interface (``service.interfaces``), so
a client (or a fuzzer) sees exactly what each model takes. Regenerated on every request to
``/docs.json``: models come and go while the service runs.
"""

from __future__ import annotations

import importlib.metadata
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from service.errors import CATALOGUE, protocol_status
from service.interfaces.base import query_option
from service.protocols import v2_names

if TYPE_CHECKING:
    from service.inference import Runtime
    from service.routing import RouteTable

TITLE = "Keras model serving"
DESCRIPTION = """Every model of the repository, served over HTTP with adaptive batching:
native endpoints, the Open Inference Protocol (V2: KServe, Triton clients) and TensorFlow
Serving's REST API on one port. `GET /models` describes each model (signatures, labels,
metrics, versions) and links its model card."""

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what was wrong, for people"},
        "code": {"type": "string", "description": "stable reason, e.g. invalid_shape"},
        "field": {"type": "string", "description": "the field or part at fault"},
        "item": {"type": "integer", "description": "index of the item at fault"},
        "expected": {"type": "string", "description": "what would have been accepted"},
    },
}
_LOOKUP = (400, 404, 503)
_INFER = (400, 404, 406, 408, 413, 415, 422, 503, 504)
_PROTOCOL = (400, 404, 408, 413, 503, 504)
_ADMIN = (400, 401, 403, 404, 408, 413)


def _status_text(status: int, statuses: tuple[int, ...], protocol: str | None = None) -> str:
    """A status's codes and their meanings, from the error catalogue; a protocol route's (one
    that lists no 422) as its clients get them (``errors.protocol_status``: 406, 415 and 422
    answered 400, TF Serving's ``unknown_signature`` 400)."""
    if protocol is None and 422 not in statuses:
        protocol = "v2"
    codes = [
        f"`{n}`: {c.meaning}"
        for n, c in CATALOGUE.items()
        if (c.status if protocol is None else protocol_status(n, protocol)) == status
    ]
    return f"{HTTPStatus(status).phrase}. " + "; ".join(codes)


def _errors(statuses: tuple[int, ...], protocol: str | None = None) -> dict[str, Any]:
    return {
        str(s): {
            "description": _status_text(s, statuses, protocol),
            "content": {"application/json": {"schema": _ERROR}},
        }
        for s in statuses
    }


def _ok(description: str, schema: dict[str, Any] | None = None, kind: str = "application/json"):
    return {"description": description, "content": {kind: {"schema": schema or {"type": "object"}}}}


def operation(
    summary: str,
    errors: tuple[int, ...] = (),
    ok: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    description: str | None = None,
    query: list[dict[str, Any]] | None = None,
    protocol: str | None = None,
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": ok or _ok("OK"), **_errors(errors, protocol)},
    }
    if description:
        found["description"] = description
    if body is not None:
        found["requestBody"] = {"required": True, "content": body}
    if query:
        found["parameters"] = query
    return found


_VERSION_QUERY = query_option(
    "version", {"type": "string", "pattern": "^[0-9]+$"}, "a served version (default: latest)"
)
_JSON_ANY = {"application/json": {"schema": {"type": "object"}}}
_V2_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "maxItems": 16},
        "datatype": {"type": "string", "description": "FP32, INT64, BOOL, BYTES..."},
        "parameters": {"type": "object"},
        "data": {"type": "array", "description": "flat or nested; BYTES as strings"},
    },
}

# -- each route's operation ---------------------------------------------------------------

DOCUMENT = operation("This document (OpenAPI 3)")
LIST_MODELS = operation(
    "Every model: state, versions, signatures, interfaces, labels, metrics, batching"
)
DESCRIBE_MODEL = operation("One model's description", (404,))
CARD = operation(
    "A served version's model card (Markdown)",
    (404, 503),
    _ok("The card", {"type": "string"}, "text/markdown"),
)
MODEL_FILE = operation(
    "A file of a served version's card (its plots)",
    (404, 503),
    _ok("A PNG plot", {"type": "string", "format": "binary"}, "image/png"),
)
DRIFT_PLOT = operation(
    "Drift: the reference and live distributions of each feature, side by side, with PSI",
    (404,),
    _ok("A PNG plot", {"type": "string", "format": "binary"}, "image/png"),
    query=[_VERSION_QUERY],
)
TENSOR_PREDICT = operation(
    "Any signature of any model: JSON tensors in, JSON tensors out",
    _INFER,
    body=_JSON_ANY,
    query=[_VERSION_QUERY, query_option("signature", {"type": "string"}, "default: the first")],
)
RICH = operation("A signature's native endpoint", _INFER)  # written out per model below
V2_SERVER = operation("Server metadata and the protocol extensions it supports")
V2_LIVE = operation("The server is running")
V2_READY = operation("Every model is loaded and warmed up", (503,))
V2_METADATA = operation("Model metadata: versions, platform, input and output tensors", _LOOKUP)
V2_MODEL_READY = operation("The model (or version) can take requests", _LOOKUP)
V2_CONFIG = operation("Triton-style model configuration", _LOOKUP)
V2_INFER = operation(
    "Run a model on V2 tensors (JSON, or binary after the JSON header)",
    _PROTOCOL,
    _ok("Outputs as V2 tensors (binary after the JSON header if asked)"),
    {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {"type": "object"},
                    "inputs": {"type": "array", "items": _V2_TENSOR},
                    "outputs": {"type": "array", "items": {"type": "object"}},
                },
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
)
_ADMIN_BODY = {"application/json": {"schema": {"type": "object"}}}
ADMIN_INDEX = operation(
    "Every model and version of the repository, with its state",
    _ADMIN,
    _ok("A list of {name, version, state, reason}", {"type": "array"}),
    description="Needs `Authorization: Bearer <SERVING_ADMIN_TOKEN>`.",
)
ADMIN_LOAD = operation(
    "Load (or reload) a model's versions now",
    _ADMIN,
    description="Needs `Authorization: Bearer <SERVING_ADMIN_TOKEN>`.",
)
ADMIN_UNLOAD = operation(
    "Stop serving a model (requests in progress finish)",
    _ADMIN,
    description="Needs `Authorization: Bearer <SERVING_ADMIN_TOKEN>`.",
)
ADMIN_ROUTING = operation(
    "Set a model's version labels and traffic weights on this server",
    _ADMIN,
    body={
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "labels": {"type": ["object", "null"], "description": "label -> version"},
                    "traffic": {
                        "type": ["object", "null"],
                        "description": "label or version -> weight",
                    },
                },
            }
        }
    },
    description="Needs `Authorization: Bearer <SERVING_ADMIN_TOKEN>`. Wins over config.yaml "
    "until config.yaml changes; `null` clears a key. 400 `invalid_routing` for a label or "
    "weight naming a version that is not ready.",
)
TF_STATUS = operation(
    "Model status: every version's state (TF Serving)", _LOOKUP, protocol="tfserving"
)
TF_METADATA = operation("Signature definitions (TF Serving)", _LOOKUP, protocol="tfserving")
TF_PREDICT = operation(
    "Predict: row (instances) or columnar (inputs) format",
    _PROTOCOL,
    _ok("predictions (row format) or outputs (columnar format)"),
    {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "signature_name": {"type": "string"},
                    "instances": {"type": "array", "description": "row format"},
                    "inputs": {"description": "columnar format"},
                },
            }
        }
    },
    protocol="tfserving",
)
_TEXT = {"type": "string"}
_BENTOML = {
    "/livez": (
        "get",
        operation("The process is alive (BentoML)", ok=_ok("OK", _TEXT, "text/plain")),
    ),
    "/readyz": (
        "get",
        {
            **operation("Every model is ready (BentoML)", ok=_ok("OK", _TEXT, "text/plain")),
            "responses": {
                "200": _ok("Ready", _TEXT, "text/plain"),
                "503": {
                    "description": "Not ready: each model's reason",
                    "content": {
                        "text/plain": {"schema": _TEXT},
                        "application/json": {"schema": {}},
                    },
                },
            },
        },
    ),
    "/metrics": (
        "get",
        operation(
            "Prometheus metrics", ok=_ok("Prometheus text", {"type": "string"}, "text/plain")
        ),
    ),
}

# -- the document -------------------------------------------------------------------------


def _version() -> str:
    try:
        return importlib.metadata.version("keras-model-serving")
    except importlib.metadata.PackageNotFoundError:
        return "0+source"


def _path_parameters(template: str, names: dict[str, list[str]]) -> list[dict[str, Any]]:
    found = []
    for name in ("name", "version", "label", "signature", "file"):
        if "{" + name + "}" not in template:
            continue
        schema: dict[str, Any] = {"type": "string"}
        if name == "version":  # a number, or a label (service.rollout)
            schema["pattern"] = "^([0-9]+|[A-Za-z][A-Za-z0-9_.-]{0,63})$"
        elif names.get(name):
            schema["enum"] = names[name]
        found.append({"name": name, "in": "path", "required": True, "schema": schema})
    return found


def _native_operations(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """``/{model}/{signature}`` for every rich signature of every served model's latest
    version, with its interface's schemas and options."""
    paths: dict[str, dict[str, Any]] = {}
    for model in sorted(runtime.registry.models.values(), key=lambda m: m.name):
        latest = model.latest()
        if latest is None or latest.version is None:
            continue
        version = latest.version
        for name, view in version.views.items():
            if not view.rich:
                continue
            query = [_VERSION_QUERY, *view.kind.query_options, *view.answer.query_options]
            paths[f"/{model.name}/{name}"] = {
                "post": {
                    **operation(
                        f"{model.name}: {name} ({view.answer.summary})",
                        _INFER,
                        _ok("OK", view.answer.native_response(version, name)),
                        view.kind.native_request(version, name),
                        description=f"Takes {view.kind.summary}; answers {view.answer.summary}.",
                        query=query,
                    ),
                    "tags": [model.name],
                }
            }
    return paths


def document(table: RouteTable, runtime: Runtime) -> dict[str, Any]:
    registry = runtime.registry
    names = {
        "name": sorted(registry.models),
        "signature": sorted(
            {
                s
                for m in registry.models.values()
                if (v := m.latest()) and v.version
                for s in v.version.views
            }
        ),
    }
    v2_named = {**names, "name": sorted(v2_names.served(runtime))}
    paths: dict[str, dict[str, Any]] = {}
    for route in table:
        if route.doc is None or route.template == "/{name}/{signature}":
            continue
        for template in route.variants():
            parameters = _path_parameters(
                template, v2_named if template.startswith("/v2/models") else names
            )
            entry = {**route.doc, "tags": list(route.tags)}
            if parameters:
                entry["parameters"] = [*parameters, *entry.get("parameters", [])]
            paths.setdefault(template, {})[route.method.lower()] = entry
    paths.update(_native_operations(runtime))
    for path, (method, entry) in _BENTOML.items():
        paths[path] = {method: {**entry, "tags": ["health and metrics"]}}
    return {
        "openapi": "3.0.2",
        "info": {"title": TITLE, "version": _version(), "description": DESCRIPTION},
        "paths": paths,
    }
