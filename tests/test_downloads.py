"""The download path a user with internet takes, fed from local archives in the official layouts.

urllib serves ``file://`` URLs like ``https://`` ones, so the real fetch, progress bar, unpack
and caching code runs; only the address differs from the official source.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.datasets import bank, flowers, mnist
from training.datasets.datadir import ensure
from training.errors import TrainingError


def _png_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_flower_photos_tgz_is_unpacked_into_the_flowers_folder(tmp_path: Path) -> None:
    archive = tmp_path / "flower_photos.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "flower_photos/LICENSE.txt", b"CC-BY")
        for name, colour in (("roses", (200, 0, 0)), ("tulips", (0, 0, 200))):
            for i in range(2):
                _add(tar, f"flower_photos/{name}/{i}.png", _png_bytes(colour))
    source = dataclasses.replace(flowers.SOURCE, url=archive.as_uri())
    cache = tmp_path / "cache"
    cache.mkdir()

    assert ensure(cache, source) == cache / "flowers"
    assert flowers.list_flowers(cache).class_names == ("roses", "tulips")
    assert sorted(p.name for p in (cache / "flowers").iterdir()) == [
        "LICENSE.txt",
        "roses",
        "tulips",
    ]
    assert [p.name for p in cache.iterdir()] == ["flowers"]  # no download leftovers


def test_uci_bank_zip_inside_a_zip_yields_bank_full_csv(tmp_path: Path) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("bank-full.csv", "header;row\n")
        zf.writestr("bank.csv", "small\n")
    outer = tmp_path / "bank+marketing.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("bank-additional.zip", b"not this one")
        zf.writestr("bank.zip", inner.getvalue())
    source = dataclasses.replace(bank.SOURCE, url=outer.as_uri())
    cache = tmp_path / "cache"
    cache.mkdir()

    path = ensure(cache, source)
    assert path == cache / "bank-marketing" / "bank-full.csv"
    assert path.read_text() == "header;row\n"
    assert sorted(p.name for p in cache.iterdir()) == ["bank-marketing"]


def test_mnist_is_downloaded_once_then_read_from_the_cache(tmp_path: Path) -> None:
    served = tmp_path / "served.npz"
    rng = np.random.default_rng(0)
    np.savez(
        served,
        x_train=rng.integers(0, 255, (60000, 28, 28), dtype=np.uint8),
        y_train=np.zeros(60000, np.uint8),
        x_test=np.zeros((10000, 28, 28), np.uint8),
        y_test=np.zeros(10000, np.uint8),
    )
    source = dataclasses.replace(mnist.SOURCE, url=served.as_uri())
    cache = tmp_path / "cache"
    cache.mkdir()

    assert ensure(cache, source) == cache / "mnist.npz"
    served.unlink()  # a second call must not fetch again
    assert ensure(cache, source) == cache / "mnist.npz"
    assert mnist.load_mnist(cache).x_train.shape == (60000, 28, 28)


def test_an_archive_without_the_expected_member_is_a_clear_error(tmp_path: Path) -> None:
    outer = tmp_path / "bank+marketing.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("README.txt", "nothing here")
    source = dataclasses.replace(bank.SOURCE, url=outer.as_uri())
    (tmp_path / "cache").mkdir()
    with pytest.raises(TrainingError, match=r"has no member bank\.zip"):
        ensure(tmp_path / "cache", source)
    assert list((tmp_path / "cache").iterdir()) == []
