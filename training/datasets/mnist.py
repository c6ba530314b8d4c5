"""MNIST: the Keras ``mnist.npz`` (official train/test sets), read with plain NumPy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.datasets.datadir import Source, copy_file, ensure
from training.errors import TrainingError

SOURCE = Source(
    url="https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    target="mnist.npz",
    unpack=lambda archive, staging: copy_file(archive, staging, "mnist.npz"),
)
_EXPECTED = {
    "x_train": (60000, 28, 28),
    "y_train": (60000,),
    "x_test": (10000, 28, 28),
    "y_test": (10000,),
}


@dataclass(frozen=True)
class Mnist:
    path: Path
    x_train: np.ndarray  # uint8 (60000, 28, 28)
    y_train: np.ndarray  # uint8 (60000,)
    x_test: np.ndarray
    y_test: np.ndarray


def load_mnist(data_dir: Path) -> Mnist:
    path = ensure(data_dir, SOURCE)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in _EXPECTED}
    except (OSError, ValueError, KeyError) as error:
        raise TrainingError(f"{path} is not a readable MNIST npz file ({error})") from None
    for key, shape in _EXPECTED.items():
        if arrays[key].shape != shape or arrays[key].dtype != np.uint8:
            raise TrainingError(
                f"{path}: {key} is {arrays[key].dtype}{arrays[key].shape}, expected uint8{shape}"
            )
    return Mnist(path=path, **arrays)


@dataclass(frozen=True)
class MnistSplit:
    train: np.ndarray  # indices into x_train
    validation: np.ndarray  # indices into x_train
    test: np.ndarray  # indices into x_test


VALIDATION_SIZE = 5000


def split_mnist(mnist: Mnist, seed: int, quick_sizes: tuple[int, int, int] | None) -> MnistSplit:
    """Official test set; 5,000 stratified training images held out for validation.

    ``quick_sizes`` (train, validation, test) takes stratified subsets of each part.
    """
    from training.datasets.splits import stratified_split, stratified_subset

    fraction = VALIDATION_SIZE / len(mnist.y_train)
    train, validation = stratified_split(mnist.y_train, (1 - fraction, fraction), seed)
    test = np.arange(len(mnist.y_test))
    if quick_sizes:
        parts = []
        for indices, labels, size in zip(
            (train, validation, test),
            (mnist.y_train[train], mnist.y_train[validation], mnist.y_test),
            quick_sizes,
            strict=True,
        ):
            parts.append(indices[stratified_subset(labels, size, seed)])
        train, validation, test = parts
    return MnistSplit(train, validation, test)


def test_split_record(mnist: Mnist, test: np.ndarray) -> dict:
    """Which MNIST test images were used: all of them, or the listed indices."""
    whole = len(test) == len(mnist.y_test)
    return {
        "file": mnist.path.name,
        "array": "x_test",
        "count": len(test),
        "indices": "all" if whole else test.tolist(),
    }


def indices_from_record(record: dict, mnist: Mnist) -> np.ndarray:
    if record["indices"] == "all":
        return np.arange(len(mnist.y_test))
    return np.asarray(record["indices"], dtype=np.int64)
