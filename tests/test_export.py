"""The parity check catches a perturbed export, and `export` re-publishes a trained model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from modelspec.repository import read_manifest, versions
from modelspec.tensors import signatures_from_manifest
from tests.conftest import run_cli
from training.export import (
    ParityError,
    Runner,
    check_parity,
    onnx_runner,
    saved_model_runner,
)

pytestmark = pytest.mark.slow


def _perturb_largest_weight(path: Path, scale: float) -> None:
    """Small noise on every value of the largest weight tensor: a subtly broken export."""
    model = onnx.load(str(path))
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(largest).copy()
    values += scale * np.random.default_rng(0).standard_normal(values.shape).astype(values.dtype)
    largest.CopyFrom(numpy_helper.from_array(values, largest.name))
    onnx.save(model, str(path))


def _runtimes(reference: Path, candidate: Path) -> tuple[dict[str, Runner], dict]:
    manifest = read_manifest(reference)
    signatures = signatures_from_manifest(manifest)
    runners = {
        "keras": onnx_runner(reference, signatures),  # the verified export stands in for Keras
        "saved_model": saved_model_runner(candidate / "saved_model", signatures),
        "onnx": onnx_runner(candidate, signatures),
    }
    return runners, manifest


def test_parity_check_catches_a_perturbed_onnx_weight(
    quick_repository: Path, data_dir: Path, tmp_path: Path
) -> None:
    from training.recipes import RECIPES

    reference = quick_repository / "digits" / "1"
    candidate = tmp_path / "digits"
    shutil.copytree(reference, candidate)
    test = RECIPES["digits"].load_test(data_dir, read_manifest(reference))
    inputs = {"predict": test.x[:1000]}

    runtimes, _ = _runtimes(reference, candidate)
    report = check_parity(runtimes, inputs, "test")
    assert report["passed"]

    _perturb_largest_weight(candidate / "model.onnx", scale=1e-3)
    runtimes, _ = _runtimes(reference, candidate)
    with pytest.raises(ParityError, match=r"predict/onnx: max \|diff\|"):
        check_parity(runtimes, inputs, "test")


def test_export_republishes_a_trained_model_as_the_next_version(
    quick_repository: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models"
    shutil.copytree(quick_repository / "autoencoder", out / "autoencoder")
    source = out / "autoencoder" / "1" / "model.keras"
    result = run_cli(
        "export", "--model", str(source), "--out", str(out), "--data-dir", str(data_dir)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert versions(out, "autoencoder") == [1, 2]
    old, new = read_manifest(out / "autoencoder" / "1"), read_manifest(out / "autoencoder" / "2")
    assert new["parity"]["passed"] and new["parity"]["input_source"] == "the recorded test split"
    assert new["test_split"] == old["test_split"] and new["metrics"] == old["metrics"]
    assert new["files"]["model.keras"] == old["files"]["model.keras"]
    assert any("Re-exported from autoencoder version 1" in n for n in new["notes"])
    assert new["files"]["reconstructions.png"] == old["files"]["reconstructions.png"]
    assert "](reconstructions.png)" in (out / "autoencoder" / "2" / "model_card.md").read_text()
