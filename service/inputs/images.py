"""Image bytes -> pixels, safely: format, size and integrity are checked before decoding, and
large decodes run off the event loop.

Every upload is opened (its header only) on the event loop: format, pixel count, frames.
The request's total pixel count is bounded before any pixel is decoded, so one request of
many large but valid images cannot hold a core for seconds. Decoding then runs inline for
small images (a thread hop costs more than a 28x28 PNG) and in the decode thread pool
otherwise: Pillow releases the GIL while it decodes and resizes, so the event loop keeps
answering ``/livez``, other models and other requests meanwhile.

The decode pool belongs to a ``Decoder``, built from the settings (``decode_threads``) with
each worker's ``Runtime``; a request's decoding starts with ``Decoder.start``, so its images
decode in that pool. Each decoded image's own size (upright, before the resize) goes to the
request's size list (returned by ``start``) for the drift check of photo sizes: the resized
pixels no longer show it.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import NamedTuple

import numpy as np
from PIL import Image

from modelspec.images import upright
from service.backends.cpus import available_cpus
from service.config import Limits
from service.errors import PayloadTooLarge, RequestError, UnsupportedMediaType
from service.inputs.body import Upload

FORMATS = ("PNG", "JPEG")
MIN_SIDE = 8  # smaller pictures hold no recognisable digit or flower
# Below this many pixels in a request, decoding inline beats the hop to a thread (a 256-px
# flower photo decodes and resizes in about 1 ms).
INLINE_PIXELS = 100_000
# The entropy-coded data of a JPEG holds at least one bit per 8x8 block of its first
# component (a uniform 4000x4000 JPEG, optimised and progressive, still takes 2x this):
# a file shorter than that claims more pixels than it carries, and libjpeg would fill the
# missing ones with grey without an error.
JPEG_MIN_BITS_PER_BLOCK = 1

Sizes = list[tuple[int, int]]


class Decoding(NamedTuple):
    """The current request's decoding: the pool its large images decode in, and the list
    its decoded images add their (width, height) to."""

    pool: ThreadPoolExecutor
    sizes: Sizes


# Set in the request's context by ``Decoder.start`` rather than handed down: the decoder sits
# under every protocol's parser and every input kind, and a large JSON body is decoded in
# another thread's event loop, whose context is a copy that still refers to the same list.
_decoding: ContextVar[Decoding | None] = ContextVar("image_decoding", default=None)


class Decoder:
    """The threads that decode large images: ``threads`` of them (``decode_threads`` of the
    settings; None: one per usable CPU), made lazily by the pool as decodes arrive. One per
    worker, built with its ``Runtime``."""

    def __init__(self, threads: int | None) -> None:
        self.pool = ThreadPoolExecutor(threads or available_cpus(), thread_name_prefix="decode")

    def start(self) -> Sizes:
        """A request's decoding begins: its large images decode in this pool, and each
        image it decodes from now on adds its original (width, height) to the list returned,
        in item order (empty for tensors sent as numbers)."""
        decoding = Decoding(self.pool, [])
        _decoding.set(decoding)
        return decoding.sizes

    def close(self) -> None:
        """No new decodes; those under way finish."""
        self.pool.shutdown(wait=False)


def open_image(upload: Upload, item: int, max_pixels: int) -> Image.Image:
    """Open one image and check it from its header: a decompression bomb is refused before a
    single pixel is allocated. Nothing is decoded yet."""
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
    blocks = (image.width // 8) * (image.height // 8)
    if image.format == "JPEG" and len(upload.data) * 8 < blocks * JPEG_MIN_BITS_PER_BLOCK:
        raise _corrupt(upload, item, "the data is too short for the size its header declares")
    return image


def _load(image: Image.Image, upload: Upload, item: int) -> Image.Image:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise _corrupt(upload, item, error) from None
    return image


def _corrupt(upload: Upload, item: int, error: Exception | str) -> RequestError:
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


Prepare = Callable[[Image.Image], np.ndarray]


def _decode_all(
    opened: Sequence[tuple[Image.Image, Upload]], prepare: Prepare, sizes: Sizes | None = None
) -> list[np.ndarray]:
    arrays = []
    for item, (image, upload) in enumerate(opened):
        with _load(image, upload, item):
            # Upright before the 8-bit conversion, which would drop the EXIF orientation.
            turned = upright(image)
            if sizes is not None:
                sizes.append(turned.size)
            arrays.append(prepare(to_8bit(turned)))
    return arrays


def check_items(count: int, limits: Limits) -> None:
    if count > limits.max_items_per_request:
        raise PayloadTooLarge(
            "too_many_items",
            f"{count} images in one request",
            expected=f"at most {limits.max_items_per_request} images",
        )


async def decode_images(uploads: Sequence[Upload], prepare: Prepare, limits: Limits) -> np.ndarray:
    """Check, decode and prepare every upload, stacked on a new batch axis."""
    check_items(len(uploads), limits)
    opened = [
        (open_image(upload, item, limits.max_image_pixels), upload)
        for item, upload in enumerate(uploads)
    ]
    pixels = sum(image.width * image.height for image, _ in opened)
    if pixels > limits.max_request_pixels:
        for image, _ in opened:
            image.close()
        raise PayloadTooLarge(
            "request_too_large",
            f"the request's images hold {pixels} pixels",
            field="images",
            expected=f"at most {limits.max_request_pixels} pixels in one request",
        )
    decoding = _decoding.get()
    sizes = decoding.sizes if decoding is not None else None
    if pixels <= INLINE_PIXELS:
        return np.stack(_decode_all(opened, prepare, sizes))
    # Outside a request (tools, tests of the decoder alone): the loop's default executor.
    pool = decoding.pool if decoding is not None else None
    loop = asyncio.get_running_loop()
    return np.stack(await loop.run_in_executor(pool, _decode_all, opened, prepare, sizes))
