"""OpenAPI descriptions of the model endpoints (shown on the service's page at ``/``).

The handlers read raw bodies for speed, so their request and response schemas are written
here by hand, next to nothing else.
"""

from __future__ import annotations

from typing import Any

from modelspec.flowers import IMAGE_SIZE as _FLOWER

_ERROR = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string", "description": "what was wrong, for people"},
        "code": {"type": "string", "description": "stable reason, e.g. invalid_shape"},
        "field": {"type": "string", "description": "the field or part at fault"},
        "item": {"type": "integer", "description": "index of the item at fault"},
        "expected": {"type": "string", "description": "what would have been accepted"},
    },
}


def _error_responses(statuses: list[tuple[int, str]]) -> dict[str, Any]:
    return {
        str(status): {"description": text, "content": {"application/json": {"schema": _ERROR}}}
        for status, text in statuses
    }


_ERRORS = _error_responses(
    [
        (400, "Body is not JSON/multipart"),
        (404, "Unknown model"),
        (406, "Cannot answer in the Accept type"),
        (413, "Body, image or batch over its limit"),
        (415, "Wrong content type or not an image"),
        (422, "Wrong shape, type, range or values"),
        (503, "Model loading, refused or overloaded (Retry-After)"),
    ]
)


def _tensor(description: str) -> dict[str, Any]:
    return {
        "schema": {
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "properties": {"inputs": {"type": "array", "description": description}},
        }
    }


_IMAGES = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {
                "image": {
                    "type": "array",
                    "items": {"type": "string", "format": "binary"},
                    "description": "one or more PNG/JPEG files (any field name)",
                }
            },
        }
    },
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
}
_DIGIT_TENSOR = "(N, 28, 28) or (N, 784) floats in [0, 1], or one (28, 28) / (784,) image"
_INVERT = {
    "name": "invert",
    "in": "query",
    "schema": {"type": "string", "enum": ["auto", "true", "false"], "default": "auto"},
    "description": "images only: true for dark-on-light, false for MNIST style, auto decides",
}
_FORMAT = {
    "name": "format",
    "in": "query",
    "schema": {"type": "string", "enum": ["tensor", "png"]},
    "description": "tensor (JSON, default) or png; 'Accept: image/png' also asks for PNG",
}
_TOP_K = {
    "name": "top_k",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "default": 3},
    "description": "how many labels to return per image",
}


def _json_body(content: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": content}


def _ok(schema: dict[str, Any], png: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if png:
        content["image/png"] = {"schema": {"type": "string", "format": "binary"}}
    return {"200": {"description": "OK", "content": content}, **_ERRORS}


def _envelope(**properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"model": {"type": "string"}, "version": {"type": "integer"}, **properties},
    }


_FLOATS = {"type": "array", "items": {"type": "number"}}


def _list_of(**properties: Any) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "object", "properties": properties}}


_MATRIX = {"type": "array", "items": _FLOATS}
_RECORD = {
    "type": "object",
    "description": "the raw bank-full.csv columns (all 16, no others)",
    "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}]},
}
_RECONSTRUCTIONS = _envelope(
    reconstructions={**_MATRIX, "description": "(N, 784) in [0, 1]"},
    images={"type": "array", "items": {"type": "string"}, "description": "base64 PNGs"},
)

OPERATIONS: dict[str, dict[str, Any]] = {
    "/digits/predict": {
        "parameters": [_INVERT],
        "requestBody": _json_body({**_IMAGES, "application/json": _tensor(_DIGIT_TENSOR)}),
        "responses": _ok(
            _envelope(predictions=_list_of(digit={"type": "integer"}, probabilities=_FLOATS))
        ),
    },
    "/flowers/predict": {
        "parameters": [_TOP_K],
        "requestBody": _json_body(
            {**_IMAGES, "application/json": _tensor(f"(N, {_FLOWER}, {_FLOWER}, 3) in [0, 255]")}
        ),
        "responses": _ok(
            _envelope(
                predictions=_list_of(
                    label={"type": "string"},
                    top=_list_of(label={"type": "string"}, probability={"type": "number"}),
                )
            )
        ),
    },
    "/bank/predict": {
        "requestBody": _json_body(
            {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            _RECORD,
                            {"type": "array", "items": _RECORD},
                            {
                                "type": "object",
                                "required": ["records"],
                                "properties": {"records": {"type": "array", "items": _RECORD}},
                            },
                        ]
                    }
                }
            }
        ),
        "responses": _ok(
            _envelope(
                threshold={"type": "number"},
                predictions=_list_of(
                    probability={"type": "number"},
                    subscribe={"type": "boolean"},
                    label={"type": "string", "enum": ["no", "yes"]},
                ),
            )
        ),
    },
    "/autoencoder/encode": {
        "parameters": [_INVERT],
        "requestBody": _json_body({**_IMAGES, "application/json": _tensor(_DIGIT_TENSOR)}),
        "responses": _ok(_envelope(codes={**_MATRIX, "description": "(N, 16)"})),
    },
    "/autoencoder/reconstruct": {
        "parameters": [_INVERT, _FORMAT],
        "requestBody": _json_body({**_IMAGES, "application/json": _tensor(_DIGIT_TENSOR)}),
        "responses": _ok(_RECONSTRUCTIONS, png=True),
    },
    "/autoencoder/decode": {
        "parameters": [_FORMAT],
        "requestBody": _json_body(
            {"application/json": _tensor("(N, 16) finite floats, or one (16,) code")}
        ),
        "responses": _ok(_RECONSTRUCTIONS, png=True),
    },
}

DESCRIPTIONS = {
    "/digits/predict": "PNG/JPEG uploads of any size (normalised the MNIST way) or a JSON "
    "tensor; returns each item's digit and its 10 probabilities.",
    "/flowers/predict": f"JPEG/PNG photos (upright, centre-cropped, resized to {_FLOWER}x"
    f"{_FLOWER}); returns the top-k labels with probabilities.",
    "/bank/predict": "Raw bank-full.csv records; returns the subscription probability and the "
    "decision at the threshold stored with the model.",
    "/autoencoder/encode": "Digit image(s) or tensor -> the 16-float code.",
    "/autoencoder/reconstruct": "Digit image(s) or tensor -> the reconstruction.",
    "/autoencoder/decode": "16-float code(s) -> the decoded digit.",
}

_V2_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "description": "FP32, INT64, BYTES, ..."},
        "parameters": {"type": "object"},
        "data": {"type": "array", "description": "flat or nested; BYTES as strings"},
    },
}
# Beside the protocol routers' own 400/404/503 (LOOKUP_ERRORS below).
_PROTOCOL_ERRORS = _error_responses([(413, "Body or batch over its limit")])
V2_INFER = {
    "requestBody": _json_body(
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
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "binary tensor data extension: JSON header, then tensor bytes",
            },
        }
    ),
    "responses": {
        "200": {
            "description": "Outputs as V2 tensors (binary after the JSON header if asked)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **_PROTOCOL_ERRORS,
    },
}
TF_PREDICT = {
    "requestBody": _json_body(
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
        }
    ),
    "responses": {
        "200": {
            "description": "predictions (row format) or outputs (columnar format)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **_PROTOCOL_ERRORS,
    },
}

LOOKUP_ERRORS = _error_responses(
    [
        (400, "Invalid request"),
        (404, "Unknown model or version"),
        (503, "Not ready yet, or refused at load"),
    ]
)
