"""The image size features of drift: reference.json built with the training photos' own sizes,
the drift window fed the uploads' sizes beside the batch, and the decoder recording each
upload's upright size before the resize. In process, no server: real Pillow images, the real
``modelspec.reference`` and ``service.monitoring.drift`` code."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelspec import flowers
from modelspec.reference import ALERT, REFERENCE_FILE, SIZE_FEATURES, build
from service.config import Limits
from service.inputs.body import Upload
from service.inputs.images import INLINE_PIXELS, Decoder, decode_images
from service.monitoring.drift import Drift, Window

WINDOW = 300
# Photo sizes as a photo folder holds them: mostly landscape 320-500 px wide, some portrait.
COMMON = np.array([(320, 240), (500, 333), (500, 375), (240, 320), (333, 500), (400, 300)])


def _sizes(rng: np.random.Generator, count: int) -> np.ndarray:
    picked = COMMON[rng.integers(0, len(COMMON), count)]
    return picked + rng.integers(-20, 21, (count, 1))  # a little spread, as real photos have


def _reference(rng: np.random.Generator, sizes: np.ndarray | None) -> dict:
    count = 400 if sizes is None else len(sizes)
    return build(
        rng.integers(0, 256, (count, 8, 8, 3)).astype(np.float32),
        signature="predict",
        input_kind="rgb_photo",
        classes=rng.integers(0, 5, count),
        source="test",
        sizes=sizes,
    )


def _photos(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.integers(0, 256, (count, 8, 8, 3)).astype(np.float32)


def test_the_reference_holds_width_and_height_histograms_with_decile_edges() -> None:
    rng = np.random.default_rng(0)
    sizes = _sizes(rng, 400)
    reference = _reference(rng, sizes)
    for j, name in enumerate(SIZE_FEATURES):
        feature = reference["features"][name]
        assert feature["kind"] == "numeric" and sum(feature["counts"]) == 400
        # whole pixels: edges halfway between integers, inside the sizes' range
        assert all(edge % 1 == 0.5 for edge in feature["edges"]), feature["edges"]
        assert sizes[:, j].min() < feature["edges"][0] < feature["edges"][-1] < sizes[:, j].max()
    json.dumps(reference)  # it is written as JSON
    assert not set(SIZE_FEATURES) & set(_reference(rng, None)["features"])


def test_sizes_like_the_training_photos_stay_below_the_alert_and_tiny_ones_cross_it() -> None:
    rng = np.random.default_rng(1)
    reference = _reference(rng, _sizes(rng, 400))
    same, shifted = Window(reference, None, WINDOW), Window(reference, None, WINDOW)
    for _ in range(WINDOW // 10):
        same.add(_photos(rng, 10), None, None, [tuple(s) for s in _sizes(rng, 10)])
        shifted.add(_photos(rng, 10), None, None, [(40, 40)] * 10)
    calm, drifted = same.snapshot(), shifted.snapshot()
    print("size PSI, same:", {n: calm["scores"][n] for n in SIZE_FEATURES})
    print("size PSI, 40x40:", {n: drifted["scores"][n] for n in SIZE_FEATURES})
    for name in SIZE_FEATURES:
        assert calm["scores"][name] < ALERT, calm["scores"]
        assert drifted["scores"][name] > ALERT, drifted["scores"]
        assert name in drifted["drifted"] and name not in calm["drifted"]


def test_tensors_sent_as_numbers_leave_the_size_window_empty() -> None:
    # A photo sent as RGB values has no size of its own: the other features fill, sizes not.
    rng = np.random.default_rng(2)
    window = Window(_reference(rng, _sizes(rng, 400)), None, 20)
    window.add(_photos(rng, 30), rng.integers(0, 5, 30), None)
    snapshot = window.snapshot()
    assert snapshot["full"] and "contrast" in snapshot["scores"]
    assert not set(SIZE_FEATURES) & set(snapshot["scores"]), snapshot["scores"]
    assert sum(snapshot["live"]["width"]) == 0


def test_an_older_reference_without_sizes_ignores_them() -> None:
    rng = np.random.default_rng(3)
    window = Window(_reference(rng, None), None, 20)
    window.add(_photos(rng, 30), None, None, [(40, 40)] * 30)
    window.add_many([(_photos(rng, 5), None, None, [(40, 40)] * 5)])
    scores = window.snapshot()["scores"]
    assert "mean_intensity" in scores and not set(SIZE_FEATURES) & set(scores), scores


def test_a_pass_of_many_batches_counts_sizes_as_one_batch_at_a_time() -> None:
    rng = np.random.default_rng(4)
    reference = _reference(rng, _sizes(rng, 400))
    for size in (10, 64, 500):
        batches = []
        for _ in range(30):
            n = int(rng.integers(1, 40))
            sizes = [tuple(s) for s in _sizes(rng, n) // 2] if rng.random() > 0.4 else None
            batches.append((_photos(rng, n), rng.integers(0, 5, n), None, sizes))
        one_by_one, at_once = Window(reference, None, size), Window(reference, None, size)
        for batch in batches:
            one_by_one.add(*batch)
        at_once.add_many(batches)
        assert at_once.snapshot() == one_by_one.snapshot(), size


def test_the_drift_thread_scores_sizes_handed_with_the_batch(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, Gauge

    from service.descriptor import Version
    from tests.unit.synthetic import manifest

    rng = np.random.default_rng(5)
    (tmp_path / REFERENCE_FILE).write_text(json.dumps(_reference(rng, _sizes(rng, 400))))
    version = Version("m", 1, tmp_path, manifest("m", files={REFERENCE_FILE: "listed"}))
    prometheus = CollectorRegistry()
    gauge = Gauge("drift_score", "psi", ["model", "version", "feature"], registry=prometheus)
    drift = Drift(window=50, interval_s=60, gauge=gauge)
    for _ in range(6):
        drift.observe(version, _photos(rng, 10), None, None, [(4000, 3000)] * 10)
    drift.count()
    assert "width" in drift.state[("m", 1)]["drifted"], drift.state[("m", 1)]["scores"]
    score = prometheus.get_sample_value(
        "drift_score", {"model": "m", "version": "1", "feature": "height"}
    )
    assert score > ALERT


def _png(width: int, height: int, orientation: int | None = None) -> bytes:
    image = Image.new("RGB", (width, height), (90, 160, 40))
    buffer = io.BytesIO()
    if orientation is None:
        image.save(buffer, format="PNG")
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("large", [False, True], ids=["inline", "decode pool"])
def test_the_decoder_records_each_uploads_upright_size_before_the_resize(large: bool) -> None:
    # 6: stored sideways, shown turned by 90 degrees, so width and height swap.
    side = 500 if large else 60
    uploads = [Upload("image", _png(side, side // 2)), Upload("image", _png(side, 30, 6))]
    assert (side * side // 2 + side * 30 > INLINE_PIXELS) == large

    decoder = Decoder(2)
    threads: set[str] = set()

    def prepare(image: Image.Image) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return flowers.prepare_image(image, 32)

    async def decode() -> tuple[np.ndarray, list]:
        sizes = decoder.start()
        pixels = await decode_images(uploads, prepare, Limits())
        return pixels, sizes

    pixels, sizes = asyncio.run(decode())
    decoder.close()
    assert pixels.shape == (2, 32, 32, 3)  # resized: the size is no longer in the pixels
    assert sizes == [(side, side // 2), (30, side)]
    # Large ones decode in the pool of the Decoder that started the request.
    assert all(t.startswith("decode") for t in threads) == large, threads


def test_sizes_reach_the_request_from_a_body_decoded_in_another_threads_loop() -> None:
    # service.inference decodes a large JSON body (b64 images) with asyncio.run in a thread:
    # the list set before must still receive the sizes.
    uploads = [Upload("image", _png(90, 50)), Upload("image", _png(20, 70))]

    async def request() -> list:
        sizes = Decoder(1).start()
        decoding = decode_images(uploads, lambda i: flowers.prepare_image(i, 32), Limits())
        await asyncio.to_thread(asyncio.run, decoding)
        return sizes

    assert asyncio.run(request()) == [(90, 50), (20, 70)]
