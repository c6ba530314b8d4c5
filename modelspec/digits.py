"""Digit classifier contract: MNIST-style 28x28 grey images, white digit on black."""

import numpy as np
from PIL import Image

from modelspec.images import upright
from modelspec.tensors import Signature, TensorSpec

NAME = "digits"
IMAGE_SIZE = 28
LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))

SIGNATURES = (
    Signature(
        name="predict",
        inputs=(TensorSpec("image", (None, IMAGE_SIZE, IMAGE_SIZE), range=(0.0, 1.0)),),
        outputs=(TensorSpec("probabilities", (None, len(LABELS))),),
        onnx_file="model.onnx",
        input_kind="mnist_image",
        answer="digit",
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


# How MNIST itself was made: the digit's bounding box fitted into 20x20 (aspect kept), then
# placed in the 28x28 frame so that its centre of mass is the frame's centre.
DIGIT_BOX = 20
FOREGROUND_LEVEL = 0.15  # of the brightest pixel: what counts as ink when finding the box


def looks_dark_on_light(grey: np.ndarray) -> bool:
    """True for black ink on white paper: the image's border is mostly bright."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border)) > 127


def prepare_image(image: Image.Image, invert: bool | None = None) -> np.ndarray:
    """Any picture of one digit -> (28, 28) uint8, white digit on black, centred like MNIST.

    ``invert``: True for dark-on-light pictures, False for MNIST-style ones, None to decide
    from the border. A 28x28 picture is taken as already MNIST-ready and only inverted. EXIF
    orientation is applied first: a phone photo stored sideways is read upright.
    """
    grey = np.asarray(upright(image).convert("L"), dtype=np.uint8)
    if invert is None:
        invert = looks_dark_on_light(grey)
    if invert:
        grey = 255 - grey
    if grey.shape == (IMAGE_SIZE, IMAGE_SIZE):
        return grey
    return _centre_like_mnist(grey)


def _centre_like_mnist(grey: np.ndarray) -> np.ndarray:
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    ink = grey > FOREGROUND_LEVEL * max(int(grey.max()), 1)
    if not ink.any() or grey.max() == 0:
        return frame
    rows, cols = np.nonzero(ink)
    digit = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = DIGIT_BOX / max(digit.shape)
    height = max(1, round(digit.shape[0] * scale))
    width = max(1, round(digit.shape[1] * scale))
    small = np.asarray(
        Image.fromarray(digit).resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64
    )
    total = small.sum()
    if total == 0:
        return frame
    centre_y = (small.sum(axis=1) * np.arange(height)).sum() / total
    centre_x = (small.sum(axis=0) * np.arange(width)).sum() / total
    top = int(np.clip(round(IMAGE_SIZE / 2 - centre_y), 0, IMAGE_SIZE - height))
    left = int(np.clip(round(IMAGE_SIZE / 2 - centre_x), 0, IMAGE_SIZE - width))
    frame[top : top + height, left : left + width] = np.clip(np.round(small), 0, 255)
    return frame
