"""The ``mnist_image`` and ``rgb_photo`` input kinds: one image input that also takes files.

Files (multipart uploads or a raw PNG/JPEG body natively; BYTES elements in V2 and
``{"b64": ...}`` in TF Serving) are decoded off the event loop and prepared by the same
``modelspec`` code training used; numbers are checked against the input's shape and range.
The sizes come from the graph's input shape in the manifest, never from constants here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from modelspec import Signature, digits, flowers
from service.backends import Feed
from service.config import Limits
from service.errors import RequestError
from service.inputs import json_numbers
from service.inputs.body import Upload, image_uploads, parse_json
from service.inputs.images import decode_images
from service.inputs.tensors import FIELD, TensorContract, parse_tensor, unwrap
from service.interfaces.base import (
    Columns,
    Incoming,
    InputKind,
    Tensor,
    VersionFacts,
    query_option,
)

Prepare = Callable[[Image.Image], np.ndarray]
_FILES = {"type": "string", "format": "binary"}
_UPLOADS = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {
                "image": {
                    "type": "array",
                    "items": _FILES,
                    "description": "one or more PNG/JPEG files (any field name)",
                }
            },
        }
    },
    "image/png": {"schema": _FILES},
    "image/jpeg": {"schema": _FILES},
}


def is_files(column: Any, name: str) -> bool:
    """True for a list of byte strings (encoded files); a list mixing them with anything
    else is refused rather than guessed at."""
    if not isinstance(column, list):
        return False
    count = sum(isinstance(v, bytes) for v in column)
    if 0 < count < len(column):
        raise RequestError(
            "invalid_dtype",
            "input mixes encoded images with other values",
            field=name,
            expected="all items encoded images, or all items numbers",
        )
    return count > 0


class ImageInput(InputKind):
    """One input that takes files or numbers; subclasses say how files are prepared."""

    one_input = True

    def protocol_inputs(self, signature: Signature, manifest: dict[str, Any]) -> tuple[Tensor, ...]:
        (spec,) = signature.inputs
        return (Tensor.of(spec, images=True),)

    def contract(self, version: VersionFacts, signature: str) -> TensorContract:
        """The graph input's contract, with the other sample shapes numbers may take."""
        (contract,) = version.contracts(signature).values()
        return contract

    def prepare(self, version: VersionFacts, signature: str, query: dict[str, str]) -> Prepare:
        raise NotImplementedError

    async def _from_files(
        self,
        uploads: list[Upload],
        version: VersionFacts,
        signature: str,
        limits: Limits,
        query: dict[str, str],
    ) -> np.ndarray:
        prepared = await decode_images(uploads, self.prepare(version, signature, query), limits)
        shape = self.contract(version, signature).shapes[0]
        return self.scale(prepared).reshape((len(prepared), *shape))

    def scale(self, prepared: np.ndarray) -> np.ndarray:
        return prepared.astype(np.float32)

    async def from_columns(
        self, columns: Columns, version: VersionFacts, signature: str, limits: Limits
    ) -> Feed:
        ((name, column),) = columns.items()
        if is_files(column, name):
            uploads = [Upload(name, data) for data in column]
            return {name: await self._from_files(uploads, version, signature, limits, {})}
        contract = self.contract(version, signature)
        limit = limits.max_items_per_request
        return {name: parse_tensor(column, contract, limit, field=name, check_booleans=False)}

    async def from_native(self, incoming: Incoming, version: VersionFacts, signature: str) -> Feed:
        (name,) = version.contracts(signature)
        if incoming.is_json:
            contract = self.contract(version, signature)
            limit = incoming.limits.max_items_per_request
            # Numbers straight into NumPy where the body is one evenly nested list of them
            # (inputs.json_numbers). Float contracts only: an integer contract's checks need
            # the exact ints orjson gives; float64 holds ints exactly to 2**53, and the reader
            # leaves integer-only bodies past that to orjson (json_numbers.EXACT).
            fast = json_numbers.tensor(incoming.body, FIELD) if contract.dtype.kind == "f" else None
            if fast is not None:
                value, check = fast[FIELD], False  # simdjson refused any boolean
            else:
                value = unwrap(parse_json(incoming.body, incoming.content_type))
                check = incoming.check_booleans
            return {name: parse_tensor(value, contract, limit, check_booleans=check)}
        uploads = image_uploads(incoming.body, incoming.content_type)
        limits, query = incoming.limits, incoming.query
        return {name: await self._from_files(uploads, version, signature, limits, query)}

    def native_request(self, version: VersionFacts, signature: str) -> dict[str, Any]:
        contract = self.contract(version, signature)
        tensor = {
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "properties": {"inputs": {"type": "array", "description": contract.describe()}},
        }
        return {**_UPLOADS, "application/json": {"schema": tensor}}


def _invert(query: dict[str, str]) -> bool | None:
    value = query.get("invert", "auto")
    options = {"auto": None, "true": True, "false": False}
    if value not in options:
        raise RequestError(
            "invalid_parameter",
            f"invert={value[:40]!r}",
            field="invert",
            expected="auto, true or false",
        )
    return options[value]


class MnistImage(ImageInput):
    """A digit as MNIST shows it: 28x28 grey in [0, 1], white on black, centred by its mass.
    Numbers may come as (N, 28, 28) or flat (N, 784), whichever the graph takes."""

    name = "mnist_image"
    summary = "PNG/JPEG files of one digit each (any size, normalised the MNIST way), or floats"
    query_options = (
        query_option(
            "invert",
            {"type": "string", "enum": ["auto", "true", "false"], "default": "auto"},
            "images only: true for dark-on-light, false for MNIST style, auto decides",
        ),
    )
    SIDE = digits.IMAGE_SIZE

    def contract(self, version: VersionFacts, signature: str) -> TensorContract:
        def build() -> TensorContract:
            graph = super(MnistImage, self).contract(version, signature)
            square, flat = (self.SIDE, self.SIDE), (self.SIDE * self.SIDE,)
            others = tuple(s for s in (square, flat) if s != graph.shapes[0])
            return replace(graph, shapes=(graph.shapes[0], *others))

        return version.memo((self.name, signature), build)

    def check_native(self, incoming: Incoming) -> None:
        _invert(incoming.query)

    def prepare(self, version: VersionFacts, signature: str, query: dict[str, str]) -> Prepare:
        invert = _invert(query)
        return lambda image: digits.prepare_image(image, invert)

    def scale(self, prepared: np.ndarray) -> np.ndarray:
        return digits.scale_pixels(prepared)


class RgbPhoto(ImageInput):
    """A photo, upright, centre-cropped and resized to the graph's (size, size, 3); the
    graph scales the 0..255 values itself."""

    name = "rgb_photo"
    summary = "photos (PNG/JPEG, any size: upright, centre-cropped, resized), or RGB values"

    def check(self, signature: Signature) -> None:
        super().check(signature)
        shape = signature.inputs[0].shape
        if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or not shape[1]:
            raise ValueError("rgb_photo needs (N, size, size, 3)")

    def prepare(self, version: VersionFacts, signature: str, query: dict[str, str]) -> Prepare:
        size = self.contract(version, signature).shapes[0][0]  # (size, size, 3), checked at load
        return lambda image: flowers.prepare_image(image, size)
