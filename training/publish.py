"""Atomic publication of a model version into the repository.

Everything is written into a hidden staging folder beside the versions and renamed into
place at the end, so a failed or interrupted run never leaves a half-written version. For a
repository on object storage the staging folder is a local temporary one, uploaded file by
file with the manifest last (``modelspec.storage``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from modelspec.repository import MANIFEST, hash_tree, latest_version
from modelspec.storage import Remote

STAGING_PREFIX = ".staging-"
TRACKED_LIBRARIES = ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy")


@contextmanager
def staging_area(root: Path | Remote, name: str) -> Iterator[Path]:
    """A fresh hidden folder for one version; removed if the block fails."""
    if isinstance(root, Remote):
        stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX + name + "-"))
    else:
        model_dir = root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_dir))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def publish(
    stage: Path,
    root: Path | Remote,
    name: str,
    manifest: dict[str, Any],
    write_card: Callable[[dict[str, Any], Path], None],
) -> Path:
    """Give the stage the next version number, hash it, and rename it into place (upload
    it, manifest last, for a repository on object storage: a str, its URI, is returned).

    The card names its version, so it is written here, once the number is known.
    """
    if isinstance(root, Remote):
        return root.publish(stage, name, manifest, write_card)  # type: ignore[return-value]
    while True:
        version = (latest_version(root, name) or 0) + 1
        manifest["version"] = version
        write_card(manifest, stage)
        manifest["files"] = hash_tree(stage)
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        target = root / name / str(version)
        try:
            os.rename(stage, target)  # fails if another run took this number first
            return target
        except OSError:
            if not target.exists():
                raise


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in TRACKED_LIBRARIES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
