"""Safe roll-outs inside one process: version labels, weighted traffic, sticky routing keys,
and shadow traffic whose answers are compared with the live ones.

A model's roll-out settings come from three places, each later one winning key by key:
``serving.yaml``'s ``models.<name>`` (one machine), the repository's
``<model>/config.yaml`` (read at every poll by every replica: the fleet-wide way), and the
repository API's ``routing`` call (labels and traffic, on one server, until ``config.yaml``
next changes). A ``config.yaml`` that does not validate changes nothing: the last good
settings stay, and the error is in ``/models``, the log and ``serving_model_config_valid``.

- **Labels** name versions (``stable: 1``). A label, a weight or a shadow naming a version
  that is not ready is refused, as TF Serving refuses it; the settings before stay, and the
  check runs again at every poll, so a label applies once its version is ready.
- **Traffic**: a request that names no version is sent to a version drawn by the weights. A
  request with an ``x-routing-key`` header (gRPC metadata too) draws from a hash of the key
  instead of a random number, so one key gets one version while the weights stay as they are.
  The versions' shares are laid out in version order on [0, 1): moving weight from one
  version to the next moves only the keys in the slice that changes hands.
- **Shadow**: a sampled share of live requests is run again on the shadow version, after
  the live answer is made, through the shadow version's own batcher (shadow items batch
  together; a graph slower than 1 ms a batch runs in the batcher's thread, off the event
  loop). A shadow run in a thread of its own, unbatched, measured worse: at sample 1.0 on 8
  connections 663 requests/s against 844 (``benchmarks/rollout.py``, two runs on this busy
  2-core machine; 1,326 and 1,302 without a shadow). The
  answers are compared (top class or decision, and the largest and mean absolute difference
  of every numeric output) into ``serving_shadow_*`` metrics and ``/models``. Shadow work
  is a bounded set of tasks, dropped first: never more than
  ``SHADOW_MAX_IN_FLIGHT`` per worker, none while the worker holds more than half the
  requests it takes or the shadow version's queue holds a full batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from pydantic import ValidationError

from service.config import ModelConfig, ModelFileConfig, check_routing
from service.monitoring.names import OOD_OUTPUTS

if TYPE_CHECKING:
    from service.batching import Batcher
    from service.descriptor import Version
    from service.metrics import Metrics
    from service.registry.lookup import Loaded, ServedModel

logger = logging.getLogger(__name__)

ROUTING_KEY = "x-routing-key"  # header (and gRPC metadata) of a sticky request
VERSION_HEADER = "x-model-version"  # on every inference answer: the version that produced it
# Shadow runs held at once per worker: a slow or stuck shadow version costs at most this many
# queued requests, never a live one's place.
SHADOW_MAX_IN_FLIGHT = 8
ROLLOUT_KEYS = ("version_policy", "labels", "traffic", "shadow")
# Series that exist only once shadow traffic has flowed: tests/test_rollout.py checks that the
# dashboard's and rules' uses of them are real, on its server.
SHADOW_METRICS = (
    "serving_shadow_requests_total",
    "serving_shadow_items_total",
    "serving_shadow_agreed_items_total",
    "serving_shadow_max_abs_diff",
    "serving_shadow_abs_diff_sum_total",
)


def read_file(data: bytes) -> ModelFileConfig:
    """A ``config.yaml``'s settings; ValueError with one line naming what is wrong."""
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as error:
        raise ValueError(f"not YAML: {' '.join(str(error).split())[:200]}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ValueError("expected a mapping of version_policy, labels, traffic, shadow")
    try:
        return ModelFileConfig.model_validate(document)
    except ValidationError as error:
        raise ValueError(_problems(error)) from None


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg'].removeprefix('Value error, ')}"
        for e in error.errors()
    )


def merge(
    base: ModelConfig, file: ModelFileConfig | None, override: dict[str, Any] | None
) -> tuple[ModelConfig, dict[str, str]]:
    """The settings in force and where each roll-out key came from: ``serving.yaml``, then
    every key ``config.yaml`` sets, then the repository API's labels and traffic. ValueError
    when the labels, weights and shadow do not refer to each other coherently."""
    update: dict[str, Any] = {}
    sources = {key: "serving.yaml" for key in ROLLOUT_KEYS}
    if file is not None:
        for key in ROLLOUT_KEYS:
            if getattr(file, key) is not None:
                update[key] = getattr(file, key)
                sources[key] = "config.yaml"
    for key in ("labels", "traffic"):
        if override is not None and override.get(key) is not None:
            update[key] = override[key]
            sources[key] = "repository API"
    merged = base.model_copy(update=update)
    check_routing(merged.labels, merged.traffic, merged.shadow)
    return merged, sources


def _number(text: str, labels: dict[str, int]) -> int:
    return labels[text] if text in labels else int(text)


def sticky_point(key: str) -> float:
    """A routing key's place on [0, 1): the same on every worker and replica (no per-process
    hash seed), spread evenly."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Routing:
    """The labels, split and shadow a model's requests follow now."""

    labels: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)  # as configured
    versions: tuple[int, ...] = ()  # the split's versions, in order...
    bounds: tuple[float, ...] = ()  # ...and the upper end of each one's share of [0, 1)
    shadow_target: str | None = None
    shadow_version: int | None = None
    sample: float = 0.0

    def pick(self, key: str | None) -> int | None:
        """The version for a request naming none (None: no weights, the latest ready)."""
        if not self.versions:
            return None
        point = sticky_point(key) if key else random.random()
        return self.versions[min(bisect_right(self.bounds, point), len(self.versions) - 1)]

    def shares(self) -> dict[str, float]:
        low, shares = 0.0, {}
        for number, high in zip(self.versions, self.bounds, strict=True):
            shares[str(number)] = round(100 * (high - low), 3)
            low = high
        return shares


def _named(config: ModelConfig) -> list[tuple[str, int]]:
    """Each label, weight and shadow target of ``config``, with the version it names."""
    labels = dict(config.labels)
    named = [(f"label {label!r}", number) for label, number in labels.items()]
    named += [(f"traffic {key!r}", _number(key, labels)) for key in config.traffic]
    if config.shadow is not None:
        target = config.shadow.target
        named.append((f"shadow target {target!r}", _number(target, labels)))
    return named


def check_policy_keeps(config: ModelConfig, published: Collection[int]) -> None:
    """ValueError naming each label, weight or shadow whose version is published but not
    one ``config``'s own version policy serves: taking that policy would retire the version
    while the routing still named it (all traffic to the others, a label answering 404), so
    settings that do both are refused whole, and change nothing. A version not published
    yet is no conflict: its routing waits for it to be ready."""
    served = config.version_policy.choose(sorted(published)) if published else set()
    dropped = [
        f"{what} names version {number}, which its version policy would stop serving"
        for what, number in _named(config)
        if number in published and number not in served
    ]
    if dropped:
        raise ValueError("; ".join(dropped))


def routing_for(config: ModelConfig, ready: set[int], states: dict[int, str]) -> Routing:
    """The routing ``config`` asks for; ValueError naming every label, weight or shadow whose
    version is not ready (TF Serving refuses a label on a version not available)."""
    labels = dict(config.labels)
    problems = [
        f"{what} names version {number}, which is not ready "
        f"({states.get(number, 'not served by the version policy')})"
        for what, number in _named(config)
        if number not in ready
    ]
    if problems:
        raise ValueError("; ".join(problems))
    by_version: dict[int, float] = {}
    for key, weight in config.traffic.items():
        number = _number(key, labels)
        by_version[number] = by_version.get(number, 0.0) + weight
    shadow_version = _number(config.shadow.target, labels) if config.shadow else None
    total = sum(by_version.values())
    versions, bounds, running = [], [], 0.0
    for number in sorted(by_version):
        if by_version[number] > 0:
            running += by_version[number] / total
            versions.append(number)
            bounds.append(running)
    if bounds:
        bounds[-1] = 1.0  # no gap at the top from rounding
    return Routing(
        labels=labels,
        weights=dict(config.traffic),
        versions=tuple(versions),
        bounds=tuple(bounds),
        shadow_target=config.shadow.target if config.shadow else None,
        shadow_version=shadow_version,
        sample=config.shadow.sample if config.shadow else 0.0,
    )


# -- shadow traffic ------------------------------------------------------------------------


@dataclass
class OutputDiff:
    max_abs: float = 0.0
    mean_abs_sum: float = 0.0  # sum over items of each item's mean absolute difference
    items: int = 0


@dataclass
class PairStats:
    """One (live version, shadow version) pair of a model, in this worker."""

    kind: str | None = None  # "top_class", "decision", or None (not a classifier)
    compared: int = 0
    failed: int = 0
    drops: Counter[str] = field(default_factory=Counter)  # by reason: busy, load, unavailable
    items: int = 0
    agreed: int = 0
    outputs: dict[str, OutputDiff] = field(default_factory=dict)
    last_error: str | None = None
    seconds: float = 0.0
    # What Prometheus holds already: the counts are handed over by ``Shadows.flush`` (twice
    # a second, with the service's other metrics), not per run (3-6 us per write).
    flushed: dict[str, float] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def counts(self) -> dict[str, float]:
        """Every count Prometheus is handed, by key."""
        found = {"compared": self.compared, "failed": self.failed, "items": self.items,
                 "agreed": self.agreed}  # fmt: skip
        found.update({f"dropped_{reason}": n for reason, n in self.drops.items()})
        found.update({f"diff {name}": d.mean_abs_sum for name, d in self.outputs.items()})
        return found

    def describe(self) -> dict[str, Any]:
        return {
            "requests": {
                "compared": self.compared,
                "failed": self.failed,
                "dropped": self.dropped,
                "dropped_by_reason": dict(self.drops),
            },
            "items": self.items,
            "agreement": round(self.agreed / self.items, 6) if self.items and self.kind else None,
            "agreement_of": self.kind,
            "outputs": {
                name: {
                    "max_abs_diff": d.max_abs,
                    "mean_abs_diff": d.mean_abs_sum / d.items if d.items else None,
                }
                for name, d in sorted(self.outputs.items())
            },
            "mean_shadow_seconds": round(self.seconds / self.compared, 6)
            if self.compared
            else None,
            "last_error": self.last_error,
        }


class Shadows:
    """Shadow runs of this worker: bounded, fire-and-forget, compared when they finish."""

    def __init__(self, metrics: Metrics, timeout_s: float, max_concurrency: int) -> None:
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.busy_above = max_concurrency // 2
        self.in_flight = 0
        self.pairs: dict[tuple[str, int, int], PairStats] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        metrics.flushers.append(self.flush)

    def pair(self, model: str, live: int, shadow: int) -> PairStats:
        key = (model, live, shadow)
        found = self.pairs.get(key)
        if found is None:
            found = self.pairs[key] = PairStats()
        return found

    def offer(
        self,
        model: ServedModel,
        live: Loaded,
        signature: str,
        feed: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        live_requests: int,
    ) -> None:
        """Maybe run this request on the shadow version too (called once the live answer is
        made; returns at once)."""
        routing = model.routing
        if routing.shadow_version is None or live.number == routing.shadow_version:
            return
        if routing.sample < 1.0 and random.random() >= routing.sample:
            return
        target = model.versions.get(routing.shadow_version)
        stats = self.pair(model.name, live.number, routing.shadow_version)
        batcher = target.shadow_batcher(signature) if target is not None else None
        reason = None
        if target is None or target.version is None or batcher is None:
            reason = "unavailable"
        elif self.in_flight >= SHADOW_MAX_IN_FLIGHT:
            reason = "busy"
        elif live_requests > self.busy_above or batcher.queued >= batcher.config.max_batch_size:
            reason = "load"
        if reason is not None:
            stats.drops[reason] += 1
            return
        self.in_flight += 1
        target.begin()
        task = asyncio.get_running_loop().create_task(
            self._run(model.name, live, target, batcher, signature, feed, outputs, stats)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        model: str,
        live: Loaded,
        target: Loaded,
        batcher: Batcher,
        signature: str,
        feed: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        stats: PairStats,
    ) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                ran = await batcher.infer(feed)
            assert live.version is not None and target.version is not None
            self._compare(live, target, signature, outputs, ran.outputs, stats)
            stats.compared += 1
            stats.seconds += time.perf_counter() - started
        except Exception as error:  # the shadow's failure is counted, never the client's
            stats.failed += 1
            stats.last_error = " ".join(str(error).split())[:200] or type(error).__name__
        finally:
            self.in_flight -= 1
            target.end()

    @staticmethod
    def _compare(
        live: Loaded,
        target: Loaded,
        signature: str,
        ours: dict[str, np.ndarray],
        theirs: dict[str, np.ndarray],
        stats: PairStats,
    ) -> None:
        live_version: Version = live.version  # type: ignore[assignment]
        shadow_version: Version = target.version  # type: ignore[assignment]
        items = len(next(iter(ours.values())))
        found = []
        for name, value in ours.items():
            if name in OOD_OUTPUTS:
                continue  # the detector's flags, scored in the batch job: not the model's answer
            other = theirs.get(name)
            if other is None or other.shape != value.shape:
                shape = None if other is None else other.shape
                raise ValueError(f"output {name!r}: shadow gave {shape}, live {value.shape}")
            if value.dtype.kind not in "fiu" or other.dtype.kind not in "fiu" or not value.size:
                continue
            diff = np.abs(value.astype(np.float64) - other.astype(np.float64))
            # The sum of each item's mean difference: every item has size/items values.
            total = float(diff.sum()) / (value.size // items)
            if not np.isfinite(total):
                raise ValueError(f"output {name!r}: the shadow's answer is not finite")
            found.append((name, float(diff.max()), total))
        answer = live_version.views[signature].answer
        mine = answer.classes(ours, live_version)
        agreed = 0
        if mine is not None:
            other_classes = shadow_version.views[signature].answer.classes(theirs, shadow_version)
            stats.kind = "decision" if "decision" in live_version.manifest else "top_class"
            agreed = int((np.asarray(mine) == np.asarray(other_classes)).sum())
        for name, largest, total in found:  # counted only once the whole answer compared
            kept = stats.outputs.setdefault(name, OutputDiff())
            kept.max_abs = max(kept.max_abs, largest)
            kept.mean_abs_sum += total
            kept.items += items
        stats.items += items
        stats.agreed += agreed

    def flush(self) -> None:
        """Hand the counts since the last flush to Prometheus (``Metrics.flush``)."""
        metrics = self.metrics
        for (model, live, shadow), stats in list(self.pairs.items()):
            pair = (model, str(live), str(shadow))
            for key, value in stats.counts().items():
                added = value - stats.flushed.get(key, 0)
                if (not added and key in stats.flushed) or (key == "agreed" and not stats.kind):
                    continue  # (a series is made at its first flush, even at 0)
                stats.flushed[key] = value
                if key == "items":
                    metrics.shadow_items.labels(*pair).inc(added)
                elif key == "agreed":
                    metrics.shadow_agreed.labels(*pair, stats.kind).inc(added)
                elif key.startswith("diff "):
                    metrics.shadow_abs_diff_sum.labels(*pair, key[5:]).inc(added)
                else:
                    metrics.shadow_requests.labels(*pair, key).inc(added)
            for name, kept in stats.outputs.items():
                metrics.shadow_max_abs_diff.labels(*pair, name).set(kept.max_abs)

    def describe(self, model: ServedModel) -> dict[str, Any] | None:
        """The shadow's part of ``/models``: its target and this worker's comparisons."""
        routing = model.routing
        if routing.shadow_version is None:
            return None
        pairs = [
            {"live_version": live, "shadow_version": shadow, **stats.describe()}
            for (name, live, shadow), stats in sorted(self.pairs.items())
            if name == model.name and shadow == routing.shadow_version
        ]
        best = max(pairs, key=lambda p: p["items"], default=None)
        return {
            "target": routing.shadow_target,
            "version": routing.shadow_version,
            "sample": routing.sample,
            "in_flight": self.in_flight,
            "agreement": best["agreement"] if best else None,
            "agreement_of": best["agreement_of"] if best else None,
            "pairs": pairs,
        }

    async def drain(self) -> None:
        """Wait for the shadow runs in progress (at shutdown, and in tests)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
