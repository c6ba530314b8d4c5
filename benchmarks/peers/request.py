"""The one V2 request every server gets, and the answer it should give (checked by
``benchmarks.answers``).

The image is the first MNIST test digit (scaled to [0, 1]) when the data folder is given, and
a fixed random image otherwise: the check compares with ONNX Runtime in-process on the same
input either way. The body is JSON with the 784 numbers flat, as V2 clients send it
(``benchmarks.payloads.v2_json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.payloads import v2_json


@dataclass(frozen=True)
class Request:
    body: bytes
    image: np.ndarray  # (1, 28, 28) float32
    expected: np.ndarray  # (1, 10): ONNX Runtime in-process on ``image``


def image(data_dir: Path | None) -> np.ndarray:
    if data_dir is not None:
        from benchmarks.payloads import mnist_test

        images, _ = mnist_test(data_dir, 1)
        return images.astype(np.float32) / 255.0
    return np.random.default_rng(0).random((1, 28, 28), dtype=np.float32)


def build(onnx: Path, data_dir: Path | None) -> Request:
    pixels = image(data_dir)
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: pixels})[0]
    return Request(v2_json(pixels).body, pixels, expected)
