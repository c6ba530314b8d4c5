"""Decoding and validation on their own: every bad input becomes the right RequestError."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from modelspec import digits, flowers
from service.config import Limits
from service.errors import PayloadTooLarge, RequestError, UnsupportedMediaType
from service.inputs.body import Upload, image_uploads, parse_json
from service.inputs.images import decode_images, open_image
from service.inputs.numbers import ascii_int
from service.inputs.tensors import TensorContract, might_hold_booleans, parse_tensor

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


def decode(uploads: list[Upload], prepare=digits.prepare_image, **limits: int) -> np.ndarray:
    return asyncio.run(decode_images(uploads, prepare, Limits(**limits)))


def test_sixteen_bit_and_cmyk_images_decode() -> None:
    deep = (np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 80).astype(np.uint16)
    pixels = decode([Upload("a", _png(deep))], lambda im: digits.prepare_image(im, False))
    assert pixels.shape == (1, 28, 28)
    assert pixels.max() == round(int(deep.max()) * 255 / 65535)
    cmyk = io.BytesIO()
    Image.new("CMYK", (40, 30), (0, 0, 0, 255)).save(cmyk, format="JPEG")
    decoded = decode([Upload("b", cmyk.getvalue())])
    assert decoded.shape == (1, 28, 28)


def test_exif_orientation_is_applied() -> None:
    """A phone photo stored sideways (EXIF orientation 6) is read as a person sees it: the
    same array as the upright picture, for digits and flowers alike."""
    picture = np.zeros((60, 40, 3), np.uint8)
    picture[10:50, 18:22] = 255  # a tall bar
    stored = Image.fromarray(picture).rotate(90, expand=True)  # as the sensor saw it
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways, upright = io.BytesIO(), io.BytesIO()
    stored.save(sideways, format="PNG", exif=exif)
    Image.fromarray(picture).save(upright, format="PNG")
    for prepare in (digits.prepare_image, flowers.prepare_image):
        turned = decode([Upload("a", sideways.getvalue())], prepare)
        plain = decode([Upload("a", upright.getvalue())], prepare)
        np.testing.assert_array_equal(turned, plain)


def test_a_jpeg_claiming_more_pixels_than_its_data_holds_is_corrupt() -> None:
    """libjpeg fills what is missing with grey and reports no error: the size check does."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (600, 100, 3), np.uint8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    start = data.find(b"\xff\xc0")
    data[start + 7 : start + 9] = struct.pack(">H", 65500)
    with pytest.raises(RequestError) as caught:
        open_image(Upload("image", bytes(data)), 0, max_pixels=40_000_000)
    assert caught.value.code == "corrupt_image"
    # A real, legitimately tiny-per-pixel JPEG (uniform, optimised) passes the same check.
    flat = io.BytesIO()
    Image.new("L", (4000, 4000), 255).save(flat, "JPEG", optimize=True, progressive=True)
    assert open_image(Upload("image", flat.getvalue()), 0, 40_000_000).size == (4000, 4000)


def test_the_pixels_of_a_whole_request_are_bounded() -> None:
    many = [Upload(f"i{i}", _png(np.zeros((100, 100), np.uint8))) for i in range(6)]
    with pytest.raises(PayloadTooLarge) as caught:
        decode(many, max_request_pixels=50_000)
    assert caught.value.code == "request_too_large" and "60000" in caught.value.message


@pytest.mark.parametrize(
    "text", ["\u00b2", "\u0663", "\uff13", "9" * 5000, "-1", "+1", " 1", "1.0", "", None]
)
def test_only_ascii_digits_are_numbers(text: str | None) -> None:
    assert ascii_int(text) is None


def test_ascii_digits_are_numbers() -> None:
    assert ascii_int("42") == 42 and ascii_int("0" * 18) == 0


def test_booleans_inside_numeric_tensors_are_refused() -> None:
    for value in ([[0.5] * 783 + [True]], [[[False] + [0.0] * 27] * 28]):
        with pytest.raises(RequestError) as caught:
            parse_tensor(value, PIXELS, max_items=64)
        assert caught.value.code == "invalid_dtype"
    assert might_hold_booleans(b'{"inputs": [true]}')
    assert not might_hold_booleans(b'{"inputs": [0.5, 1e3]}')


def test_declared_ranges_bound_tensors() -> None:
    codes = TensorContract(((16,),)).bounded((-3.0, 5.0))
    with pytest.raises(RequestError) as caught:
        parse_tensor([[3e38] * 16], codes, max_items=64)
    assert caught.value.code == "out_of_range" and "[-3, 5]" in caught.value.body()["expected"]


def test_a_long_multipart_boundary_is_a_400() -> None:
    boundary = "b" * 300  # the parser refuses over 256 bytes, when it is built
    body = f"--{boundary}\r\n\r\nx\r\n--{boundary}--\r\n".encode()
    with pytest.raises(RequestError) as caught:
        image_uploads(body, f"multipart/form-data; boundary={boundary}")
    assert caught.value.status == 400 and caught.value.code == "invalid_multipart"


def test_bytes_that_are_no_image_are_415_whatever_their_declared_type() -> None:
    """A declared type is never refused by itself (README): the bytes are read as the file
    they are, and refused as no image (``unsupported_media_type`` is gone: unreachable)."""
    (upload,) = image_uploads(b"abc", "text/plain")
    with pytest.raises(UnsupportedMediaType) as caught:
        open_image(upload, 0, max_pixels=40_000_000)
    assert (caught.value.code, caught.value.status) == ("not_an_image", 415)


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
