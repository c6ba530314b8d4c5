"""A model repository on object storage: ``s3://bucket/prefix``, ``gs://bucket/prefix`` and
``az://container/prefix``, with the local layout unchanged (``<prefix>/<model>/<version>/``
holding ``manifest.json`` and the files it hashes). A local repository copied file for file
to a bucket is a valid remote repository.

One client library for the three clouds, obstore (Rust's ``object_store``): credentials come
only from each cloud's standard variables and files (``AWS_*`` with ``AWS_ENDPOINT_URL``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*``) or the instance's identity, never
from our settings. Measured against the emulators (README, "Model repository on object
storage"): obstore talks to moto (S3) and Azurite (Azure Blob); gcp-storage-emulator serves
only GCS's JSON API, not the XML API obstore uses, so GCS is covered by configuration only.

Publishing is atomic although a bucket has no rename: every file of a version is uploaded
first, each only if its key is still free (a concurrent publisher of the same number is
noticed, not overwritten), and the manifest last. A version is a folder whose manifest is
present; readers verify every file against the manifest's sha256 before they load it. An
upload cut short leaves files without a manifest: never served, and the next publish takes
the next free number instead of reusing theirs.

One poll is one LIST of the prefix (one request per 1,000 objects on S3 and GCS, 5,000 on
Azure): the manifests' ETags say which versions changed; nothing is read per file until a
version is new or republished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from modelspec import repository

SCHEMES = ("s3", "gs", "az")
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
# Fail fast when the store is unreachable: object_store's default retries for 3 minutes,
# which would hide an outage from /models for as long. Two retries, 2 s to connect.
_RETRY = {"max_retries": 2, "retry_timeout": timedelta(seconds=10)}
_CLIENT = {"connect_timeout": "2s", "timeout": "60s"}
PUBLISH_ATTEMPTS = 5


class RepositoryError(ValueError):
    """A repository location that cannot be used (unknown scheme, no bucket)."""


class StorageError(RuntimeError):
    """The object store could not be reached or refused a request; one line, no secrets."""


def describe_error(error: BaseException) -> str:
    """An obstore error as one line (its text spans many, with debug dumps)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def is_remote(location: str | os.PathLike[str]) -> bool:
    return isinstance(location, str) and _URI.fullmatch(location) is not None


def parse(location: str | os.PathLike[str]) -> Path | Remote:
    """A local path, or a bucket and prefix; RepositoryError for an unknown scheme or a
    URI without a bucket (a mistyped ``s3:/bucket`` is a local path, as a shell sees it)."""
    if not isinstance(location, str):
        return Path(location)
    found = _URI.fullmatch(location)
    if found is None:
        return Path(location)
    scheme, rest = found.group(1).lower(), found.group(2)
    if scheme not in SCHEMES:
        raise RepositoryError(
            f"model repository {location!r}: unknown scheme {scheme!r} "
            f"(a local path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix)"
        )
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise RepositoryError(f"model repository {location!r}: no bucket or container named")
    return Remote(scheme, bucket, prefix.strip("/"))


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str


@dataclass
class Listing:
    """What one LIST of the repository's prefix found, by key below the prefix."""

    objects: dict[str, ObjectInfo]

    def versions(self) -> dict[str, dict[int, str]]:
        """model -> published version -> its manifest's ETag (the version's stamp)."""
        found: dict[str, dict[int, str]] = {}
        for key, info in self.objects.items():
            parts = key.split("/")
            if len(parts) != 3 or parts[2] != repository.MANIFEST:
                continue
            name, number = parts[0], parts[1]
            if repository.valid_name(name) and repository.valid_version(number):
                found.setdefault(name, {})[int(number)] = info.etag
        return found

    def version_stamps(self) -> dict[tuple[str, int], str]:
        """(model, published version) -> what changes when any object of the version does:
        its manifest's ETag, and a digest of every object's key, size and ETag below it. The
        manifest's alone missed a file that arrives after it (a copy tool uploading in any
        order): the version, refused as incomplete, stayed refused once whole."""
        published = self.versions()
        found: dict[tuple[str, int], list[str]] = {}
        for key, info in self.objects.items():
            parts = key.split("/", 2)
            if len(parts) == 3 and repository.valid_version(parts[1]):
                number = int(parts[1])
                if number in published.get(parts[0], {}):
                    found.setdefault((parts[0], number), []).append(
                        f"{key}\0{info.size}\0{info.etag}"
                    )
        return {
            (name, number): etag
            + "+"
            + hashlib.sha256("\n".join(sorted(found[(name, number)])).encode()).hexdigest()[:16]
            for name, versions in published.items()
            for number, etag in versions.items()
        }

    def numbers_used(self, name: str) -> set[int]:
        """Every number under ``name/`` with any object, manifest or not (an upload cut
        short holds its number: the next publish goes past it)."""
        used = set()
        for key in self.objects:
            parts = key.split("/")
            if len(parts) >= 3 and parts[0] == name and repository.valid_version(parts[1]):
                used.add(int(parts[1]))
        return used

    def version_bytes(self, name: str, number: int) -> int:
        start = f"{name}/{number}/"
        return sum(i.size for k, i in self.objects.items() if k.startswith(start))


@dataclass(frozen=True)
class Remote:
    """A repository in a bucket (or Azure container) under a prefix."""

    scheme: str
    bucket: str
    prefix: str
    _options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def __str__(self) -> str:
        return self.url

    @cached_property
    def store(self) -> Any:
        """The obstore store, configured by the cloud's own environment variables only."""
        from obstore.store import from_url

        client: dict[str, Any] = dict(_CLIENT)
        # An endpoint the operator wrote as http:// (a test server, an in-cluster gateway)
        # is used as written; object_store refuses plain HTTP unless told.
        if self.scheme == "s3" and os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://"):
            client["allow_http"] = True
        # The URL's path becomes the store's prefix: every key below is relative to it.
        return from_url(
            self.url,
            client_options=client,
            retry_config=_RETRY,
        )

    # -- reading ------------------------------------------------------------------------

    def list(self) -> Listing:
        """One LIST of the whole prefix (paged by the store: 1,000 keys a page on S3)."""
        import obstore

        try:
            objects = {}
            for chunk in obstore.list(self.store, chunk_size=1000):
                for meta in chunk:
                    objects[meta["path"]] = ObjectInfo(meta["size"], str(meta.get("e_tag") or ""))
        except Exception as error:  # obstore raises its own types and OSError alike
            raise StorageError(f"listing {self.url}: {describe_error(error)}") from None
        return Listing(objects)

    def read(self, key: str) -> bytes:
        """One object below the prefix (a model's config.yaml); StorageError when the store
        fails."""
        import obstore

        try:
            return bytes(obstore.get(self.store, key).bytes())
        except Exception as error:
            raise _read_error(key, error) from None

    def latest_version(self, name: str) -> int | None:
        found = self.list().versions().get(name, {})
        return max(found) if found else None

    def download_version(self, name: str, number: int, destination: Path) -> dict[str, Any]:
        """Copy one version into ``destination`` (a new folder, renamed into place only once
        every file matches the manifest's sha256); returns the manifest. Raises StorageError
        when the store fails, ValueError when the version is not intact."""
        import obstore

        base = f"{name}/{number}"
        work = Path(tempfile.mkdtemp(prefix=f".partial-{number}-", dir=destination.parent))
        try:
            try:
                raw = bytes(obstore.get(self.store, f"{base}/{repository.MANIFEST}").bytes())
            except Exception as error:
                raise _read_error(f"{base}/{repository.MANIFEST}", error) from None
            manifest = json.loads(raw)
            files = manifest.get("files")
            if not isinstance(files, dict):
                raise ValueError("manifest has no files table")
            for relative in files:
                # The key of the file a local repository finds at that name ('./x', 'a//b'
                # are no object keys: object_store refuses them)
                path = _safe_relative(relative)
                target = work / path
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    result = obstore.get(self.store, f"{base}/{path.as_posix()}")
                    with target.open("wb") as handle:
                        for chunk in result.stream(min_chunk_size=1 << 20):
                            handle.write(chunk)
                except Exception as error:
                    raise _read_error(f"{base}/{relative}", error) from None
            (work / repository.MANIFEST).write_bytes(raw)
            problems = repository.verify_files(work, manifest)
            if problems:
                raise ValueError("integrity check failed: " + "; ".join(problems))
            if destination.exists():
                shutil.rmtree(destination)
            os.rename(work, destination)
            return manifest
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- writing --------------------------------------------------------------------------

    def publish(
        self,
        stage: Path,
        name: str,
        manifest: dict[str, Any],
        write_card: Callable[[dict[str, Any], Path], None],
    ) -> PublishedRemote:
        """Upload ``stage`` as the next free version of ``name``: every file first, each only
        if its key is free, the manifest last. A number another publisher took meanwhile is
        given up (its files are left alone, ours there taken back) and the next one tried."""
        import obstore

        for _ in range(PUBLISH_ATTEMPTS):
            listing = self.list()
            number = max(listing.numbers_used(name), default=0) + 1
            manifest["version"] = number
            write_card(manifest, stage)
            manifest["files"] = repository.hash_tree(stage)
            body = (json.dumps(manifest, indent=2) + "\n").encode()
            (stage / repository.MANIFEST).write_bytes(body)
            base = f"{name}/{number}"
            uploaded: list[str] = []
            try:
                for relative in manifest["files"]:
                    key = f"{base}/{relative}"
                    obstore.put(self.store, key, stage / relative, mode="create")
                    uploaded.append(key)
                obstore.put(self.store, f"{base}/{repository.MANIFEST}", body, mode="create")
            except Exception as error:
                _delete_quietly(self.store, uploaded)  # in another's version, or half of ours
                if type(error).__name__ in ("AlreadyExistsError", "PreconditionError"):
                    continue  # another publisher holds this number: ours stays unpublished
                where = f"{self.url}/{base}"
                raise StorageError(f"publishing {where}: {describe_error(error)}") from None
            except BaseException:  # interrupted: take back what was uploaded, if we can
                _delete_quietly(self.store, uploaded)
                raise
            shutil.rmtree(stage, ignore_errors=True)
            return PublishedRemote(f"{self.url}/{base}", manifest)
        raise StorageError(
            f"publishing {name} to {self.url}: {PUBLISH_ATTEMPTS} version numbers were taken by "
            "other publishers meanwhile"
        )


class PublishedRemote(str):
    """Where a version went (its URI), with the manifest written there."""

    manifest: dict[str, Any]

    def __new__(cls, uri: str, manifest: dict[str, Any]) -> PublishedRemote:
        made = super().__new__(cls, uri)
        made.manifest = manifest
        return made


def _safe_relative(relative: str) -> PurePosixPath:
    """A manifest's file name as a path below the version folder, never above it."""
    path = PurePosixPath(relative)
    if path.is_absolute() or not path.parts or ".." in path.parts or "\\" in relative:
        raise ValueError(f"manifest names a file outside its version: {relative[:100]!r}")
    return path


def _read_error(key: str, error: BaseException) -> Exception:
    """A missing object, or a name that is no object key, makes the version not intact
    (ValueError: refused until it changes); anything else is the store failing (StorageError:
    tried again next poll)."""
    if isinstance(error, FileNotFoundError) or type(error).__name__ == "NotFoundError":
        return ValueError(f"{key}: missing from the store")
    # object_store refusing the name itself (a newline in it): the manifest is at fault
    if isinstance(error, ValueError) or type(error).__name__ == "InvalidPathError":
        return ValueError(f"{key[:200]!r} is not an object name: {describe_error(error)}")
    return StorageError(f"reading {key}: {describe_error(error)}")


def _delete_quietly(store: Any, keys: list[str]) -> None:
    import obstore

    for key in keys:
        # The store is failing already, and files without a manifest are never served.
        with contextlib.suppress(Exception):
            obstore.delete(store, key)
