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

import dataclasses
import functools
import json
import os
import shutil
import sys
import sysconfig
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
    setup: Callable[[Launch], None] | None = None  # what files() cannot write (binaries)
    venv: str = ""  # the cached venv's folder, when peers share one (default: name)

    @property
    def destination(self) -> str:
        return self.app_dest or self.app

    @property
    def venv_name(self) -> str:
        return self.venv or self.name


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


# Triton: the bundled ``tritonserver`` binary on a model repository of its own (config.pbtxt
# and a Python-backend model.py calling ONNX Runtime), so that no PyTriton code sits between
# Triton and the model. 5 ms of queue delay is the setting that served most here (the issue's
# measurement); the dynamic batcher sends a batch as soon as it is full or the delay is over.
TRITON_QUEUE_DELAY_MS = 5.0
TRITON_REQUIREMENTS = ("nvidia-pytriton==0.7.0", "onnxruntime==1.32.0", "numpy==1.26.4")


def _pytriton_dir(launch: Launch) -> Path:
    """``pytriton/tritonserver`` in the peer's venv: the binary, the Python backend, stubs."""
    found = sorted(launch.python.parent.parent.glob("lib/python*/site-packages/pytriton"))
    if not found:
        raise FileNotFoundError(f"no pytriton package in the venv of {launch.python}")
    return found[0] / "tritonserver"


def _triton_files(launch: Launch, instances: int = 1) -> dict[str, str]:
    """``instances``: the Python backend's CPU instances, each a process of its own (the
    stub), as ``SERVING_WORKERS`` is for ours."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(launch.onnx), providers=["CPUExecutionProvider"])
    image, answer = session.get_inputs()[0], session.get_outputs()[0]

    def dims(shape: list) -> str:  # without the batch dimension; -1 where free
        return ", ".join(str(d) if isinstance(d, int) else "-1" for d in shape[1:])

    delay_us = int(TRITON_QUEUE_DELAY_MS * 1000)
    config = f"""name: "digits"
backend: "python"
max_batch_size: {MAX_BATCH}
input [ {{ name: "{image.name}" data_type: TYPE_FP32 dims: [ {dims(image.shape)} ] }} ]
output [ {{ name: "{answer.name}" data_type: TYPE_FP32 dims: [ {dims(answer.shape)} ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
parameters {{ key: "onnx" value: {{ string_value: "{launch.onnx}" }} }}
"""
    return {"models/digits/config.pbtxt": config}


def _triton_setup(launch: Launch) -> None:
    """The Python backend with the stub built for the venv's Python, as PyTriton lays it out."""
    dist = _pytriton_dir(launch)
    backends = launch.workdir / "backends"
    shutil.copytree(dist / "backends", backends, dirs_exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"  # the venv's (venvs.ensure)
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    shutil.copy(stub, backends / "python" / "triton_python_backend_stub")


def _triton_command(launch: Launch) -> list[str]:
    dist = _pytriton_dir(launch)
    return [
        str(dist / "bin" / "tritonserver"),
        *("--model-repository", str(launch.workdir / "models")),
        *("--backend-directory", str(launch.workdir / "backends")),
        *("--cache-directory", str(dist / "caches")),
        *("--http-address", "127.0.0.1", "--http-port", str(launch.port)),
        "--allow-grpc=false",
        *("--metrics-address", "127.0.0.1", "--metrics-port", str(launch.ports["metrics"])),
    ]


def _triton_env(launch: Launch) -> dict[str, str]:
    # The stub runs the first ``python3`` on PATH (the venv's, with numpy and ONNX Runtime)
    # and links libpython3.X.so.1.0 by name: the system's (Debian's 3.11.2) came before this
    # interpreter's (pyenv's 3.11.7), and 3.11.2's C code under 3.11.7's standard library
    # failed at model load. nvidia_pytriton.libs holds the libraries tritonserver links.
    libs = _pytriton_dir(launch).parent.parent / "nvidia_pytriton.libs"
    paths = [sysconfig.get_config_var("LIBDIR"), str(libs), os.environ.get("LD_LIBRARY_PATH")]
    return {
        "PATH": f"{launch.python.parent}:{os.environ.get('PATH', '')}",
        "LD_LIBRARY_PATH": ":".join(filter(None, paths)),
    }


TRITON = Peer(
    name="triton",
    label="Triton 2.51.0 (model repository, Python backend)",
    # nvidia-pytriton is only where the tritonserver binary comes from; PyTriton
    # 0.7.0 requires numpy < 2.
    requirements=TRITON_REQUIREMENTS,
    app="triton_model.py",
    app_dest="models/digits/1/model.py",
    command=_triton_command,
    files=_triton_files,
    setup=_triton_setup,
    env=_triton_env,
    extra_ports=("metrics",),
    native_v2=True,
    batching=f"dynamic batcher, max {MAX_BATCH}, {TRITON_QUEUE_DELAY_MS:g} ms",
    notes="tritonserver from nvidia-pytriton on a model repository: config.pbtxt, "
    "model.py calling ONNX Runtime, 1 CPU instance, gRPC off",
)


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
        TRITON,
        dataclasses.replace(
            TRITON,
            name="triton-2",
            label="Triton 2.51.0 (model repository, Python backend, 2 instances)",
            files=functools.partial(_triton_files, instances=2),
            venv="triton",
            notes=TRITON.notes.replace(
                "1 CPU instance", "2 CPU instances (compare with ours at SERVING_WORKERS=2)"
            ),
        ),
        Peer(
            name="pytriton",
            label="Triton 2.51.0 through PyTriton 0.7.0",
            requirements=TRITON_REQUIREMENTS,
            venv="triton",
            app="pytriton_app.py",
            command=_run_app("pytriton_app.py"),
            extra_ports=("grpc", "metrics"),
            native_v2=True,
            batching=f"dynamic batcher, max {MAX_BATCH}, {MAX_WAIT_MS:g} ms",
            notes="PyTriton's bound Python function: its proxy sits between Triton and the "
            "model (not Triton at its best)",
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
