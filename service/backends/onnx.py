"""ONNX Runtime backend: CUDA (or TensorRT) when the machine has it, the CPU otherwise."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnxruntime as ort

from service.backends import Feed, Outputs

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def choose_providers(requested: str, tf32: bool) -> list[Any]:
    """Providers in preference order for ``requested`` (auto, cuda, tensorrt, cpu).

    TF32 is off unless asked for: on an H100 it moves outputs by up to 2e-2 from the CPU
    results the models were validated against.
    """
    available = ort.get_available_providers()
    cuda = (CUDA, {"use_tf32": "1" if tf32 else "0"})
    if requested == "cpu":
        return [CPU]
    if requested == "tensorrt" and TENSORRT in available:
        return [TENSORRT, cuda, CPU]
    if requested in ("auto", "cuda", "tensorrt") and CUDA in available:
        _preload_cuda_libraries()
        return [cuda, CPU]
    if requested != "auto":
        logger.warning("provider %s requested but not available here; using the CPU", requested)
    return [CPU]


def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* wheels when they are how CUDA was installed."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as error:  # a system CUDA install still works without it
            logger.debug("onnxruntime.preload_dlls failed: %s", error)


class OnnxBackend:
    name = "onnx"

    def __init__(self, path: Path, providers: list[Any], threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads would spin on the cores the HTTP side needs between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=providers)
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.provider = self._session.get_providers()[0]

    def run(self, feed: Feed) -> Outputs:
        return dict(zip(self._outputs, self._session.run(self._outputs, feed), strict=True))
