"""Each endpoint's contract: how a request becomes a model input, and outputs a response.

Decoders return the validated float32 batch; encoders turn the model's outputs into the JSON
(or PNG) the client gets. Shapes and preprocessing come from ``modelspec``, the same
definitions training used.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from modelspec import autoencoder, digits, flowers
from service.config import Limits
from service.errors import NotAcceptable, RequestError
from service.http import JSON, Reply, json_reply
from service.inputs.body import (
    Upload,
    image_uploads,
    media_type_of,
    parse_json,
    unsupported,
)
from service.inputs.images import decode_images
from service.inputs.numbers import ascii_int
from service.inputs.records import encode_records, unwrap_records
from service.inputs.tensors import TensorContract, might_hold_booleans, parse_tensor, unwrap
from service.registry import ServedModel

PIXELS_01 = TensorContract(((28, 28), (784,)), 0.0, 1.0)
FLOWER_PIXELS = TensorContract(((flowers.IMAGE_SIZE, flowers.IMAGE_SIZE, 3),), 0.0, 255.0)
AE_PIXELS = TensorContract(((784,), (28, 28)), 0.0, 1.0)
CODES = TensorContract(((autoencoder.CODE_SIZE,),))
DEFAULT_TOP_K = 3


@dataclass(frozen=True)
class Incoming:
    """A request as the decoders see it: the body already read within the size limit."""

    body: bytes
    content_type: str
    query: dict[str, str]
    accept: str
    limits: Limits

    @property
    def media_type(self) -> str:
        return media_type_of(self.content_type)

    @property
    def is_json(self) -> bool:
        return self.media_type == JSON


Decoder = Callable[[Incoming, ServedModel], Awaitable[np.ndarray]]
Encoder = Callable[[np.ndarray, Incoming, ServedModel], Reply]


Check = Callable[[Incoming, ServedModel], object]
Classify = Callable[[np.ndarray, ServedModel], np.ndarray]


def _no_options(_: Incoming, __: ServedModel) -> None:
    return None


@dataclass(frozen=True)
class Endpoint:
    """One route: ``check`` validates query options before any work, ``classify`` gives the
    predicted class indices (for the per-class metric) of classifier outputs."""

    model: str
    signature: str
    decode: Decoder
    encode: Encoder
    summary: str
    check: Check = _no_options
    classify: Classify | None = None


# -- decoding -----------------------------------------------------------------------------


def _invert_option(query: dict[str, str]) -> bool | None:
    value = query.get("invert", "auto")
    options = {"auto": None, "true": True, "false": False}
    if value not in options:
        raise RequestError(
            "invalid_parameter", f"invert={value!r}", field="invert", expected="auto, true or false"
        )
    return options[value]


async def digit_pixels(
    uploads: list[Upload], limits: Limits, invert: bool | None = None
) -> np.ndarray:
    """(N, 28, 28) in [0, 1] from image files, prepared the MNIST way."""
    prepared = await decode_images(
        uploads, lambda image: digits.prepare_image(image, invert), limits
    )
    return digits.scale_pixels(prepared)


async def flower_pixels(uploads: list[Upload], limits: Limits) -> np.ndarray:
    """(N, size, size, 3) RGB values in [0, 255]; scaling happens inside the graph."""
    return (await decode_images(uploads, flowers.prepare_image, limits)).astype(np.float32)


def _tensor(incoming: Incoming, contract: TensorContract) -> np.ndarray:
    value = unwrap(parse_json(incoming.body))
    limit = incoming.limits.max_items_per_request
    return parse_tensor(value, contract, limit, check_booleans=might_hold_booleans(incoming.body))


def _uploads(incoming: Incoming) -> list[Upload]:
    return image_uploads(incoming.body, incoming.content_type)


async def decode_digit_pixels(incoming: Incoming, _: ServedModel) -> np.ndarray:
    """(N, 28, 28) in [0, 1]: from images (MNIST-normalised) or a JSON tensor."""
    if incoming.is_json:
        return _tensor(incoming, PIXELS_01)
    invert = _invert_option(incoming.query)
    return await digit_pixels(_uploads(incoming), incoming.limits, invert)


async def decode_autoencoder_pixels(incoming: Incoming, model: ServedModel) -> np.ndarray:
    """(N, 784) in [0, 1]: the digits inputs, flattened."""
    if incoming.is_json:
        return _tensor(incoming, AE_PIXELS)
    return (await decode_digit_pixels(incoming, model)).reshape(-1, autoencoder.PIXELS)


async def decode_codes(incoming: Incoming, model: ServedModel) -> np.ndarray:
    if not incoming.is_json:
        raise _json_only(incoming)
    return _tensor(incoming, CODES.bounded(model.input_range("code")))


async def decode_flower_images(incoming: Incoming, _: ServedModel) -> np.ndarray:
    """(N, size, size, 3) RGB values in [0, 255]; scaling happens inside the graph."""
    if incoming.is_json:
        return _tensor(incoming, FLOWER_PIXELS)
    return await flower_pixels(_uploads(incoming), incoming.limits)


async def decode_bank_records(incoming: Incoming, model: ServedModel) -> np.ndarray:
    if not incoming.is_json:
        raise _json_only(incoming)
    records = unwrap_records(parse_json(incoming.body))
    return encode_records(records, model.bank_encoder, incoming.limits.max_items_per_request)


def _json_only(incoming: Incoming) -> RequestError:
    return unsupported(incoming.media_type, JSON)


# -- encoding -----------------------------------------------------------------------------


def _envelope(model: ServedModel, **content: Any) -> dict[str, Any]:
    return {"model": model.name, "version": model.version, **content}


def encode_digit_predictions(probabilities: np.ndarray, _: Incoming, model: ServedModel) -> Reply:
    best = probabilities.argmax(axis=1)
    predictions = [
        {"digit": int(d), "probabilities": p} for d, p in zip(best, probabilities, strict=True)
    ]
    return json_reply(_envelope(model, predictions=predictions))


def top_k_option(incoming: Incoming, model: ServedModel) -> int:
    class_count = len(model.labels)
    value = incoming.query.get("top_k", str(DEFAULT_TOP_K))
    k = ascii_int(value)
    if k is None or not 1 <= k <= class_count:
        raise RequestError(
            "invalid_parameter",
            f"top_k={value[:40]!r}",
            field="top_k",
            expected=f"an integer from 1 to {class_count}",
        )
    return k


def encode_flower_predictions(
    probabilities: np.ndarray, incoming: Incoming, model: ServedModel
) -> Reply:
    labels = model.labels
    k = top_k_option(incoming, model)
    order = np.argsort(-probabilities, axis=1)[:, :k]
    predictions = [
        {
            "label": labels[int(ranked[0])],
            "top": [{"label": labels[int(i)], "probability": float(row[i])} for i in ranked],
        }
        for ranked, row in zip(order, probabilities, strict=True)
    ]
    return json_reply(_envelope(model, predictions=predictions))


def encode_bank_decisions(probability: np.ndarray, _: Incoming, model: ServedModel) -> Reply:
    threshold = model.threshold
    labels = model.labels
    predictions = []
    for p in probability[:, 0].tolist():
        subscribe = p >= threshold
        predictions.append({"probability": p, "subscribe": subscribe, "label": labels[subscribe]})
    return json_reply(_envelope(model, threshold=threshold, predictions=predictions))


def encode_codes(codes: np.ndarray, _: Incoming, model: ServedModel) -> Reply:
    return json_reply(_envelope(model, codes=codes))


def check_invert(incoming: Incoming, _: ServedModel) -> None:
    """Image options are checked for JSON bodies too: a typo must not pass silently."""
    _invert_option(incoming.query)


def check_reconstruct_options(incoming: Incoming, model: ServedModel) -> None:
    check_invert(incoming, model)
    wants_png(incoming)


def wants_png(incoming: Incoming, _: ServedModel | None = None) -> bool:
    fmt = incoming.query.get("format")
    if fmt is not None:
        if fmt not in ("tensor", "png"):
            raise RequestError(
                "invalid_parameter", f"format={fmt!r}", field="format", expected="tensor or png"
            )
        return fmt == "png"
    accept = incoming.accept.lower()
    if accept and "json" not in accept and "*/*" not in accept and "image/png" not in accept:
        raise NotAcceptable(
            "not_acceptable",
            f"cannot answer with {accept!r}",
            expected="application/json or image/png",
        )
    return "image/png" in accept and "json" not in accept


def argmax_classes(outputs: np.ndarray, _: ServedModel) -> np.ndarray:
    return outputs.argmax(axis=1)


def threshold_classes(probability: np.ndarray, model: ServedModel) -> np.ndarray:
    return (probability[:, 0] >= model.threshold).astype(np.int64)


def to_png(pixels: np.ndarray) -> bytes:
    """784 values in [0, 1] -> a 28x28 greyscale PNG."""
    grey = np.clip(np.round(pixels.reshape(digits.IMAGE_SIZE, digits.IMAGE_SIZE) * 255), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(grey.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def encode_reconstructions(
    reconstructions: np.ndarray, incoming: Incoming, model: ServedModel
) -> Reply:
    """A tensor (N, 784) by default; PNG on ``format=png`` or ``Accept: image/png`` (one PNG
    for one item, base64 PNGs in JSON for several)."""
    if not wants_png(incoming):
        return json_reply(_envelope(model, reconstructions=reconstructions))
    if len(reconstructions) == 1:
        return Reply(to_png(reconstructions[0]), media_type="image/png")
    images = [base64.b64encode(to_png(r)).decode("ascii") for r in reconstructions]
    return json_reply(_envelope(model, images=images))


ENDPOINTS: dict[str, Endpoint] = {
    "/digits/predict": Endpoint(
        "digits",
        "predict",
        decode_digit_pixels,
        encode_digit_predictions,
        "Classify handwritten digits",
        check=check_invert,
        classify=argmax_classes,
    ),
    "/flowers/predict": Endpoint(
        "flowers",
        "predict",
        decode_flower_images,
        encode_flower_predictions,
        "Classify flower photos (top-k labels)",
        check=top_k_option,
        classify=argmax_classes,
    ),
    "/bank/predict": Endpoint(
        "bank",
        "predict",
        decode_bank_records,
        encode_bank_decisions,
        "Probability that a bank client subscribes, and the decision",
        classify=threshold_classes,
    ),
    "/autoencoder/encode": Endpoint(
        "autoencoder",
        "encode",
        decode_autoencoder_pixels,
        encode_codes,
        "Digit -> 16-float code",
        check=check_invert,
    ),
    "/autoencoder/reconstruct": Endpoint(
        "autoencoder",
        "reconstruct",
        decode_autoencoder_pixels,
        encode_reconstructions,
        "Digit -> its reconstruction (tensor or PNG)",
        check=check_reconstruct_options,
    ),
    "/autoencoder/decode": Endpoint(
        "autoencoder",
        "decode",
        decode_codes,
        encode_reconstructions,
        "16-float code -> digit (tensor or PNG)",
        check=wants_png,
    ),
}
