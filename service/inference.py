"""The life of one inference request, whatever its protocol: read -> decode -> validate ->
batch -> run -> encode, with request ids, metrics, logs and client errors handled once, here.

A ``Call`` says which model a request is for (its version, when pinned, and signature). A
protocol's adapter (``service.protocols.common.serve``) calls a ``Serving``'s steps top to
bottom: ``read`` the body, its own ``decode`` into a ``Decoded`` feed (within ``decoding()``),
``run`` it, its own ``encode``, ``answer``; nothing here calls back into a protocol. Every
protocol (native, V2, TF Serving, gRPC) runs through the same version's batchers, so they
share queues, batches and limits. The version is chosen when the request
starts and held until it is answered, so a roll-out or an unload never cuts a request short.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from service.backends import Feed, Outputs
from service.config import Limits, Settings
from service.descriptor import Version
from service.errors import RequestError, Unavailable
from service.http import ClientGone, RawRequest, Reply, json_reply
from service.inputs.images import Decoder
from service.logs import client_request_id, request_id
from service.metrics import Metrics
from service.monitoring import Monitor
from service.monitoring.names import OOD_SCORE
from service.rollout import ROUTING_KEY, VERSION_HEADER, Shadows
from service.tracing import Tracing

if TYPE_CHECKING:  # annotations only: the Runtime is handed both
    from service.auth import Guard
    from service.registry.following import Registry

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Deadline:
    __slots__ = ("at", "expired", "task")

    def __init__(self, task: asyncio.Task[Any] | None, at: float) -> None:
        self.task, self.at, self.expired = task, at, False


class Deadlines:
    """The request timeout: every request in progress with its deadline, checked by one sweep
    four times a second. ``asyncio.timeout`` would put a timer on the loop per request, which
    measured 10-14 us, a tenth of a digits request."""

    SWEEP_S = 0.25

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._active: dict[int, Deadline] = {}

    def start(self) -> Deadline:
        deadline = Deadline(asyncio.current_task(), time.monotonic() + self.seconds)
        self._active[id(deadline)] = deadline
        return deadline

    def done(self, deadline: Deadline) -> None:
        self._active.pop(id(deadline), None)

    def sweep(self) -> None:
        now = time.monotonic()
        for deadline in [d for d in self._active.values() if d.at <= now]:
            self.done(deadline)
            if deadline.task is not None and not deadline.task.done():
                deadline.expired = True
                deadline.task.cancel()  # the request leaves its batch queue at once

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.SWEEP_S)
            self.sweep()


@dataclass
class Runtime:
    """What the handlers need, built once per worker process by the BentoML service."""

    config: Settings
    metrics: Metrics
    registry: Registry
    tracing: Tracing | None = None  # None: off (the default), and no cost
    monitor: Monitor | None = None  # drift, OOD flags, payload logs (service.monitoring)
    # Who may call what (service.auth): the service's, read once at start-up; None (tests,
    # tools) or one with no keys configured leaves every route open.
    guard: Guard | None = None
    # Inference requests in progress in this worker, counted from their body's last byte: a
    # request still sending its body holds only its connection (4,100 stalled uploads once
    # filled all 512 places and locked every client out until their 408s).
    in_flight: int = 0
    deadlines: Deadlines = field(init=False)
    shadows: Shadows = field(init=False)  # shadow traffic (service.rollout)
    decoder: Decoder = field(init=False)  # the image decode pool, decode_threads threads
    _calls: dict[tuple[Any, ...], Any] = field(init=False, default_factory=dict)
    _calls_generation: int = field(init=False, default=-1)

    def __post_init__(self) -> None:
        self.deadlines = Deadlines(self.config.request_timeout_s)
        self.shadows = Shadows(
            self.metrics, self.config.request_timeout_s, self.config.max_concurrency
        )
        self.decoder = Decoder(self.config.decode_threads)

    def full(self) -> bool:
        return self.in_flight >= self.config.max_concurrency

    def call(self, key: tuple[Any, ...], build: Callable[[], T]) -> T:
        """A protocol's adapter (and its ``Call``) for a route, model and version, built once
        while the served models stay as they are (building one costs a few microseconds)."""
        if self._calls_generation != self.registry.generation or len(self._calls) > 4096:
            # The served models changed: what was built from them (the V2 names too).
            self._calls.clear()
            self._calls_generation = self.registry.generation
        found = self._calls.get(key)
        if found is None:
            found = self._calls[key] = build()
        return found


@dataclass(frozen=True)
class Decoded:
    """A request's body as the model takes it: the signature (TF Serving's body may choose
    one), the feed, and whatever the answer needs to know of the request."""

    signature: str
    feed: Feed
    context: Any = None


def error_reply(error: RequestError) -> Reply:
    reply = json_reply(error.body(), status=error.status)
    reply.headers.update(error.headers)
    reply.error = error
    return reply


@dataclass(frozen=True)
class Call:
    """One kind of inference request. ``label`` names it in metrics and logs; ``version``
    pins a model version (None: the latest ready); ``errors`` writes a refusal the way the
    protocol's clients expect."""

    model: str
    version: int | None
    signature: str
    label: str
    errors: Callable[[RequestError], Reply] = error_reply
    protocol: str = "native"  # the metrics' protocol label (service.metrics.PROTOCOLS)

    def __post_init__(self) -> None:
        # The label names the span and every log line of the request, and holds the client's
        # model name: a 20,000-character one made 40 KB log lines. Real names are at most 64
        # characters (modelspec.repository), so this keeps every real call's whole.
        if len(self.label) > MAX_LABEL:
            object.__setattr__(self, "label", self.label[:MAX_LABEL] + "...")


MAX_LABEL = 200


UNKNOWN = ("", "unknown model")
OVERLOADED = Unavailable(
    "overloaded",
    "this worker has as many requests in progress as it takes; retry shortly",
    headers={"Retry-After": "1"},
)
# JSON bodies this large are decoded in a thread with its own event loop. Parsing and
# checking JSON costs ~20-60 ms per MB (a 19 MB TF Serving body held the loop 1.2 s, stalling
# every other client and /livez); in a thread the loop runs between the GIL's 5 ms switches.
# The thread and loop cost ~0.2 ms, small beside a 256 KiB body's decoding. Image bodies
# stay: their decoding already runs in the decode pool, and more threads allocating
# megabytes grew the resident memory of the long reliability run by 5-10%.
DECODE_ON_LOOP_BYTES = 256 * 1024
NOT_STARTED = Unavailable("model_loading", "the service is starting", headers={"Retry-After": "5"})


def _metric_labels(runtime: Runtime, call: Call) -> tuple[str, str, str]:
    """Labels only for models and signatures that exist: names in URLs are the client's to
    choose, and every label pair is a time series kept for the life of the process."""
    model = runtime.registry.models.get(call.model)
    if model is None:
        return (*UNKNOWN, call.protocol)
    latest = model.latest()
    if not call.signature or (latest and latest.version and call.signature in latest.version.views):
        return call.model, call.label, call.protocol
    return call.model, "unknown signature", call.protocol


class Serving:
    """One inference request in progress, as ``async with``: request id, metrics, trace and
    deadline from the start; on the way out, whatever was raised becomes the ``refusal`` (a
    fault of ours the catalogue's ``internal``), and ``finish`` stamps and counts the answer.
    Between, the protocol calls the steps in order: ``read``, its own decoding within
    ``decoding()``, ``run``, ``answer``."""

    __slots__ = (
        "admitted",
        "batcher",
        "body",
        "call",
        "deadline",
        "large_json",
        "loaded",
        "model",
        "outputs",
        "ran",
        "recorder",
        "refusal",
        "reply",
        "request",
        "rid",
        "runtime",
        "sizes",
        "started",
        "t0",
        "t1",
        "t2",
        "traced",
        "version",
    )

    def __init__(self, request: RawRequest, call: Call, runtime: Runtime) -> None:
        self.request, self.call, self.runtime = request, call, runtime
        self.started = time.perf_counter()
        self.rid = rid = client_request_id(request.headers.get("x-request-id"))
        request_id.set(rid)
        self.recorder = runtime.metrics.endpoint(*_metric_labels(runtime, call))
        self.recorder.started()
        self.traced = (
            runtime.tracing.start(f"POST {call.label}", request.headers)
            if runtime.tracing
            else None
        )
        self.deadline = runtime.deadlines.start()
        self.loaded: Any = None
        self.admitted = False
        self.reply: Reply | None = None
        self.refusal: RequestError | None = None  # why the request is refused, if it is

    async def __aenter__(self) -> Serving:
        return self

    async def read(self) -> bytes:
        """The version (the one the call names, else one drawn by the traffic weights,
        sticky by routing key), load shed before the body is read, the body, a place among
        the requests in progress."""
        request, runtime, call = self.request, self.runtime, self.call
        limits = runtime.config.limits
        model = self.model = runtime.registry.find(call.model)
        loaded = model.route(call.version, request.headers.get(ROUTING_KEY))
        version = self.version = loaded.version
        assert version is not None  # a ready version is described
        if self.traced is not None:
            self.traced.attributes.update({"model": call.model, "model.version": loaded.number})
        loaded.begin()
        self.loaded = loaded
        self.batcher = (
            loaded.batchers.get(call.signature)
            or loaded.batchers[version.view(call.signature or version.default_signature).name]
        )
        self.batcher.refuse_if_full()  # shed load before reading a body that could not queue
        self.t0 = time.perf_counter()
        body = self.body = await request.body(limits)
        self.t1 = time.perf_counter()
        if runtime.full():
            raise OVERLOADED
        runtime.in_flight += 1
        self.admitted = True
        self.large_json = len(body) >= DECODE_ON_LOOP_BYTES and _is_json(body)
        if self.large_json:
            refuse_too_many_values(body, version, limits)
        return body

    def decoding(self) -> Serving:
        """``with`` around the protocol's decoding: large images decode in the Runtime's
        pool, their own sizes are collected (for drift), too deep a body is refused, and the
        time is kept."""
        return self

    def __enter__(self) -> None:
        self.sizes = self.runtime.decoder.start()  # this request's images decode in its pool

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if isinstance(error, RecursionError):
            # orjson parses 1,024 levels, Python's recursion stops near 1,000 in the walks
            # over nested lists; no model takes a tensor of that rank.
            raise RequestError(
                "too_deeply_nested",
                "the body nests lists deeper than any tensor",
                expected="arrays nested no deeper than the input's rank",
            ) from None
        self.t2 = time.perf_counter()

    async def run(self, decoded: Decoded) -> Outputs:
        """The feed through its signature's batcher; a finite answer, counted and watched."""
        version = self.version
        ran = self.ran = await self.loaded.batchers[decoded.signature].infer(decoded.feed)
        outputs = ran.outputs
        view = version.views[decoded.signature]
        # A flagged signature's batch job adds the detector's ood_score (service.monitoring.
        # ood), NaN where it did not score; any other output named so is the model's.
        require_finite(outputs, scored=view.flagged)
        classes = view.answer.classes(outputs, version)
        if classes is not None:
            self.recorder.predicted(version.labels, classes)
        monitor = self.runtime.monitor
        if monitor is not None:
            if view.flagged:  # scored in the batch job (service.monitoring.ood)
                monitor.flag(version, outputs)
            monitor.observe(version, decoded.signature, decoded.feed, outputs, classes, self.sizes)
        self.outputs = outputs
        return outputs

    def answer(self, reply: Reply, decoded: Decoded) -> None:
        """The protocol's answer, with its version; then shadow traffic, payload logs and
        the trace's steps, after the live answer is made."""
        runtime, loaded, ran, version = self.runtime, self.loaded, self.ran, self.version
        reply.headers[VERSION_HEADER] = str(loaded.number)
        if self.model.routing.shadow_version is not None:
            runtime.shadows.offer(
                self.model, loaded, decoded.signature, decoded.feed, ran.outputs, runtime.in_flight
            )
        monitor = runtime.monitor
        if monitor is not None and monitor.payloads is not None:
            monitor.answered(
                self.rid,
                version,
                decoded.signature,
                self.call.label,
                self.body,
                self.request.headers.get("content-type", ""),
                self.outputs,
                self.started,
            )
        traced = self.traced
        if traced is not None:
            traced.step("read body", self.t0, self.t1)
            traced.step("decode", self.t1, self.t2)
            traced.step("queue", ran.enqueued, ran.started)
            traced.step("compute", ran.started, ran.finished)
            traced.step("encode", ran.finished, time.perf_counter())
            items = len(next(iter(decoded.feed.values())))
            traced.attributes.update(
                {"signature": decoded.signature, "items": items, "batch.size": ran.batch_items}
            )
        self.reply = reply

    async def __aexit__(self, kind: Any, error: BaseException | None, tb: Any) -> bool:
        """What the steps raised becomes the way out, nothing escapes as a crash: a client's
        error is the ``refusal`` the protocol writes (``serve``, with ``Call.errors``), a
        fault of ours a 500 that names no path and no traceback."""
        runtime, call, recorder, traced = self.runtime, self.call, self.recorder, self.traced
        if self.admitted:
            runtime.in_flight -= 1
        if self.loaded is not None:
            self.loaded.end()
        runtime.deadlines.done(self.deadline)
        if isinstance(error, asyncio.CancelledError):
            if not self.deadline.expired:  # the client left (gRPC cancels), or shutdown
                recorder.answered(499, time.perf_counter() - self.started)
                if traced is not None:
                    traced.finish(499)
                return False
            asyncio.current_task().uncancel()
            # The cancelled request left its batch queue (or its batch's result is
            # dropped), so its slot is free again.
            error = RequestError(
                "request_timeout",
                f"no answer within {runtime.config.request_timeout_s:g} s",
                expected="a request the model can answer in time; retry later",
            )
        if error is None:
            assert self.reply is not None  # the protocol answered
        elif isinstance(error, RequestError):
            recorder.refused(error.code, error.status)
            logger.info(
                "%s %s refused: %s (%s)", call.label, error.status, error.code, error.message
            )
            self.refusal = error
        elif isinstance(error, ClientGone):
            self.reply = Reply(b"", status=499)  # nobody is listening; counted, not sent
        elif isinstance(error, Exception):
            logger.error("%s failed", call.label, exc_info=error)
            # The catalogue's 500, written by the protocol: no path or traceback, the
            # request id to find this log by
            self.refusal = RequestError("internal", "internal error", request_id=self.rid)
        else:
            return False
        return True

    def finish(self, reply: Reply) -> Reply:
        """The answer as it leaves, whichever it is: its request id and trace header, and
        its status counted and logged."""
        reply.headers["x-request-id"] = self.rid
        traced = self.traced
        if traced is not None:
            reply.headers["traceparent"] = traced.traceparent()
            traced.finish(reply.status)
        elapsed = time.perf_counter() - self.started
        self.recorder.answered(reply.status, elapsed)
        if self.runtime.config.access_log:
            logger.info("%s %d %.2f ms", self.call.label, reply.status, elapsed * 1000)
        return reply


def _is_json(body: bytes) -> bool:
    """A JSON document (V2 binary bodies start with theirs), not an image or multipart."""
    return body[:64].lstrip()[:1] in (b"{", b"[")


def refuse_too_many_values(body: bytes, version: Version, limits: Limits) -> None:
    """A JSON body with more values than any request to this model can hold is refused
    before parsing: ``bytes.count`` reads 20 MB in ~5 ms, where orjson and numpy hold the
    GIL ~20-60 ms per MB on bodies of small numbers (no thread can interleave with that).
    V2 binary data after its JSON header holds a comma byte in ~1/256 of its bytes, far
    below the bound."""
    bound = version.memo(
        ("most json values", limits.max_items_per_request), lambda: _most_values(version, limits)
    )
    if bound is not None and body.count(b",") > bound:
        raise RequestError(
            "too_many_values",
            f"the body holds more than {bound} values",
            expected=f"at most {limits.max_items_per_request} items of this model's inputs",
        )


def _most_values(version: Version, limits: Limits) -> int | None:
    """Four times the most values any request to ``version`` can hold (a request names its
    inputs and fields too); None when an input has a free dimension besides the batch."""
    most = 0
    for view in version.views.values():
        per_item = 0
        for tensor in view.inputs:
            if any(d < 0 for d in tensor.shape[1:]):
                return None
            per_item += prod(tensor.shape[1:])
        most = max(most, per_item)
    return 4 * limits.max_items_per_request * most + 4096


def require_finite(outputs: Outputs, scored: bool = False) -> None:
    """An answer is finite or it is not given: an input that passed validation but drives
    the model to overflow (huge but finite numbers) is refused, naming the item. ``scored``:
    ``outputs`` hold a detector's ``ood_score``, not checked (NaN, null, when it did not
    score); an output of that name is otherwise the model's own, checked like the others."""
    for name, value in outputs.items():
        if scored and name == OOD_SCORE:
            continue  # the detector's, not the model's
        if value.dtype.kind != "f" or np.isfinite(value.sum(dtype=np.float64)):
            continue
        finite = np.isfinite(value.reshape(len(value), -1)).all(axis=1)
        if finite.all():
            continue  # the float64 sum overflowed; every value is finite
        raise RequestError(
            "no_finite_answer",
            f"the model gives no finite {name!r} for this input",
            field="inputs",
            item=int(np.argmin(finite)),
            expected="inputs within the range the model was trained on (see GET /models)",
        )
