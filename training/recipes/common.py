"""Small pieces several recipes use: Keras fitting helpers and parity input assembly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelspec.repository import sha256_file
from training.datasets.mnist import (
    indices_from_record,
    load_mnist,
    split_mnist,
    test_split_record,
)
from training.export import PARITY_MIN_INPUTS
from training.recipes.base import Dataset, Profile, Split

# (train, validation, test) sizes of the quick profile's stratified MNIST subsets.
MNIST_QUICK_SIZES = (3000, 500, 1000)


def history_dict(history: Any) -> dict[str, list[float]]:
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def held_out_inputs(*pools: np.ndarray, count: int = PARITY_MIN_INPUTS) -> np.ndarray:
    """The first ``count`` inputs from the pools in order (test first, then validation...)."""
    joined = np.concatenate([np.asarray(p, dtype=np.float32) for p in pools])
    if len(joined) >= count:
        return joined[:count]
    # Too few held-out examples (quick profile): mirrored copies are still real, unseen inputs.
    mirrored = joined[:, ..., ::-1]
    return np.concatenate([joined, mirrored] * (count // (2 * len(joined)) + 1))[:count]


def mnist_dataset(
    data_dir: Path,
    profile: Profile,
    to_input: Callable[[np.ndarray], np.ndarray],
    labels: tuple[str, ...],
) -> Dataset:
    """MNIST splits as model inputs; digits and the autoencoder differ only in ``to_input``."""
    mnist = load_mnist(data_dir)
    split = split_mnist(mnist, profile.seed, MNIST_QUICK_SIZES if profile.quick else None)
    return Dataset(
        train=Split(to_input(mnist.x_train[split.train]), mnist.y_train[split.train]),
        validation=Split(
            to_input(mnist.x_train[split.validation]), mnist.y_train[split.validation]
        ),
        test=Split(to_input(mnist.x_test[split.test]), mnist.y_test[split.test]),
        labels=labels,
        description={
            "source": "MNIST (Keras mnist.npz)",
            "file": mnist.path.name,
            "sha256": sha256_file(mnist.path),
            "train": len(split.train),
            "validation": len(split.validation),
            "test": len(split.test),
        },
        test_split=test_split_record(mnist, split.test),
    )


def mnist_test(
    data_dir: Path, manifest: dict[str, Any], to_input: Callable[[np.ndarray], np.ndarray]
) -> Split:
    """Exactly the MNIST test images a manifest records."""
    mnist = load_mnist(data_dir)
    indices = indices_from_record(manifest["test_split"], mnist)
    return Split(to_input(mnist.x_test[indices]), mnist.y_test[indices])
