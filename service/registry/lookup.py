"""Lookup: the models this process serves as requests find them.

A model (``ServedModel``) by name, the version a request runs on (a number, a label, drawn by
the traffic weights, else the latest ready), and each version in this process (``Loaded``):
its state, the requests it holds, its closing once retired. The versions get here through
``service.registry.following``; ``service.registry.building`` makes them runnable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.backends import Backend
from service.batching import Batcher
from service.config import ModelConfig, Settings
from service.descriptor import Version
from service.errors import NotFound, Unavailable
from service.inputs.numbers import ascii_int
from service.rollout import Routing, check_policy_keeps, merge, routing_for

if TYPE_CHECKING:
    from service.mirror import Mirror

# The registry's log lines keep the logger name they had before it was split in three.
logger = logging.getLogger("service.models")

LOADING, READY, FAILED, UNLOADING, UNLOADED = "loading", "ready", "failed", "unloading", "unloaded"
# A model folder holding no published version (an export under way, or one that failed
# half-way): shown in /models, but it does not hold the service out of readiness (below).
EMPTY = "no_published_version"


class NotAVersion(int):
    """A version that is not a number (``?version=v1``): no version has it, so the model's
    own lookup answers 404 ``unknown_version`` with the versions it serves; it prints as the
    client's text."""

    text: str

    def __new__(cls, text: str) -> NotAVersion:
        number = super().__new__(cls, -1)
        number.text = text[:40]
        return number

    def __repr__(self) -> str:
        return repr(self.text)

    __str__ = __repr__


def version_number(text: str | None) -> int | None:
    """A version from a URL or ``?version=`` (every protocol reads them so), or None when
    not given; anything but ASCII digits (an empty value too) is a ``NotAVersion``, refused
    where the model is known."""
    if text is None:
        return None
    number = ascii_int(text)
    if number is None:
        return NotAVersion(text)
    return number


@dataclass
class Loaded:
    """One version in this process: description, graphs, batchers, state and requests held."""

    model: str
    number: int
    stamp: Any  # what changes when the version does: following._stamp, Mirror.stamp
    state: str = LOADING
    reason: str | None = None
    version: Version | None = None
    backends: dict[str, Backend] = field(default_factory=dict)
    batchers: dict[str, Batcher] = field(default_factory=dict)
    # Shadow traffic's, where it differs: a flagged signature's batch job without its OOD
    # detector (a shadow's flags are never compared, service.rollout), so a shadow at sample
    # 1.0 does not run the detector a second time for every live request.
    shadow_batchers: dict[str, Batcher] = field(default_factory=dict)
    backend: str | None = None
    provider: str | None = None
    load_seconds: float | None = None
    since: float | None = None  # unix time it went live
    in_flight: int = 0

    def begin(self) -> None:
        self.in_flight += 1

    def end(self) -> None:
        self.in_flight -= 1
        if self.state == UNLOADING and self.in_flight == 0:
            self.close()

    def retire(self) -> None:
        """Take no new requests; close once the ones held are answered."""
        if self.state == READY:
            self.state = UNLOADING
            if self.in_flight == 0:
                self.close()

    def shadow_batcher(self, signature: str) -> Batcher | None:
        return self.shadow_batchers.get(signature) or self.batchers.get(signature)

    def close(self) -> None:
        for batcher in (*self.batchers.values(), *self.shadow_batchers.values()):
            batcher.close()
        self.batchers.clear()
        self.shadow_batchers.clear()
        self.backends.clear()
        self.state = UNLOADED
        logger.info("model %s version %d unloaded", self.model, self.number)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "version": self.number,
            "state": self.state,
            "reason": self.reason,
        }
        if self.version is not None:
            described["profile"] = self.version.profile
        if self.state == READY:
            described.update(backend=self.backend, provider=self.provider)
            described["load_seconds"] = self.load_seconds
            if self.since is not None:
                since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))
                described["serving_since"] = since
        return described


class ServedModel:
    """One model name: its settings and every version this process knows of."""

    def __init__(self, name: str, config: ModelConfig) -> None:
        self.name = name
        self.base = config  # serving.yaml's models.<name> (or the defaults)
        self.config = config  # in force: base, then config.yaml, then the repository API
        self.sources = {key: "serving.yaml" for key in ("version_policy", "labels", "traffic")}
        self.file: Any = None  # the last good config.yaml (ModelFileConfig), None: no file
        self.file_digest: str | None = None  # sha256 of config.yaml as last read
        self.file_error: str | None = None
        self.override: dict[str, Any] | None = None  # the repository API's labels, traffic
        self.routing = Routing()
        self.routing_error: str | None = None
        self.versions: dict[int, Loaded] = {}
        self.unloaded = False  # by the repository API
        self.missing_reason: str | None = None
        # The versions published at the last scan (None: none yet)
        self.published_numbers: frozenset[int] | None = None
        self._ready: list[Loaded] = []

    def settle(self) -> None:
        """Note which versions are ready, after the registry changed any (the request path
        reads this list rather than sorting the versions each time)."""
        self._ready = sorted(
            (v for v in self.versions.values() if v.state == READY), key=lambda v: v.number
        )

    @property
    def ready_versions(self) -> list[Loaded]:
        return [v for v in self._ready if v.state == READY]

    def latest(self) -> Loaded | None:
        """The highest version that is ready."""
        for loaded in reversed(self._ready):
            if loaded.state == READY:  # retired since the list was made: skip it
                return loaded
        return None

    @property
    def published(self) -> bool:
        """Its folder held a published version at the last scan (or none was made yet)."""
        return self.published_numbers is None or bool(self.published_numbers)

    @property
    def state(self) -> str:
        if self.latest() is not None:
            return READY
        if self.unloaded:
            return UNLOADED
        states = {v.state for v in self.versions.values()}
        if not states and not self.published:
            return EMPTY
        return LOADING if LOADING in states else FAILED

    @property
    def reason(self) -> str | None:
        if self.state == READY:
            return None
        if self.unloaded:
            return "unloaded through the repository API"
        failed = [v for v in self.versions.values() if v.state == FAILED]
        if failed:
            return failed[-1].reason
        return self.missing_reason

    def number_of(self, number: int) -> int:
        """A version number, or the version a label names (``NotAVersion`` carries the
        client's text); a 404 listing the versions and labels for a label not set."""
        if not isinstance(number, NotAVersion):
            return number
        found = self.routing.labels.get(number.text)
        if found is None:
            served = [v.number for v in self.ready_versions]
            raise NotFound(
                "unknown_version",
                f"model {self.name!r} has no version or label {number.text!r}",
                field="version",
                expected=f"one of {served} or a label of {sorted(self.routing.labels)}",
            )
        return found

    def route(self, number: int | None, key: str | None) -> Loaded:
        """The version an inference request runs on: the one it names (a number or a
        label), else one drawn by the traffic weights (from ``key`` when given: sticky),
        else the latest ready. A drawn version retired since the weights were set gives way
        to the latest ready one."""
        if number is None and self.routing.versions:  # a traffic split is set (service.rollout)
            drawn = self.routing.pick(key)
            if drawn is not None:
                found = self.versions.get(drawn)
                if found is not None and found.state == READY:
                    return found
        return self.resolve(number)

    def resolve(self, number: int | None) -> Loaded:
        """The version a request asks for (the latest ready when none): a 404 for one not
        served, a 503 while it loads or when it could not be loaded."""
        if number is not None:
            number = self.number_of(number)
        if number is None:
            found = self.latest()
            if found is not None:
                return found
            if self.state == LOADING:
                raise Unavailable(
                    "model_loading", f"model {self.name!r} is loading", headers={"Retry-After": "5"}
                )
            raise Unavailable(
                "model_unavailable", f"model {self.name!r} is not available: {self.reason}"
            )
        found = self.versions.get(number)
        if found is not None and found.state == READY:
            return found
        if found is not None and found.state == LOADING:
            raise Unavailable(
                "model_loading",
                f"version {number} of {self.name!r} is loading",
                headers={"Retry-After": "5"},
            )
        raise self.unknown_version(number)

    def unknown_version(self, number: int) -> NotFound:
        """404 for a version this model does not serve, with the versions it does."""
        served = [v.number for v in self.ready_versions]
        return NotFound(
            "unknown_version",
            f"version {number} of model {self.name!r} is not served",
            field="version",
            expected=f"one of {served}" if served else "no version is served now",
        )

    def describe(self) -> dict[str, Any]:
        """What ``GET /models`` shows: the latest version's interface, and every version."""
        latest = self.latest()
        described: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "reason": self.reason,
            "version": latest.number if latest else None,
            "backend": latest.backend if latest else None,
            "provider": latest.provider if latest else None,
            "versions": [v.describe() for _, v in sorted(self.versions.items())],
            "version_policy": self.config.version_policy.describe(),
            "batching": self.config.batching.model_dump(),
            **self.describe_routing(),
        }
        if latest is not None and latest.version is not None:
            described.update(latest.version.describe())
            described["version"] = latest.number
            batcher = next(iter(latest.batchers.values()), None)
            offload_from = batcher.offload_from if batcher else None
            described["batching"] = {
                **described["batching"],
                "offload": offload_from is not None,
                "offload_from_items": offload_from,  # batches of this many items or more
            }
        return described

    def describe_routing(self) -> dict[str, Any]:
        """Labels, traffic and where they came from, and the config.yaml's state."""
        routing = self.routing
        latest = self.latest()
        return {
            "version_labels": dict(sorted(routing.labels.items())),
            "traffic": {
                "weights": routing.weights or None,
                # each version's share of the requests that name none
                "split": routing.shares()
                if routing.versions
                else ({str(latest.number): 100.0} if latest else {}),
                "routing_key_header": "x-routing-key",
            },
            "rollout_sources": dict(self.sources),
            "config_file": {
                "present": self.file is not None or self.file_digest is not None,
                "sha256": self.file_digest,  # of the file as last read, taken or refused
                "valid": self.file_error is None and self.routing_error is None,
                "error": self.file_error or self.routing_error,
            },
        }

    @property
    def override_in_force(self) -> dict[str, Any] | None:
        """The repository API's labels and traffic, until config.yaml changes after them."""
        if self.override is None or self.override.get("file_digest") != self.file_digest:
            return None
        return self.override

    def apply(self, route: bool = True) -> None:
        """Put the settings in force: serving.yaml, config.yaml, the repository API (the
        version policy at once; labels, weights and shadow only once every version they
        name is ready, else the routing before stays and the refusal is reported). Settings
        whose policy would retire a published version their routing names are refused
        whole (``check_policy_keeps``)."""
        try:
            merged, sources = merge(self.base, self.file, self.override_in_force)
            check_policy_keeps(merged, self.published_numbers or ())
        except ValueError as error:
            if self.routing_error != f"config.yaml: {error}":
                logger.error("model %s: settings refused, the last good stay: %s", self.name, error)
            self.routing_error = f"config.yaml: {error}"
            return
        self.config, self.sources = merged, sources
        if not route:
            return
        ready = {v.number for v in self.ready_versions}
        states = {n: v.state for n, v in self.versions.items()}
        try:
            routing = routing_for(merged, ready, states)
        except ValueError as error:
            if self.routing_error != str(error):
                logger.error("model %s: roll-out settings refused: %s", self.name, error)
            self.routing_error = str(error)
            return
        if routing != self.routing:
            logger.info(
                "model %s: labels %s, traffic %s, shadow %s",
                self.name,
                routing.labels,
                routing.shares() or "latest",
                routing.shadow_version,
            )
        self.routing, self.routing_error = routing, None


class Lookup:
    """Every model this process serves, by name, as requests see them (``Registry``, in
    ``service.registry.following``, keeps them in step with the repository)."""

    config: Settings
    mirror: Mirror | None
    models: dict[str, ServedModel]

    def find(self, name: str) -> ServedModel:
        """The model of that name, whatever its state; a 404 otherwise."""
        model = self.models.get(name)
        if model is None:
            raise NotFound(
                "unknown_model", f"no model named {name[:80]!r}", expected=str(sorted(self.models))
            )
        return model

    def resolve(self, name: str, number: int | None) -> Loaded:
        return self.find(name).resolve(number)

    def _holds_readiness(self, model: ServedModel) -> bool:
        """Whether this model keeps the service out of readiness. A folder with no published
        version does not, unless the configuration names the model: in a fleet one half-made
        folder (an export under way or interrupted) must not take every replica out of the
        load balancer; ``/models`` shows it. A version that failed, or one still loading, does."""
        if model.state in (READY, UNLOADED):
            return False
        return model.state != EMPTY or model.name in self.config.models

    @property
    def ready(self) -> bool:
        if self.mirror is not None and not self.mirror.usable:
            return False
        return not any(self._holds_readiness(m) for m in self.models.values())

    def not_ready_reasons(self) -> dict[str, str]:
        reasons = {
            m.name: m.reason or m.state for m in self.models.values() if self._holds_readiness(m)
        }
        if self.mirror is not None and not self.mirror.usable:
            reasons["(repository)"] = self.mirror.not_ready_reason()
        return reasons
