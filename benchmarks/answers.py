"""Checks of a server's answer against ONNX Runtime in-process on the same input.

Each ``check_*`` returns None when the answer holds the expected probabilities (within
``TOLERANCE``), else a short reason: a benchmark measures only servers that answer right.
V2 in JSON (or the bare ``outputs`` list stock BentoML answers), V2 with the binary tensor
data extension, and the service's native digit and top-labels answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

TOLERANCE = 1e-4


def outputs_of(answer: object) -> list[dict]:
    """The V2 ``outputs`` list: from a V2 answer, or a bare list (stock BentoML's answer)."""
    if isinstance(answer, dict) and isinstance(answer.get("outputs"), list):
        return answer["outputs"]
    if isinstance(answer, list):
        return answer
    raise ValueError(f"no V2 outputs in the answer: {str(answer)[:200]}")


def compare(got: np.ndarray, expected: np.ndarray, tolerance: float = TOLERANCE) -> str | None:
    got = np.asarray(got, dtype=np.float64).reshape(expected.shape)
    worst = float(np.max(np.abs(got - expected)))
    if worst > tolerance:
        return f"wrong answer: max |difference| {worst:.2e} > {tolerance:g}"
    return None


def _unreadable(error: Exception, body: bytes) -> str:
    return f"unreadable answer ({type(error).__name__}: {error}): {body[:200]!r}"


def check(answer_body: bytes, expected: np.ndarray) -> str | None:
    """A V2 JSON answer (or a bare outputs list) holding ``expected`` as its probabilities."""
    try:
        outputs = outputs_of(json.loads(answer_body))
        tensor = next((t for t in outputs if t.get("name") == "probabilities"), outputs[0])
        return compare(np.asarray(tensor["data"], dtype=np.float64), expected)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return _unreadable(error, answer_body)


def check_v2_binary(
    answer_body: bytes, headers: Mapping[str, str], expected: np.ndarray
) -> str | None:
    """A V2 answer with its FP32 probabilities as binary data after the JSON header."""
    try:
        size = int({k.lower(): v for k, v in headers.items()}["inference-header-content-length"])
        header = json.loads(answer_body[:size])
        (tensor,) = [t for t in header["outputs"] if t["name"] == "probabilities"]
        count = tensor["parameters"]["binary_data_size"]
        got = np.frombuffer(answer_body[size : size + count], dtype="<f4")
        return compare(got, expected)
    except (ValueError, KeyError, TypeError) as error:
        return _unreadable(error, answer_body)


def check_native_digits(answer_body: bytes, expected: np.ndarray) -> str | None:
    """``/digits/predict``: each prediction's digit and probabilities."""
    try:
        predictions = json.loads(answer_body)["predictions"]
        got = np.asarray([p["probabilities"] for p in predictions], dtype=np.float64)
        if [p["digit"] for p in predictions] != expected.argmax(axis=1).tolist():
            return "wrong answer: not the expected digits"
        return compare(got, expected)
    except (ValueError, KeyError, TypeError) as error:
        return _unreadable(error, answer_body)


def check_top_labels(
    answer_body: bytes, expected: np.ndarray, labels: list[str], tolerance: float = 1e-3
) -> str | None:
    """``/flowers/predict``: each prediction's label and top labels with their probabilities.
    A JPEG decoded twice may differ in a last bit of a pixel, hence the wider tolerance."""
    try:
        predictions = json.loads(answer_body)["predictions"]
        for prediction, row in zip(predictions, expected, strict=True):
            if prediction["label"] != labels[int(row.argmax())]:
                return f"wrong answer: {prediction['label']!r}, expected {labels[row.argmax()]!r}"
            for entry in prediction["top"]:
                problem = compare(
                    np.asarray([entry["probability"]]),
                    row[[labels.index(entry["label"])]],
                    tolerance,
                )
                if problem:
                    return problem
        return None
    except (ValueError, KeyError, TypeError) as error:
        return _unreadable(error, answer_body)


def check_array(answer_body: bytes, expected: np.ndarray) -> str | None:
    """A bare JSON array of probabilities (what a stock ``@bentoml.api`` returning the
    model's output answers)."""
    try:
        return compare(np.asarray(json.loads(answer_body), dtype=np.float64), expected)
    except (ValueError, TypeError) as error:
        return _unreadable(error, answer_body)
