"""The models this process serves, kept in step with the repository while it runs.

Every model folder of the repository is served (unless configuration says only some), each
with the versions its policy picks (the latest by default). A scan finds what changed; each
new version is verified (sha256 of every file against its manifest), loaded and warmed up in
a thread, then made live in one step on the event loop. A version the policy drops, or that
leaves the repository, stops taking new requests once a version the policy wants is ready,
finishes the requests it holds, and is closed. A version that fails is reported (log,
``/models``, metrics) and the versions already serving go on; it is tried again only when its
folder changes or an operator asks (``POST /v2/repository/models/{name}/load``).

A repository on object storage (``s3://``, ``gs://``, ``az://``) is followed through a local
cache (``service.mirror``): each scan is one LIST, new versions are copied and verified into
the cache, then loaded from there as from a local repository.

The repository API's unloads are written to a small state file all workers read, so with
several workers each drops (or takes back) a model within a second.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelspec import repository
from modelspec.storage import StorageError
from modelspec.tensors import Signature
from service.backends import Backend, Feed
from service.backends.cpus import available_cpus
from service.batching import Batcher
from service.config import BatchingConfig, ModelConfig, Settings
from service.descriptor import ManifestError, Version
from service.errors import NotFound, RequestError, Unavailable
from service.metrics import Metrics
from service.mirror import Mirror
from service.protocols.common import NotAVersion
from service.rollout import Routing, merge, read_file, routing_for

logger = logging.getLogger(__name__)

LOADING, READY, FAILED, UNLOADING, UNLOADED = "loading", "ready", "failed", "unloading", "unloaded"
# A model folder holding no published version (an export under way, or one that failed
# half-way): shown in /models, but it does not hold the service out of readiness (below).
EMPTY = "no_published_version"
NO_VERSION = "no published version in the model repository"
OFFLOAD_ABOVE_S = 0.001  # a batch slower than this (inline) runs off the event loop
STATE_FILE = "unloaded.json"
ROUTING_FILE = "routing.json"  # the repository API's labels and traffic, for every worker
MAX_CONFIG_BYTES = 64 * 1024  # a model's config.yaml: a few lines


class LoadError(RuntimeError):
    pass


def _folders(directory: str) -> list[tuple[str, str]]:
    """(name, path) of each folder in ``directory`` now; a folder that goes while it is
    read, or a ``directory`` that is not there, is simply not listed (the repository changes
    while it is served: an export publishing, an operator removing a model). Plain strings,
    not pathlib: a repository of 1,000 models walks in 44 ms instead of 91 (best of 7)."""
    try:
        with os.scandir(directory) as entries:
            found = []
            for entry in entries:
                try:
                    if entry.is_dir():
                        found.append((entry.name, entry.path))
                except OSError:
                    continue
            return found
    except OSError:
        return []


def published_versions(root: Path, name: str) -> dict[int, Path]:
    """A model's published versions (canonical folder name, manifest present), walked so
    that a folder appearing or vanishing meanwhile is never an error."""
    found = {}
    for entry, path in _folders(os.path.join(root, name)):
        # isfile is False, not an error, when the folder went meanwhile
        if repository.valid_version(entry) and os.path.isfile(
            os.path.join(path, repository.MANIFEST)
        ):
            found[int(entry)] = Path(path)
    return dict(sorted(found.items()))


def _outside(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """The manifest's files that resolve outside the version folder (a symbolic link out, or
    a ``..`` in a name): their bytes are not the version's to serve, whatever their hash."""
    home = os.path.realpath(directory)
    return [
        f"{name[:100]}: outside the version folder (a symbolic link out?)"
        for name in manifest.get("files", {})
        if os.path.commonpath([home, os.path.realpath(os.path.join(home, name))]) != home
    ]


def _stamp(directory: Path) -> tuple[int, int]:
    """What changes when a version folder is published again (its manifest is rewritten)."""
    try:
        info = (directory / repository.MANIFEST).stat()
    except OSError:  # removed since the folder was listed: the load will say so
        return 0, 0
    return info.st_mtime_ns, info.st_size


@dataclass
class Loaded:
    """One version in this process: description, graphs, batchers, state and requests held."""

    model: str
    number: int
    stamp: tuple[int, int]
    state: str = LOADING
    reason: str | None = None
    version: Version | None = None
    backends: dict[str, Backend] = field(default_factory=dict)
    batchers: dict[str, Batcher] = field(default_factory=dict)
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

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()
        self.batchers.clear()
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
        self.published = True  # its folder holds a published version (at the last scan)
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
        if number is None:
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
        served = [v.number for v in self.ready_versions]
        raise NotFound(
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
        name is ready, else the routing before stays and the refusal is reported)."""
        try:
            merged, sources = merge(self.base, self.file, self.override_in_force)
        except ValueError as error:
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


def _offload_from(batching: BatchingConfig, one: float, full: float) -> int | None:
    """The batch size from which batches run in a worker thread: 1 for models slow even on
    one item, the size whose estimated inline time passes OFFLOAD_ABOVE_S for models only
    big batches make slow, None (never) for the rest; ``offload`` true or false decides."""
    if batching.offload is not None:
        return 1 if batching.offload else None
    if one > OFFLOAD_ABOVE_S:
        return 1
    if full <= OFFLOAD_ABOVE_S or not batching.enabled or batching.max_batch_size < 2:
        return None
    per_item = full / batching.max_batch_size
    return max(2, math.ceil(OFFLOAD_ABOVE_S / per_item))


class Registry:
    """Every model this process serves, and the work of keeping them in step."""

    def __init__(self, config: Settings, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.cpus = available_cpus()
        self.models: dict[str, ServedModel] = {}
        self.v2_index: dict[str, tuple[str, str]] = {}
        self.generation = 0  # changes whenever the served models or their names change
        self._lock = asyncio.Lock()
        self._state_seen: float | None = None
        self._routing_seen: float | None = None
        self._overrides: dict[str, Any] = {}
        remote = config.remote
        self.mirror = (
            Mirror(remote, config.cache_dir, config.cache_max_bytes, metrics) if remote else None
        )
        # The folder versions are loaded from: the repository, or a remote one's cache.
        self.root = self.mirror.cache_dir if self.mirror else Path(config.repository)
        self._last_published: dict[str, dict[int, Path]] = {}
        for name in config.models:
            self._model(name)

    # -- what requests see ------------------------------------------------------------------

    def find(self, name: str) -> ServedModel:
        """The model of that name, whatever its state; a 404 otherwise."""
        model = self.models.get(name)
        if model is None:
            raise NotFound(
                "unknown_model", f"no model named {name!r}", expected=str(sorted(self.models))
            )
        return model

    def resolve(self, name: str, number: int | None) -> Loaded:
        return self.find(name).resolve(number)

    def v2_target(self, v2_name: str) -> tuple[str, str]:
        """(model, signature) behind a V2 model name; a 404 naming the ones served."""
        target = self.v2_index.get(v2_name)
        if target is None:
            raise NotFound(
                "unknown_model",
                f"no model named {v2_name[:100]!r}",
                expected=str(sorted(self.v2_index)),
            )
        return target

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

    # -- keeping in step with the repository --------------------------------------------------

    def _model(self, name: str) -> ServedModel:
        if name not in self.models:
            model = self.models[name] = ServedModel(name, self.config.model(name))
            found = self._overrides.get(name)
            model.override = found if isinstance(found, dict) else None
            model.apply(route=False)  # labels and weights once its versions are loaded
        return self.models[name]

    def _model_file(self, name: str) -> tuple[bool, bytes | None]:
        """(known, bytes) of the model's config.yaml: (True, None) when there is none,
        (False, None) when it could not be read (the store unreachable): change nothing."""
        if self.mirror is not None:
            return self.mirror.model_file(name)
        path = os.path.join(self.config.repository, name, repository.MODEL_CONFIG)
        try:
            with open(path, "rb") as handle:
                return True, handle.read(MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            return True, None
        except OSError as error:
            logger.error("model %s: cannot read %s: %s", name, repository.MODEL_CONFIG, error)
            return False, None

    async def _read_model_file(self, model: ServedModel) -> None:
        """Take a changed config.yaml: a good one replaces the last good, a bad one is
        reported (``/models``, the log, ``serving_model_config_valid``) and changes nothing."""
        known, data = await asyncio.to_thread(self._model_file, model.name)
        if not known:
            return
        digest = None if data is None else hashlib.sha256(data).hexdigest()
        if digest == model.file_digest:
            return
        model.file_digest = digest
        if data is None:
            model.file, model.file_error = None, None
            logger.info("model %s: no config.yaml now; serving.yaml's settings", model.name)
            return
        try:
            if len(data) > MAX_CONFIG_BYTES:
                raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
            found = read_file(data)
            merge(model.base, found, None)  # labels, weights and shadow coherent together
        except ValueError as error:
            model.file_error = f"config.yaml: {error}"
            logger.error(
                "model %s: config.yaml refused, the last good settings stay: %s", model.name, error
            )
            return
        model.file, model.file_error = found, None
        settings = found.model_dump(exclude_none=True)
        logger.info("model %s: config.yaml read: %s", model.name, settings)

    def _published(self) -> dict[str, dict[int, Path]] | None:
        """Every model folder of the repository (or the configured ones) and its versions;
        None when a remote repository cannot be reached (nothing is to change). Runs in a
        thread: 1,000 local models take ~50 ms to walk, which held the event loop (and /livez)
        when the index walked on it."""
        if self.mirror is not None:
            remote = self.mirror.published()
            if remote is None:
                return None
            names = set(self.config.models) | (set(remote) if self.config.discover else set())
            found = {name: remote.get(name, {}) for name in names}
            self._last_published = found
            return found
        root = Path(self.config.repository)
        names = set(self.config.models)
        if self.config.discover:
            names |= {n for n, _ in _folders(str(root)) if repository.valid_name(n)}
        return {name: published_versions(root, name) for name in names}

    async def refresh(self, only: str | None = None) -> None:
        """One scan: load what the policies want and is not loaded, retire what they dropped.
        Loads run one at a time in a thread; the event loop keeps serving meanwhile."""
        async with self._lock:
            await self._refresh(only)

    async def _refresh(self, only: str | None) -> None:
        await self._read_state_file()
        published = await asyncio.to_thread(self._published)
        if published is None:  # the store is unreachable: serve on as we are
            return
        for name, present in sorted(published.items()):
            if only is None or name == only:
                model = self._model(name)
                await self._read_model_file(model)
                model.apply(route=False)  # the file's version policy, for this scan
                await self._sync(model, present)
                model.apply()
                valid = model.file_error is None and model.routing_error is None
                self.metrics.model_config_valid.labels(name).set(1 if valid else 0)
        for name in [n for n in self.models if n not in published and n not in self.config.models]:
            for loaded in self.models[name].versions.values():
                loaded.retire()
            del self.models[name]
        self._index()
        if self.mirror is not None:
            keep = {
                (m.name, n)
                for m in self.models.values()
                for n, v in m.versions.items()
                if v.state in (READY, LOADING, UNLOADING)
            }
            grace = 2 * self.config.poll_interval + 5  # see Mirror.evict
            await asyncio.to_thread(self.mirror.evict, keep, grace)

    async def _sync(self, model: ServedModel, present: dict[int, Path]) -> None:
        model.published = bool(present)
        if model.unloaded:
            wanted: set[int] = set()
        else:
            wanted = model.config.version_policy.choose(sorted(present))
        model.missing_reason = (
            NO_VERSION
            if not present
            else None
            if wanted or model.unloaded
            else "no published version is one the version policy chooses"
        )
        for number in sorted(wanted, reverse=True):
            if self.mirror is not None:
                stamp = self.mirror.stamp(model.name, number)
            else:
                stamp = await asyncio.to_thread(_stamp, present[number])
            known = model.versions.get(number)
            if known is not None and known.stamp == stamp and known.state in (READY, FAILED):
                continue  # serving, or failed and unchanged since
            await self._load(model, number, present[number], stamp)
        ready_wanted = [
            n for n in wanted if model.versions.get(n) and model.versions[n].state == READY
        ]
        for number, loaded in list(model.versions.items()):
            if number in wanted and loaded.state == READY:
                continue
            # Availability first: a dropped version serves on until a wanted one is ready
            # (unless the model left the repository or was unloaded on purpose).
            if loaded.state == READY and (ready_wanted or not present or model.unloaded):
                loaded.retire()
                self._event(model.name, number, "unloaded")
            if number not in present and loaded.state in (FAILED, UNLOADED):
                del model.versions[number]  # gone from the repository: forgotten
        model.settle()
        self.metrics.model_ready.labels(model.name).set(1 if model.latest() else 0)

    def _public(self, error: Exception) -> str:
        """A load failure as ``/models`` shows it to any client: one line, at most 300
        characters, the repository's place on disk not named (the log has it all)."""
        text = " ".join((str(error) or type(error).__name__).split())
        root = self.root
        # Every spelling of the repository's place: resolved (through links), absolute, and as
        # configured (a relative one only where a path follows: "models" is also a word).
        spellings = {str(root.resolve()), str(root.absolute()), str(root)}
        for spelling in sorted(spellings, key=len, reverse=True):
            text = text.replace(spelling + os.sep, "<repository>" + os.sep)
            if os.path.isabs(spelling):
                text = text.replace(spelling, "<repository>")
        return text if len(text) <= 300 else text[:299] + "…"

    async def _load(self, model: ServedModel, number: int, directory: Path, stamp) -> None:
        started = time.perf_counter()
        previous = model.versions.get(number)
        attempt = Loaded(model.name, number, stamp)
        if previous is None or previous.state != READY:
            model.versions[number] = attempt  # shows as loading meanwhile
        try:
            if self.mirror is not None:
                directory = await asyncio.to_thread(self.mirror.fetch, model.name, number)
            await asyncio.to_thread(self._open, model, attempt, directory)
        except Exception as error:
            attempt.state, attempt.reason = FAILED, self._public(error)
            if isinstance(error, StorageError):
                attempt.stamp = None  # the store failed, not the version: try again next scan
            model.versions[number] = (
                attempt if previous is None or previous.state != READY else previous
            )
            logger.error("model %s version %d refused: %s", model.name, number, error)
            self._event(model.name, number, "load_failed")
            if previous is not None and previous.state == READY:
                previous.reason = f"a new copy of this version failed: {attempt.reason}"
            return
        attempt.load_seconds = round(time.perf_counter() - started, 2)
        attempt.state = READY
        attempt.since = time.time()
        model.versions[number] = attempt
        model.settle()  # live from this statement on
        if previous is not None and previous is not attempt and previous.state == READY:
            previous.retire()  # the same number published again: the new copy replaces it
        self.metrics.model_load_seconds.labels(model.name).observe(attempt.load_seconds)
        self.metrics.model_info.labels(
            model.name, str(number), attempt.backend, attempt.provider
        ).set(1)
        self._event(model.name, number, "loaded")
        self.metrics.model_serving_since.labels(model.name, str(number)).set(attempt.since)
        logger.info(
            "model %s version %d ready on %s/%s in %.1f s",
            model.name,
            number,
            attempt.backend,
            attempt.provider,
            attempt.load_seconds,
        )

    def _event(self, model: str, number: int, event: str) -> None:
        self.metrics.model_events.labels(model, event).inc()
        if event == "unloaded":
            self.metrics.model_info.labels(model, str(number), "", "").set(0)
            self.metrics.model_serving_since.labels(model, str(number)).set(0)

    def _index(self) -> None:
        """V2 model names -> (model, signature), from each model's latest version. A model's
        own name wins over another model's ``<model>_<signature>`` alias."""
        for model in self.models.values():
            model.settle()
        index: dict[str, tuple[str, str]] = {}
        for model in self.models.values():
            latest = model.latest()
            names = latest.version.v2_names() if latest and latest.version else {}
            for v2_name, signature in names.items():
                index.setdefault(v2_name, (model.name, signature))
        for model in self.models.values():
            latest = model.latest()
            default = latest.version.default_signature if latest and latest.version else ""
            index[model.name] = (model.name, default)
        self.v2_index = index
        self.generation += 1

    # -- loading one version (in a thread) --------------------------------------------------

    def _open(self, model: ServedModel, loaded: Loaded, directory: Path) -> None:
        manifest = repository.read_manifest(directory)
        unused = repository.unused_by(self.config.backend)  # the Bento packs no others
        problems = _outside(directory, manifest) or repository.verify_files(
            directory, manifest, unused
        )
        if problems:
            raise LoadError("integrity check failed: " + "; ".join(problems))
        try:
            version = Version(model.name, loaded.number, directory, manifest, model.config.ood)
        except ManifestError as error:
            raise LoadError(str(error)) from None
        batching = model.config.batching
        for name, view in version.views.items():
            # Small batches run on the event loop's thread with one intra-op thread, leaving
            # the other cores to HTTP work and other workers; batches slow enough to offload
            # run in a worker thread on every usable core (service.batching).
            forced = batching.offload is True
            inline = self._backend(directory, view.signature, threads=None if forced else 1)
            one, full = self._warm_up(inline, version, name, batching.max_batch_size)
            offload_from = _offload_from(batching, one, full)
            offloaded = inline
            if offload_from is not None and not forced and self._threads(True) > 1:
                offloaded = self._backend(directory, view.signature, threads=None)
                self._warm_up(offloaded, version, name, batching.max_batch_size)
            backend = offloaded if offload_from == 1 else inline
            loaded.backend, loaded.provider = backend.name, backend.provider
            loaded.backends[name] = backend
            loaded.batchers[name] = Batcher(
                backend.run,
                batching,
                on_batch=self.metrics.batch_recorder(model.name, name),
                offload_from=offload_from,
                run_offloaded=offloaded.run,
            )
        loaded.version = version

    def _threads(self, offload: bool) -> int:
        if self.config.inference_threads:
            return self.config.inference_threads
        return self.cpus if offload else 1

    def _backend(self, directory: Path, signature: Signature, threads: int | None) -> Backend:
        """``threads``: intra-op threads; None for the offloaded count."""
        count = threads if threads is not None else self._threads(True)
        if self.config.inference_threads:
            count = self.config.inference_threads
        if self.config.backend == "saved_model":
            if not (directory / repository.SAVED_MODEL_DIR).is_dir():
                raise LoadError("no SavedModel in this version (an ONNX file published as is)")
            from service.backends.saved_model import SavedModelBackend

            key = signature.saved_model_signature or signature.name
            return SavedModelBackend(directory / repository.SAVED_MODEL_DIR, key, count)
        from service.backends.onnx import OnnxBackend, choose_providers

        providers = choose_providers(self.config.provider, self.config.tf32)
        return OnnxBackend(directory / signature.onnx_file, providers, count)

    @staticmethod
    def _warm_up(
        backend: Backend, version: Version, signature: str, max_batch: int
    ) -> tuple[float, float]:
        """Run the signature at batch 1 and at full batch before it goes live, so the first
        real request pays no lazy allocation or kernel selection; returns the seconds of a
        steady-state run at each (the second of two)."""
        contracts = version.contracts(signature)
        timings = []
        for batch in (1, max_batch):
            feed: Feed = {
                name: np.zeros((batch, *[d or 1 for d in c.shapes[0]]), dtype=c.dtype)
                for name, c in contracts.items()
            }
            outputs = backend.run(feed)
            started = time.perf_counter()
            backend.run(feed)
            timings.append(time.perf_counter() - started)
            for name, value in outputs.items():
                if len(value) != batch or (
                    value.dtype.kind == "f" and not np.isfinite(value).all()
                ):
                    raise LoadError(f"warm-up of {signature} gave unusable output {name!r}")
        return timings[0], timings[1]

    # -- the repository API ---------------------------------------------------------------

    def state_dir(self) -> Path:
        """Shared by this server's workers (they have one parent, the arbiter)."""
        chosen = self.config.state_dir or Path(tempfile.gettempdir()) / f"kms-state-{os.getppid()}"
        chosen.mkdir(parents=True, exist_ok=True)
        return chosen

    def _state_file_names(self) -> set[str] | None:
        """The unloaded models' names when the state file changed since last read, else None
        (blocking: called in a thread)."""
        path = self.state_dir() / STATE_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        if mtime == self._state_seen:
            return None
        self._state_seen = mtime
        try:
            names = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return {n for n in names if isinstance(n, str)} if isinstance(names, list) else None

    def _routing_file(self) -> dict[str, Any] | None:
        """The repository API's labels and traffic by model, when changed since last read."""
        path = self.state_dir() / ROUTING_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        if mtime == self._routing_seen:
            return None
        self._routing_seen = mtime
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    async def _read_state_file(self) -> None:
        overrides = await asyncio.to_thread(self._routing_file)
        if overrides is not None:
            for name, model in self.models.items():
                found = overrides.get(name)
                model.override = found if isinstance(found, dict) else None
                model.apply()
            self._overrides = overrides
        names = await asyncio.to_thread(self._state_file_names)
        if names is None:
            return
        for name, model in self.models.items():
            model.unloaded = name in names
        for name in names - set(self.models):
            self._model(name).unloaded = True

    def _write_state_file(self) -> None:
        path = self.state_dir() / STATE_FILE
        names = sorted(n for n, m in self.models.items() if m.unloaded)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(names))
        temporary.replace(path)
        self._state_seen = path.stat().st_mtime

    async def load(self, name: str) -> ServedModel:
        """The repository API's load: the policy's versions of ``name``, now (failed ones
        are tried again). Raises RequestError when none could be made ready."""
        published = await asyncio.to_thread(self._published)
        if published is None:
            error = self.mirror.error if self.mirror else None
            raise Unavailable(
                "repository_unreachable",
                f"model repository unreachable: {error}",
                headers={"Retry-After": str(max(1, round(self.config.poll_interval)))},
            )
        if name not in published or not published[name]:
            raise RequestError(
                "unknown_model", f"no model {name!r} in the repository", field="name", status=404
            )
        # Under the lock: an unload arriving meanwhile waits for this load, then unloads,
        # instead of the two interleaving into a failure neither asked for.
        async with self._lock:
            model = self._model(name)
            model.unloaded = False
            for loaded in model.versions.values():
                if loaded.state == FAILED:
                    loaded.stamp = (-1, -1)  # differs from any real stamp: try again
            self._write_state_file()
            await self._refresh(only=name)
        if model.latest() is None:
            raise RequestError(
                "load_failed", f"failed to load {name!r}: {model.reason}", status=400
            )
        return model

    async def unload(self, name: str) -> ServedModel:
        """The repository API's unload: every version of ``name`` stops taking requests and
        is closed once the requests it holds are answered."""
        model = self.find(name)
        async with self._lock:
            model.unloaded = True
            self._write_state_file()
            for number, loaded in model.versions.items():
                if loaded.state == READY:
                    loaded.retire()
                    self._event(name, number, "unloaded")
            model.settle()
            self.metrics.model_ready.labels(name).set(0)
            self._index()
        return model

    async def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Triton's repository index: every model and version of the repository (a model
        folder with no version as one entry without a version; a remote repository as its
        last scan saw it, no request to the store). The walk runs in a thread: the event loop
        serves on, and a folder that changes meanwhile is no error."""
        if self.mirror is not None:
            published = self._last_published
        else:
            published = await asyncio.to_thread(self._published)
        published = published or {}
        entries = []
        for name in sorted(set(published) | set(self.models)):
            model = self.models.get(name)
            known = model.versions if model else {}
            numbers = sorted(set(published.get(name, {})) | set(known))
            if not numbers and not ready_only:
                entries.append(
                    {"name": name, "version": "", "state": "UNAVAILABLE", "reason": NO_VERSION}
                )
            for number in numbers:
                entry = _index_entry(name, number, known.get(number), model)
                if not ready_only or entry["state"] == "READY":
                    entries.append(entry)
        return entries

    # -- running ------------------------------------------------------------------------------

    async def poll_forever(self) -> None:
        """Scan the repository every ``poll_interval`` seconds (never when 0), and the
        workers' shared state every second."""
        interval = self.config.poll_interval
        last_scan = time.monotonic()
        while True:
            await asyncio.sleep(1.0 if not interval else min(1.0, interval))
            try:
                if interval and time.monotonic() - last_scan >= interval:
                    last_scan = time.monotonic()
                    await self.refresh()
                elif self._state_changed():
                    await self.refresh()
            except Exception:  # a bad scan must not end polling
                logger.exception("repository scan failed")

    def _state_changed(self) -> bool:
        directory = self.state_dir()
        for name, seen in ((STATE_FILE, self._state_seen), (ROUTING_FILE, self._routing_seen)):
            try:
                if (directory / name).stat().st_mtime != seen:
                    return True
            except OSError:
                continue
        return False

    async def set_routing(self, name: str, changes: dict[str, Any]) -> ServedModel:
        """The repository API's labels and traffic for ``name`` (a key set to None clears
        it): checked as a config.yaml would be, and refused (400) when a label or weight
        names a version that is not ready; written for every worker of this server."""
        model = self.find(name)
        async with self._lock:
            override = dict(model.override_in_force or {})
            override.update(changes)
            override["file_digest"] = model.file_digest
            try:
                merged, _ = merge(model.base, model.file, override)
                ready = {v.number for v in model.ready_versions}
                routing_for(merged, ready, {n: v.state for n, v in model.versions.items()})
            except ValueError as error:
                raise RequestError("invalid_routing", str(error), status=400) from None
            model.override = override
            model.apply()
            self._overrides[name] = override
            path = self.state_dir() / ROUTING_FILE
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self._overrides))
            temporary.replace(path)
            self._routing_seen = path.stat().st_mtime
        return model

    def close(self) -> None:
        for model in self.models.values():
            for loaded in model.versions.values():
                if loaded.state in (READY, UNLOADING):
                    loaded.close()


def _index_entry(
    name: str, number: int, loaded: Loaded | None, model: ServedModel | None
) -> dict[str, str]:
    if loaded is not None and loaded.state in (READY, LOADING):
        return {"name": name, "version": str(number), "state": loaded.state.upper(), "reason": ""}
    if model is not None and model.unloaded:
        reason = "unloaded through the repository API"
    elif loaded is not None:
        reason = loaded.reason or loaded.state
    else:
        reason = "not chosen by the version policy"
    return {"name": name, "version": str(number), "state": "UNAVAILABLE", "reason": reason}
