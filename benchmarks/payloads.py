"""Realistic request bodies for each endpoint, built from the real test data."""

from __future__ import annotations

import dataclasses
import io
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.datasets.bank import TARGET_PATH as BANK_CSV
from training.datasets.bank import read_bank_csv
from training.datasets.flowers import list_flowers
from training.datasets.mnist import load_mnist


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict, compare=False, hash=False)


def json_payload(document: object) -> Payload:
    return Payload(json.dumps(document).encode(), "application/json")


def v2_json(pixels: np.ndarray, name: str = "image") -> Payload:
    """A V2 infer request with one FP32 input, its numbers flat in JSON (as V2 clients send)."""
    tensor = {
        "name": name,
        "shape": list(pixels.shape),
        "datatype": "FP32",
        "data": pixels.reshape(-1).tolist(),
    }
    return json_payload({"inputs": [tensor]})


def v2_binary(pixels: np.ndarray, name: str = "image", output: str = "probabilities") -> Payload:
    """The same request with the binary tensor data extension: a JSON header, then the raw
    little-endian FP32 input; the output is asked for in binary too (as Triton's clients do)."""
    raw = np.ascontiguousarray(pixels, dtype="<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": name,
                "shape": list(pixels.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": output, "parameters": {"binary_data": True}}],
    }
    encoded = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": str(len(encoded))}
    return Payload(encoded + raw, "application/octet-stream", headers)


def multipart(files: list[tuple[str, bytes, str]]) -> Payload:
    """A multipart/form-data body with one part per (field, bytes, content type)."""
    boundary = uuid.uuid4().hex
    parts = []
    for index, (field, data, kind) in enumerate(files):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="f{index}"\r\nContent-Type: {kind}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    return Payload(
        b"".join(parts) + f"--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def mnist_test(data_dir: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    mnist = load_mnist(data_dir)
    return mnist.x_test[:count], mnist.y_test[:count]


def flower_files(data_dir: Path, count: int) -> list[Path]:
    """``count`` photos spread over every class folder."""
    listing = list_flowers(data_dir)
    step = max(1, len(listing.files) // count)
    return [listing.root / f for f in listing.files[::step][:count]]


def bank_records(data_dir: Path, count: int) -> list[dict[str, object]]:
    return read_bank_csv(data_dir / BANK_CSV).records[:count]
