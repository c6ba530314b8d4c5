"""What the protocols share: the one inference route (``serve``) that runs each protocol's
adapter top to bottom, and the errors V2 and TF Serving clients read."""

from __future__ import annotations

import asyncio
from typing import Protocol

from service.backends import Outputs
from service.config import Limits
from service.descriptor import Version
from service.errors import RequestError, protocol_status
from service.http import RawRequest, Reply, json_reply
from service.inference import NOT_STARTED, Call, Decoded, Runtime, Serving


class Adapter(Protocol):
    """A protocol's two steps, in the spirit of LitServe's ``LitAPI`` hooks: ``decode`` a
    body into the signature's validated feed, ``encode`` the outputs into the protocol's
    answer. ``call`` names the model, version, signature and metrics label."""

    call: Call

    async def decode(
        self, request: RawRequest, body: bytes, version: Version, limits: Limits
    ) -> Decoded: ...

    def encode(self, outputs: Outputs, decoded: Decoded, version: Version) -> Reply: ...


async def serve(request: RawRequest, runtime: Runtime | None, adapter: Adapter) -> Reply:
    """One inference request, top to bottom: read -> decode (and validate) -> batch and run
    -> encode. ``Serving`` keeps the request id, metrics, trace and deadline around the steps
    and turns what they raise into a refusal, written here in the protocol's way."""
    call = adapter.call
    if runtime is None:
        return call.errors(NOT_STARTED)
    serving = Serving(request, call, runtime)
    async with serving:
        body = await serving.read()
        version, limits = serving.version, runtime.config.limits
        # Counted against the queue only while decoding: a request still sending its body
        # holds no item (thousands of stalled uploads once locked a model out).
        with serving.batcher.arriving(), serving.decoding():
            decoding = adapter.decode(request, body, version, limits)
            if serving.large_json:  # decoded in a thread with its own loop (DECODE_ON_LOOP_BYTES)
                decoded = await asyncio.to_thread(asyncio.run, decoding)
            else:
                decoded = await decoding
        outputs = await serving.run(decoded)
        serving.answer(adapter.encode(outputs, decoded, version), decoded)
    # A refusal is written here, the protocol's way, so nothing below calls back up into it.
    refusal = serving.refusal
    reply = call.errors(refusal) if refusal is not None else serving.reply
    assert reply is not None  # answered, refused (a 500 too), or a 499 set on the way out
    return serving.finish(reply)


def protocol_errors(error: RequestError, protocol: str = "v2") -> Reply:
    """V2 and TF Serving clients know 400 and 404 (with ``{"error": ...}``); 408, 413, 503 and
    504 keep their status (and Retry-After), as both protocols' own servers do
    (``errors.protocol_status``). Their clients show the ``error`` string alone, so it
    carries the whole reason (``RequestError.text``)."""
    status = protocol_status(error.code, protocol)
    reply = json_reply({**error.body(), "error": error.text()}, status=status)
    reply.headers.update(error.headers)
    reply.error = error
    return reply


def tfserving_errors(error: RequestError) -> Reply:
    return protocol_errors(error, "tfserving")
