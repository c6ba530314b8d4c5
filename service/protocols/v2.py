"""Open Inference Protocol (V2, KServe / Triton REST) on the service's own port.

Every signature of every served model is a V2 model (``v2_names.names``): its
inputs and outputs are the signature's protocol tensors. This module answers the metadata,
health and configuration endpoints; inference (``infer``) lives with the tensor reader and
writer in ``v2_codec``, so a V2 request crosses one protocol module. Errors are
``{"error": ...}`` with 400 or 404 (408, 413, 503 and 504 keep their meaning).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from service.descriptor import SignatureView
from service.errors import RequestError
from service.http import RawRequest, Reply, json_reply
from service.inference import Runtime
from service.interfaces.base import BYTES
from service.protocols import v2_names
from service.protocols.common import protocol_errors
from service.registry.lookup import READY, Loaded, version_number

SERVER_NAME = "keras-model-serving"
EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "parameters",
]
PLATFORMS = {"onnx": "onnxruntime_onnx", "saved_model": "tensorflow_savedmodel"}


# -- metadata, health and configuration -----------------------------------------------------


def _target(runtime: Runtime, name: str, version: str | None) -> tuple[Loaded, SignatureView]:
    model, signature = v2_names.target(runtime, name)
    loaded = runtime.registry.resolve(model, version_number(version))
    assert loaded.version is not None
    return loaded, loaded.version.view(signature)


def _platform(loaded: Loaded) -> str:
    return PLATFORMS.get(loaded.backend or "onnx", "onnxruntime_onnx")


def model_metadata(
    name: str, loaded: Loaded, view: SignatureView, served: list[int]
) -> dict[str, Any]:
    def describe(tensor: Any) -> dict[str, Any]:
        return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}

    return {
        "name": name,
        "versions": [str(v) for v in served],
        "platform": _platform(loaded),
        "inputs": [describe(t) for t in view.inputs],
        "outputs": [describe(t) for t in view.outputs],
    }


def model_config(
    name: str, loaded: Loaded, view: SignatureView, policy: dict[str, Any]
) -> dict[str, Any]:
    """Triton's model configuration (what perf_analyzer asks for): dims without the batch."""

    def describe(tensor: Any) -> dict[str, Any]:
        return {
            "name": tensor.name,
            "data_type": f"TYPE_{'STRING' if tensor.datatype == BYTES else tensor.datatype}",
            "dims": list(tensor.shape[1:]) or [1],
        }

    batcher = loaded.batchers[view.name]
    batching = batcher.config
    config: dict[str, Any] = {
        "name": name,
        "platform": _platform(loaded),
        "max_batch_size": batching.max_batch_size,
        "input": [describe(t) for t in view.inputs],
        "output": [describe(t) for t in view.outputs],
        "version_policy": policy,
    }
    if batching.enabled:
        delay = int(batching.max_wait_ms * 1000)
        config["dynamic_batching"] = {"max_queue_delay_microseconds": delay}
    return config


def _json(content: dict[str, Any], status: int = 200) -> Reply:
    return json_reply(content, status)


def _version() -> str:
    try:
        return importlib.metadata.version(SERVER_NAME)
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


async def server_metadata(request: RawRequest, runtime: Runtime) -> Reply:
    return _json({"name": SERVER_NAME, "version": _version(), "extensions": EXTENSIONS})


async def server_live(request: RawRequest, runtime: Runtime) -> Reply:
    return _json({"live": True})


async def server_ready(request: RawRequest, runtime: Runtime) -> Reply:
    registry = runtime.registry
    if registry.ready:
        return _json({"ready": True})
    reasons = registry.not_ready_reasons()
    error = RequestError("not_ready", "not every model is ready")
    return _json({**error.body(), "models": reasons, "ready": False}, status=error.status)


async def metadata(
    request: RawRequest, runtime: Runtime, name: str, version: str | None = None
) -> Reply:
    try:
        loaded, view = _target(runtime, name, version)
    except RequestError as error:
        return protocol_errors(error)
    model = runtime.registry.find(loaded.model)
    served = [v.number for v in model.ready_versions]
    return _json(model_metadata(name, loaded, view, served))


async def ready(
    request: RawRequest, runtime: Runtime, name: str, version: str | None = None
) -> Reply:
    try:
        model_name, _ = v2_names.target(runtime, name)
        model = runtime.registry.find(model_name)
        number = version_number(version)
        if number is not None:
            number = model.number_of(number)  # a label: its version
    except RequestError as error:
        return protocol_errors(error)
    known = model.latest() if number is None else model.versions.get(number)
    if known is None and number is not None:
        return protocol_errors(model.unknown_version(number))
    if known is not None and known.state == READY:
        return _json({"name": name, "ready": True})
    reason = (known.reason or known.state) if known is not None else (model.reason or model.state)
    error = RequestError("model_not_ready", f"model {name!r} is not ready: {reason}")
    return _json({**error.body(), "ready": False}, status=error.status)


async def config(
    request: RawRequest, runtime: Runtime, name: str, version: str | None = None
) -> Reply:
    try:
        loaded, view = _target(runtime, name, version)
    except RequestError as error:
        return protocol_errors(error)
    policy = runtime.registry.find(loaded.model).config.version_policy.describe()
    return _json(model_config(name, loaded, view, policy))
