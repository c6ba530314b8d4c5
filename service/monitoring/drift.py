"""Drift: the last ``drift_window`` items of each model version against its ``reference.json``.

The request path only appends the batch's model inputs and predicted classes (both already
computed), and the original sizes of uploaded images (a list of (width, height) the decoder
filled), to a bounded deque (``observe``, well under a microsecond). A thread wakes every
``drift_interval_s``, bins what arrived with ``modelspec.reference`` (the code training
summarised the training split with), writes the bins into a ring per feature and, once the
ring is full, scores each feature and the predicted classes by PSI: the gauge
``serving_drift_score{model,version,feature}``, ``/models/{m}`` (``drift``) and the PNG.

Workers share no memory, so each keeps its own windows and, after each pass, writes their bin
counts to ``drift-<pid>.json`` in the server's shared folder (its Prometheus multiprocess
folder, one per server). Each pass scores the counts of every live worker added together:
the scores, ``/models`` and the plot are the server's, whichever worker answers, and appear
once the workers together have seen ``drift_window`` items.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelspec.reference import (
    ALERT,
    PREDICTION,
    REFERENCE_FILE,
    SIZE_FEATURES,
    bin_count,
    binner,
    psi,
)
from service.startup import alive

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
        # When each slot was written (the pass's time): the workers' windows are merged by it,
        # so the server's window is its newest ``size`` items, not every worker's ``size``.
        self.stamps = {name: np.zeros(size, np.float64) for name in self.specs}
        self.seen = {name: 0 for name in self.specs}  # items written into each ring
        self.ood = np.zeros(size, np.bool_)
        self.ood_stamps = np.zeros(size, np.float64)
        self.ood_seen = 0
        self.now = time.time()  # the stamp of what is added now (Drift.count sets it)
        # Size rings fill only from uploaded images (tensors sent as numbers have no original
        # size), so their scores may appear later than the others', or never.
        self.sized = any(name in self.specs for name in SIZE_FEATURES)

    def _write(self, name: str, values: np.ndarray, seen: int | None = None) -> None:
        """Into the ring: the last ``size`` of ``values``; ``seen`` (default: as many as were
        written) is how many items they stand for."""
        values = values[-self.size :]
        start = self.seen[name] % self.size
        end = start + len(values)
        ring, stamps = self.rings[name], self.stamps[name]
        if end <= self.size:
            ring[start:end] = values
            stamps[start:end] = self.now
        else:
            split = self.size - start
            ring[start:] = values[:split]
            ring[: end - self.size] = values[split:]
            stamps[start:] = stamps[: end - self.size] = self.now
        self.seen[name] += len(values) if seen is None else seen

    def _flags(self, flags: np.ndarray, seen: int) -> None:
        index = (self.ood_seen + np.arange(len(flags))) % self.size
        self.ood[index] = flags
        self.ood_stamps[index] = self.now
        self.ood_seen += seen

    def add(
        self,
        x: np.ndarray | None,
        classes: np.ndarray | None,
        ood: np.ndarray | None,
        sizes: Any = None,
    ) -> None:
        if x is not None:
            for name, bins in self.bins(x).items():
                self._write(name, bins)
        if sizes is not None and self.sized:
            for name, bins in self.bins(None, sizes).items():
                self._write(name, bins)
        if classes is not None and PREDICTION in self.rings:
            self._write(PREDICTION, np.asarray(classes, np.int32))
        if ood is not None:
            flags = np.asarray(ood, np.bool_)[-self.size :]
            self._flags(flags, len(flags))

    def add_many(self, batches: list[tuple[Any, ...]]) -> None:
        """Several batches' ``(x, classes, ood, sizes)`` at once: the same rings and counts as
        ``add`` on each in turn, binned in one pass over only the items the window keeps.
        One ``add`` per single-digit request took 15% of a worker's CPU at c=32 (numpy's
        per-call cost, ~25 calls a batch); one per pass costs the same as one request."""
        for field in range(4):
            parts = [
                batch[field] for batch in batches if len(batch) > field and batch[field] is not None
            ]
            if not parts or (field == 1 and PREDICTION not in self.rings):
                continue
            if field == 3:
                if not self.sized:
                    continue
                parts = [np.asarray(part, np.int64).reshape(-1, 2) for part in parts]
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
            elif field == 3:
                for name, bins in self.bins(None, values).items():
                    self._write(name, bins, seen)
            else:
                self._flags(np.asarray(values, np.bool_)[-self.size :], seen)

    def _held(self, ring: np.ndarray, stamps: np.ndarray, seen: int) -> tuple[Any, Any]:
        """The ring's items and their stamps, oldest first."""
        filled = min(seen, self.size)
        order = np.argsort(stamps[:filled], kind="stable")
        return ring[:filled][order], stamps[:filled][order]

    def counts(self) -> dict[str, Any]:
        """What other workers add to their windows: per feature the bins of the items this
        window holds, oldest first, with their stamps as runs ``[stamp, items]``, and the OOD
        flags alike (as plain numbers, for JSON). A window of 1,000 digits filled in 100
        passes: 28 KB for its 4 features, 1.4 ms to make and write, 0.6 ms to merge with
        another worker's (one run)."""
        live = {}
        for name in self.specs:
            bins, stamps = self._held(self.rings[name], self.stamps[name], self.seen[name])
            live[name] = {"bins": bins.tolist(), "runs": _runs(stamps)}
        flags, stamps = self._held(self.ood, self.ood_stamps, self.ood_seen)
        return {
            "live": live,
            "seen": max(self.seen.values(), default=0),
            "ood": {"flags": flags.astype(np.int8).tolist(), "runs": _runs(stamps)},
        }

    def _newest(self, held: list[tuple[Any, Any]]) -> np.ndarray:
        """Of every worker's (values, stamps), the newest ``size`` values."""
        values = np.concatenate([v for v, _ in held])
        if len(values) <= self.size:
            return values
        stamps = np.concatenate([s for _, s in held])
        return values[np.argsort(stamps, kind="stable")[-self.size :]]

    def snapshot(self, others: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        """Scores of the newest ``size`` items of this window and ``others``' (other workers'
        ``counts()``) together."""
        scores, live, full = {}, {}, False
        for name, spec in self.specs.items():
            nbins = bin_count(spec)
            held = [self._held(self.rings[name], self.stamps[name], self.seen[name])]
            for other in others:
                theirs = _unpack(other["live"].get(name))
                if theirs is not None and (not len(theirs[0]) or theirs[0].max() < nbins):
                    held.append(theirs)
            newest = self._newest(held)
            live[name] = np.bincount(newest, minlength=nbins).tolist()
            if len(newest) >= self.size:
                scores[name] = round(psi(spec["counts"], live[name]), 4)
                full = True
        items = max(self.seen.values(), default=0) + sum(o.get("seen", 0) for o in others)
        held = [self._held(self.ood, self.ood_stamps, self.ood_seen)]
        held += [u for o in others if (u := _unpack(o.get("ood"), "flags")) is not None]
        flags = self._newest(held)
        return {
            "items": items,  # seen since the version was loaded, by every worker
            "full": full,
            "scores": scores,
            "drifted": sorted(n for n, s in scores.items() if s > ALERT),
            "live": live,
            "ood_rate": round(int(np.count_nonzero(flags)) / len(flags), 4) if len(flags) else None,
            "ood_items": len(flags),
            "workers": 1 + len(others),
        }


def _runs(stamps: np.ndarray) -> list[list[float]]:
    """Sorted stamps as ``[stamp, how many]`` runs (one per pass, not one per item)."""
    if not len(stamps):
        return []
    values, counts = np.unique(stamps, return_counts=True)
    return [[float(v), int(c)] for v, c in zip(values, counts, strict=True)]


def _unpack(shared: Any, field: str = "bins") -> tuple[np.ndarray, np.ndarray] | None:
    """Another worker's (values, stamps) of one feature; None when unreadable."""
    try:
        values = np.asarray(shared[field], np.int64)
        runs = np.asarray(shared["runs"], np.float64).reshape(-1, 2)
        stamps = np.repeat(runs[:, 0], runs[:, 1].astype(np.int64))
    except (KeyError, TypeError, ValueError):
        return None
    if values.ndim != 1 or len(stamps) != len(values) or (len(values) and values.min() < 0):
        return None
    return values, stamps


class Drift:
    def __init__(
        self, window: int, interval_s: float, gauge: Any = None, shared: Path | None = None
    ) -> None:
        self.window = window
        self.interval_s = interval_s
        self.gauge = gauge
        # The folder the server's workers exchange their counts through (None: this process
        # alone, as in tests and tools).
        self.shared = shared
        self.pid = os.getpid()
        self._pending: deque[tuple[Any, ...]] = deque(maxlen=MAX_PENDING_BATCHES)
        self._windows: dict[Key, Window | None] = {}  # None: no reference (no checks)
        self._sources: dict[Key, Any] = {}  # the Version each key was first seen with
        self.state: dict[Key, dict[str, Any]] = {}  # the latest snapshots, read by /models
        # The versions served now, handed over by the event loop (Monitor.flush): the counting
        # thread drops the windows of the others and scores these whether or not this worker
        # saw their traffic (other workers may have); it alone changes _windows.
        self.keep: dict[Key, Any] | None = None
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
        sizes: Any = None,
    ) -> None:
        """Keep a batch for the counting thread: one deque append. ``sizes``: the original
        (width, height) of each item when they were uploaded images, else None."""
        self._pending.append((version, x, classes, ood, sizes))

    # -- the counting thread ---------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="drift", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.shared is not None:
            (self.shared / f"drift-{self.pid}.json").unlink(missing_ok=True)

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval_s)
            try:
                self.count()
            except Exception:  # never let a bad batch stop the counting for good
                logger.exception("drift counting failed")

    def count(self) -> None:
        """Bin what arrived since the last pass, share this worker's counts, and rescore
        each window with every live worker's."""
        keep = self.keep
        if keep is not None:
            self.forget(frozenset(keep))
            for key, version in keep.items():
                self._window(key, version)
        arrived: dict[Key, list[tuple[Any, ...]]] = {}
        while self._pending:
            version, *batch = self._pending.popleft()
            key = (version.name, version.number)
            if self._window(key, version) is not None:
                arrived.setdefault(key, []).append(tuple(batch))
        now = time.time()
        for key, batches in arrived.items():
            window = self._windows[key]
            assert window is not None
            window.now = now
            try:
                window.add_many(batches)
            except ValueError:  # inputs whose shapes differ cannot be joined: one by one
                for batch in batches:
                    window.add(*batch)
        windows = {key: w for key, w in self._windows.items() if w is not None}
        others = self._share(windows)
        for key, window in windows.items():
            theirs = [counts[_name(key)] for counts in others if _name(key) in counts]
            if key not in arrived and not theirs and key in self.state:
                continue  # nothing new anywhere
            snapshot = window.snapshot(theirs)
            snapshot["computed_at"] = time.time()
            self.state[key] = snapshot
            if self.gauge is not None:
                for feature, score in snapshot["scores"].items():
                    self.gauge.labels(key[0], str(key[1]), feature).set(score)

    def _share(self, windows: dict[Key, Window]) -> list[dict[str, Any]]:
        """Write this worker's counts; read those of the other live workers."""
        if self.shared is None:
            return []
        mine = {_name(key): window.counts() for key, window in windows.items()}
        target = self.shared / f"drift-{self.pid}.json"
        try:
            temporary = target.with_suffix(".tmp")
            temporary.write_text(json.dumps(mine))
            os.replace(temporary, target)  # readers see the old file or the new, never half
        except OSError as error:
            logger.warning("drift counts not shared (%s)", error)
        others = []
        for path in self.shared.glob("drift-*.json"):
            pid = path.stem.removeprefix("drift-")
            if pid == str(self.pid) or not pid.isdigit() or not alive(int(pid)):
                continue
            try:
                others.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # gone or being replaced: next pass
                continue
        return others

    def _window(self, key: Key, version: Any) -> Window | None:
        if key in self._windows:
            return self._windows[key]
        window = self.reference_window(key, version)
        self._windows[key] = window
        self._sources[key] = version
        return window

    def reference_window(self, key: Key, version: Any) -> Window | None:
        """A new, empty window on the version's reference; None without one."""
        window = None
        if REFERENCE_FILE in version.manifest.get("files", {}):
            try:
                reference = json.loads((version.directory / REFERENCE_FILE).read_text())
                window = Window(reference, version.manifest.get("preprocessing"), self.window)
            except (OSError, ValueError, KeyError, TypeError) as error:
                logger.warning("%s version %d: reference unusable (%s)", *key, error)
        return window

    def window_of(self, key: Key) -> Window | None:
        return self._windows.get(key)

    def forget(self, keep: frozenset[Key]) -> None:
        """Drop the windows of versions no longer served (an unloaded version's window would
        stay in memory, and its scores on /metrics, for as long as the server runs). Their
        gauges go to 0, as serving_model_info's do: a multiprocess gauge cannot be removed."""
        for key in [k for k in self._windows if k not in keep]:
            self._windows.pop(key, None)
            self._sources.pop(key, None)
            state = self.state.pop(key, None) or {}
            if self.gauge is not None:
                for feature in state.get("scores", {}):
                    self.gauge.labels(key[0], str(key[1]), feature).set(0)


def _name(key: Key) -> str:
    return f"{key[0]}/{key[1]}"
