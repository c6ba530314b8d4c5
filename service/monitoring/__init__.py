"""Watching the models, not only the server: drift against the training data
(``drift``), out-of-distribution flags (``ood``) and sampled payload logs (``payloads``).

``Monitor`` is the one object the request path calls (``service.inference``), once a batch's
outputs are in: ``flag`` when the model has a detector (counts only: the batch job already
scored the items, ``ood.Detectors.scoring``), then ``observe`` (one deque append for drift);
and ``answered`` once the reply is written (payload sampling). Its metrics are
created here, beside the others:

- ``serving_drift_score{model,version,feature}``: PSI of the window against the reference;
- ``serving_ood_items_total{model,version,in_distribution}``: items the detector scored;
- ``serving_payload_log_dropped_total{sink}`` / ``serving_payload_log_written_total{sink}``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelspec.reference import ALERT, REFERENCE_FILE
from service.monitoring import payloads, plot
from service.monitoring.drift import Drift
from service.monitoring.names import IN_DISTRIBUTION, OOD_SCORE
from service.monitoring.ood import Detectors


def _scored(outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """The answer's ``in_distribution`` flags when its detector scored it, else None. The
    batch job scores every item or none (all NaN), so a first score that is a number tells
    (0.1 us, where ``np.isnan(...).all()`` took 1 us a request, timeit); a NaN first is
    looked at whole, as the detector itself may give NaN for some items (flagged)."""
    flags = outputs.get(IN_DISTRIBUTION)
    if flags is None:
        return None
    scores = outputs[OOD_SCORE]
    first = scores[0]
    return None if first != first and np.isnan(scores).all() else flags


class Monitor:
    def __init__(self, config: Any, registry: Any, namespace: str = "serving") -> None:
        from prometheus_client import Counter, Gauge

        self.config = config
        self.registry = registry
        gauge = Gauge(
            "drift_score",
            "Population stability index of the last drift_window items against the training "
            "reference, per input feature and for the predicted classes (feature=prediction)",
            ["model", "version", "feature"],
            namespace=namespace,
            multiprocess_mode="livemax",
        )
        self.ood_items = Counter(
            "ood_items",
            "Items scored by an out-of-distribution detector",
            ["model", "version", "in_distribution"],
            namespace=namespace,
        )
        dropped = Counter(
            "payload_log_dropped",
            "Sampled payload records dropped (a full queue or a failing sink)",
            ["sink"],
            namespace=namespace,
        )
        written = Counter(
            "payload_log_written", "Sampled payload records written", ["sink"], namespace=namespace
        )
        # (model, version, in_distribution) -> items since the last flush: counted here and
        # handed to prometheus_client at the metrics flush (service.metrics), as the request
        # counts are; labels() and a multiprocess inc() cost 2.8 us a request (timeit).
        self._ood_counts: dict[tuple[str, str, str], int] = {}
        # The workers' counts meet in the server's own Prometheus folder (service.startup).
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.drift = Drift(
            config.drift_window, config.drift_interval_s, gauge, Path(shared) if shared else None
        )
        self.detectors: Detectors = registry.detectors  # the batch jobs score with it
        log = payloads.PayloadLog(config, dropped, written)
        self.payloads = log if log.on else None
        if not log.on:
            log.close()

    def start(self) -> None:
        if self.config.drift:
            self.drift.start()

    def stop(self) -> None:
        self.drift.stop()
        if self.payloads is not None:
            self.payloads.close()

    # -- the request path ------------------------------------------------------------------

    def flag(self, version: Any, outputs: dict[str, np.ndarray]) -> None:
        """Count one answer's OOD flags, which its batch job computed with the model's
        outputs (``Detectors.scoring``); nothing when the detector did not score it."""
        flags = _scored(outputs)
        if flags is None:
            return  # not a paired signature, or the detector did not run: nothing to count
        inside, items, number = int(np.count_nonzero(flags)), len(flags), str(version.number)
        self.detectors.count(version.name, items, inside)
        counts = self._ood_counts
        if inside:
            key = (version.name, number, "true")
            counts[key] = counts.get(key, 0) + inside
        if inside < items:
            key = (version.name, number, "false")
            counts[key] = counts.get(key, 0) + items - inside

    def flush(self) -> None:
        """Hand the OOD counts since the last flush to prometheus_client, and the versions
        served now to the drift thread (which drops the windows of the others)."""
        self.drift.keep = {
            (name, loaded.number): loaded.version
            for name, model in self.registry.models.items()
            for loaded in model.ready_versions
            if loaded.version is not None
        }
        counts, self._ood_counts = self._ood_counts, {}
        for labels, items in counts.items():
            self.ood_items.labels(*labels).inc(items)

    def observe(
        self,
        version: Any,
        signature: str,
        feed: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        classes: np.ndarray | None,
        sizes: list[tuple[int, int]] | None = None,
    ) -> None:
        """Keep the batch for the drift thread when the version has a reference: one deque
        append (its inputs, classes and OOD flags are already computed; ``sizes``, the
        uploaded images' original (width, height), are binned in the thread too)."""
        if not self.config.drift or not self._monitored(version, signature):
            return
        x = feed[version.signatures[signature].inputs[0].name]
        flags = _scored(outputs)
        if not sizes or len(sizes) != len(x):  # tensors sent as numbers: no original size
            sizes = None
        self.drift.observe(version, x, classes, None if flags is None else ~flags, sizes)

    def _monitored(self, version: Any, signature: str) -> bool:
        reference = version.memo(
            "drift reference", lambda: REFERENCE_FILE in version.manifest.get("files", {})
        )
        return reference and signature == version.default_signature

    def answered(
        self,
        rid: str,
        version: Any,
        signature: str,
        endpoint: str,
        body: bytes,
        content_type: str,
        outputs: dict[str, Any],
        started: float,
    ) -> None:
        """Offer a sample of answered requests to the payload log's sinks."""
        log = self.payloads
        if log is None or not log.sampled():
            return
        latency = time.perf_counter() - started
        outputs = version.views[signature].answer.present(outputs, version)
        log.offer(
            payloads.record(
                rid, version.name, version.number, endpoint, body, content_type, outputs, latency
            )
        )

    # -- what /models and the page show ----------------------------------------------------

    def drift_png(self, model: Any, number: int | None) -> bytes | None:
        """The plot of one served version (the latest by default); None without reference."""
        loaded = model.latest() if number is None else model.versions.get(number)
        if loaded is None or loaded.version is None:
            return None
        key = (model.name, loaded.number)
        window = self.drift.window_of(key)
        if window is None:
            if REFERENCE_FILE not in loaded.version.manifest.get("files", {}):
                return None
            # No traffic yet: the reference alone, in a window of its own (the counting
            # thread alone adds to its windows: one added here could change their dict while
            # it walks them).
            window = self.drift.reference_window(key, loaded.version)
            if window is None:
                return None
        state = self.drift.state.get(key, {})
        title = (
            f"{model.name} version {loaded.number}: {state.get('items', 0)} items seen, "
            f"window {self.drift.window}; PSI alert above {ALERT}"
        )
        return plot.render(title, window.specs, state.get("live", {}), state.get("scores", {}))

    def describe(self, model: Any) -> dict[str, Any]:
        """``drift`` and ``ood`` of ``/models/{m}``: per served version."""
        versions = {}
        for loaded in model.ready_versions:
            version = loaded.version
            if version is None:
                continue
            has_reference = REFERENCE_FILE in version.manifest.get("files", {})
            state = self.drift.state.get((model.name, loaded.number), {})
            versions[str(loaded.number)] = {
                "reference": has_reference,
                "items": state.get("items", 0),
                "full": state.get("full", False),
                "scores": state.get("scores", {}),
                "drifted": state.get("drifted", []),
                "ood_rate": state.get("ood_rate"),
                "workers": state.get("workers", 0),  # whose windows the figures add up
                "plot": f"/models/{model.name}/drift.png?version={loaded.number}"
                if has_reference
                else None,
            }
        latest = model.latest()
        return {
            "window": self.drift.window,
            "alert_threshold": ALERT,
            "statistic": "PSI (population stability index)",
            "versions": versions,
            "ood": self.detectors.describe(
                model.name,
                latest.version.ood if latest and latest.version else None,
                latest.number if latest else None,
            ),
        }
