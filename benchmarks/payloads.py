"""Realistic request bodies for each endpoint, built from the real test data."""

from __future__ import annotations

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


def json_payload(document: object) -> Payload:
    return Payload(json.dumps(document).encode(), "application/json")


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


def endpoint_payloads(data_dir: Path, variants: int = 32) -> dict[str, tuple[str, list[Payload]]]:
    """name -> (path, payloads): one item per request, cycled through ``variants`` inputs."""
    images, _ = mnist_test(data_dir, variants)
    scaled = images.astype(np.float32) / 255.0
    flowers = [p.read_bytes() for p in flower_files(data_dir, variants)]
    return {
        # One image as a batch of one: the form the stock BentoML baseline also accepts.
        "digits_json": (
            "/digits/predict",
            [json_payload({"inputs": [x.tolist()]}) for x in scaled],
        ),
        "digits_png": (
            "/digits/predict",
            [multipart([("image", png_bytes(x), "image/png")]) for x in images],
        ),
        "flowers_jpeg": (
            "/flowers/predict",
            [multipart([("image", data, "image/jpeg")]) for data in flowers],
        ),
        "bank_json": ("/bank/predict", [json_payload(r) for r in bank_records(data_dir, variants)]),
        "autoencoder_encode": (
            "/autoencoder/encode",
            [json_payload({"inputs": x.reshape(-1).tolist()}) for x in scaled],
        ),
        "autoencoder_reconstruct": (
            "/autoencoder/reconstruct",
            [json_payload({"inputs": x.reshape(-1).tolist()}) for x in scaled],
        ),
    }
