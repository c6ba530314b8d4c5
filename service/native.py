"""The native endpoints: what each signature's interface offers beyond tensors, and plain
tensors for every model.

- ``POST /{model}/{signature}``: a signature with a rich interface (images, records, top-k
  labels, PNG answers...), read and answered by its input kind and answer;
- ``POST /models/{model}/predict?signature=``: any signature of any model, JSON tensors in
  and out (``{"inputs": {name: tensor}}``, or the bare tensor for a one-input signature).

``?version=`` picks a served version on both (the latest ready one by default).
"""

from __future__ import annotations

from typing import Any

from service.config import Limits
from service.descriptor import Version
from service.errors import NotFound
from service.http import RawRequest, Reply
from service.inference import Call, Decoded, Runtime, error_reply
from service.interfaces import TENSOR_ANSWER, TENSOR_INPUT
from service.interfaces.base import Incoming
from service.protocols.common import serve
from service.registry.lookup import version_number


def _incoming(request: RawRequest, body: bytes, limits: Limits) -> Incoming:
    return Incoming(
        body=body,
        content_type=request.headers.get("content-type", ""),
        query=request.query,
        accept=request.headers.get("accept", ""),
        limits=limits,
    )


class Rich:
    """``/{name}/{signature}``: the signature's own interface. Options (``top_k``,
    ``invert``, ``format``...) are checked before any decoding."""

    def __init__(self, name: str, signature: str, version: str | None) -> None:
        self.name, self.signature = name, signature
        self.call = Call(name, version_number(version), signature, f"/{name}/{signature}")

    async def decode(
        self, request: RawRequest, body: bytes, version: Version, limits: Limits
    ) -> Decoded:
        name, signature = self.name, self.signature
        view = version.view(signature)
        if not view.rich:
            raise NotFound(
                "not_found",
                f"signature {signature!r} of {name!r} takes plain tensors",
                field="path",
                expected=f"POST /models/{name}/predict?signature={signature}",
            )
        incoming = _incoming(request, body, limits)
        view.kind.check_native(incoming)
        view.answer.check_native(incoming, version)
        return Decoded(
            signature, await view.kind.from_native(incoming, version, signature), incoming
        )

    def encode(self, outputs: Any, decoded: Decoded, version: Version) -> Reply:
        chosen = decoded.signature
        return version.views[chosen].answer.native(outputs, decoded.context, version, chosen)


class Tensors:
    """``/models/{name}/predict``: JSON tensors for any signature (``?signature=``)."""

    def __init__(self, name: str, wanted: str, version: str | None) -> None:
        self.wanted = wanted
        label = f"/models/{name}/predict"
        self.call = Call(name, version_number(version), wanted, label)

    async def decode(
        self, request: RawRequest, body: bytes, version: Version, limits: Limits
    ) -> Decoded:
        signature = version.view(self.wanted or version.default_signature).name
        incoming = _incoming(request, body, limits)
        TENSOR_ANSWER.check_native(incoming, version)
        feed = await TENSOR_INPUT.from_native(incoming, version, signature)
        return Decoded(signature, feed, incoming)

    def encode(self, outputs: Any, decoded: Decoded, version: Version) -> Reply:
        return TENSOR_ANSWER.native(outputs, decoded.context, version, decoded.signature)


async def rich(request: RawRequest, runtime: Runtime, name: str, signature: str) -> Reply:
    version = request.query.get("version")
    try:
        adapter = runtime.call(
            ("rich", name, signature, version), lambda: Rich(name, signature, version)
        )
    except NotFound as error:
        return error_reply(error)
    return await serve(request, runtime, adapter)


async def tensors(request: RawRequest, runtime: Runtime, name: str) -> Reply:
    query = request.query
    key = ("tensors", name, query.get("signature", ""), query.get("version"))
    try:
        adapter = runtime.call(key, lambda: Tensors(name, *key[2:]))
    except NotFound as error:
        return error_reply(error)
    return await serve(request, runtime, adapter)
