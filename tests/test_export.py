"""The parity check catches a perturbed export, `export` re-publishes a trained model, and
models this project did not train (ONNX, with or without external data, and SavedModels)
are published, checked and served."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from modelspec.repository import read_manifest, sha256_file, versions
from modelspec.tensors import signatures_from_manifest
from tests.conftest import run_cli
from tests.test_cli_errors import _published as published
from tests.test_cli_errors import refused
from tests.user_models import WIDTH, onnx_weights, tiny_onnx, tiny_saved_model
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


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_an_onnx_file_is_published_as_it_is_then_as_the_next_version(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "affine.onnx")
    out = tmp_path / "models"
    for version in (1, 2):
        result = run_cli("export", "--model", str(model), "--out", str(out))
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip() == str(out / "affine" / str(version))
    manifest = read_manifest(out / "affine" / "2")
    assert manifest["origin"] == "user" and manifest["source"]["format"] == "ONNX"
    assert manifest["source"]["sha256"] == sha256_file(model)
    assert manifest["parity"]["passed"] and manifest["parity"]["reference"] == "onnx_reference"
    signature = manifest["signatures"]["predict"]
    assert [t["name"] for t in signature["inputs"]] == ["x"]
    assert sorted(manifest["files"]) == ["model.onnx", "model_card.md"]
    files = ["manifest.json", "model.onnx", "model_card.md"]
    expected = ["affine", "affine/1", *[f"affine/1/{f}" for f in files]]
    expected += ["affine/2", *[f"affine/2/{f}" for f in files]]
    assert _tree(out) == expected  # nothing else: no staging folder left behind


def test_onnx_external_data_is_published_hashed_and_served(tmp_path: Path) -> None:
    """Tensors kept in a file beside the graph (here in a subfolder) travel with it, are in
    the manifest, and the service loads the version and answers with them."""
    from benchmarks.servers import Server

    model = tiny_onnx(tmp_path / "big" / "net.onnx", external="data/weights.bin")
    out = tmp_path / "models"
    result = run_cli("export", "--model", str(model), "--name", "big", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    version = out / "big" / "1"
    manifest = read_manifest(version)
    assert manifest["files"]["data/weights.bin"] == sha256_file(tmp_path / "big/data/weights.bin")
    assert manifest["parity"]["passed"]
    assert not (version / "data" / "weights.bin").is_symlink()

    x = np.random.default_rng(0).standard_normal((3, WIDTH)).astype(np.float32)
    w, b = onnx_weights()
    body = {
        "inputs": [
            {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }
    log = tmp_path / "serve.log"
    with Server(env={"MODEL_REPOSITORY": str(out)}, log=log) as server:
        try:
            server.wait_until("/readyz", timeout=300)
        except Exception:
            print(log.read_text()[-4000:])
            raise
        answer = httpx.post(f"{server.url}/v2/models/big/infer", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    got = np.array(output["data"], np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, x @ w + b, rtol=1e-5, atol=1e-5)


def test_a_saved_model_is_published_with_the_users_parity_inputs(tmp_path: Path) -> None:
    saved = tiny_saved_model(tmp_path / "affine")
    rows = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    out = tmp_path / "models"
    result = run_cli(
        "export",
        "--model",
        str(saved),
        "--name",
        "linear",
        "--parity-inputs",
        f"x={tmp_path / 'rows.npy'}",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    version = out / "linear" / "1"
    manifest = read_manifest(version)
    assert manifest["source"]["format"] == "SavedModel"
    parity = manifest["parity"]
    assert parity["passed"] and parity["reference"] == "saved_model"
    assert parity["input_source"] == "50 inputs from rows.npy, then 950 generated"
    assert parity["signatures"]["predict"]["inputs"] == 1000
    signature = manifest["signatures"]["predict"]
    assert [(t["name"], t["shape"]) for t in signature["inputs"]] == [("x", [-1, 4])]
    assert "model.onnx" in manifest["files"] and "saved_model/saved_model.pb" in manifest["files"]
    assert all(not p.is_symlink() for p in version.rglob("*"))
    assert [p.name for p in out.iterdir()] == ["linear"]  # no staging folder left


# -- refusals that need a trained seed model (the others are in test_cli_errors, which runs
# while the quick training does) ------------------------------------------------------------


def test_a_failed_export_leaves_no_half_written_version(
    quick_repository: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models"
    source = quick_repository / "digits" / "1" / "model.keras"
    # Opset 1 predates every operator of the network, so tf2onnx fails after staging began.
    result = run_cli("export", "--model", str(source), "--out", str(out), "--opset", "1")
    error = refused(result, source, "tf2onnx failed for signature 'predict' (opset 1)")
    assert "--opset" not in error or "opset 1" in error
    assert published(out) == []  # not even an empty digits/ folder


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
