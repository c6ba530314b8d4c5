"""service.backends.onnx: the providers chosen, and the CPU fallback when the accelerator a
setting asks for is not in this ONNX Runtime build; a synthetic graph answers on it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.backends.onnx import CPU, CUDA, OnnxBackend, choose_providers
from tests.unit.synthetic import B, W, affine_onnx

no_cuda = pytest.mark.skipif(
    CUDA in ort.get_available_providers(), reason="this ONNX Runtime has CUDA: no fallback"
)


@no_cuda
@pytest.mark.parametrize("requested", ["cuda", "tensorrt"])
def test_an_accelerator_not_here_falls_back_to_the_cpu_saying_so(requested, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="service.backends.onnx"):
        assert choose_providers(requested, tf32=False) == [CPU]
    assert f"provider {requested} requested but not available here" in caplog.text


@no_cuda
def test_auto_is_the_cpu_here_without_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="service.backends.onnx"):
        assert choose_providers("auto", tf32=False) == [CPU]
    assert caplog.text == ""


def test_cpu_is_the_cpu_everywhere() -> None:
    assert choose_providers("cpu", tf32=True) == [CPU]


def test_the_fallback_session_runs_on_the_cpu_and_answers(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(affine_onnx())
    backend = OnnxBackend(path, choose_providers("cuda", tf32=False), threads=1)
    if CUDA not in ort.get_available_providers():
        assert backend.provider == CPU
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    np.testing.assert_allclose(backend.run({"x": x})["y"], x @ W + B, rtol=1e-6)
