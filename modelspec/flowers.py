"""Flower classifier contract: RGB photos, upright, centre-cropped and resized to a square.

Pixel scaling (MobileNetV2's [-1, 1]) lives inside the exported graph, so clients and the
service send plain 0..255 RGB values and nothing can drift.
"""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from modelspec.images import upright
from modelspec.tensors import Signature, TensorSpec

NAME = "flowers"
# The served resolution, chosen by measurement: every full training also trains the model at
# COMPARISON_SIZES and its card shows test accuracy and CPU latency per image for each. On
# flower_photos with the float ImageNet weights (2-core CPU, ONNX Runtime): 224 px reached
# 93-94% test accuracy, 160 px about 2 points less at about half the latency; accuracy is
# what this model is for, and 224 px still answers one photo in ~7 ms.
IMAGE_SIZE = 224
COMPARISON_SIZES: tuple[int, ...] = (160,)
# TensorFlow's flower_photos folder names; used only for a 5-class model exported without
# the manifest `train` wrote (labels otherwise come from the data's class folders).
DEFAULT_LABELS: tuple[str, ...] = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def signatures(class_count: int, size: int = IMAGE_SIZE) -> tuple[Signature, ...]:
    """The class count comes from the training data's folders; the manifest records it."""
    return (
        Signature(
            name="predict",
            inputs=(TensorSpec("image", (None, size, size, 3), range=(0.0, 255.0)),),
            outputs=(TensorSpec("probabilities", (None, class_count)),),
            onnx_file="model.onnx",
            input_kind="rgb_photo",
            answer="top_labels",
        ),
    )


def preprocessing(size: int = IMAGE_SIZE) -> dict[str, str]:
    return {
        "input": f"float32 RGB values in [0, 255], shape (N, {size}, {size}, 3)",
        "orientation": "EXIF orientation applied (the photo as a person sees it)",
        "resize": f"centre crop to a square, then bilinear resize to {size}x{size}",
        "scale": "inside the graph: x / 127.5 - 1 (MobileNetV2)",
    }


PREPROCESSING = preprocessing()


def centre_square(image: Image.Image) -> tuple[int, int, int, int]:
    """The largest centred square of ``image``, as a crop box."""
    side = min(image.size)
    left = (image.width - side) // 2
    top = (image.height - side) // 2
    return left, top, left + side, top + side


def prepare_image(image: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """Any PIL image to the (size, size, 3) uint8 RGB array the model sees."""
    rgb = upright(image).convert("RGB")
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR, box=centre_square(rgb))
    return np.asarray(resized, dtype=np.uint8)


def load_image(source: Path | bytes, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode a file or bytes fully (truncated files raise) and prepare it."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(stream) as image:
        image.load()
        return prepare_image(image, size)
