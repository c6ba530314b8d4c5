"""Autoencoder contract: 784 pixels in [0, 1] <-> a 16-float code."""

import numpy as np

from modelspec.digits import IMAGE_SIZE, scale_pixels
from modelspec.tensors import Signature, TensorSpec

NAME = "autoencoder"
PIXELS = IMAGE_SIZE * IMAGE_SIZE
CODE_SIZE = 16

_pixels = TensorSpec("pixels", (None, PIXELS), range=(0.0, 1.0))
_reconstruction = TensorSpec("reconstruction", (None, PIXELS))


def signatures(code_range: tuple[float, float] | None = None) -> tuple[Signature, ...]:
    """``code_range``: the codes ``decode`` accepts, from the codes of the training images
    (training records it); far outside it the decoder's output overflows to NaN."""
    code = TensorSpec("code", (None, CODE_SIZE))
    return (
        Signature(
            "reconstruct", (_pixels,), (_reconstruction,), "model.onnx", "mnist_image", "image"
        ),
        Signature("encode", (_pixels,), (code,), "encoder.onnx", "mnist_image", "code"),
        Signature(
            "decode",
            (TensorSpec("code", (None, CODE_SIZE), range=code_range),),
            (_reconstruction,),
            "decoder.onnx",
            "tensor",
            "image",
        ),
    )


SIGNATURES = signatures()


def code_range(codes: np.ndarray) -> tuple[float, float]:
    """The span of the training codes, widened by that span on each side."""
    low, high = float(codes.min()), float(codes.max())
    span = high - low
    return round(low - span, 4), round(high + span, 4)


PREPROCESSING = {
    "input": "float32 pixels in [0, 1], shape (N, 784): a 28x28 MNIST image, row-major",
    "polarity": "white digit on black background, as in MNIST",
    "scale": "uint8 / 255",
}


def flatten_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) images to the (N, 784) float input of the autoencoder."""
    return scale_pixels(images).reshape(len(images), PIXELS)
