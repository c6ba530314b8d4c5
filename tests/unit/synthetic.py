"""Small synthetic models for the fast tests: ONNX graphs made with ``onnx.helper`` and
manifests written here, published into a temporary repository; and the service's real ASGI
app, Registry and Runtime in this process (no ``bentoml serve``, no training)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np

WIDTH, CLASSES = 4, 3
W = (np.arange(WIDTH * CLASSES, dtype=np.float32).reshape(WIDTH, CLASSES) - 5) / 10
B = np.array([0.1, -0.2, 0.3], np.float32)
_namespaces = itertools.count()


def onnx_model(
    nodes: list[Any],
    inputs: dict[str, list[Any]],
    outputs: dict[str, list[Any]],
    weights: dict[str, np.ndarray] | None = None,
    types: dict[str, int] | None = None,
) -> bytes:
    """A checked ONNX graph of ``nodes`` as the pinned ONNX Runtime reads it (opset 17, IR
    8): ``inputs`` and ``outputs`` by name and shape (float32 unless ``types`` says),
    ``weights`` its initializers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def info(name: str, shape: list[Any]) -> Any:
        kind = (types or {}).get(name, TensorProto.FLOAT)
        return helper.make_tensor_value_info(name, kind, shape)

    graph = helper.make_graph(
        nodes,
        "synthetic",
        [info(name, shape) for name, shape in inputs.items()],
        [info(name, shape) for name, shape in outputs.items()],
        [numpy_helper.from_array(value, name) for name, value in (weights or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the pinned ONNX Runtime reads
    onnx.checker.check_model(model)
    return model.SerializeToString()


def affine_onnx(x: str = "x", y: str = "y") -> bytes:
    """``y = x @ W + b`` as an ONNX graph, batch first."""
    from onnx import helper

    return onnx_model(
        [helper.make_node("MatMul", [x, "w"], ["h"]), helper.make_node("Add", ["h", "b"], [y])],
        {x: ["batch", WIDTH]},
        {y: ["batch", CLASSES]},
        {"w": W, "b": B},
    )


def failing_onnx() -> bytes:
    """``y = x[i, int(x[i, j])]`` (GatherElements on the row itself): zeros, the warm-up's
    feed, answer; a value past the row's 4 places makes ONNX Runtime fail the run ("indices
    element out of data bounds"), a fault of the model the service must answer 500."""
    from onnx import TensorProto, helper

    return onnx_model(
        [
            helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
            helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1),
        ],
        {"x": ["batch", WIDTH]},
        {"y": ["batch", WIDTH]},
    )


def digits_onnx(x: str = "x", p: str = "p", weights: np.ndarray | None = None) -> bytes:
    """28x28 pictures to 10 softmax scores, ``p = softmax(reshape(x, 784) @ weights)``: an
    MNIST-shaped image model (a uniform answer with the default zero weights)."""
    from onnx import helper

    return onnx_model(
        [
            helper.make_node("Reshape", [x, "flat"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["h"]),
            helper.make_node("Softmax", ["h"], [p], axis=1),
        ],
        {x: ["batch", 28, 28]},
        {p: ["batch", 10]},
        {
            "flat": np.array([-1, 784], np.int64),
            "w": np.zeros((784, 10), np.float32) if weights is None else weights,
        },
    )


def tensor(name: str, shape: list[int], dtype: str = "float32", **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": dtype, **extra}


def signature(
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    input_kind: str = "tensor",
    answer: str = "tensor",
    onnx: str = "model.onnx",
) -> dict[str, Any]:
    return {
        "onnx": onnx,
        "interface": {"input": input_kind, "answer": answer},
        "inputs": inputs or [tensor("x", [-1, WIDTH])],
        "outputs": outputs or [tensor("y", [-1, CLASSES])],
    }


def manifest(name: str, number: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "version": number,
        "title": f"{name} (synthetic)",
        "signatures": {"predict": signature()},
        "labels": [],
        "files": {},
        **fields,
    }


def publish(root: Path, described: dict[str, Any], files: dict[str, bytes]) -> Path:
    """A version folder as the training CLI publishes it: the files, and a manifest listing
    each with its sha256."""
    folder = root / described["name"] / str(described["version"])
    folder.mkdir(parents=True)
    for relative, data in files.items():
        (folder / relative).write_bytes(data)
    hashes = {relative: hashlib.sha256(data).hexdigest() for relative, data in files.items()}
    described = {**described, "files": {**described.get("files", {}), **hashes}}
    (folder / "manifest.json").write_text(json.dumps(described, indent=2))
    return folder


class InProcess:
    """The service's ASGI app over a repository, in this process: the real route table,
    Registry (loading, sha256 checks, warm-up), batchers and ONNX Runtime."""

    def __init__(self, repository: Path, **environ: str) -> None:
        self.environ = {
            "MODEL_REPOSITORY": str(repository),
            "SERVING_GRPC_PORT": "0",
            "SERVING_POLL_INTERVAL": "0",
            "SERVING_STATE_DIR": str(repository.parent / "state"),
            **environ,
        }

    def __enter__(self) -> InProcess:
        from service import app
        from service.admin import SharedState
        from service.config import load_config
        from service.inference import Runtime
        from service.metrics import Metrics
        from service.registry.following import Registry

        settings = load_config(self.environ)
        metrics = Metrics(f"unit{next(_namespaces)}")  # its own names: one registry per process
        self.registry = Registry(settings, metrics, SharedState(settings))
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.registry.refresh())
        self.runtime = Runtime(settings, metrics, self.registry)
        self.app = app.App(_nothing_else, self.runtime)
        self._grpc: Any = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._grpc is not None:
            self.loop.run_until_complete(self._grpc.stop(None))
        self.registry.close()
        self.loop.close()

    def grpc(self, method: str, message: Any, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        """One call of the service's real gRPC servicer over a real channel: a server of this
        process on a free port of 127.0.0.1, started at the first call."""
        import grpc

        from service.protocols import grpc as ours

        async def go() -> Any:
            if self._grpc is None:
                server = grpc.aio.server()
                server.add_generic_rpc_handlers((ours.handlers(ours.Servicer(self.runtime)),))
                self._grpc_port = server.add_insecure_port("127.0.0.1:0")
                await server.start()
                self._grpc = server
            async with grpc.aio.insecure_channel(f"127.0.0.1:{self._grpc_port}") as channel:
                stub = ours.pb_grpc.GRPCInferenceServiceStub(channel)
                return await getattr(stub, method)(message, metadata=metadata)

        return self.loop.run_until_complete(go())

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
                return await client.request(method, path, **kwargs)

        return self.loop.run_until_complete(go())


async def _nothing_else(scope: Any, receive: Any, send: Any) -> None:
    """BentoML's own routes (/livez, /metrics...): none are asked here."""
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})
