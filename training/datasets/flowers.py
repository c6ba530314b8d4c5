"""Flower photos in one folder per class (TensorFlow's flower_photos or any such layout).

Unreadable images are skipped and counted, never fatal: real photo folders hold the odd
broken file, and the manifest records exactly which were left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from modelspec import flowers as spec
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
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})


@dataclass(frozen=True)
class FlowerFiles:
    root: Path
    files: list[str]  # paths relative to root, "class/name.jpg"
    labels: np.ndarray  # int index into class_names
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class DecodedImages:
    images: np.ndarray  # uint8 (N, 128, 128, 3)
    files: list[str]  # the files that decoded, in order
    skipped: dict[str, str]  # unreadable file -> reason


def list_flowers(data_dir: Path) -> FlowerFiles:
    root = ensure(data_dir, SOURCE)
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


def decode_images(root: Path, files: list[str]) -> DecodedImages:
    images, kept, skipped = [], [], {}
    for relative in tqdm(files, desc="decode flowers", unit="img"):
        try:
            images.append(spec.load_image(root / relative))
            kept.append(relative)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
            skipped[relative] = f"{type(error).__name__}: {error}"
    if skipped:
        log.warning("skipped %d unreadable image(s): %s", len(skipped), ", ".join(skipped))
    if not images:
        raise TrainingError(f"{root}: none of {len(files)} images could be decoded")
    return DecodedImages(np.stack(images), kept, skipped)
