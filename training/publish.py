"""Atomic publication of a model version into the repository.

Everything is written into a hidden staging folder at the repository's top (``.staging-*``,
never a valid model name, so the service skips it) and renamed into place at the end. A
failed or interrupted run (an error, Ctrl-C, SIGTERM) leaves nothing behind: not a
half-written version, and not an empty ``<name>/`` folder either, which a served repository
would report as a model with no servable version. A new model's folder appears with its
first version already inside it, in one rename. For a repository on object storage the
staging folder is a local temporary one, uploaded file by file with the manifest last
(``modelspec.storage``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from modelspec.repository import MANIFEST, hash_tree, numbers_used
from modelspec.storage import Remote
from training.errors import TrainingError

STAGING_PREFIX = ".staging-"
TRACKED_LIBRARIES = ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy")


@contextmanager
def staging_area(root: Path | Remote, name: str) -> Iterator[Path]:
    """A fresh hidden folder for one version of ``name``. On failure it is removed, and so
    are the repository folders this run created, when they are still empty."""
    created: list[Path] = []
    if isinstance(root, Remote):
        holder = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-"))
    else:
        model_dir = root / name
        if root.exists() and not root.is_dir():
            raise TrainingError(f"model repository {root} is not a folder")
        if model_dir.is_symlink() or (model_dir.exists() and not model_dir.is_dir()):
            raise TrainingError(
                f"{model_dir} is not a model folder (a file or a link is in the way)"
            )
        created = _missing_parents(root)
        root.mkdir(parents=True, exist_ok=True)
        holder = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=root))
    stage = holder / "version"
    try:
        stage.mkdir()
        yield stage
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        for folder in reversed(created):
            with suppress(OSError):
                folder.rmdir()  # only when empty: another run may have published meanwhile
        raise
    finally:
        shutil.rmtree(holder, ignore_errors=True)  # empty once published


def _missing_parents(path: Path) -> list[Path]:
    """The folders ``path.mkdir(parents=True)`` would create, outermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


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
    model_dir = root / name
    while True:
        # Past every number taken, version or not: a leftover '3/' without a manifest made
        # the rename below fail, and the same number be tried again, forever.
        version = max(numbers_used(root, name), default=0) + 1
        manifest["version"] = version
        write_card(manifest, stage)
        manifest["files"] = hash_tree(stage)
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        target = model_dir / str(version)
        if model_dir.is_dir():
            try:
                os.rename(stage, target)  # fails if another run took this number first
                return target
            except OSError:
                if not target.exists():
                    raise
                continue
        # A new model: its folder is renamed into place with the version already inside.
        wrapper = stage.parent / "model"
        wrapper.mkdir()
        os.rename(stage, wrapper / str(version))
        try:
            os.rename(wrapper, model_dir)  # fails if another run made the folder first
            return target
        except OSError:
            os.rename(wrapper / str(version), stage)
            wrapper.rmdir()
            if not model_dir.is_dir():
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
