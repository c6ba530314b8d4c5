"""Expected answers computed outside the service: ONNX Runtime on the version's published
graph, with each model's preprocessing written out here from its published contract (the
manifest's ``preprocessing`` and ``signatures``, and the README's "Images are turned
upright..." paragraph).

Nothing here imports ``modelspec``, ``service`` or ``training``: a test that compares the
server with these values fails when the service's preprocessing drifts from what the
manifest promises, which a comparison with the service's own functions cannot show. Each
helper first checks that the manifest still declares the contract it implements, so a
changed contract fails here by name rather than as a numeric mismatch.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

# -- the published version ----------------------------------------------------------------


def version_dir(repository: Path, model: str, version: str | None = None) -> Path:
    """A version's folder; the highest-numbered one when ``version`` is None (the one a
    repository holding only complete versions serves by default)."""
    if version is None:
        numbered = [p.name for p in (repository / model).iterdir() if p.name.isdigit()]
        version = max(numbered, key=int)
    return repository / model / str(version)


def manifest(repository: Path, model: str, version: str | None = None) -> dict[str, Any]:
    return json.loads((version_dir(repository, model, version) / "manifest.json").read_text())


_sessions: dict[Path, ort.InferenceSession] = {}


def onnx(
    repository: Path, model: str, onnx_file: str, inputs: np.ndarray, version: str | None = None
) -> np.ndarray:
    """The graph's first output for ``inputs`` (float32), by ONNX Runtime on the CPU."""
    path = version_dir(repository, model, version) / onnx_file
    if path not in _sessions:
        _sessions[path] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session = _sessions[path]
    feed = {session.get_inputs()[0].name: np.asarray(inputs, dtype=np.float32)}
    return session.run(None, feed)[0]


# -- digits and the autoencoder: MNIST pixels -----------------------------------------------

SIDE = 28  # the signatures' (N, 28, 28) input
# The README: "the digit's box fitted into 20x20 and centred by its centre of mass in
# 28x28", as MNIST was made. Its own digits' centre of mass, in pixel-index coordinates, is
# (13.99, 14.01) over the 10,000 test digits: the target point is (14, 14).
DIGIT_BOX = 20
CENTRE = 14.0
# What counts as ink when finding the digit's box: above 15% of the brightest pixel; the
# box is shrunk with Lanczos (the anti-aliased resize MNIST's own digits went through).
INK = 0.15


def check_mnist_contract(manifest_: dict[str, Any]) -> None:
    facts = manifest_["preprocessing"]
    assert facts["scale"] == "uint8 / 255", facts
    assert facts["polarity"] == "white digit on black background, as in MNIST", facts


def mnist_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 pixels as the manifest's ``scale`` says: uint8 / 255, in float32."""
    assert images.dtype == np.uint8, images.dtype
    return images.astype(np.float32) / np.float32(255)


def digit_picture(picture: Image.Image, invert: bool | None = None) -> np.ndarray:
    """Any picture of one digit -> (28, 28) uint8, white on black, centred like MNIST.

    ``invert`` None is the service's ``invert=auto``: dark-on-light (the border's median is
    bright) pictures are inverted. A 28x28 picture is taken as MNIST-ready.
    """
    grey = np.array(ImageOps.exif_transpose(picture).convert("L"), dtype=np.uint8)
    if invert is None:
        border = np.concatenate([grey[0, :], grey[-1, :], grey[:, 0], grey[:, -1]])
        invert = bool(np.median(border) > 127)
    if invert:
        grey = 255 - grey
    if grey.shape == (SIDE, SIDE):
        return grey
    frame = np.zeros((SIDE, SIDE), dtype=np.uint8)
    if grey.max() == 0:
        return frame
    ink = grey > INK * int(grey.max())
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    box = grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    factor = DIGIT_BOX / max(box.shape)
    height, width = (max(1, round(n * factor)) for n in box.shape)
    small = Image.fromarray(box).resize((width, height), Image.Resampling.LANCZOS)
    weights = np.asarray(small, dtype=np.float64)
    if weights.sum() == 0:
        return frame
    centre_y = np.average(np.arange(height), weights=weights.sum(axis=1))
    centre_x = np.average(np.arange(width), weights=weights.sum(axis=0))
    top = min(max(round(CENTRE - centre_y), 0), SIDE - height)
    left = min(max(round(CENTRE - centre_x), 0), SIDE - width)
    frame[top : top + height, left : left + width] = np.asarray(small)
    return frame


def digit_files(files: list[bytes], invert: bool | None = None) -> np.ndarray:
    """PNG/JPEG files of one digit each -> the graph's (N, 28, 28) float32 input."""
    pictures = []
    for data in files:
        with Image.open(io.BytesIO(data)) as picture:
            pictures.append(digit_picture(picture, invert))
    return mnist_pixels(np.stack(pictures))


# -- flowers: RGB photos --------------------------------------------------------------------


def check_photo_contract(manifest_: dict[str, Any]) -> int:
    """The photo side the manifest declares, after checking its preprocessing facts."""
    (spec,) = manifest_["signatures"]["predict"]["inputs"]
    _, size, width, channels = spec["shape"]
    assert (width, channels) == (size, 3) and spec["range"] == [0.0, 255.0], spec
    facts = manifest_["preprocessing"]
    assert facts["resize"] == f"centre crop to a square, then bilinear resize to {size}x{size}"
    assert facts["orientation"].startswith("EXIF orientation applied"), facts
    assert facts["scale"].startswith("inside the graph"), facts  # the test sends 0..255
    return size


# The flowers contract says "centre crop to a square, then bilinear resize"; photo() does
# exactly that, while the service (and training, through the same function) resizes the
# square as a region of the whole photo (Pillow's resize with box=), whose filter reads the
# row or column just outside the square: the first and last output rows or columns differ
# by up to 18 levels, the others by at most 1 (fixed-point rounding). Against the quick
# model, probabilities differ by at most 0.0088 over 300 flower_photos files (p99 0.0065),
# 0.0017 on the 3 photos tests/test_service.py sends (flower_files(data_dir, 3)), 0.0003 on
# the protocol tests' 2. A broken step moves each of those 3 photos' probabilities by 0.022
# or more: bicubic instead of bilinear 0.022-0.069, nearest 0.044-0.10, no crop (squashed)
# 0.031-0.19, the crop taken from the corner 0.074-0.096, BGR 0.22-0.29, the [-1, 1] scaling
# done twice 0.29-0.36.
FLOWER_TOLERANCE = 0.015


def photo(source: Path | bytes, size: int) -> np.ndarray:
    """A JPEG/PNG file -> (size, size, 3) float32 RGB values in [0, 255]: upright by its
    EXIF orientation, the centred square cropped out, then a bilinear resize."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(stream) as opened:
        rgb = ImageOps.exif_transpose(opened).convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


# -- bank: records --------------------------------------------------------------------------


def bank_features(records: list[dict[str, Any]], manifest_: dict[str, Any]) -> np.ndarray:
    """Records -> the graph's (N, features) input, from the manifest's
    ``preprocessing.encoder``: each ``feature_names`` entry is either a numeric column,
    standardised with the encoder's mean and std after a signed log1p for the ``log_scaled``
    ones, or ``column=value``, one-hot over the encoder's ``categories``."""
    encoder = manifest_["preprocessing"]["encoder"]
    (spec,) = manifest_["signatures"]["predict"]["inputs"]
    names = encoder["feature_names"]
    assert spec["shape"] == [-1, len(names)], (spec, len(names))
    features = np.zeros((len(records), len(names)), dtype=np.float64)
    for row, record in enumerate(records):
        for column, values in encoder["categories"].items():
            assert record[column] in values, (column, record[column])
        for j, name in enumerate(names):
            column, _, value = name.partition("=")
            if value:
                features[row, j] = float(record[column] == value)
                continue
            x = float(record[column])
            if column in encoder["log_scaled"]:
                x = np.sign(x) * np.log1p(abs(x))
            features[row, j] = (x - encoder["mean"][column]) / encoder["std"][column]
    return features.astype(np.float32)
