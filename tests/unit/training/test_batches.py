"""training.export.run_batched: batches bounded by items and by bytes, outputs joined in order.

A model's activations grow with its input and TensorFlow keeps the memory of its largest
batch: Keras on 256 flowers photos at 224 px took 23 GB and the full training was killed for
memory, so large items go in smaller batches whatever the caller asks."""

from __future__ import annotations

import numpy as np

from training.export import BATCH_BYTES, run_batched


def recording(sizes: list[int]):
    def run(name: str, x):
        first = next(iter(x.values())) if isinstance(x, dict) else x
        sizes.append(len(first))
        return {"y": first.reshape(len(first), -1)[:, :1] * 2}

    return run


def test_small_items_take_the_batch_size_asked() -> None:
    sizes: list[int] = []
    x = np.arange(1000, dtype=np.float32).reshape(1000, 1)
    out = run_batched(recording(sizes), "predict", x, 256)
    assert sizes == [256, 256, 256, 232]
    np.testing.assert_array_equal(out["y"], x * 2)


def test_large_items_go_in_batches_of_at_most_batch_bytes() -> None:
    sizes: list[int] = []
    photo = 224 * 224 * 3  # float32: 602 KB a photo
    x = np.ones((100, photo), dtype=np.float32)
    x[:, 0] = np.arange(100)
    out = run_batched(recording(sizes), "predict", x, 256)
    per_batch = BATCH_BYTES // (photo * 4)
    assert per_batch == 27 and sizes == [27, 27, 27, 19]
    np.testing.assert_array_equal(out["y"][:, 0], np.arange(100) * 2)


def test_every_input_of_a_feed_counts() -> None:
    sizes: list[int] = []
    half = BATCH_BYTES // 8  # two inputs of half the bound each: 4 items per batch
    feed = {
        "a": np.zeros((10, half // 4), dtype=np.float32),
        "b": np.zeros((10, half // 8), dtype=np.float64),
    }
    run_batched(recording(sizes), "predict", feed, 64)
    assert sizes == [4, 4, 2]


def test_an_item_larger_than_the_bound_runs_alone() -> None:
    sizes: list[int] = []
    x = np.zeros((3, BATCH_BYTES // 4 + 1), dtype=np.float32)
    run_batched(recording(sizes), "predict", x, 64)
    assert sizes == [1, 1, 1]
