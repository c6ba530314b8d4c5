"""The service's own Prometheus metrics, added beside BentoML's defaults on ``/metrics``.

prometheus_client is imported when ``Metrics`` is built, not at module import: BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` in each worker after importing the service module, and metrics
created before that would never reach ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.batching import BatchStats

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self, namespace: str = "serving") -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self._endpoints: dict[tuple[str, str], EndpointMetrics] = {}
        signature = ["model", "signature"]
        self.queue_wait = Histogram(
            "inference_queue_wait_seconds",
            "Time a request waited in the batch queue before its batch started",
            signature,
            namespace=namespace,
            buckets=LATENCY_BUCKETS,
        )
        self.compute = Histogram(
            "inference_compute_seconds",
            "Time one batch spent in the model",
            signature,
            namespace=namespace,
            buckets=LATENCY_BUCKETS,
        )
        self.request_latency = Histogram(
            "request_duration_seconds",
            "Whole request time in the service: read, decode, queue, compute, encode",
            ["model", "endpoint"],
            namespace=namespace,
            buckets=LATENCY_BUCKETS,
        )
        self.requests = Counter(
            "requests",
            "Model endpoint requests by HTTP status",
            ["model", "endpoint", "status"],
            namespace=namespace,
        )
        self.batch_size = Histogram(
            "batch_size",
            "Items in each batch the model ran",
            signature,
            namespace=namespace,
            buckets=BATCH_BUCKETS,
        )
        self.items = Counter(
            "items_processed", "Items (images, records, codes) run", signature, namespace=namespace
        )
        self.predictions = Counter(
            "predictions", "Predictions by class", ["model", "label"], namespace=namespace
        )
        self.validation_errors = Counter(
            "validation_errors",
            "Requests refused with a 4xx (the client's fault), by reason",
            ["model", "endpoint", "reason"],
            namespace=namespace,
        )
        self.shed = Counter(
            "requests_shed",
            "Requests refused with a 5xx before running (overloaded, model loading or "
            "unavailable, timed out), by reason",
            ["model", "endpoint", "reason"],
            namespace=namespace,
        )
        self.connection_refusals = Counter(
            "connection_refusals",
            "Connections answered and closed before reaching a route: oversized or late "
            "headers, too many connections, malformed HTTP",
            ["reason"],
            namespace=namespace,
        )
        self.in_flight = Gauge(
            "requests_in_flight",
            "Inference requests being served now (the HPA's custom metric)",
            ["model"],
            namespace=namespace,
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "model_info",
            "Loaded model: version, backend and execution provider",
            ["model", "version", "backend", "provider"],
            namespace=namespace,
            multiprocess_mode="liveall",
        )
        self.model_events = Counter(
            "model_events",
            "Model versions loaded, unloaded, or refused at load (event label)",
            ["model", "event"],
            namespace=namespace,
        )
        self.model_load_seconds = Histogram(
            "model_load_seconds",
            "Time to verify, load and warm up one model version",
            ["model"],
            namespace=namespace,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100),
        )
        self.model_ready = Gauge(
            "model_ready",
            "1 when a version of the model is loaded, warmed up and serving, 0 otherwise",
            ["model"],
            namespace=namespace,
            multiprocess_mode="liveall",
        )

    def connection_refused(self, reason: str) -> None:
        self.connection_refusals.labels(reason).inc()

    def batch_recorder(self, model: str, signature: str):
        """The callback one batcher reports each batch to."""
        queue_wait = self.queue_wait.labels(model, signature)
        compute = self.compute.labels(model, signature)
        batch_size = self.batch_size.labels(model, signature)
        items = self.items.labels(model, signature)

        def record(stats: BatchStats) -> None:
            for wait in stats.queue_waits:
                queue_wait.observe(wait)
            compute.observe(stats.compute_seconds)
            batch_size.observe(stats.size)
            items.inc(stats.size)

        return record

    def endpoint(self, model: str, path: str) -> EndpointMetrics:
        recorder = self._endpoints.get((model, path))
        if recorder is None:
            recorder = self._endpoints[(model, path)] = EndpointMetrics(self, model, path)
        return recorder


class EndpointMetrics:
    """One endpoint's labelled metrics, looked up once instead of on every request."""

    def __init__(self, metrics: Metrics, model: str, path: str) -> None:
        self._metrics = metrics
        self._model = model
        self._path = path
        self._latency = metrics.request_latency.labels(model, path)
        self._in_flight = metrics.in_flight.labels(model)
        self._statuses: dict[int, Any] = {}
        self._labels: dict[str, Any] = {}

    def started(self) -> None:
        self._in_flight.inc()

    def answered(self, status: int, seconds: float) -> None:
        self._in_flight.dec()
        self._latency.observe(seconds)
        counter = self._statuses.get(status)
        if counter is None:
            counter = self._statuses[status] = self._metrics.requests.labels(
                self._model, self._path, str(status)
            )
        counter.inc()

    def refused(self, reason: str, status: int = 422) -> None:
        counter = self._metrics.shed if status >= 500 else self._metrics.validation_errors
        counter.labels(self._model, self._path, reason).inc()

    def predicted(self, labels: Sequence[str], indices: np.ndarray) -> None:
        counts = np.bincount(indices, minlength=len(labels))
        for index in np.flatnonzero(counts).tolist():
            label = labels[index]
            counter = self._labels.get(label)
            if counter is None:
                counter = self._labels[label] = self._metrics.predictions.labels(self._model, label)
            counter.inc(int(counts[index]))
