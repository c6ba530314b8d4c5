"""Digit classifier contract: MNIST-style 28x28 grey images, white digit on black."""

import numpy as np

from modelspec.tensors import Signature, TensorSpec

NAME = "digits"
IMAGE_SIZE = 28
LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))

SIGNATURES = (
    Signature(
        name="predict",
        inputs=(TensorSpec("image", (None, IMAGE_SIZE, IMAGE_SIZE)),),
        outputs=(TensorSpec("probabilities", (None, len(LABELS))),),
        onnx_file="model.onnx",
    ),
)

PREPROCESSING = {
    "input": "float32 pixels in [0, 1], shape (N, 28, 28); 0 is background",
    "polarity": "white digit on black background, as in MNIST",
    "scale": "uint8 / 255",
}


def scale_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 MNIST pixels to the float range the model was trained on."""
    return (np.asarray(images, dtype=np.float32) / 255.0).astype(np.float32)
