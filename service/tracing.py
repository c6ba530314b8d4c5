"""OpenTelemetry traces of inference requests, on every protocol; off unless configured.

Set by the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, or both,
comma-separated; unset or ``none``: no tracing and no cost), ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (``parentbased_traceidratio`` with
0.01 traces 1%), ``OTEL_SERVICE_NAME``. A request's W3C ``traceparent`` makes its span a
child of the caller's; the answer carries the service's own ``traceparent``.

One span per request (``POST <route>``), with a child span per step of its life: ``read
body``, ``decode``, ``queue`` (waiting for its batch), ``compute`` (its batch in the model)
and ``encode``; attributes give the model, version, signature, items, batch size and status.
Steps are timed with ``perf_counter`` as the request runs and written as spans at the end,
so an unsampled request costs one sampling decision, not five spans.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger(__name__)
PROPAGATOR = TraceContextTextMapPropagator()


class RequestTrace:
    """One sampled request: its server span and the steps it went through."""

    def __init__(self, tracer: Any, name: str, headers: dict[str, str]) -> None:
        self._tracer = tracer
        self._epoch_ns = time.time_ns()
        self._origin = time.perf_counter()
        self.span = tracer.start_span(
            name,
            context=PROPAGATOR.extract(headers),
            kind=trace.SpanKind.SERVER,
            start_time=self._epoch_ns,
        )
        self._steps: list[tuple[str, float, float]] = []
        self.attributes: dict[str, Any] = {}

    def _ns(self, moment: float) -> int:
        return self._epoch_ns + int((moment - self._origin) * 1e9)

    def step(self, name: str, started: float, finished: float) -> None:
        self._steps.append((name, started, finished))

    def traceparent(self) -> str:
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self.span))
        return carrier.get("traceparent", "")

    def finish(self, status: int) -> None:
        context = trace.set_span_in_context(self.span)
        for name, started, finished in self._steps:
            child = self._tracer.start_span(name, context=context, start_time=self._ns(started))
            child.end(end_time=self._ns(finished))
        self.span.set_attributes({**self.attributes, "http.response.status_code": status})
        if status >= 500:
            self.span.set_status(trace.Status(trace.StatusCode.ERROR))
        self.span.end(end_time=self._ns(time.perf_counter()))


class Tracing:
    """Starts a ``RequestTrace`` for each sampled request."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("keras-model-serving")

    def start(self, name: str, headers: dict[str, str]) -> RequestTrace | None:
        found = RequestTrace(self._tracer, name, headers)
        if not found.span.is_recording():
            return None  # not sampled: nothing more to do for this request
        return found

    @classmethod
    def with_exporter(cls, exporter: SpanExporter, batch: bool = True) -> Tracing:
        name = os.environ.get("OTEL_SERVICE_NAME", "keras-model-serving")
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        return cls(provider)

    def shutdown(self) -> None:
        self.provider.shutdown()


def from_environment(environ: dict[str, str] | None = None) -> Tracing | None:
    """Tracing as the OTEL_* variables ask; None (no cost at all) by default."""
    env = os.environ if environ is None else environ
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip()]
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or names in ([], ["none"]):
        return None
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            logger.warning("OTEL_TRACES_EXPORTER %r is not supported here (otlp, console)", name)
    if not exporters:
        return None
    tracing = Tracing.with_exporter(exporters[0])
    for exporter in exporters[1:]:
        tracing.provider.add_span_processor(BatchSpanProcessor(exporter))
    logger.info("tracing inference requests to %s", ", ".join(names))
    return tracing
