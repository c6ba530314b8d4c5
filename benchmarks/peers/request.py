"""The one V2 request every server gets, the answer it should give, and the check of an answer.

The image is the first MNIST test digit (scaled to [0, 1]) when the data folder is given, and
a fixed random image otherwise: the check compares with ONNX Runtime in-process on the same
input either way. The body is JSON with the 784 numbers flat, as V2 clients send it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

TOLERANCE = 1e-4


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
    body = {
        "inputs": [
            {
                "name": "image",
                "shape": list(pixels.shape),
                "datatype": "FP32",
                "data": pixels.reshape(-1).tolist(),
            }
        ]
    }
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: pixels})[0]
    return Request(json.dumps(body).encode(), pixels, expected)


def outputs_of(answer: object) -> list[dict]:
    """The V2 ``outputs`` list: from a V2 answer, or a bare list (stock BentoML's answer)."""
    if isinstance(answer, dict) and isinstance(answer.get("outputs"), list):
        return answer["outputs"]
    if isinstance(answer, list):
        return answer
    raise ValueError(f"no V2 outputs in the answer: {str(answer)[:200]}")


def check(answer_body: bytes, expected: np.ndarray) -> str | None:
    """None when the answer's probabilities match ``expected`` within TOLERANCE; else why."""
    try:
        outputs = outputs_of(json.loads(answer_body))
        tensor = next((t for t in outputs if t.get("name") == "probabilities"), outputs[0])
        got = np.asarray(tensor["data"], dtype=np.float64).reshape(expected.shape)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return f"unreadable answer ({error}): {answer_body[:200]!r}"
    worst = float(np.max(np.abs(got - expected)))
    if worst > TOLERANCE:
        return f"wrong answer: max |difference| {worst:.2e} > {TOLERANCE:g}"
    return None
