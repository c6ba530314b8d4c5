"""A remote model repository's local copy: what ``service.registry`` loads from when
``MODEL_REPOSITORY`` is ``s3://``, ``gs://`` or ``az://``.

Each poll is one LIST of the repository's prefix (``modelspec.storage``); the manifests'
ETags say which versions are new or republished, and only those are read, file by file,
into ``<cache>/<model>/<version>/`` once every file matches its sha256 (a version whose
marker is missing is not listed; one whose files do not match is never renamed into the
cache). The registry then loads, warms and swaps exactly as for a local repository.

The cache keeps the versions this process serves or is loading, and nothing else: retired
and deleted versions are evicted after each scan. A version that would take the cache past
``cache_max_bytes`` is refused (a load failure shown in ``/models``). When the store cannot
be reached, the scan changes nothing (everything served goes on) and the error is shown in
``/models`` and the ``serving_repository_up`` metric; a process that starts then serves the
verified versions its cache already holds, or is not ready, saying why.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelspec import repository
from modelspec.storage import Listing, Remote, StorageError
from service.locks import exclusive
from service.metrics import Metrics

logger = logging.getLogger(__name__)
ETAG_SUFFIX = ".etag"  # beside each cached version: its stamp when copied (Listing.version_stamps)
LOCK_FILE = ".lock"  # held while one worker copies into the cache or evicts from it
STALE_PARTIAL_S = 3600  # a half-copied folder this old was left by a process that died


class CacheFull(ValueError):
    pass


def default_cache_dir(remote: Remote) -> Path:
    """One folder per repository under the temporary directory (shared by the workers)."""
    digest = hashlib.sha256(remote.url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "kms-cache" / digest


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


class Mirror:
    """The remote repository as seen from this process, and its local copy."""

    def __init__(
        self, remote: Remote, cache_dir: Path | None, max_bytes: int, metrics: Metrics
    ) -> None:
        self.remote = remote
        self.cache_dir = (cache_dir or default_cache_dir(remote)).resolve()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.listing: Listing | None = None  # the last LIST that succeeded
        self.stamps: dict[tuple[str, int], str] = {}
        self.error: str | None = None
        self.last_success: float | None = None
        self.last_attempt: float | None = None
        self.from_cache = False  # serving what the cache held: the store was never reached
        self._files: dict[str, tuple[str, bytes]] = {}  # config.yaml by model: (ETag, bytes)
        self._lock = threading.Lock()  # one copy at a time into the cache (worker threads)
        self.cache_bytes = self.size()

    # -- one poll ---------------------------------------------------------------------------

    def published(self) -> dict[str, dict[int, Path]] | None:
        """Every published version, as the cache folder it is (or will be) copied to. None
        when the store cannot be reached and was reached before: the caller changes nothing.
        Before the first success, the versions the cache holds (verified when copied)."""
        self.last_attempt = time.time()
        self.metrics.repository_requests.labels(self.remote.url, "list").inc()
        try:
            listing = self.remote.list()
        except StorageError as error:
            self._failed(str(error))
            if self.listing is not None:
                return None
            self.from_cache = True
            return self._cached()
        if self.error is not None:
            logger.info("model repository %s reachable again", self.remote.url)
        self.listing, self.error, self.from_cache = listing, None, False
        self.last_success = self.last_attempt
        self.metrics.repository_up.labels(self.remote.url).set(1)
        self.metrics.repository_polls.labels(self.remote.url, "ok").inc()
        published: dict[str, dict[int, Path]] = {}
        self.stamps = listing.version_stamps()
        for name, number in self.stamps:
            published.setdefault(name, {})[number] = self.cache_dir / name / str(number)
        return published

    def _failed(self, error: str) -> None:
        if self.error is None:  # once per outage, not every poll (the text varies by timing)
            logger.error("model repository unreachable, serving on: %s", error)
        self.error = error
        self.metrics.repository_up.labels(self.remote.url).set(0)
        self.metrics.repository_polls.labels(self.remote.url, "error").inc()

    def _cached(self) -> dict[str, dict[int, Path]]:
        """The versions the cache holds, each with the ETag it was copied at as its stamp
        (so that once the store answers again, an unchanged version is not loaded again)."""
        found: dict[str, dict[int, Path]] = {}
        for model_dir in self.cache_dir.iterdir():
            if model_dir.is_dir() and repository.valid_name(model_dir.name):
                for number in repository.versions(self.cache_dir, model_dir.name):
                    etag = _read(model_dir / f".{number}{ETAG_SUFFIX}")
                    if etag is None:
                        continue  # not known to be a whole copy
                    found.setdefault(model_dir.name, {})[number] = model_dir / str(number)
                    self.stamps[(model_dir.name, number)] = etag
        return found

    def model_file(self, name: str) -> tuple[bool, bytes | None]:
        """(known, bytes) of ``<model>/config.yaml`` as the last LIST saw it: read again
        only when its ETag changed (one GET); (False, None) when the store cannot say."""
        if self.listing is None or self.error is not None:
            return False, None
        info = self.listing.objects.get(f"{name}/{repository.MODEL_CONFIG}")
        if info is None:
            self._files.pop(name, None)
            return True, None
        held = self._files.get(name)
        if held is not None and held[0] == info.etag:
            return True, held[1]
        self.metrics.repository_requests.labels(self.remote.url, "get").inc()
        try:
            data = self.remote.read(f"{name}/{repository.MODEL_CONFIG}")
        except (StorageError, FileNotFoundError, ValueError) as error:
            logger.error("model %s: reading its config.yaml failed: %s", name, error)
            return False, None
        self._files[name] = (info.etag, data)
        return True, data

    def stamp(self, name: str, number: int) -> Any:
        """What changes when the version is published again, or a file of it arrives late:
        its manifest's ETag and a digest of its objects (``Listing.version_stamps``)."""
        return self.stamps.get((name, number), "cached")

    @property
    def usable(self) -> bool:
        """False while the store has never answered and the cache holds no version."""
        return self.listing is not None or bool(self._cached())

    # -- copying one version ------------------------------------------------------------------

    def fetch(self, name: str, number: int) -> Path:
        """The version's cache folder, copied and verified first unless the cache already
        holds it at the listed ETag. Runs in a worker thread."""
        directory = self.cache_dir / name / str(number)
        etag = self.stamps.get((name, number))
        marker = directory.parent / f".{number}{ETAG_SUFFIX}"
        with self._lock, self._shared_lock():
            if directory.is_dir() and (etag is None or _read(marker) == etag):
                # Verified when copied; the load verifies it again. Its copy time is now:
                # another worker's eviction gives a folder about to be opened its grace.
                if marker.exists():
                    os.utime(marker)
                return directory
            if etag is None:
                raise FileNotFoundError(f"version {number} is neither listed nor cached")
            needed = self.listing.version_bytes(name, number) if self.listing else 0
            held = self.size(excluding=directory)
            if held + needed > self.max_bytes:
                raise CacheFull(
                    f"the cache would hold {held + needed:,} bytes, over its limit "
                    f"{self.max_bytes:,} (SERVING_CACHE_MAX_BYTES)"
                )
            directory.parent.mkdir(parents=True, exist_ok=True)
            files = self.listing.objects if self.listing else {}
            count = sum(1 for k in files if k.startswith(f"{name}/{number}/"))
            self.metrics.repository_requests.labels(self.remote.url, "get").inc(max(count, 1))
            self.remote.download_version(name, number, directory)
            marker.write_text(etag)
            self._measure()
            logger.info("copied %s/%s/%d into the cache", self.remote.url, name, number)
            return directory

    def _shared_lock(self, wait: bool = True) -> contextlib.AbstractContextManager[bool]:
        """The cache folder's lock, held by one process (worker) at a time while it copies
        or evicts: the workers of a server share the cache, and without it each copied
        every new version itself (N downloads for N workers), counted the others' copies in
        progress against the cache's bound (a version refused as too large at random), and
        replaced the folder another worker was loading from. Yields whether it is held
        (``wait=False``: not when another worker holds it)."""
        return exclusive(self.cache_dir / LOCK_FILE, wait)

    # -- the cache ------------------------------------------------------------------------------

    def size(self, excluding: Path | None = None) -> int:
        total = 0
        for path in self.cache_dir.rglob("*"):
            if excluding is not None and excluding in path.parents:
                continue
            if path.is_file():
                total += path.stat().st_size
        return total

    def evict(self, keep: set[tuple[str, int]], grace_s: float) -> None:
        """Remove every cached version not in ``keep`` (those served or loading) copied more
        than ``grace_s`` ago, and copies left half-done by a process that died. The grace
        is for the other workers sharing the cache: one whose last scan is older may not
        know yet of a version another has just copied and is loading."""
        now = time.time()
        with self._lock, self._shared_lock(wait=False) as held:
            if not held:  # another worker is copying (a large model: minutes): next scan
                return
            for model_dir in [p for p in self.cache_dir.iterdir() if p.is_dir()]:
                for entry in list(model_dir.iterdir()):
                    if entry.name.startswith(".partial-"):
                        if now - entry.stat().st_mtime > STALE_PARTIAL_S:
                            shutil.rmtree(entry, ignore_errors=True)
                        continue
                    if not repository.valid_version(entry.name):
                        continue
                    if (model_dir.name, int(entry.name)) in keep:
                        continue
                    marker = model_dir / f".{entry.name}{ETAG_SUFFIX}"
                    copied = marker.stat().st_mtime if marker.exists() else 0.0
                    if now - copied < grace_s:
                        continue
                    shutil.rmtree(entry, ignore_errors=True)
                    marker.unlink(missing_ok=True)
                    logger.info("evicted %s version %s from the cache", model_dir.name, entry.name)
            self._measure()

    def _measure(self) -> None:
        self.cache_bytes = self.size()
        self.metrics.repository_cache_bytes.labels(self.remote.url).set(self.cache_bytes)

    def describe(self) -> dict[str, Any]:
        """The repository's part of ``GET /models``."""
        return {
            "url": self.remote.url,
            "reachable": self.error is None,
            "error": self.error,
            "serving_from_cache": self.from_cache,
            "last_poll": _iso(self.last_attempt),
            "last_success": _iso(self.last_success),
            "cache": {"bytes": self.cache_bytes, "max_bytes": self.max_bytes},
        }

    def not_ready_reason(self) -> str:
        return (
            f"model repository {self.remote.url} unreachable and the cache holds no verified "
            f"version: {self.error or 'not polled yet'}"
        )


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
