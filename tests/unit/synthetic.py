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


def affine_onnx(x: str = "x", y: str = "y") -> bytes:
    """``y = x @ W + b`` as an ONNX graph, batch first."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", [x, "w"], ["h"]), helper.make_node("Add", ["h", "b"], [y])],
        "affine",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(B, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the pinned ONNX Runtime reads
    onnx.checker.check_model(model)
    return model.SerializeToString()


def failing_onnx() -> bytes:
    """``y = x[i, int(x[i, j])]`` (GatherElements on the row itself): zeros, the warm-up's
    feed, answer; a value past the row's 4 places makes ONNX Runtime fail the run ("indices
    element out of data bounds"), a fault of the model the service must answer 500."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
            helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1),
        ],
        "failing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


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
