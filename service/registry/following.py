"""Following: the registry kept in step with the repository while the service runs.

Every model folder of the repository is served (unless configuration says only some), each
with the versions its policy picks (the latest by default). A scan finds what changed; each
new version is built in a thread (``service.registry.building``: verified, opened, warmed
up), then made live in one step on the event loop. A version the policy drops, or that
leaves the repository, stops taking new requests once a version the policy wants is ready,
finishes the requests it holds, and is closed. A version that fails is reported (log,
``/models``, metrics) and the versions already serving go on; it is tried again only when its
folder changes or an operator asks (``POST /v2/repository/models/{name}/load``).

A repository on object storage (``s3://``, ``gs://``, ``az://``) is followed through a local
cache (``service.mirror``): each scan is one LIST, new versions are copied and verified into
the cache, then loaded from there as from a local repository. Each model's config.yaml
(roll-out settings) is read on each scan, and the repository API's unloads, labels and
traffic from the state the workers share (``service.admin.SharedState``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelspec import repository
from modelspec.storage import StorageError
from service.config import Settings
from service.errors import RequestError, Unavailable
from service.metrics import Metrics
from service.mirror import Mirror
from service.monitoring.ood import Detectors
from service.registry.building import Builder
from service.registry.lookup import (
    FAILED,
    LOADING,
    READY,
    UNLOADED,
    UNLOADING,
    Loaded,
    Lookup,
    ServedModel,
)
from service.rollout import merge, read_file, routing_for

if TYPE_CHECKING:  # handed in: service.admin answers requests, so it imports service.inference
    from service.admin import SharedState

# The registry's log lines keep the logger name they had before it was split in three.
logger = logging.getLogger("service.models")

NO_VERSION = "no published version in the model repository"
MAX_CONFIG_BYTES = 64 * 1024  # a model's config.yaml: a few lines


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


def _stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a version folder is published again, or a file of it arrives late:
    the size and mtime of every file in it. The manifest's alone missed a file written after
    it (a copy by rsync, which writes manifest.json first, or by cp -r): the version, refused
    as incomplete, stayed refused once whole. 0.13 ms a version (15 files, best of 1,000)."""
    found = []
    for path, _, files in os.walk(directory):
        for file in files:
            try:
                info = os.stat(os.path.join(path, file))
            except OSError:  # removed meanwhile: the load will say so
                continue
            found.append((os.path.join(path, file), info.st_mtime_ns, info.st_size))
    return tuple(sorted(found))


class Registry(Lookup):
    """Every model this process serves, and the work of keeping them in step."""

    def __init__(self, config: Settings, metrics: Metrics, shared: SharedState) -> None:
        self.config = config
        self.metrics = metrics
        # The OOD detectors score in the batch jobs the builder makes, looking the detector
        # up here on every batch (service.monitoring.ood); the Monitor reads their state.
        self.detectors = Detectors(self)
        self.builder = Builder(config, metrics, self.detectors)
        self.shared = shared  # the repository API's unloads and routing, for every worker
        self.models: dict[str, ServedModel] = {}
        # Changes whenever the served models or their names change: what is built from them
        # (the protocols' adapters, the V2 names: ``Runtime.call``) is built again.
        self.generation = 0
        self._lock = asyncio.Lock()
        self._overrides: dict[str, Any] = {}
        self._load_counts: dict[str, Any] = {}  # the API's load calls by model, last read
        remote = config.remote
        self.mirror = (
            Mirror(remote, config.cache_dir, config.cache_max_bytes, metrics) if remote else None
        )
        # The folder versions are loaded from: the repository, or a remote one's cache.
        self.root = self.mirror.cache_dir if self.mirror else Path(config.repository)
        self._last_published: dict[str, dict[int, Path]] = {}
        for name in config.models:
            self._model(name)

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
        if await self._read_state_file():
            only = None  # another worker's call changed other models too: sync them all
        published = await asyncio.to_thread(self._published)
        if published is None:  # the store is unreachable: serve on as we are
            return
        for name, present in sorted(published.items()):
            if only is None or name == only:
                model = self._model(name)
                model.published_numbers = frozenset(present)
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
                self._retired(model.name, loaded)
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
            await asyncio.to_thread(self.builder.open, model, attempt, directory)
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

    def _retired(self, model: str, loaded: Loaded) -> None:
        """A ready version stops taking requests: its info series (the one its load set to
        1, with its backend and provider: a series with empty ones left that at 1, so every
        retired version still showed as loaded) and its serving-since go to 0."""
        loaded.retire()
        self._event(model, loaded.number, "unloaded")
        number = str(loaded.number)
        self.metrics.model_info.labels(model, number, loaded.backend, loaded.provider).set(0)
        self.metrics.model_serving_since.labels(model, number).set(0)

    def _index(self) -> None:
        """Settle every model after the served models changed; what is built from them is
        built again (``generation``)."""
        for model in self.models.values():
            model.settle()
        self.generation += 1

    # -- the repository API ---------------------------------------------------------------

    async def _read_state_file(self) -> bool:
        """What other workers' repository API calls changed; whether anything did."""
        counts = await asyncio.to_thread(self.shared.load_counts)
        if counts is not None:  # a load call on any worker: failed versions are tried again
            for name, count in counts.items():
                if name in self.models and self._load_counts.get(name) != count:
                    _try_failed_again(self.models[name])
            self._load_counts = counts
        overrides = await asyncio.to_thread(self.shared.routing)
        if overrides is not None:
            for name, model in self.models.items():
                found = overrides.get(name)
                model.override = found if isinstance(found, dict) else None
                model.apply()
            self._overrides = overrides
        names = await asyncio.to_thread(self.shared.unloaded_names)
        if names is None:
            return overrides is not None or counts is not None
        for name, model in self.models.items():
            model.unloaded = name in names
        for name in names - set(self.models):
            self._model(name).unloaded = True
        return True

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
                "unknown_model", f"no model {name!r} in the repository", field="name"
            )
        # Under the lock: an unload arriving meanwhile waits for this load, then unloads,
        # instead of the two interleaving into a failure neither asked for.
        async with self._lock:
            model = self._model(name)
            model.unloaded = False
            _try_failed_again(model)
            await asyncio.to_thread(self.shared.update_unloaded, name, False)
            await asyncio.to_thread(self.shared.count_load, name)
            await self._refresh(only=name)
        if model.latest() is None:
            raise RequestError("load_failed", f"failed to load {name!r}: {model.reason}")
        return model

    async def unload(self, name: str) -> ServedModel:
        """The repository API's unload: every version of ``name`` stops taking requests and
        is closed once the requests it holds are answered."""
        model = self.find(name)
        async with self._lock:
            model.unloaded = True
            await asyncio.to_thread(self.shared.update_unloaded, name, True)
            for loaded in model.versions.values():
                if loaded.state == READY:
                    self._retired(name, loaded)
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
                elif self.shared.changed():
                    await self.refresh()
            except Exception:  # a bad scan must not end polling
                logger.exception("repository scan failed")

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
                raise RequestError("invalid_routing", str(error)) from None
            model.override = override
            model.apply()
            self._overrides[name] = override
            await asyncio.to_thread(self.shared.update_routing, name, override)
        return model

    def close(self) -> None:
        for model in self.models.values():
            for loaded in model.versions.values():
                if loaded.state in (READY, UNLOADING):
                    loaded.close()


def _try_failed_again(model: ServedModel) -> None:
    """The model's failed versions are loaded again at the next sync (the repository API's
    load: each worker does it, else the others kept a version failed that the call made
    ready on one, and served another version or none)."""
    for loaded in model.versions.values():
        if loaded.state == FAILED:
            loaded.stamp = (-1, -1)  # differs from any real stamp


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
