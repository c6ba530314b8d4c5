"""Where datasets live, and how a missing one is fetched from its official source.

Order: the ``--data-dir`` flag, then ``$TRAINING_DATA_DIR``, then a per-user cache. Every
layout is the same: ``mnist.npz``, ``bank-marketing/bank-full.csv``, ``flowers/<class>/*``.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from training.errors import TrainingError

ENV_VAR = "TRAINING_DATA_DIR"


def default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "keras-model-serving" / "datasets"


def resolve_data_dir(flag: str | None) -> Path:
    """The data directory to use; an explicitly named one must exist."""
    if flag:
        path = Path(flag).expanduser()
        if not path.is_dir():
            raise TrainingError(f"data directory {path} does not exist (--data-dir)")
        return path.resolve()
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR]).expanduser()
        if not path.is_dir():
            raise TrainingError(f"data directory {path} does not exist (${ENV_VAR})")
        return path.resolve()
    path = default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Source:
    """A dataset's official download and how to unpack it into the data-dir layout."""

    url: str
    target: str  # path inside the data dir that must exist afterwards
    unpack: Callable[[Path, Path], None]  # (downloaded file, data dir)


def ensure(data_dir: Path, source: Source) -> Path:
    """Path of ``source.target`` in ``data_dir``, downloading it first when missing."""
    target = data_dir / source.target
    if target.exists():
        return target
    if not os.access(data_dir, os.W_OK):
        raise TrainingError(
            f"{target} is missing, and {data_dir} is read-only so it cannot be downloaded there"
        )
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".download-") as tmp:
        archive = Path(tmp) / Path(source.url).name
        _download(source.url, archive, needed=target)
        source.unpack(archive, Path(tmp))
        staged = Path(tmp) / source.target
        if not staged.exists():
            raise TrainingError(f"{source.url} did not contain {source.target}")
        staged.parent.mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(target)
    return target


def _download(url: str, destination: Path, needed: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with (
                destination.open("wb") as out,
                tqdm(
                    total=total, unit="B", unit_scale=True, desc=f"download {destination.name}"
                ) as bar,
            ):
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as error:
        raise TrainingError(
            f"{needed} is missing and could not be downloaded from {url} ({error}). "
            f"Put the file there, or point --data-dir / ${ENV_VAR} at a directory holding it."
        ) from None


def copy_file(archive: Path, staging: Path, target: str) -> None:
    (staging / target).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive, staging / target)


def extract_tar_folder(archive: Path, staging: Path, inner: str, target: str) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    (staging / inner).rename(staging / target)


def extract_zip_member(archive: Path, staging: Path, members: list[str], target: str) -> None:
    """Follow ``members`` through nested zips (UCI ships bank.zip inside its archive)."""
    current = archive
    for member in members:
        with zipfile.ZipFile(current) as zf:
            name = next((n for n in zf.namelist() if n.endswith(member)), None)
            if name is None:
                raise TrainingError(f"{current.name} has no member {member}")
            out = staging / f".member-{Path(member).name}"
            with zf.open(name) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)
        current = out
    (staging / target).parent.mkdir(parents=True, exist_ok=True)
    current.rename(staging / target)
