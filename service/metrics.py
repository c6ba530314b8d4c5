"""The service's own Prometheus metrics, added beside BentoML's defaults on ``/metrics``.

prometheus_client is imported when ``Metrics`` is built, not at module import: BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` in each worker after importing the service module, and metrics
created before that would never reach ``/metrics``.

The hot path counts in plain Python (``Tally``, ``Spread``) and ``flush`` hands the counts to
prometheus_client every half second and before each scrape this worker answers: in
multiprocess mode every ``inc`` or ``observe`` takes a lock and writes a memory-mapped file
(3 to 6 us each, measured), and a request made about six of them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.batching import BatchStats


class Spread:
    """A histogram counted here, handed to a prometheus_client histogram on ``flush``."""

    __slots__ = ("buckets", "child", "count", "total")

    def __init__(self, child: Any, bounds: Sequence[float]) -> None:
        self.child = child
        self.buckets = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float, bounds: Sequence[float]) -> None:
        self.buckets[bisect_left(bounds, value)] += 1
        self.total += value
        self.count += 1

    def flush(self) -> None:
        if not self.count:
            return
        # prometheus_client keeps one value per bucket (made cumulative on export) and the
        # sum; adding to them is what ``observe`` does, once per observation.
        for bucket, added in zip(self.child._buckets, self.buckets, strict=True):
            if added:
                bucket.inc(added)
        self.child._sum.inc(self.total)
        self.buckets = [0] * len(self.buckets)
        self.total, self.count = 0.0, 0


LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# The ``protocol`` label's only values: a request's front end, never the client's text.
PROTOCOLS = ("native", "v2", "tfserving", "grpc")


def protocol_of(path: str) -> str:
    """The HTTP front end of a path (gRPC calls never have one)."""
    if path.startswith("/v2/"):
        return "v2"
    return "tfserving" if path.startswith("/v1/") else "native"


class Metrics:
    def __init__(self, namespace: str = "serving") -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self._endpoints: dict[tuple[str, str], EndpointMetrics] = {}
        self._batches: list[BatchMetrics] = []
        self.flushers: list[Any] = []  # more counts kept elsewhere (service.auth)
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
            ["model", "endpoint", "protocol"],
            namespace=namespace,
            buckets=LATENCY_BUCKETS,
        )
        self.requests = Counter(
            "requests",
            "Model endpoint requests by HTTP status",
            ["model", "endpoint", "protocol", "status"],
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
            ["model", "endpoint", "protocol", "reason"],
            namespace=namespace,
        )
        self.shed = Counter(
            "requests_shed",
            "Requests refused with a 5xx before running (overloaded, model loading or "
            "unavailable, timed out), by reason",
            ["model", "endpoint", "protocol", "reason"],
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
            "Inference requests being served now (the HPA's custom metric; sampled twice a second)",
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
        self.model_serving_since = Gauge(
            "model_version_serving_since_seconds",
            "Unix time each version went live in this process; 0 once retired (a fleet agrees "
            "when every replica shows the same versions > 0)",
            ["model", "version"],
            namespace=namespace,
            multiprocess_mode="liveall",
        )
        # Labelled by the repository's URI so that a local repository exports none of these
        # (an unlabelled gauge would show `serving_repository_up 0` and page someone).
        self.repository_up = Gauge(
            "repository_up",
            "1 when the last poll of a remote model repository reached the store, else 0",
            ["repository"],
            namespace=namespace,
            multiprocess_mode="liveall",
        )
        self.repository_polls = Counter(
            "repository_polls",
            "Polls of a remote model repository, by result (ok, error)",
            ["repository", "result"],
            namespace=namespace,
        )
        self.repository_requests = Counter(
            "repository_requests",
            "Calls to the object store: list (one per poll) and get (one per file copied)",
            ["repository", "operation"],
            namespace=namespace,
        )
        self.repository_cache_bytes = Gauge(
            "repository_cache_bytes",
            "Bytes the remote repository's local cache holds",
            ["repository"],
            namespace=namespace,
            multiprocess_mode="liveall",
        )
        self.model_ready = Gauge(
            "model_ready",
            "1 when a version of the model is loaded, warmed up and serving, 0 otherwise",
            ["model"],
            namespace=namespace,
            multiprocess_mode="liveall",
        )

        self.model_config_valid = Gauge(
            "model_config_valid",
            "1 when the model's config.yaml (and its labels, weights and shadow) was applied "
            "at the last poll, 0 while the last good settings are kept in its place",
            ["model"],
            namespace=namespace,
            multiprocess_mode="liveall",
        )
        # Shadow traffic (service.rollout): by model and (live, shadow) version pair.
        pair = ["model", "live_version", "shadow_version"]
        self.shadow_requests = Counter(
            "shadow_requests",
            "Live requests offered to the shadow version, by result: compared, failed, "
            "dropped_busy, dropped_load, dropped_unavailable",
            [*pair, "result"],
            namespace=namespace,
        )
        self.shadow_items = Counter(
            "shadow_items", "Items whose live and shadow answers were compared", pair,
            namespace=namespace,
        )  # fmt: skip
        self.shadow_agreed = Counter(
            "shadow_agreed_items",
            "Compared items whose top class (classifiers) or decision (bank) agreed; divide "
            "by serving_shadow_items_total for the agreement",
            [*pair, "kind"],
            namespace=namespace,
        )
        self.shadow_max_abs_diff = Gauge(
            "shadow_max_abs_diff",
            "Largest absolute difference between live and shadow values of an output so far",
            [*pair, "output"],
            namespace=namespace,
            multiprocess_mode="livemax",
        )
        self.shadow_abs_diff_sum = Counter(
            "shadow_abs_diff_sum",
            "Sum over compared items of each item's mean absolute difference of an output; "
            "divide by serving_shadow_items_total for the mean",
            [*pair, "output"],
            namespace=namespace,
        )

    def connection_refused(self, reason: str) -> None:
        self.connection_refusals.labels(reason).inc()

    def batch_recorder(self, model: str, signature: str):
        """The callback one batcher reports each batch to."""
        recorder = BatchMetrics(self, model, signature)
        self._batches.append(recorder)
        return recorder.record

    def flush(self) -> None:
        """Hand everything counted since the last flush to prometheus_client."""
        in_flight: dict[str, int] = {}
        for endpoint in list(self._endpoints.values()):
            endpoint.flush()
            in_flight[endpoint.model] = in_flight.get(endpoint.model, 0) + endpoint.in_flight
        for model, count in in_flight.items():
            self.in_flight.labels(model).set(count)
        for batches in self._batches:
            batches.flush()
        for flush in self.flushers:
            flush()

    def endpoint(self, model: str, path: str, protocol: str = "native") -> EndpointMetrics:
        """``protocol`` is one of ``PROTOCOLS``: gRPC and V2 over HTTP share their endpoint."""
        key = (model, path, protocol)
        recorder = self._endpoints.get(key)
        if recorder is None:
            recorder = self._endpoints[key] = EndpointMetrics(self, model, path, protocol)
        return recorder


class EndpointMetrics:
    """One endpoint's counts, kept here between flushes."""

    def __init__(self, metrics: Metrics, model: str, path: str, protocol: str) -> None:
        self._metrics = metrics
        self.model = model
        self._path = path
        self._protocol = protocol
        latency = metrics.request_latency.labels(model, path, protocol)
        self._latency = Spread(latency, LATENCY_BUCKETS)
        self._statuses: dict[int, int] = {}
        self._labels: dict[str, int] = {}
        self.in_flight = 0

    def started(self) -> None:
        self.in_flight += 1

    def answered(self, status: int, seconds: float) -> None:
        self.in_flight -= 1
        self._latency.observe(seconds, LATENCY_BUCKETS)
        self._statuses[status] = self._statuses.get(status, 0) + 1

    def refused(self, reason: str, status: int) -> None:
        counter = self._metrics.shed if status >= 500 else self._metrics.validation_errors
        counter.labels(self.model, self._path, self._protocol, reason).inc()

    def predicted(self, labels: Sequence[str], indices: np.ndarray) -> None:
        if len(indices) == 1:  # one item: no need for bincount
            label = labels[int(indices[0])]
            self._labels[label] = self._labels.get(label, 0) + 1
            return
        counts = np.bincount(indices, minlength=len(labels))
        for index in np.flatnonzero(counts).tolist():
            label = labels[index]
            self._labels[label] = self._labels.get(label, 0) + int(counts[index])

    def flush(self) -> None:
        self._latency.flush()
        statuses, self._statuses = self._statuses, {}
        for status, count in statuses.items():
            labels = (self.model, self._path, self._protocol, str(status))
            self._metrics.requests.labels(*labels).inc(count)
        labels, self._labels = self._labels, {}
        for label, count in labels.items():
            self._metrics.predictions.labels(self.model, label).inc(count)


class BatchMetrics:
    """One batcher's counts, kept here between flushes."""

    def __init__(self, metrics: Metrics, model: str, signature: str) -> None:
        self._queue_wait = Spread(metrics.queue_wait.labels(model, signature), LATENCY_BUCKETS)
        self._compute = Spread(metrics.compute.labels(model, signature), LATENCY_BUCKETS)
        self._batch_size = Spread(metrics.batch_size.labels(model, signature), BATCH_BUCKETS)
        self._items = metrics.items.labels(model, signature)
        self._items_counted = 0

    def record(self, stats: BatchStats) -> None:
        for wait in stats.queue_waits:
            self._queue_wait.observe(wait, LATENCY_BUCKETS)
        self._compute.observe(stats.compute_seconds, LATENCY_BUCKETS)
        self._batch_size.observe(stats.size, BATCH_BUCKETS)
        self._items_counted += stats.size

    def flush(self) -> None:
        for spread in (self._queue_wait, self._compute, self._batch_size):
            spread.flush()
        items, self._items_counted = self._items_counted, 0
        if items:
            self._items.inc(items)
