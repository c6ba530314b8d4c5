"""Autoencoder contract: 784 pixels in [0, 1] <-> a 16-float code."""

import numpy as np

from modelspec.digits import IMAGE_SIZE, scale_pixels
from modelspec.tensors import Signature, TensorSpec

NAME = "autoencoder"
PIXELS = IMAGE_SIZE * IMAGE_SIZE
CODE_SIZE = 16

_pixels = TensorSpec("pixels", (None, PIXELS))
_code = TensorSpec("code", (None, CODE_SIZE))
_reconstruction = TensorSpec("reconstruction", (None, PIXELS))

SIGNATURES = (
    Signature("reconstruct", (_pixels,), (_reconstruction,), onnx_file="model.onnx"),
    Signature("encode", (_pixels,), (_code,), onnx_file="encoder.onnx"),
    Signature("decode", (_code,), (_reconstruction,), onnx_file="decoder.onnx"),
)

PREPROCESSING = {
    "input": "float32 pixels in [0, 1], shape (N, 784): a 28x28 MNIST image, row-major",
    "polarity": "white digit on black background, as in MNIST",
    "scale": "uint8 / 255",
}


def flatten_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) images to the (N, 784) float input of the autoencoder."""
    return scale_pixels(images).reshape(len(images), PIXELS)
