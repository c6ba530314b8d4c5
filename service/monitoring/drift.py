"""Drift: the last ``drift_window`` items of each model version against its ``reference.json``.

The request path only appends the batch's model inputs and predicted classes (both already
computed) to a bounded deque (``observe``, well under a microsecond). A thread wakes every
``drift_interval_s``, bins what arrived with ``modelspec.reference`` (the code training
summarised the training split with), writes the bins into a ring per feature and, once the
ring is full, scores each feature and the predicted classes by PSI: the gauge
``serving_drift_score{model,version,feature}``, ``/models/{m}`` (``drift``) and the PNG.

Each worker keeps its own windows (workers do not share memory); the gauge takes the largest
score of the live workers (``livemax``), so an alert fires when any worker sees drift.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from modelspec.reference import ALERT, PREDICTION, REFERENCE_FILE, bin_count, binner, psi

logger = logging.getLogger(__name__)
Key = tuple[str, int]
# Batches waiting for the counting thread; beyond this the oldest are forgotten (a window
# needs only the latest items anyway). 64 items per batch at most: ~260k items.
MAX_PENDING_BATCHES = 4096


# Inputs are joined and binned at most this many bytes at a time. Joining a pass's photos at
# once (flowers: 602 KB an item, up to drift_window of them) made temporaries of hundreds of
# MB: the server's memory grew 12.5% in the gate's 2,000-request sustained-load run.
GROUP_BYTES = 4 << 20


def _groups(parts: list[np.ndarray]) -> Iterator[list[np.ndarray]]:
    """Consecutive runs of ``parts`` of about GROUP_BYTES each (a larger part alone)."""
    group: list[np.ndarray] = []
    size = 0
    for part in parts:
        nbytes = getattr(part, "nbytes", 0)
        if group and size + nbytes > GROUP_BYTES:
            yield group
            group, size = [], 0
        group.append(part)
        size += nbytes
    if group:
        yield group


class Window:
    """One model version's rings of bin indices, one per feature (and ``prediction``)."""

    def __init__(self, reference: dict[str, Any], preprocessing: dict | None, size: int) -> None:
        self.reference = reference
        self.size = size
        self.bins = binner(reference, preprocessing)
        self.specs: dict[str, dict[str, Any]] = dict(reference["features"])
        if PREDICTION in reference:
            self.specs[PREDICTION] = reference[PREDICTION]
        self.rings = {name: np.zeros(size, np.int32) for name in self.specs}
        self.seen = {name: 0 for name in self.specs}  # items written into each ring
        self.ood = np.zeros(size, np.bool_)
        self.ood_seen = 0

    def _write(self, name: str, values: np.ndarray, seen: int | None = None) -> None:
        """Into the ring: the last ``size`` of ``values``; ``seen`` (default: as many as were
        written) is how many items they stand for."""
        values = values[-self.size :]
        start = self.seen[name] % self.size
        end = start + len(values)
        ring = self.rings[name]
        if end <= self.size:
            ring[start:end] = values
        else:
            split = self.size - start
            ring[start:] = values[:split]
            ring[: end - self.size] = values[split:]
        self.seen[name] += len(values) if seen is None else seen

    def add(self, x: np.ndarray | None, classes: np.ndarray | None, ood: np.ndarray | None):
        if x is not None:
            for name, bins in self.bins(x).items():
                self._write(name, bins)
        if classes is not None and PREDICTION in self.rings:
            self._write(PREDICTION, np.asarray(classes, np.int32))
        if ood is not None:
            flags = np.asarray(ood, np.bool_)[-self.size :]
            index = (self.ood_seen + np.arange(len(flags))) % self.size
            self.ood[index] = flags
            self.ood_seen += len(flags)

    def add_many(self, batches: list[tuple[Any, ...]]) -> None:
        """Several batches' ``(x, classes, ood)`` at once: the same rings and counts as
        ``add`` on each in turn, binned in one pass over only the items the window keeps.
        One ``add`` per single-digit request took 15% of a worker's CPU at c=32 (numpy's
        per-call cost, ~25 calls a batch); one per pass costs the same as one request."""
        for field in range(3):
            parts = [batch[field] for batch in batches if batch[field] is not None]
            if not parts or (field == 1 and PREDICTION not in self.rings):
                continue
            # Each batch counted as ``add`` counts it: at most ``size`` items of it.
            seen = sum(min(len(part), self.size) for part in parts)
            kept, items = [], 0
            for part in reversed(parts):  # only the newest ``size`` items reach the ring
                kept.append(part[-(self.size - items) :])
                items += len(kept[-1])
                if items >= self.size:
                    break
            if field == 0:
                binned: dict[str, list[np.ndarray]] = {}
                for group in _groups(kept[::-1]):
                    values = np.concatenate(group) if len(group) > 1 else group[0]
                    for name, bins in self.bins(values).items():
                        binned.setdefault(name, []).append(bins)
                for name, parts_bins in binned.items():
                    self._write(name, np.concatenate(parts_bins), seen)
                continue
            values = np.concatenate(kept[::-1]) if len(kept) > 1 else kept[0]
            if field == 1:
                self._write(PREDICTION, np.asarray(values, np.int32), seen)
            else:
                flags = np.asarray(values, np.bool_)[-self.size :]
                index = (self.ood_seen + np.arange(len(flags))) % self.size
                self.ood[index] = flags
                self.ood_seen += seen

    def live_counts(self, name: str) -> list[int]:
        filled = min(self.seen[name], self.size)
        ring = self.rings[name][:filled] if filled < self.size else self.rings[name]
        return np.bincount(ring, minlength=bin_count(self.specs[name])).tolist()

    def snapshot(self) -> dict[str, Any]:
        scores, live = {}, {}
        for name, spec in self.specs.items():
            live[name] = self.live_counts(name)
            if self.seen[name] >= self.size:
                scores[name] = round(psi(spec["counts"], live[name]), 4)
        items = max(self.seen.values(), default=0)
        ood_items = min(self.ood_seen, self.size)
        return {
            "items": items,
            "full": items >= self.size,
            "scores": scores,
            "drifted": sorted(n for n, s in scores.items() if s > ALERT),
            "live": live,
            "ood_rate": round(float(self.ood[:ood_items].mean()), 4) if ood_items else None,
            "ood_items": ood_items,
        }


class Drift:
    def __init__(self, window: int, interval_s: float, gauge: Any = None) -> None:
        self.window = window
        self.interval_s = interval_s
        self.gauge = gauge
        self._pending: deque[tuple[Any, ...]] = deque(maxlen=MAX_PENDING_BATCHES)
        self._windows: dict[Key, Window | None] = {}  # None: no reference (no checks)
        self._sources: dict[Key, Any] = {}  # the Version each key was first seen with
        self.state: dict[Key, dict[str, Any]] = {}  # the latest snapshots, read by /models
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    # -- the request path ------------------------------------------------------------------

    def observe(
        self,
        version: Any,
        x: np.ndarray | None,
        classes: np.ndarray | None,
        ood: np.ndarray | None = None,
    ) -> None:
        """Keep a batch for the counting thread: one deque append."""
        self._pending.append((version, x, classes, ood))

    # -- the counting thread ---------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="drift", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval_s)
            try:
                self.count()
            except Exception:  # never let a bad batch stop the counting for good
                logger.exception("drift counting failed")

    def count(self) -> None:
        """Bin what arrived since the last pass and rescore the windows it touched."""
        arrived: dict[Key, list[tuple[Any, ...]]] = {}
        while self._pending:
            version, x, classes, ood = self._pending.popleft()
            key = (version.name, version.number)
            if self._window(key, version) is not None:
                arrived.setdefault(key, []).append((x, classes, ood))
        for key, batches in arrived.items():
            window = self._windows[key]
            assert window is not None
            try:
                window.add_many(batches)
            except ValueError:  # inputs whose shapes differ cannot be joined: one by one
                for batch in batches:
                    window.add(*batch)
            snapshot = window.snapshot()
            snapshot["computed_at"] = time.time()
            self.state[key] = snapshot
            if self.gauge is not None:
                for feature, score in snapshot["scores"].items():
                    self.gauge.labels(key[0], str(key[1]), feature).set(score)

    def _window(self, key: Key, version: Any) -> Window | None:
        if key in self._windows:
            return self._windows[key]
        window = None
        if REFERENCE_FILE in version.manifest.get("files", {}):
            try:
                reference = json.loads((version.directory / REFERENCE_FILE).read_text())
                window = Window(reference, version.manifest.get("preprocessing"), self.window)
            except (OSError, ValueError, KeyError, TypeError) as error:
                logger.warning("%s version %d: reference unusable (%s)", *key, error)
        self._windows[key] = window
        self._sources[key] = version
        return window

    def window_of(self, key: Key) -> Window | None:
        return self._windows.get(key)

    def forget(self, keep: set[Key]) -> None:
        """Drop the windows of versions no longer served."""
        for key in [k for k in self._windows if k not in keep]:
            self._windows.pop(key, None)
            self.state.pop(key, None)
