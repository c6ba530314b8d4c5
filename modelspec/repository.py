"""The model repository layout: ``<root>/<model>/<version>/`` with ``manifest.json``.

Versions are positive integers written canonically (no leading zero, at most 18 digits); a
folder whose name is not one (a staging folder, say) is never a version, so a half-written
export can never be loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MODEL_CONFIG = "config.yaml"  # beside the version folders: labels, traffic, shadow, policy
# Names a model may not take: the service's own first path segments.
RESERVED_NAMES = frozenset(
    {"models", "v1", "v2", "livez", "readyz", "healthz", "metrics", "docs.json", "schema.json",
     "static_content", "assets", "docs"}
)  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A version folder is its number written one way: "007" beside "7" would be two folders
# for one version, and past 18 digits it no longer fits the int64 clients read it into.
_VERSION = re.compile(r"[1-9][0-9]{0,17}")
MODEL_CARD = "model_card.md"
KERAS_MODEL = "model.keras"
SAVED_MODEL_DIR = "saved_model"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a model's name (it must be a URL path segment of its own), or
    None when it can: letters, digits, '.', '_' and '-', at most 64, not one of the
    service's own path segments."""
    if not _NAME.fullmatch(name):
        return (
            f"model name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit"
        )
    if name in RESERVED_NAMES:
        return f"model name {name!r} is one of the service's own paths {sorted(RESERVED_NAMES)}"
    return None


def valid_name(name: str) -> bool:
    return name_problem(name) is None


def valid_version(folder: str) -> bool:
    """Whether a folder's name is a version number written canonically."""
    return _VERSION.fullmatch(folder) is not None


def versions(root: Path, name: str) -> list[int]:
    """Published versions of one model, oldest first."""
    model_dir = root / name
    if not model_dir.is_dir():
        return []
    found = [
        int(p.name)
        for p in model_dir.iterdir()
        if _VERSION.fullmatch(p.name) and p.is_dir() and (p / MANIFEST).is_file()
    ]
    return sorted(found)


def numbers_used(root: Path, name: str) -> set[int]:
    """Every number named under ``name/``, version or not: a folder without a manifest (a
    copy cut short) or a file holds its number, so publishing goes past it, not into it."""
    model_dir = root / name
    if not model_dir.is_dir():
        return set()
    return {int(p.name) for p in model_dir.iterdir() if _VERSION.fullmatch(p.name)}


def latest_version(root: Path, name: str) -> int | None:
    found = versions(root, name)
    return found[-1] if found else None


def version_dir(root: Path, name: str, version: int) -> Path:
    return root / name / str(version)


def read_manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / MANIFEST).read_text())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_digest(root: Path, relative_paths: list[str]) -> str:
    """One sha256 over named files (name and content hash), to pin a split's exact data."""
    digest = hashlib.sha256()
    for relative in relative_paths:
        digest.update(f"{relative}\0{sha256_file(root / relative)}\n".encode())
    return digest.hexdigest()


def hash_tree(directory: Path) -> dict[str, str]:
    """sha256 of every file below ``directory`` except the manifest, by relative path."""
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def unused_by(backend: str) -> Callable[[str], bool]:
    """The files of a version that ``backend`` (``onnx`` or ``saved_model``) never opens: the
    Keras file always (the re-export source), and the other format's graphs."""
    if backend == "saved_model":
        return lambda relative: relative == KERAS_MODEL or relative.endswith(".onnx")
    return lambda relative: relative == KERAS_MODEL or relative.startswith(SAVED_MODEL_DIR + "/")


def verify_files(
    directory: Path, manifest: dict[str, Any], may_be_absent: Callable[[str], bool] | None = None
) -> list[str]:
    """Problems found comparing files on disk with the manifest's hashes; empty when intact.
    ``may_be_absent(relative path)``: files a reader never opens, left out of a deployment
    (the Bento packs no SavedModel or Keras file for the ONNX backend); present, they are
    checked all the same."""
    problems = []
    for relative, expected in manifest["files"].items():
        path = directory / relative
        if not path.is_file():
            if may_be_absent is not None and may_be_absent(relative):
                continue
            problems.append(f"{relative}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{relative}: sha256 mismatch")
    return problems
