"""The peers: what each installs (pinned), how it is started, what it speaks, how it batches.

Every peer serves the same digits ONNX graph with ONNX Runtime on the CPU, at
``/v2/models/digits/infer`` on a loopback port, and takes the same V2 request body. Batching
is on wherever the peer has it, with our service's limits (the largest batch and the longest
wait of a first request for company) so that none gets a looser setting than ours. Everything
else is each peer's default. The serving glue of each peer is a file in ``apps/``; it is
copied into a temporary folder with whatever configuration files the peer wants.

Versions are the ones the team measured with; ``onnxruntime`` (and ``numpy`` where the peer
allows) are those of the project, so that the graph runs the same code everywhere.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.config import BatchingConfig

APPS = Path(__file__).parent / "apps"
ROUTE = "/v2/models/digits/infer"
MAX_BATCH = BatchingConfig().max_batch_size
MAX_WAIT_MS = BatchingConfig().max_wait_ms
COMMON = ("onnxruntime==1.32.0", "numpy==2.4.6")


@dataclass(frozen=True)
class Launch:
    """Where and how one peer starts this time."""

    python: Path
    workdir: Path
    port: int
    ports: dict[str, int]  # the other ports it must not take by default (gRPC, metrics)
    onnx: Path

    def env(self) -> dict[str, str]:
        """What the glue in ``apps/`` reads: the graph, its ports, the batching limits."""
        return {
            "PEER_ONNX": str(self.onnx),
            "PEER_PORT": str(self.port),
            "PEER_PORTS": json.dumps(self.ports),
            "PEER_MAX_BATCH": str(MAX_BATCH),
            "PEER_MAX_WAIT_MS": str(MAX_WAIT_MS),
        }


def _nothing(_: Launch) -> dict[str, str]:
    return {}


def _run_app(app: str) -> Callable[[Launch], list[str]]:
    return lambda launch: [str(launch.python), app]


@dataclass(frozen=True)
class Peer:
    name: str  # short, used for the venv folder and the command line
    label: str  # for people: product and version
    requirements: tuple[str, ...]  # pinned; empty means the project's own venv
    app: str  # the glue in apps/, copied to ``app_dest`` in the work folder
    command: Callable[[Launch], list[str]]
    native_v2: bool
    batching: str
    notes: str = ""
    app_dest: str = ""
    files: Callable[[Launch], dict[str, str]] = _nothing  # name in the work folder -> text
    env: Callable[[Launch], dict[str, str]] = _nothing  # beyond Launch.env()
    extra_ports: tuple[str, ...] = ()

    @property
    def destination(self) -> str:
        return self.app_dest or self.app


def _bentoml_command(launch: Launch) -> list[str]:
    return [
        *(str(launch.python), "-m", "bentoml", "serve", "bentoml_v2:StockDigitsV2"),
        *("--host", "127.0.0.1", "--port", str(launch.port)),
    ]


def _bentoml_env(launch: Launch) -> dict[str, str]:
    # BentoML clears the Prometheus folder under its home at start: one home per server.
    return {"BENTOML_HOME": str(launch.workdir / "bentoml-home")}


def _mlserver_files(launch: Launch) -> dict[str, str]:
    settings = {
        "host": "127.0.0.1",
        "http_port": launch.port,
        "grpc_port": launch.ports["grpc"],
        "metrics_port": launch.ports["metrics"],
    }
    model = {
        "name": "digits",
        "implementation": "mlserver_runtime.OnnxDigits",
        "max_batch_size": MAX_BATCH,
        "max_batch_time": MAX_WAIT_MS / 1000,
        "parameters": {"uri": str(launch.onnx)},
    }
    return {
        "settings.json": json.dumps(settings, indent=2),
        "digits/model-settings.json": json.dumps(model, indent=2),
    }


def _mlserver_command(launch: Launch) -> list[str]:
    return [str(launch.python.parent / "mlserver"), "start", str(launch.workdir)]


PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer(
            name="bentoml",
            label="BentoML 1.4.39 (stock)",
            requirements=(),
            app="bentoml_v2.py",
            command=_bentoml_command,
            env=_bentoml_env,
            native_v2=False,
            batching=f"batchable API, max {MAX_BATCH}",
            notes="takes the V2 body; answers the V2 outputs list, no wrapper object",
        ),
        Peer(
            name="mlserver",
            label="MLServer 1.7.1",
            # uvloop 0.22+ has no implicit loop in get_event_loop(), which MLServer's inference
            # worker calls at start: every worker died at start with the newest (0.23.0).
            requirements=("mlserver==1.7.1", "uvloop==0.21.0", *COMMON),
            app="mlserver_runtime.py",
            app_dest="digits/mlserver_runtime.py",
            command=_mlserver_command,
            files=_mlserver_files,
            extra_ports=("grpc", "metrics"),
            native_v2=True,
            batching=f"adaptive, max {MAX_BATCH}, {MAX_WAIT_MS:g} ms",
            notes="custom runtime (MLServer has no ONNX runtime)",
        ),
        Peer(
            name="litserve",
            label="LitServe 0.2.19",
            requirements=("litserve==0.2.19", *COMMON),
            app="litserve_app.py",
            command=_run_app("litserve_app.py"),
            native_v2=False,
            batching=f"max {MAX_BATCH}, {MAX_WAIT_MS:g} ms",
            notes="V2 body and answer written in the LitAPI",
        ),
        Peer(
            name="kserve",
            label="KServe 0.21.0",
            requirements=("kserve==0.21.0", *COMMON),
            app="kserve_app.py",
            command=_run_app("kserve_app.py"),
            native_v2=True,
            batching="none (KServe batches in its Go agent sidecar)",
            notes="Python ModelServer, custom Model",
        ),
        Peer(
            name="triton",
            label="Triton 2.51.0 (PyTriton 0.7.0)",
            # PyTriton 0.7.0 requires numpy < 2.
            requirements=("nvidia-pytriton==0.7.0", "onnxruntime==1.32.0", "numpy==1.26.4"),
            app="pytriton_app.py",
            command=_run_app("pytriton_app.py"),
            extra_ports=("grpc", "metrics"),
            native_v2=True,
            batching=f"dynamic batcher, max {MAX_BATCH}, {MAX_WAIT_MS:g} ms",
            notes="bundled tritonserver; Python function bound through PyTriton",
        ),
        Peer(
            name="rayserve",
            label="Ray Serve 2.60.0",
            requirements=("ray[serve]==2.60.0", *COMMON),
            app="rayserve_app.py",
            command=_run_app("rayserve_app.py"),
            native_v2=False,
            batching=f"@serve.batch, max {MAX_BATCH}, {MAX_WAIT_MS:g} ms",
            notes="V2 body and answer written in the deployment",
        ),
    )
}


def own_python() -> Path:
    """The project's interpreter, for peers that need nothing it lacks (stock BentoML)."""
    return Path(sys.executable)
