"""Flower classifier contract: RGB photos, centre-cropped and resized to 128x128.

Pixel scaling (MobileNetV2's [-1, 1]) lives inside the exported graph, so clients and the
service send plain 0..255 RGB values and nothing can drift.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from modelspec.tensors import Signature, TensorSpec

NAME = "flowers"
IMAGE_SIZE = 128
DEFAULT_LABELS: tuple[str, ...] = ("daisy", "dandelion", "rose", "sunflower", "tulip")


def signatures(class_count: int) -> tuple[Signature, ...]:
    """The class count comes from the training data's folders; the manifest records it."""
    return (
        Signature(
            name="predict",
            inputs=(TensorSpec("image", (None, IMAGE_SIZE, IMAGE_SIZE, 3)),),
            outputs=(TensorSpec("probabilities", (None, class_count)),),
            onnx_file="model.onnx",
        ),
    )


PREPROCESSING = {
    "input": "float32 RGB values in [0, 255], shape (N, 128, 128, 3)",
    "resize": "centre crop to a square, then bilinear resize to 128x128",
    "scale": "inside the graph: x / 127.5 - 1 (MobileNetV2)",
}


def prepare_image(image: Image.Image) -> np.ndarray:
    """Any PIL image to the (128, 128, 3) uint8 RGB array the model sees."""
    rgb = image.convert("RGB")
    side = min(rgb.size)
    left = (rgb.width - side) // 2
    top = (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    resized = square.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def load_image(source: Path | bytes) -> np.ndarray:
    """Decode a file or bytes fully (truncated files raise) and prepare it."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(stream) as image:
        image.load()
        return prepare_image(image)
