"""The life of one inference request, whatever its protocol: decode -> validate -> batch ->
run -> encode, with request ids, metrics, logs and client errors handled once, here.

A ``Call`` says how one kind of request (a native endpoint, a V2 ``infer``, a TF Serving
``predict``) turns its body into a validated float32 batch and the batch's outputs into an
answer. Every protocol runs through the same model batchers, so they share queues, batches
and limits.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.config import Limits, ServiceConfig
from service.errors import NotFound, RequestError
from service.http import RawRequest, Reply, json_reply
from service.inputs.body import ClientGone, read_body
from service.logs import request_id
from service.metrics import EndpointMetrics, Metrics
from service.registry import Registry, ServedModel

logger = logging.getLogger(__name__)

# decode(request, body, model, limits) -> (float32 batch, context handed to encode)
Decode = Callable[[RawRequest, bytes, ServedModel, Limits], Awaitable[tuple[np.ndarray, Any]]]
Encode = Callable[[np.ndarray, Any, ServedModel], Reply]
Classify = Callable[[np.ndarray, ServedModel], np.ndarray]


@dataclass
class Runtime:
    """What the handlers need, built once per worker process by the BentoML service."""

    config: ServiceConfig
    metrics: Metrics
    registry: Registry


def error_reply(error: RequestError) -> Reply:
    reply = json_reply(error.body(), status=error.status)
    reply.headers.update(error.headers)
    return reply


@dataclass(frozen=True)
class Call:
    """One kind of inference request. ``label`` names it in metrics and logs; ``version``
    pins a model version (a request for another version gets a 404); ``classify`` gives
    predicted class indices for the per-class metric; ``chosen_signature`` picks another
    signature of the model from the decoded request (TF Serving's ``signature_name``)."""

    model: str
    signature: str
    label: str
    decode: Decode
    encode: Encode
    classify: Classify | None = None
    version: int | None = None
    errors: Callable[[RequestError], Reply] = error_reply
    chosen_signature: Callable[[Any], str] | None = None


NOT_STARTED = RequestError(
    "model_loading", "the service is starting", status=503, headers={"Retry-After": "5"}
)


async def handle(request: RawRequest, call: Call, runtime: Runtime | None) -> Reply:
    """Answer one request; client errors become 4xx JSON, nothing escapes as a crash."""
    if runtime is None:
        return call.errors(NOT_STARTED)
    started = time.perf_counter()
    rid = request.headers.get("x-request-id") or os.urandom(12).hex()
    request_id.set(rid)
    recorder = runtime.metrics.endpoint(call.model, call.label)
    recorder.started()
    try:
        reply = await _infer(request, runtime, call, recorder)
    except RequestError as error:
        recorder.refused(error.code)
        logger.info("%s %s refused: %s (%s)", call.label, error.status, error.code, error.message)
        reply = call.errors(error)
    except ClientGone:
        reply = Reply(b"", status=499)  # nobody is listening; counted, not sent
    except Exception:
        logger.exception("%s failed", call.label)
        reply = json_reply({"error": "internal error", "request_id": rid}, status=500)
    reply.headers["x-request-id"] = rid
    elapsed = time.perf_counter() - started
    recorder.answered(reply.status, elapsed)
    if runtime.config.access_log:
        logger.info("%s %d %.2f ms", call.label, reply.status, elapsed * 1000)
    return reply


async def _infer(
    request: RawRequest, runtime: Runtime, call: Call, recorder: EndpointMetrics
) -> Reply:
    limits = runtime.config.limits
    model = runtime.registry.require(call.model)
    require_version(model, call.version)
    batcher = model.batchers[call.signature]
    batcher.refuse_if_full()  # shed load before reading a body that could not queue
    body = await read_body(request, limits)
    # Counted against the queue only while decoding: a request still sending its body
    # holds no item (thousands of stalled uploads once locked a model out).
    with batcher.arriving():
        inputs, context = await call.decode(request, body, model, limits)
    if call.chosen_signature is not None:
        batcher = model.batchers[call.chosen_signature(context)]
    outputs = await batcher.infer(inputs)
    require_finite(outputs)
    if call.classify is not None:
        recorder.predicted(model.labels, call.classify(outputs, model))
    return call.encode(outputs, context, model)


def require_finite(outputs: np.ndarray) -> None:
    """An answer is finite or it is not given: an input that passed validation but drives
    the model to overflow (huge but finite numbers) is refused, naming the item."""
    if outputs.dtype.kind != "f" or np.isfinite(outputs.sum(dtype=np.float64)):
        return
    finite = np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)
    raise RequestError(
        "no_finite_answer",
        "the model gives no finite answer for this input",
        field="inputs",
        item=int(np.argmin(finite)),
        expected="inputs within the range the model was trained on (see GET /models)",
    )


def require_version(model: ServedModel, version: int | None) -> None:
    """A 404 unless no version is asked for or it is the one ``model`` serves."""
    if version is not None and model.version is not None and version != model.version:
        raise NotFound(
            "unknown_version",
            f"version {version} of model {model.name!r} is not served",
            field="version",
            expected=str(model.version),
        )
