"""Loaders on the real local data, and the seeded, stratified splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelspec import flowers
from training.datasets.bank import load_bank, read_bank_csv
from training.datasets.flowers import (
    SECOND_COLLECTION,
    decode_photos,
    list_flowers,
    second_collection,
)
from training.datasets.mnist import VALIDATION_SIZE, load_mnist, split_mnist
from training.datasets.splits import stratified_split
from training.errors import TrainingError


def test_mnist_has_the_official_shapes_and_class_counts(data_dir: Path) -> None:
    mnist = load_mnist(data_dir)
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_test.shape == (10000, 28, 28) and mnist.y_test.dtype == np.uint8
    counts = np.bincount(mnist.y_train).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_split_holds_out_5000_stratified_validation_images(data_dir: Path) -> None:
    mnist = load_mnist(data_dir)
    split = split_mnist(mnist, seed=7, quick_sizes=None)
    assert len(split.validation) == VALIDATION_SIZE
    assert len(split.train) + len(split.validation) == 60000
    assert not set(split.train) & set(split.validation)
    assert len(split.test) == 10000
    share = np.bincount(mnist.y_train[split.validation]) / VALIDATION_SIZE
    overall = np.bincount(mnist.y_train) / 60000
    assert np.max(np.abs(share - overall)) < 0.002


def test_bank_table_is_the_full_uci_table(data_dir: Path) -> None:
    table = load_bank(data_dir)
    assert len(table.records) == 45211
    assert int(table.labels.sum()) == 5289
    first = table.records[0]
    assert first["age"] == 58.0 and first["job"] == "management" and first["month"] == "may"


def test_flowers_listing_reads_every_class_folder(data_dir: Path) -> None:
    """Labels are the data's own class folders, whatever they are called."""
    listing = list_flowers(data_dir)
    folders = sorted(p for p in (data_dir / "flowers").iterdir() if p.is_dir())
    assert listing.class_names == tuple(p.name for p in folders)
    assert np.bincount(listing.labels).tolist() == [len(list(p.iterdir())) for p in folders]
    assert len(listing.files) == len(set(listing.files))
    decoded = decode_photos(listing.root, listing.files[:8])
    assert all(photo.mode == "RGB" for photo in decoded.photos)
    prepared = decoded.prepared()
    size = flowers.IMAGE_SIZE
    assert prepared.shape == (8, size, size, 3) and prepared.dtype == np.uint8


def test_second_collection_labels_follow_the_class_names(tmp_path: Path) -> None:
    """rose ~ roses: the robustness set is matched to the training classes by name."""
    root = tmp_path / SECOND_COLLECTION
    _write_images(root / "rose", 2, (200, 0, 0))
    _write_images(root / "tulip", 1, (0, 0, 200))
    _, truth = second_collection(tmp_path, ("roses", "tulips"))
    assert truth.tolist() == [0, 0, 1]
    with pytest.raises(TrainingError, match="do not match"):
        second_collection(tmp_path, ("daisy", "tulips"))
    with pytest.raises(TrainingError, match="is not there"):
        second_collection(tmp_path / "elsewhere", ("roses", "tulips"))


def test_photos_are_read_upright(tmp_path: Path) -> None:
    """A photo stored sideways with an EXIF orientation tag is read as a person sees it."""
    root = tmp_path / "flowers"
    _write_images(root / "tall", 1, (0, 200, 0))
    _write_images(root / "wide", 1, (0, 0, 200))
    sideways = Image.new("RGB", (60, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    sideways.save(root / "tall" / "phone.jpg", exif=exif)
    decoded = decode_photos(root, ["tall/phone.jpg"])
    assert decoded.photos[0].size == (20, 60)


def test_splits_are_deterministic_disjoint_and_stratified() -> None:
    labels = np.repeat([0, 1, 2], [700, 200, 100])
    first = stratified_split(labels, (0.7, 0.15, 0.15), seed=3)
    again = stratified_split(labels, (0.7, 0.15, 0.15), seed=3)
    other = stratified_split(labels, (0.7, 0.15, 0.15), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[2], other[2])
    assert sum(len(p) for p in first) == len(labels)
    assert len(np.unique(np.concatenate(first))) == len(labels)
    assert np.bincount(labels[first[2]]).tolist() == [105, 30, 15]


def _write_images(folder: Path, count: int, colour: tuple[int, int, int]) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (40 + i, 30), colour).save(folder / f"img{i}.png")


def test_unreadable_flower_images_are_skipped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "flowers"
    _write_images(root / "red", 3, (200, 0, 0))
    _write_images(root / "blue", 2, (0, 0, 200))
    (root / "blue" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (root / "red" / "img0.png").read_bytes()
    (root / "red" / "truncated.png").write_bytes(good[: len(good) // 2])

    listing = list_flowers(tmp_path)
    decoded = decode_photos(listing.root, listing.files)
    assert sorted(decoded.skipped) == ["blue/broken.jpg", "red/truncated.png"]
    assert len(decoded.files) == 5 and decoded.prepared(32).shape == (5, 32, 32, 3)


def test_a_class_folder_without_images_is_a_clear_error(tmp_path: Path) -> None:
    _write_images(tmp_path / "flowers" / "red", 2, (200, 0, 0))
    (tmp_path / "flowers" / "empty").mkdir()
    with pytest.raises(TrainingError, match="empty: class folder holds no images"):
        list_flowers(tmp_path)


def _bank_csv_with(data_dir: Path, tmp_path: Path, row: int, edit) -> Path:
    """The first rows of the real table with data row ``row`` changed by ``edit(fields)``."""
    lines = (data_dir / "bank-marketing" / "bank-full.csv").read_text().splitlines()[:20]
    lines[row] = ";".join(edit(lines[row].split(";")))
    path = tmp_path / "bank-full.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_corrupt_bank_row_is_named_by_its_line(data_dir: Path, tmp_path: Path) -> None:
    path = _bank_csv_with(data_dir, tmp_path, 5, lambda f: [f[0], '"astronaut"', *f[2:]])
    with pytest.raises(TrainingError, match=r"bank-full\.csv:6: field 'job': unknown value"):
        read_bank_csv(path)


def test_a_non_numeric_bank_value_is_named_by_its_line(data_dir: Path, tmp_path: Path) -> None:
    path = _bank_csv_with(data_dir, tmp_path, 2, lambda f: [*f[:5], "lots", *f[6:]])
    with pytest.raises(TrainingError, match=r":3: field 'balance': got 'lots'"):
        read_bank_csv(path)


def test_a_short_bank_row_is_named_by_its_line(data_dir: Path, tmp_path: Path) -> None:
    path = _bank_csv_with(data_dir, tmp_path, 3, lambda f: f[:-2])
    with pytest.raises(TrainingError, match=r":4: 15 fields, expected 17"):
        read_bank_csv(path)
