"""Shared fixtures: the real local datasets and one quick-profile model repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_NAME = "weights/mobilenet_v2_1.0_160_no_top_imagenet_float.h5"


def find_data_dir() -> Path:
    """$TRAINING_DATA_DIR, else ../shared/datasets, else the training CLI's per-user cache,
    filled from the official sources the first time (a machine with internet needs no setup).
    """
    configured = os.environ.get("TRAINING_DATA_DIR")
    if configured:
        if not (Path(configured) / "mnist.npz").is_file():
            raise RuntimeError(
                f"no datasets found at {configured}: set TRAINING_DATA_DIR to a folder holding "
                "mnist.npz, bank-marketing/ and flowers/ (see README.md), or unset it"
            )
        return Path(configured).resolve()
    shared = ROOT.parent / "shared" / "datasets"
    if (shared / "mnist.npz").is_file():
        return shared.resolve()
    from training.datasets import bank, flowers, mnist
    from training.datasets.datadir import default_cache_dir, ensure

    cache = default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    for source in (mnist.SOURCE, bank.SOURCE, flowers.SOURCE):
        ensure(cache, source)
    return cache


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return find_data_dir()


@pytest.fixture(scope="session")
def weights_file(data_dir: Path) -> str:
    path = data_dir / WEIGHTS_NAME
    return str(path) if path.is_file() else "none"


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """The real command line, in a fresh process, as a user would run it."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_quick(
    model: str, data_dir: Path, out: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``train <model> --quick`` into ``out``, as a user would type it."""
    return run_cli(
        "train", model, "--quick", "--data-dir", str(data_dir), "--out", str(out), *options, env=env
    )


@pytest.fixture(scope="session")
def quick_repository(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, weights_file: str
) -> Path:
    """`train all --quick` once per session: the artifacts most tests inspect.
    ``TEST_MODEL_REPOSITORY`` names one already trained, for quicker local runs."""
    if reused := os.environ.get("TEST_MODEL_REPOSITORY"):
        return Path(reused).resolve()
    out = tmp_path_factory.mktemp("repository")
    result = train_quick("all", data_dir, out, "--weights", weights_file)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="session")
def service(quick_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real ``bentoml serve`` on free ports (HTTP and gRPC), serving the quick-profile
    repository."""
    from benchmarks.servers import Server

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = Server(env={"MODEL_REPOSITORY": str(quick_repository)}, log=log)
    with server:
        try:
            server.wait_until("/readyz", timeout=300)
        except Exception:
            print(log.read_text()[-4000:])
            raise
        yield server


@pytest.fixture(scope="session")
def service_url(service) -> str:
    return service.url


@pytest.fixture(scope="session")
def grpc_url(service) -> str:
    return f"127.0.0.1:{service.grpc_port}"
