"""Realistic requests across the endpoints, each with its right answer computed by running
the model's ONNX graph directly (not through the service), to catch wrong answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.payloads import (
    Payload,
    bank_records,
    flower_files,
    json_payload,
    mnist_test,
    multipart,
    png_bytes,
)
from modelspec import bank, digits, flowers, repository

TOLERANCE = 1e-4


@dataclass(frozen=True)
class Exchange:
    """One request and the test its answer must pass."""

    path: str
    payload: Payload
    correct: Callable[[dict[str, Any]], bool]


class Graphs:
    """The published ONNX graphs of a repository, run directly on the CPU."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._sessions: dict[tuple[str, str], ort.InferenceSession] = {}

    def run(self, model: str, onnx_file: str, inputs: np.ndarray) -> np.ndarray:
        key = (model, onnx_file)
        if key not in self._sessions:
            version = repository.latest_version(self.root, model)
            path = repository.version_dir(self.root, model, version) / onnx_file
            self._sessions[key] = ort.InferenceSession(
                str(path), providers=["CPUExecutionProvider"]
            )
        session = self._sessions[key]
        return session.run(None, {session.get_inputs()[0].name: inputs.astype(np.float32)})[0]

    def manifest(self, model: str) -> dict[str, Any]:
        version = repository.latest_version(self.root, model)
        return repository.read_manifest(repository.version_dir(self.root, model, version))


def _close(served: Any, expected: np.ndarray) -> bool:
    served = np.asarray(served, dtype=np.float64)
    return served.shape == expected.shape and bool(np.allclose(served, expected, atol=TOLERANCE))


def digit_exchanges(graphs: Graphs, data_dir: Path, count: int) -> list[Exchange]:
    images, _ = mnist_test(data_dir, count)
    pixels = digits.scale_pixels(images)
    expected = graphs.run("digits", "model.onnx", pixels)
    exchanges = []
    for image, x, p in zip(images, pixels, expected, strict=True):

        def correct(body: dict[str, Any], p: np.ndarray = p) -> bool:
            return _close(body["predictions"][0]["probabilities"], p)

        exchanges.append(
            Exchange("/digits/predict", json_payload({"inputs": [x.tolist()]}), correct)
        )
        upload = multipart([("image", png_bytes(image), "image/png")])
        exchanges.append(Exchange("/digits/predict", upload, correct))
    return exchanges


def autoencoder_exchanges(graphs: Graphs, data_dir: Path, count: int) -> list[Exchange]:
    images, _ = mnist_test(data_dir, count)
    flat = digits.scale_pixels(images).reshape(count, -1)
    codes = graphs.run("autoencoder", "encoder.onnx", flat)
    rebuilt = graphs.run("autoencoder", "model.onnx", flat)
    exchanges = []
    for x, code, image in zip(flat, codes, rebuilt, strict=True):
        body = json_payload({"inputs": x.tolist()})
        exchanges.append(
            Exchange("/autoencoder/encode", body, lambda b, c=code: _close(b["codes"][0], c))
        )
        exchanges.append(
            Exchange(
                "/autoencoder/reconstruct",
                body,
                lambda b, r=image: _close(b["reconstructions"][0], r),
            )
        )
    return exchanges


def bank_exchanges(graphs: Graphs, data_dir: Path, count: int) -> list[Exchange]:
    records = bank_records(data_dir, count)
    encoder = bank.BankEncoder.from_dict(graphs.manifest("bank")["preprocessing"]["encoder"])
    expected = graphs.run("bank", "model.onnx", encoder.transform(records))[:, 0]
    return [
        Exchange(
            "/bank/predict",
            json_payload(record),
            lambda b, p=p: _close([b["predictions"][0]["probability"]], np.array([p])),
        )
        for record, p in zip(records, expected, strict=True)
    ]


def flower_exchanges(graphs: Graphs, data_dir: Path, count: int) -> list[Exchange]:
    files = flower_files(data_dir, count)
    expected = graphs.run("flowers", "model.onnx", np.stack([flowers.load_image(f) for f in files]))
    labels = graphs.manifest("flowers")["labels"]
    exchanges = []
    for path, p in zip(files, expected, strict=True):

        def correct(body: dict[str, Any], p: np.ndarray = p) -> bool:
            top = body["predictions"][0]["top"][0]
            return (
                top["label"] == labels[int(p.argmax())]
                and abs(top["probability"] - p.max()) < TOLERANCE
            )

        upload = multipart([("image", path.read_bytes(), "image/jpeg")])
        exchanges.append(Exchange("/flowers/predict", upload, correct))
    return exchanges


def mixed_traffic(graphs: Graphs, data_dir: Path, variants: int = 16) -> list[Exchange]:
    """Every endpoint with real inputs; flowers (100x the compute) one request in ten."""
    cheap = (
        digit_exchanges(graphs, data_dir, variants)
        + autoencoder_exchanges(graphs, data_dir, variants)
        + bank_exchanges(graphs, data_dir, variants)
    )
    slow = flower_exchanges(graphs, data_dir, max(2, len(cheap) // 10))
    mixed: list[Exchange] = []
    for i, exchange in enumerate(cheap):
        mixed.append(exchange)
        if i % 10 == 9 and slow:
            mixed.append(slow[(i // 10) % len(slow)])
    return mixed


def answer_is_correct(exchange: Exchange, status: int, body: bytes) -> bool:
    if status != 200:
        return False
    try:
        return exchange.correct(json.loads(body))
    except (ValueError, KeyError, IndexError, TypeError):
        return False
