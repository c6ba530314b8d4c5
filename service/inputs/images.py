"""Image bytes -> pixels, safely: format, size and integrity are checked before decoding."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from service.errors import PayloadTooLarge, RequestError, UnsupportedMediaType
from service.inputs.body import Upload

FORMATS = ("PNG", "JPEG")
MIN_SIDE = 8  # smaller pictures hold no recognisable digit or flower


def open_image(upload: Upload, item: int, max_pixels: int) -> Image.Image:
    """Open and fully decode one image; the pixel count is checked from the header first,
    so a decompression bomb is refused before a single pixel is allocated."""
    if not upload.data:
        raise RequestError("empty_image", "empty file", field=upload.name, item=item)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(upload.data), formats=FORMATS)
    except Image.UnidentifiedImageError:
        raise UnsupportedMediaType(
            "not_an_image",
            "bytes are not a PNG or JPEG image",
            field=upload.name,
            item=item,
            expected="a PNG or JPEG file",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(upload, item, max_pixels) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise _corrupt(upload, item, error) from None
    if image.width * image.height > max_pixels:
        raise _too_many_pixels(upload, item, max_pixels)
    if min(image.size) < MIN_SIDE:
        raise RequestError(
            "image_too_small",
            f"image is {image.width}x{image.height} pixels",
            field=upload.name,
            item=item,
            expected=f"at least {MIN_SIDE}x{MIN_SIDE} pixels",
        )
    if getattr(image, "n_frames", 1) > 1:
        raise RequestError(
            "animated_image", "animated images are not accepted", field=upload.name, item=item
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise _corrupt(upload, item, error) from None
    return image


def _corrupt(upload: Upload, item: int, error: Exception) -> RequestError:
    return RequestError(
        "corrupt_image",
        f"image could not be decoded ({error})",
        field=upload.name,
        item=item,
        expected="a complete, valid PNG or JPEG file",
    )


def _too_many_pixels(upload: Upload, item: int, max_pixels: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        "image_too_large",
        "image has too many pixels",
        field=upload.name,
        item=item,
        expected=f"at most {max_pixels} pixels",
    )


def to_8bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit greyscale scaled down to 8 bits (PIL's convert would clip them)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        return Image.fromarray(np.round(pixels * (255.0 / peak)).clip(0, 255).astype(np.uint8))
    return image


def decode_images(
    uploads: Sequence[Upload],
    prepare: Callable[[Image.Image], np.ndarray],
    max_pixels: int,
) -> np.ndarray:
    """Decode and prepare every upload, stacked on a new batch axis."""
    arrays = []
    for item, upload in enumerate(uploads):
        with open_image(upload, item, max_pixels) as image:
            arrays.append(prepare(to_8bit(image)))
    return np.stack(arrays)
