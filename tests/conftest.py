"""Shared fixtures: the real local datasets and one quick-profile model repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
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


class QuickTraining:
    """``train <model> --quick`` for the seed models, one process each, started as soon as the
    tests are collected: the tests that need no trained model (ordered first) run meanwhile,
    and the four trainings overlap each other's single-threaded stages (loading, saving,
    tf2onnx, parity) on the two cores."""

    MODELS = ("digits", "flowers", "bank", "autoencoder")

    def __init__(self, out: Path, data_dir: Path, weights: str) -> None:
        self.out = out
        self.logs = {name: out.parent / f"train-{name}.log" for name in self.MODELS}
        self.processes = {}
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        for name in self.MODELS:
            command = [sys.executable, "-m", "training", "train", name, "--quick"]
            command += ["--data-dir", str(data_dir), "--out", str(out), "--weights", weights]
            with self.logs[name].open("w") as log:
                self.processes[name] = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )

    def wait(self) -> Path:
        for name, process in self.processes.items():
            code = process.wait(timeout=1800)
            assert code == 0, (
                f"train {name} --quick: exit {code}\n" + (self.logs[name].read_text()[-4000:])
            )
        return self.out

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _needs_training(item: pytest.Item) -> bool:
    return "quick_repository" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The test files that need no trained model first, and the quick training started now,
    in the background, when any selected test needs it. Whole files move, in their own order
    (their module fixtures are set up once, and some tests build on the one before)."""
    late = {item.path for item in items if _needs_training(item)}
    items.sort(key=lambda item: item.path in late)
    if os.environ.get("TEST_MODEL_REPOSITORY") or not any(map(_needs_training, items)):
        return
    if shared := _shared_training(config):
        shared.ask()  # under pytest-xdist: the controller trains, once for all workers
        return
    try:
        data_dir = find_data_dir()
    except Exception:  # no datasets: the data_dir fixture says so in each test that asks
        return
    config.stash[TRAINING] = _start_training(config, data_dir)


def _start_training(config: pytest.Config, data_dir: Path) -> QuickTraining:
    weights = data_dir / WEIGHTS_NAME
    out = config._tmp_path_factory.mktemp("quick") / "repository"  # type: ignore[attr-defined]
    training = QuickTraining(out, data_dir, str(weights) if weights.is_file() else "none")
    config.add_cleanup(training.stop)
    return training


TRAINING = pytest.StashKey[QuickTraining]()


class SharedTraining:
    """The quick training of a ``pytest -n N`` run (``make test``), owned by the controller
    and shared through files in one folder: a worker that collected a test needing a trained
    model writes ``asked``; the controller's thread then trains (``QuickTraining``) and writes
    ``done`` with each model's exit status. Training once, not once per worker, matters: it
    is four TensorFlow processes, minutes of both cores."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.asked, self.done = folder / "asked", folder / "done"

    def ask(self) -> None:
        self.asked.touch()

    def wait(self) -> Path:
        deadline = time.monotonic() + 1800
        while not self.done.exists():
            assert time.monotonic() < deadline, f"no quick training finished in {self.folder}"
            time.sleep(0.5)
        outcome = json.loads(self.done.read_text())
        assert "error" not in outcome, outcome.get("error")
        for name, code in outcome["codes"].items():
            log = Path(outcome["logs"][name]).read_text()[-4000:]
            assert code == 0, f"train {name} --quick: exit {code}\n{log}"
        return Path(outcome["out"])

    def serve(self, config: pytest.Config, stop: threading.Event) -> None:
        """The controller's side: train once asked, until the session ends."""
        while not self.asked.exists():
            if stop.wait(0.2):
                return
        try:
            training = _start_training(config, find_data_dir())
        except Exception as error:  # no datasets: each waiting test says so
            return self._finish({"error": f"quick training could not start: {error!r}"})
        codes = {name: None for name in training.MODELS}
        for name, process in training.processes.items():
            while (code := process.poll()) is None:
                if stop.wait(0.5):
                    return
            codes[name] = code
        logs = {name: str(path) for name, path in training.logs.items()}
        self._finish({"out": str(training.out), "codes": codes, "logs": logs})

    def _finish(self, outcome: dict) -> None:
        partial = self.done.with_suffix(".partial")
        partial.write_text(json.dumps(outcome))
        partial.replace(self.done)  # a worker never reads half a file


SHARED = pytest.StashKey[SharedTraining]()


def _shared_training(config: pytest.Config) -> SharedTraining | None:
    folder = getattr(config, "workerinput", {}).get("quick_training")
    return SharedTraining(Path(folder)) if folder else None


@pytest.hookimpl(trylast=True)  # after the tmp_path plugin's own configure
def pytest_configure(config: pytest.Config) -> None:
    """A pytest-xdist controller (``-n``) keeps the one quick training of the run."""
    if getattr(config, "workerinput", None) is not None or not config.pluginmanager.hasplugin(
        "xdist"
    ):
        return
    if not config.getoption("numprocesses", None) or os.environ.get("TEST_MODEL_REPOSITORY"):
        return
    shared = SharedTraining(config._tmp_path_factory.mktemp("shared-training"))  # type: ignore[attr-defined]
    stop = threading.Event()
    thread = threading.Thread(target=shared.serve, args=(config, stop), daemon=True)
    thread.start()
    config.stash[SHARED] = shared
    config.add_cleanup(lambda: (stop.set(), thread.join(timeout=10)))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # pytest-xdist's hook, run by the controller
    if SHARED in node.config.stash:
        node.workerinput["quick_training"] = str(node.config.stash[SHARED].folder)


@pytest.fixture(scope="session")
def quick_repository(request: pytest.FixtureRequest) -> Path:
    """The quick-profile repository most tests inspect, trained once per session (see
    QuickTraining, and SharedTraining under ``-n``). ``TEST_MODEL_REPOSITORY`` names one
    already trained, for quicker local runs."""
    if reused := os.environ.get("TEST_MODEL_REPOSITORY"):
        return Path(reused).resolve()
    if shared := _shared_training(request.config):
        shared.ask()
        return shared.wait()
    if TRAINING not in request.config.stash:
        data_dir = request.getfixturevalue("data_dir")
        request.config.stash[TRAINING] = _start_training(request.config, data_dir)
    return request.config.stash[TRAINING].wait()


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


# Every server a test starts (benchmarks.servers.Server) is read for tracebacks when its test
# file ends: an exception in a background loop (a poll that raises every second) answers no
# request wrongly, so no request-level assert sees it. A file that provokes one on purpose
# lists a fragment of each expected traceback's last line in ``EXPECTED_TRACEBACKS``.
_log_read_to: dict[Path, int] = {}


def new_tracebacks() -> list[str]:
    """The tracebacks written to any started server's log since the last call: each as its
    log's name, its last line, and the lines leading to it."""
    from benchmarks.servers import Server

    found = []
    for server in Server.started:
        path = server.log_path
        if not path.is_file():
            continue
        start = _log_read_to.get(path, 0)
        if path.stat().st_size < start:  # started again: a new log
            start = 0
        with open(path, "rb") as log:
            log.seek(start)
            text = log.read()
        _log_read_to[path] = start + len(text)
        lines = text.decode(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("Traceback (most recent call last):"):
                continue
            end = i + 1
            while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
                end += 1
            last = lines[end] if end < len(lines) else "(cut off)"
            found.append(f"{path}: {last}\n" + "\n".join(lines[max(i - 1, end - 12) : end + 1]))
    return found


@pytest.fixture(autouse=True, scope="module")
def servers_log_no_unexpected_traceback(request: pytest.FixtureRequest):
    yield
    expected = getattr(request.module, "EXPECTED_TRACEBACKS", ())
    found = [t for t in new_tracebacks() if not any(e in t.split("\n", 1)[0] for e in expected)]
    if not found:
        return
    report = os.environ.get("TEST_SERVER_TRACEBACKS_REPORT")
    if report:  # collect them all, failing nothing (finding which files need a list)
        with open(report, "a") as out:
            out.write(f"== {request.module.__name__}\n" + "\n\n".join(found) + "\n")
        return
    pytest.fail(
        f"{len(found)} unexpected traceback(s) in the logs of servers this file started:\n\n"
        + "\n\n".join(found[:5]),
        pytrace=False,
    )
