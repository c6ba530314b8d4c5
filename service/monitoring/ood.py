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

The detector runs through its own batcher, after the model: a flagged or unflagged answer
costs one more (batched) inference. When the detector is not served, or refuses (overload),
the answer still comes, with ``ood_score`` null and ``in_distribution`` true, and the reason
in ``/models/{m}`` (``ood.unavailable``): a prediction is never refused for want of a flag.
"""

from __future__ import annotations

import logging
from math import prod
from typing import Any

import numpy as np

from service.backends import Feed, Outputs
from service.errors import RequestError
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


class Detectors:
    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.unavailable: dict[str, str] = {}  # model -> why its flags are missing now
        self.flagged: dict[str, list[int]] = {}  # model -> [items, flagged] since start

    async def score(self, version: Any, signature: str, feed: Feed, outputs: Outputs) -> Outputs:
        """``outputs`` with ``ood_score`` and ``in_distribution`` added."""
        pairing = version.ood
        x = feed[version.signatures[signature].inputs[0].name]
        count = len(x)
        try:
            scores, threshold = await self._scores(pairing, x)
        except (Unusable, RequestError) as error:
            reason = str(error) if isinstance(error, Unusable) else error.message
            if self.unavailable.get(version.name) != reason:
                logger.warning("%s: no out-of-distribution flags (%s)", version.name, reason)
            self.unavailable[version.name] = reason
            return {
                **outputs,
                OOD_SCORE: np.full(count, np.nan, np.float32),
                IN_DISTRIBUTION: np.ones(count, np.bool_),
            }
        self.unavailable.pop(version.name, None)
        inside = scores <= threshold
        tally = self.flagged.setdefault(version.name, [0, 0])
        tally[0] += count
        tally[1] += int(count - inside.sum())
        return {**outputs, OOD_SCORE: scores.astype(np.float32), IN_DISTRIBUTION: inside}

    async def _scores(self, pairing: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, float]:
        served = self.registry.models.get(pairing["detector"])
        loaded = served.latest() if served is not None else None
        if loaded is None or loaded.version is None:
            raise Unusable(f"detector {pairing['detector']!r} is not served")
        detector = loaded.version
        signature = pairing.get("signature") or detector.default_signature
        if signature not in detector.signatures:
            raise Unusable(f"detector {detector.name!r} has no signature {signature!r}")
        score = pairing.get("score") or RECONSTRUCTION_MSE
        threshold = _threshold(pairing, detector, signature, score)
        spec = detector.signatures[signature].inputs[0]
        size = prod(d for d in spec.shape[1:] if d)
        items = np.asarray(x, np.float32).reshape(len(x), -1)
        if items.shape[1] != size or any(d is None for d in spec.shape[1:]):
            raise Unusable(
                f"detector input {spec.name!r} takes {size} values per item, not {items.shape[1]}"
            )
        detector_feed = {spec.name: items.reshape(len(x), *spec.shape[1:])}
        loaded.begin()
        try:
            ran = await loaded.batchers[signature].infer(detector_feed)
        finally:
            loaded.end()
        if score == RECONSTRUCTION_MSE:
            (rebuilt,) = ran.outputs.values()
            rebuilt = np.asarray(rebuilt, np.float32).reshape(len(x), -1)
            if rebuilt.shape[1] != size:
                raise Unusable("the detector's output is not the size of its input")
            return np.mean((rebuilt - items) ** 2, axis=1), threshold
        if score not in ran.outputs:
            raise Unusable(f"detector {detector.name!r} has no output {score!r}")
        return np.asarray(ran.outputs[score], np.float64).reshape(len(x)), threshold

    def describe(self, name: str, pairing: dict[str, Any] | None) -> dict[str, Any] | None:
        if pairing is None:
            return None
        items, flagged = self.flagged.get(name, [0, 0])
        return {
            **pairing,
            "items": items,
            "flagged": flagged,
            "rate": round(flagged / items, 4) if items else None,
            "unavailable": self.unavailable.get(name),
        }
