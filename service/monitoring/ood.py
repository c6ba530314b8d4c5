"""Out-of-distribution flags: another served model (the detector) scores each input of a
model's default signature, and an item scoring above the threshold is flagged.

The pairing comes from the model's manifest (``ood``; digits names the autoencoder trained
beside it) with ``models.<name>.ood`` of the settings over it, so a user can pair any model
with any detector: ``detector`` (a served model), ``signature`` (default: the detector's
default one), ``score`` (``reconstruction_mse``: the mean squared difference between the input
and the signature's one output, which must have the input's size; or the name of an output
with one score per item) and ``threshold`` (default: the detector manifest's
``detector.threshold``, which training sets to the 99th percentile of the test split's
scores).

The detector runs inside the model's batch job (``Detectors.scoring`` wraps the default
signature's run, ``service.registry.building``): the model on the stacked batch, then the
detector on the same batch, then every item's score at once, so each request's slice of the
outputs holds its ``ood_score`` and ``in_distribution``, with no second batcher round trip
(a queue, a future and a task switch per request). Measured on the 2-core machine with
digits V2 JSON at c=32, before and after in the same rounds (``benchmarks.feature_cost
--checkout``): the flag's cost, throughput with it off over on, fell from ~1.45x to ~1.1x,
and a worker's CPU per request from 376-388 to 268-278 us (``benchmarks.profile``); at
c=1 it is the detector's own inference, as before. The detector is looked up on every
batch, so a new detector version (or its removal) is followed at the next batch. When the
detector is not served, cannot score these inputs or fails, the answer still comes,
with ``ood_score`` NaN (null) and ``in_distribution`` true, and the reason in
``/models/{m}`` (``ood.unavailable``): a prediction is never refused for want of a flag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np

from service.backends import Feed, Outputs
from service.monitoring.names import IN_DISTRIBUTION, OOD_SCORE

logger = logging.getLogger(__name__)
RECONSTRUCTION_MSE = "reconstruction_mse"


class Unusable(Exception):
    """The detector cannot score this model's inputs (not served, wrong size, no threshold)."""


def _threshold(pairing: dict[str, Any], detector: Any, signature: str, score: str) -> float:
    if pairing.get("threshold") is not None:
        return float(pairing["threshold"])
    own = detector.manifest.get("detector")
    if (
        isinstance(own, dict)
        and own.get("signature", signature) == signature
        and own.get("score", score) == score
        and isinstance(own.get("threshold"), int | float)
    ):
        return float(own["threshold"])
    raise Unusable(
        f"no threshold: neither the settings nor {detector.name!r}'s manifest give one for "
        f"{signature}/{score}"
    )


@dataclass(frozen=True)
class _Plan:
    """How one detector version scores a paired model's items."""

    signature: str
    input: str  # the signature's input
    shape: tuple[int, ...]  # of one item
    size: int  # values per item
    score: str
    threshold: float


def _plan(pairing: dict[str, Any], detector: Any) -> _Plan:
    signature = pairing.get("signature") or detector.default_signature
    if signature not in detector.signatures:
        raise Unusable(f"detector {detector.name!r} has no signature {signature!r}")
    score = pairing.get("score") or RECONSTRUCTION_MSE
    threshold = _threshold(pairing, detector, signature, score)
    spec = detector.signatures[signature].inputs[0]
    if any(d is None for d in spec.shape[1:]):
        raise Unusable(f"detector input {spec.name!r} has free dimensions besides the batch")
    shape = tuple(spec.shape[1:])
    return _Plan(signature, spec.name, shape, prod(shape), score, threshold)


class Detectors:
    """The detectors' side of every paired model: the batch job that scores its items
    (``scoring``), the items counted per model (``count``), and why flags are missing."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry  # read on every batch: the detector's version is followed
        # (model, version) -> why its flags are missing now: per version, as the versions
        # of a model (traffic split, a shadow) run side by side, each with its own pairing
        self.unavailable: dict[tuple[str, int], str] = {}
        self.flagged: dict[str, list[int]] = {}  # model -> [items, flagged] since start
        # model version -> (the detector version it was worked out for, its plan or why
        # not); weak, so a retired model version's entry goes with it. Why not is kept as
        # text: one exception object raised again on every batch would grow its traceback
        # by that batch's frames, and keep their inputs, each time.
        self._plans: WeakKeyDictionary[Any, tuple[Any, _Plan | str]] = WeakKeyDictionary()

    def scoring(self, version: Any, run: Callable[[Feed], Outputs]) -> Callable[[Feed], Outputs]:
        """The batch job of ``version``'s default signature: ``run`` (the model), then the
        detector on the same stacked batch, its scores and flags added as two more outputs
        that the batcher slices per request like the model's own."""
        name = version.signatures[version.default_signature].inputs[0].name

        def run_and_score(feed: Feed) -> Outputs:
            return {**run(feed), **self.score(version, feed[name])}

        return run_and_score

    def score(self, version: Any, x: np.ndarray) -> Outputs:
        """``ood_score`` and ``in_distribution`` of a batch of the model's first input. Runs
        in the batch job: on the event loop or in the batcher's worker thread, so it only
        sets or drops one dict entry of shared state (atomic under the GIL); the counts are
        kept by ``count``, on the event loop."""
        count, key = len(x), (version.name, version.number)
        try:
            scores, threshold = self._scores(version, x)
            flagged = {OOD_SCORE: scores.astype(np.float32), IN_DISTRIBUTION: scores <= threshold}
        except Exception as error:  # Unusable, or a detector whose answer is not numbers:
            # the model's batch is answered all the same, unflagged, never failed for it
            if isinstance(error, Unusable):
                reason = str(error)
            else:
                text = " ".join(str(error).split())[:200] or type(error).__name__
                reason = f"the detector's answer could not be scored: {text}"
            if self.unavailable.get(key) != reason:
                logger.warning("%s: no out-of-distribution flags (%s)", version.name, reason)
                self.unavailable[key] = reason
            return {
                OOD_SCORE: np.full(count, np.nan, np.float32),
                IN_DISTRIBUTION: np.ones(count, np.bool_),
            }
        if key in self.unavailable:
            self.unavailable.pop(key, None)
        return flagged

    def count(self, name: str, items: int, inside: int) -> None:
        """One answer's scored items (on the event loop), for ``/models`` (``describe``)."""
        tally = self.flagged.get(name)
        if tally is None:
            tally = self.flagged[name] = [0, 0]
        tally[0] += items
        tally[1] += items - inside

    def _scores(self, version: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
        pairing = version.ood
        served = self.registry.models.get(pairing["detector"])
        loaded = served.latest() if served is not None else None
        if loaded is None or loaded.version is None:
            raise Unusable(f"detector {pairing['detector']!r} is not served")
        # What the pairing needs of this detector version is worked out once per detector
        # version (a new one, or the same number loaded again, is a new Loaded): all but
        # the detector's own run took 30 us of a one-item batch's scoring worked out each
        # time, 17-21 us with the plan and np.vecdot (timeit, this busy 2-core machine).
        cached = self._plans.get(version)
        if cached is None or cached[0] is not loaded:
            try:
                plan: _Plan | str = _plan(pairing, loaded.version)
            except Unusable as error:
                plan = str(error)
            cached = self._plans[version] = (loaded, plan)
        plan = cached[1]
        if isinstance(plan, str):
            raise Unusable(plan)
        count = len(x)
        if x.size != count * plan.size:
            raise Unusable(
                f"detector input {plan.input!r} takes {plan.size} values per item, "
                f"not {x.size // count}"
            )
        if x.dtype.kind not in "biuf":
            raise Unusable(f"detector input {plan.input!r} takes numbers, not {x.dtype}")
        items = x.reshape(count, plan.size)
        if items.dtype != np.float32:
            items = items.astype(np.float32)
        # The detector's own graph, not its batcher: this batch is already one batch. A
        # version retired meanwhile has cleared its backends (None: not served); a backend
        # held here stays usable until this run returns.
        backend = loaded.backends.get(plan.signature)
        if backend is None:
            raise Unusable(f"detector {pairing['detector']!r} is not served")
        try:
            ran = backend.run({plan.input: items.reshape(count, *plan.shape)})
        except Exception as error:  # the prediction is answered all the same, unflagged
            text = " ".join(str(error).split())[:200] or type(error).__name__
            raise Unusable(f"detector {loaded.version.name!r} failed: {text}") from None
        if plan.score == RECONSTRUCTION_MSE:
            rebuilt = next(iter(ran.values()))
            if len(ran) != 1 or rebuilt.size != count * plan.size:
                raise Unusable("the detector's output is not the size of its input")
            # The whole batch at once: each row's squared distance, one C loop (np.vecdot:
            # 1.6 us for one item, 5.5 us for 32, where mean((a - b) ** 2, axis=1) took 7
            # and 16 us, timeit).
            difference = np.subtract(rebuilt.reshape(count, plan.size), items)
            return np.vecdot(difference, difference) / plan.size, plan.threshold
        found = ran.get(plan.score)
        if found is None or found.size != count:
            raise Unusable(
                f"detector {loaded.version.name!r} has no output {plan.score!r} of one per item"
            )
        return np.asarray(found, np.float64).reshape(count), plan.threshold

    def describe(
        self, name: str, pairing: dict[str, Any] | None, number: int | None = None
    ) -> dict[str, Any] | None:
        """``ood`` of ``/models/{m}``: the pairing of version ``number`` (the latest), the
        model's items counted since start, and why that version's flags are missing."""
        if pairing is None:
            return None
        items, flagged = self.flagged.get(name, [0, 0])
        return {
            **pairing,
            "items": items,
            "flagged": flagged,
            "rate": round(flagged / items, 4) if items else None,
            "unavailable": self.unavailable.get((name, number)) if number is not None else None,
        }
