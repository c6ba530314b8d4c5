"""Flower photos in one folder per class (TensorFlow's flower_photos or any such layout).

Labels are the class folders' names, whatever they are. Unreadable images are skipped and
counted, never fatal: real photo folders hold the odd broken file, and the manifest records
exactly which were left out. Photos are kept decoded and upright at their own size, so a
recipe can prepare them at any resolution and draw augmented views from the full picture.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from modelspec import flowers as spec
from modelspec.images import upright
from training.datasets.datadir import Source, ensure, extract_tar_folder
from training.errors import TrainingError

log = logging.getLogger(__name__)

SOURCE = Source(
    url="https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
    target="flowers",
    unpack=lambda archive, staging: extract_tar_folder(
        archive, staging, "flower_photos", "flowers"
    ),
)
# The larger "Flowers Recognition" collection (Kaggle, no direct download): the same five
# flowers from other photographers. Only read when present, as a robustness check.
SECOND_COLLECTION = "flowers-recognition-128"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})


@dataclass(frozen=True)
class FlowerFiles:
    root: Path
    files: list[str]  # paths relative to root, "class/name.jpg"
    labels: np.ndarray  # int index into class_names
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class DecodedPhotos:
    photos: list[Image.Image]  # upright RGB, at their own size
    files: list[str]  # the files that decoded, in order
    skipped: dict[str, str]  # unreadable file -> reason

    def prepared(self, size: int = spec.IMAGE_SIZE) -> np.ndarray:
        """uint8 (N, size, size, 3): what the model sees, prepared by the served code."""
        return prepare_all(self.photos, size)


def prepare_all(photos: Sequence[Image.Image], size: int) -> np.ndarray:
    return np.stack([spec.prepare_image(photo, size) for photo in photos])


def list_flowers(data_dir: Path) -> FlowerFiles:
    return list_class_folders(ensure(data_dir, SOURCE))


def list_class_folders(root: Path) -> FlowerFiles:
    """Every image under ``root/<class>/``; classes in sorted folder order."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise TrainingError(f"{root}: expected one sub-folder per class, found {len(class_dirs)}")
    files, labels = [], []
    for index, class_dir in enumerate(class_dirs):
        members = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not members:
            raise TrainingError(f"{class_dir}: class folder holds no images")
        files += [p.relative_to(root).as_posix() for p in members]
        labels += [index] * len(members)
    return FlowerFiles(
        root, files, np.array(labels, dtype=np.int64), tuple(p.name for p in class_dirs)
    )


def decode_photos(root: Path, files: list[str], desc: str = "decode flowers") -> DecodedPhotos:
    photos, kept, skipped = [], [], {}
    for relative in tqdm(files, desc=desc, unit="img"):
        try:
            with Image.open(root / relative) as image:
                image.load()
                photos.append(upright(image).convert("RGB"))
            kept.append(relative)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
            skipped[relative] = f"{type(error).__name__}: {error}"
    if skipped:
        log.warning("skipped %d unreadable image(s): %s", len(skipped), ", ".join(skipped))
    if not photos:
        raise TrainingError(f"{root}: none of {len(files)} images could be decoded")
    return DecodedPhotos(photos, kept, skipped)


def _singular(name: str) -> str:
    return name.lower().removesuffix("s")


def second_collection(data_dir: Path, class_names: Sequence[str]) -> tuple[FlowerFiles, np.ndarray]:
    """The second collection and, per image, the index of the same class in ``class_names``
    (folder names matched ignoring case and a plural 's': rose ~ roses). Raises
    TrainingError when the folder is missing or its classes do not match."""
    root = data_dir / SECOND_COLLECTION
    if not root.is_dir():
        raise TrainingError(f"{root} is not there")
    listing = list_class_folders(root)
    ours = {_singular(name): i for i, name in enumerate(class_names)}
    theirs = [ours.get(_singular(name)) for name in listing.class_names]
    if None in theirs or len(set(theirs)) != len(theirs):
        raise TrainingError(
            f"{root}: classes {list(listing.class_names)} do not match {list(class_names)}"
        )
    mapping = np.array(theirs, dtype=np.int64)
    return listing, mapping[listing.labels]
