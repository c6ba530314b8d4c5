"""Bad input to the command line: a clear message, a non-zero exit, and nothing published."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from modelspec.repository import read_manifest
from tests.conftest import ROOT, run_cli, train_quick

# Any download attempt fails at once, whether or not this machine has a network.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


def _published(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) if out.exists() else []


def test_a_missing_data_dir_is_named(tmp_path: Path) -> None:
    out = tmp_path / "models"
    result = run_cli("train", "digits", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out))
    assert result.returncode == 1
    assert "nowhere does not exist (--data-dir)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_an_unknown_model_name_lists_the_choices(tmp_path: Path) -> None:
    result = run_cli("train", "cats", "--data-dir", str(tmp_path), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "invalid choice: 'cats'" in result.stderr and "digits" in result.stderr


def test_a_dataset_that_cannot_be_downloaded_names_the_file(tmp_path: Path) -> None:
    out = tmp_path / "models"
    result = train_quick("digits", tmp_path, out, env=OFFLINE)
    assert result.returncode == 1
    assert f"{tmp_path / 'mnist.npz'} is missing and could not be downloaded" in result.stderr
    assert "storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz" in result.stderr
    assert _published(out) == []
    assert [p.name for p in tmp_path.iterdir() if p.name != "models"] == []


def test_a_corrupt_csv_row_stops_training_without_output(data_dir: Path, tmp_path: Path) -> None:
    bank_dir = tmp_path / "data" / "bank-marketing"
    bank_dir.mkdir(parents=True)
    lines = (data_dir / "bank-marketing" / "bank-full.csv").read_text().splitlines()
    lines[100] = lines[100].replace(";", ";;", 1)
    (bank_dir / "bank-full.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "models"
    result = train_quick("bank", tmp_path / "data", out)
    assert result.returncode == 1
    assert "bank-full.csv:101: 18 fields, expected 17" in result.stderr
    assert _published(out) == []


def test_a_failed_export_leaves_no_half_written_version(data_dir: Path, tmp_path: Path) -> None:
    mnist_only = tmp_path / "data"
    mnist_only.mkdir()
    (mnist_only / "mnist.npz").symlink_to(data_dir / "mnist.npz")
    out = tmp_path / "models"
    # Opset 1 predates every operator of the network, so tf2onnx fails after training.
    result = train_quick("digits", mnist_only, out, "--opset", "1")
    assert result.returncode == 1
    assert "tf2onnx failed" in result.stderr
    assert _published(out) == ["digits"]


def test_export_refuses_a_file_that_is_not_a_keras_model(tmp_path: Path) -> None:
    bogus = tmp_path / "model.keras"
    bogus.write_bytes(b"PK\x03\x04 not a zip")
    result = run_cli("export", "--model", str(bogus), "--out", str(tmp_path / "models"))
    assert result.returncode == 1
    assert "is not a loadable Keras model" in result.stderr
    assert not (tmp_path / "models").exists()


def test_evaluate_reports_a_tampered_artifact(
    quick_repository: Path, data_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "repository"
    shutil.copytree(quick_repository / "digits", copy / "digits")
    onnx_file = copy / "digits" / "1" / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-100] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    result = run_cli("evaluate", "--repository", str(copy), "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert "model.onnx: sha256 mismatch" in result.stdout


def test_sigterm_during_export_cleans_up_and_publishes_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models"
    command = [
        sys.executable,
        "-m",
        "training",
        "train",
        "digits",
        "--quick",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not list(out.glob("digits/.staging-*")) and process.poll() is None:
        assert time.monotonic() < deadline, "no staging folder appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "nothing was published" in stderr
    assert _published(out) == ["digits"]


def test_without_imagenet_weights_flowers_train_from_random_init_and_say_so(
    tmp_path: Path,
) -> None:
    for index, name in enumerate(("daisy", "rose", "tulip")):
        folder = tmp_path / "data" / "flowers" / name
        folder.mkdir(parents=True)
        rng = np.random.default_rng(index)
        for i in range(10):
            pixels = rng.integers(0, 80, (64, 80, 3)) + np.array([60 * index, 40, 120])
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.jpg")
    out = tmp_path / "models"
    result = train_quick("flowers", tmp_path / "data", out, "--weights", "imagenet", env=OFFLINE)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(out / "flowers" / "1")
    assert manifest["labels"] == ["daisy", "rose", "tulip"]
    assert manifest["training"]["base_weights"].startswith("RANDOM INITIALISATION")
    card = (out / "flowers" / "1" / "model_card.md").read_text()
    assert "RANDOM INITIALISATION" in card


def test_a_weights_file_that_does_not_fit_mobilenet_is_a_clear_error(
    data_dir: Path, tmp_path: Path
) -> None:
    bogus = tmp_path / "weights.weights.h5"
    bogus.write_bytes(b"\x89HDF\r\n\x1a\n but truncated")
    out = tmp_path / "models"
    result = train_quick("flowers", data_dir, out, "--weights", str(bogus))
    assert result.returncode == 1
    assert "is not a MobileNetV2 (alpha 1.0, no top) weights file" in result.stderr
    assert "Traceback" not in result.stderr
    assert _published(out) == []
