"""Decoding and validation on their own: every bad input becomes the right RequestError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from modelspec import digits
from service.errors import PayloadTooLarge, RequestError, UnsupportedMediaType
from service.inputs.body import Upload, image_uploads, parse_json
from service.inputs.images import decode_images, open_image
from service.inputs.tensors import TensorContract, parse_tensor

PIXELS = TensorContract(((28, 28), (784,)), 0.0, 1.0)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(side: int) -> bytes:
    """A tiny file declaring a huge greyscale image (a decompression bomb)."""
    raw = zlib.compress(b"\x00" * (side + 1) * 16, 9)  # only the first rows; header is what matters

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        (np.zeros((28, 28)).tolist(), (1, 28, 28)),
        (np.zeros((3, 784)).tolist(), (3, 28, 28)),
        (np.zeros((2, 28, 28)).tolist(), (2, 28, 28)),
        (np.zeros(784).tolist(), (1, 28, 28)),
    ],
)
def test_tensor_shapes_accepted(value: list, shape: tuple[int, ...]) -> None:
    batch = parse_tensor(value, PIXELS, max_items=64)
    assert batch.shape == shape
    assert batch.dtype == np.float32


@pytest.mark.parametrize(
    ("value", "code", "item"),
    [
        ([[1, 2], [3]], "invalid_shape", None),
        (np.zeros((2, 27, 28)).tolist(), "invalid_shape", None),
        ([["a"] * 784], "invalid_dtype", None),
        ([[True] * 784], "invalid_dtype", None),
        ([], "empty_batch", None),
        ([[]], "invalid_shape", None),
        ([[0.0] * 784, [2.0] * 784], "out_of_range", 1),
        ([[0.0] * 784, [0.0] * 783 + [1e39]], "not_finite", 1),
        (5, "invalid_shape", None),
    ],
)
def test_tensor_errors_name_the_problem(value: object, code: str, item: int | None) -> None:
    with pytest.raises(RequestError) as caught:
        parse_tensor(value, PIXELS, max_items=64)
    assert caught.value.code == code
    assert caught.value.item == item
    assert caught.value.status == 422
    assert "(N, 28, 28)" in caught.value.body()["expected"]


def test_too_many_items_is_413() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_tensor(np.zeros((65, 784)).tolist(), PIXELS, max_items=64)


def test_nan_literal_is_invalid_json() -> None:
    with pytest.raises(RequestError) as caught:
        parse_json(b'{"inputs": [NaN]}')
    assert caught.value.status == 400


def test_decompression_bomb_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        open_image(Upload("image", bomb_png(50_000)), 0, max_pixels=40_000_000)
    assert caught.value.code == "image_too_large"


def test_truncated_and_foreign_images() -> None:
    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        photo, format="JPEG"
    )
    with pytest.raises(RequestError) as caught:
        open_image(Upload("image", photo.getvalue()[:300]), 2, max_pixels=10_000)
    assert caught.value.code == "corrupt_image"
    assert caught.value.item == 2
    gif = io.BytesIO()
    Image.new("L", (8, 8)).save(gif, format="GIF")
    with pytest.raises(UnsupportedMediaType):
        open_image(Upload("image", gif.getvalue()), 0, max_pixels=10_000)


def test_sixteen_bit_and_cmyk_images_decode() -> None:
    deep = (np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 80).astype(np.uint16)
    pixels = decode_images(
        [Upload("a", _png(deep))], lambda im: digits.prepare_image(im, False), 10_000
    )
    assert pixels.shape == (1, 28, 28)
    assert pixels.max() == round(int(deep.max()) * 255 / 65535)
    cmyk = io.BytesIO()
    Image.new("CMYK", (40, 30), (0, 0, 0, 255)).save(cmyk, format="JPEG")
    decoded = decode_images([Upload("b", cmyk.getvalue())], digits.prepare_image, 10_000)
    assert decoded.shape == (1, 28, 28)


def test_wrong_content_type_is_415() -> None:
    with pytest.raises(UnsupportedMediaType):
        image_uploads(b"abc", "text/plain")


def test_digit_pictures_are_normalised_like_mnist() -> None:
    """A big dark-on-light digit ends up white on black, 20 px tall, centred."""
    canvas = np.full((200, 150), 255, np.uint8)
    canvas[40:160, 60:90] = 0  # a thick "1"
    prepared = digits.prepare_image(Image.fromarray(canvas))
    ink = np.argwhere(prepared > 128)
    assert prepared[0, 0] == 0
    assert ink[:, 0].max() - ink[:, 0].min() + 1 in (19, 20, 21)
    assert abs(ink[:, 0].mean() - 13.5) <= 1.5
    assert abs(ink[:, 1].mean() - 13.5) <= 1.5
