"""What every input kind and answer provides (``modelspec.interfaces`` names them).

An input kind turns requests into a graph's feed: named protocol tensors (V2, TF Serving,
``/models/{name}/predict``) and, for rich kinds, native bodies (images, records). An answer
turns the graph's outputs into protocol tensors and native answers. Both are stateless:
everything about a model comes from the facts of its version (``VersionFacts``: its manifest,
labels, contracts...), which ``service.descriptor.Version`` provides; the interfaces never
import the descriptor, which builds on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from modelspec import Signature, TensorSpec
from service.backends import Feed, Outputs
from service.config import Limits
from service.errors import NotAcceptable
from service.http import Reply
from service.inputs.body import UPLOAD_TYPES, media_type_of
from service.inputs.tensors import TensorContract, might_hold_booleans

BYTES = "BYTES"
V2_TYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
NUMPY_TYPES: dict[str, np.dtype] = {v2: np.dtype(name) for name, v2 in V2_TYPES.items()}
# A decoded protocol input: a numeric array (batch first) or a list of byte strings / values.
Column = Any
Columns = dict[str, Column]


@dataclass(frozen=True)
class Tensor:
    """A named tensor as the protocols describe it; -1 is a free dimension (the batch first).

    ``images``: BYTES values of this input may be PNG/JPEG files instead of the numbers.
    ``classes``: a probability per label, so the classification extension applies.
    ``accepts``: datatypes taken besides ``datatype`` (any other is refused, as Triton does).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    range: tuple[float, float] | None = None
    images: bool = False
    classes: tuple[str, ...] = ()
    accepts: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec: TensorSpec, **extra: Any) -> Tensor:
        shape = tuple(-1 if d is None else d for d in spec.shape)
        return cls(spec.name, V2_TYPES.get(spec.dtype, "FP32"), shape, spec.range, **extra)

    @property
    def dtype(self) -> np.dtype | None:
        return NUMPY_TYPES.get(self.datatype)

    def contract(self) -> TensorContract:
        sample = tuple(None if d < 0 else d for d in self.shape[1:])
        low, high = self.range or (None, None)
        return TensorContract((sample,), low, high, self.dtype or np.dtype(np.float32))


class VersionFacts(Protocol):
    """What the interfaces read of a model version, and nothing more: its manifest's facts
    (``service.descriptor.Version`` provides them)."""

    name: str
    number: int
    manifest: dict[str, Any]  # the manifest as published (the records' encoder...)
    signatures: dict[str, Signature]  # each signature's graph inputs and outputs

    @property
    def labels(self) -> list[str]:
        """The class names, in output order."""
        ...

    @property
    def threshold(self) -> float:
        """The decision threshold of a one-probability classifier."""
        ...

    def contracts(self, signature: str) -> dict[str, TensorContract]:
        """Each graph input of ``signature`` as a contract (dtype, shape, range)."""
        ...

    def memo(self, key: Any, build: Callable[[], Any]) -> Any:
        """What an interface derives from the version once, kept with it."""
        ...


@dataclass(frozen=True)
class Incoming:
    """A native request as the interfaces see it: the body already read within its limit."""

    body: bytes
    content_type: str
    query: dict[str, str]
    accept: str
    limits: Limits

    @property
    def check_booleans(self) -> bool:
        """Whether the body may hold a JSON boolean, searched for only when a reader needs to
        know (6 us on a 5.8 KB body; a body read by ``inputs.json_numbers`` holds none)."""
        return might_hold_booleans(self.body)

    @property
    def media_type(self) -> str:
        return media_type_of(self.content_type)

    @property
    def is_json(self) -> bool:
        """Read as JSON: whatever the declared type, unless it declares files (an image,
        multipart/form-data), which only image routes take (``inputs.body.UPLOAD_TYPES``)."""
        return self.media_type not in UPLOAD_TYPES


def query_option(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An OpenAPI query parameter of a native route (``?top_k=``, ``?invert=``...)."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


class InputKind:
    """How requests become a signature's feed.

    Each kind owns its rules: what the manifest must declare for it (``check``), the query
    options of its native route (``query_options``) and how requests are read. Adding a kind
    is a class here (``service/interfaces``) and its name in ``modelspec.interfaces``."""

    name = "tensor"
    summary = ""
    one_input = False  # its native route reads one input (files, records)
    query_options: tuple[dict[str, Any], ...] = ()  # OpenAPI query parameters

    def check(self, signature: Signature) -> None:
        """What a signature of this kind must declare; ValueError says what it lacks."""
        if self.one_input and len(signature.inputs) != 1:
            raise ValueError(f"a {self.name} signature has one input")

    def protocol_inputs(self, signature: Signature, manifest: dict[str, Any]) -> tuple[Tensor, ...]:
        return tuple(Tensor.of(t) for t in signature.inputs)

    async def from_columns(
        self, columns: Columns, version: VersionFacts, signature: str, limits: Limits
    ) -> Feed:
        raise NotImplementedError

    async def from_native(self, incoming: Incoming, version: VersionFacts, signature: str) -> Feed:
        raise NotImplementedError

    def check_native(self, incoming: Incoming) -> None:
        """Query options, checked before any work (a typo must not pass silently)."""

    def native_request(self, version: VersionFacts, signature: str) -> dict[str, Any]:
        """The OpenAPI ``requestBody.content`` of the native route."""
        raise NotImplementedError


class Answer:
    """How a signature's outputs become answers; like ``InputKind``, it owns its rules."""

    name = "tensor"
    summary = ""
    one_output = True  # answers one output (every answer but plain tensors)
    needs_labels = False  # the manifest's labels name its classes
    query_options: tuple[dict[str, Any], ...] = ()

    def check(self, signature: Signature, manifest: dict[str, Any]) -> None:
        """What a signature with this answer must declare; ValueError says what it lacks."""
        if self.one_output and len(signature.outputs) != 1:
            raise ValueError(f"a {self.name} answer has one output")
        if self.needs_labels and not manifest.get("labels"):
            raise ValueError(f"a {self.name} answer needs labels")

    def protocol_outputs(
        self, signature: Signature, manifest: dict[str, Any]
    ) -> tuple[Tensor, ...]:
        return tuple(Tensor.of(t) for t in signature.outputs)

    def present(self, outputs: Outputs, version: VersionFacts) -> dict[str, np.ndarray]:
        """The protocol outputs: the graph's, plus what this answer derives (a label...)."""
        return outputs

    def classes(self, outputs: Outputs, version: VersionFacts) -> np.ndarray | None:
        """Predicted class indices, for the per-class metric; None when not a classifier."""
        return None

    def check_native(self, incoming: Incoming, version: VersionFacts) -> None:
        """Query options and Accept, checked before any work; JSON answers by default."""
        accepts_json(incoming)

    def native(
        self, outputs: Outputs, incoming: Incoming, version: VersionFacts, signature: str
    ) -> Reply:
        raise NotImplementedError

    def native_response(self, version: VersionFacts, signature: str) -> dict[str, Any]:
        """The OpenAPI schema of the native 200 answer."""
        raise NotImplementedError


def envelope(version: VersionFacts, **content: Any) -> dict[str, Any]:
    return {"model": version.name, "version": version.number, **content}


def accepts_json(incoming: Incoming, alternatives: Sequence[str] = ()) -> None:
    accept = incoming.accept.lower()
    wanted = ("json", "*/*", *alternatives)
    if accept and not any(w in accept for w in wanted):
        raise NotAcceptable(
            "not_acceptable",
            f"cannot answer with {accept!r}",
            expected=" or ".join(["application/json", *alternatives]),
        )
