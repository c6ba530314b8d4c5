"""One cached venv per peer under ``~/.cache/keras-model-serving/peers/<peer>/venv``.

Peers pin clashing versions of the same libraries (FastAPI, pydantic, grpcio, protobuf), so
each gets its own. A venv is reused when the requirements it was built from (kept in a file
inside it) are the ones asked for; otherwise it is built again. A failed install leaves no
venv behind, only its log, so the next run tries again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
ROOT = CACHE / "keras-model-serving" / "peers"
STAMP = "peer-requirements.txt"
# Measured on this machine: 15-40 s a peer with a warm pip cache; allow a slow index.
INSTALL_TIMEOUT_S = 1800


class InstallFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Venv:
    python: Path
    reused: bool
    seconds: float
    size_mb: float


def folder_size_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return round(total / 2**20, 1)


def _stamp(requirements: tuple[str, ...]) -> str:
    return "\n".join(requirements) + "\n"


def current(peer: str, requirements: tuple[str, ...]) -> bool:
    """Whether the cached venv of ``peer`` was built from exactly ``requirements``."""
    venv = ROOT / peer / "venv"
    stamp = venv / STAMP
    return (
        (venv / "bin" / "python").exists()
        and stamp.exists()
        and stamp.read_text() == _stamp(requirements)
    )


def ensure(peer: str, requirements: tuple[str, ...]) -> Venv:
    """The venv of ``peer`` with exactly ``requirements`` installed; built when missing."""
    home = ROOT / peer
    venv = home / "venv"
    python = venv / "bin" / "python"
    if current(peer, requirements):
        return Venv(python, reused=True, seconds=0.0, size_mb=folder_size_mb(venv))
    shutil.rmtree(venv, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    log = home / "install.log"
    started = time.monotonic()
    try:
        with open(log, "wb") as out:
            # The venv module of this interpreter makes a venv of its base Python (3.11).
            steps = [
                [sys.executable, "-m", "venv", str(venv)],
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements],
            ]
            for step in steps:
                out.write(f"$ {' '.join(step)}\n".encode())
                out.flush()
                subprocess.run(
                    step,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=INSTALL_TIMEOUT_S,
                    check=True,
                )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        shutil.rmtree(venv, ignore_errors=True)
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        errors = [line for line in lines if "ERROR" in line] or lines[-3:]
        raise InstallFailed(f"{error}; {' | '.join(errors[-3:])} (log: {log})") from error
    (venv / STAMP).write_text(_stamp(requirements))
    return Venv(
        python,
        reused=False,
        seconds=round(time.monotonic() - started, 1),
        size_mb=folder_size_mb(venv),
    )
