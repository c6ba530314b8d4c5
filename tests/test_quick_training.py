"""`train all --quick` end to end: the repository layout, manifests, exports and reports."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from modelspec import MODEL_NAMES
from modelspec import flowers as flowers_spec
from modelspec.repository import read_manifest, sha256_file, verify_files, versions
from tests.conftest import run_cli

pytestmark = pytest.mark.slow
SCHEMA = json.loads(
    (Path(__file__).parent.parent / "modelspec" / "manifest.schema.json").read_text()
)
EXPECTED_PNGS = {
    "digits": {"training_curves.png", "confusion_matrix.png"},
    "flowers": {"training_curves.png", "confusion_matrix.png"},
    "bank": {"training_curves.png", "confusion_matrix.png", "roc_pr.png"},
    "autoencoder": {"training_curves.png", "reconstructions.png"},
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_model_is_published_as_version_1_with_a_valid_manifest(
    quick_repository: Path, name: str
) -> None:
    assert versions(quick_repository, name) == [1]
    directory = quick_repository / name / "1"
    manifest = read_manifest(directory)
    jsonschema.validate(manifest, SCHEMA)
    assert manifest["name"] == name and manifest["training"]["profile"] == "quick"
    assert verify_files(directory, manifest) == []
    assert (directory / "saved_model" / "saved_model.pb").is_file()
    assert (directory / "model.keras").is_file()
    leftovers = [p.name for p in (quick_repository / name).iterdir() if p.name != "1"]
    assert leftovers == []


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_graphs_match_the_manifest_and_take_any_batch(
    quick_repository: Path, name: str
) -> None:
    directory = quick_repository / name / "1"
    manifest = read_manifest(directory)
    for signature in manifest["signatures"].values():
        session = ort.InferenceSession(str(directory / signature["onnx"]))
        (declared_in,) = signature["inputs"]
        (graph_in,) = session.get_inputs()
        assert graph_in.name == declared_in["name"]
        assert graph_in.shape[0] == "batch"
        assert list(graph_in.shape[1:]) == declared_in["shape"][1:]
        for size in (1, 7):
            x = np.random.default_rng(size).random(
                (size, *declared_in["shape"][1:]), dtype=np.float32
            )
            (out,) = session.run(None, {graph_in.name: x})
            assert out.shape[0] == size and np.all(np.isfinite(out))


def test_parity_covers_1000_inputs_per_signature(quick_repository: Path) -> None:
    """1,000 held-out inputs per signature; 250 for flowers in the quick profile (MobileNetV2
    through three runtimes), which still covers its whole quick test split."""
    for name in MODEL_NAMES:
        manifest = read_manifest(quick_repository / name / "1")
        parity = manifest["parity"]
        assert parity["passed"] and parity["tolerance"] <= 1e-4
        for report in parity["signatures"].values():
            assert report["inputs"] >= (250 if name == "flowers" else 1000)
        if name == "flowers":
            assert parity["signatures"]["predict"]["inputs"] >= len(manifest["test_split"]["files"])
            assert max(report["max_abs_diff"].values()) <= 1e-4


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_model_card_shows_metrics_and_its_plots(quick_repository: Path, name: str) -> None:
    directory = quick_repository / name / "1"
    card = (directory / "model_card.md").read_text()
    pngs = {p.name for p in directory.glob("*.png")}
    assert pngs == EXPECTED_PNGS[name]
    for png in pngs:
        assert f"]({png})" in card
        with Image.open(directory / png) as image:
            assert image.format == "PNG" and image.width > 200
    assert "## Test metrics" in card and "version 1" in card


def test_classifier_metrics_are_recorded(quick_repository: Path, data_dir: Path) -> None:
    digits = read_manifest(quick_repository / "digits" / "1")
    assert digits["metrics"]["test_examples"] == len(digits["test_split"]["indices"])
    assert digits["data"]["sha256"] == sha256_file(data_dir / "mnist.npz")
    assert 0.1 < digits["metrics"]["accuracy"] <= 1
    flowers = read_manifest(quick_repository / "flowers" / "1")
    folders = sorted(p.name for p in (data_dir / "flowers").iterdir() if p.is_dir())
    assert flowers["labels"] == folders  # labels come from the data, not from the code
    assert flowers["metrics"]["test_examples"] == len(flowers["test_split"]["files"])
    assert flowers["training"]["base_weights"].startswith("ImageNet weights from the file")
    size = flowers["signatures"]["predict"]["inputs"][0]["shape"][1]
    assert size == flowers_spec.IMAGE_SIZE == flowers["training"]["image_size"]
    second = flowers["metrics"]["second_collection"]
    assert second["images"] > 0 and 0 <= second["accuracy"] <= 1
    latency = flowers["latency"]["predict"]
    assert latency["batch_1_ms_per_item"] > 0 and latency["batch_32_ms_per_item"] > 0
    card = (quick_repository / "flowers" / "1" / "model_card.md").read_text()
    assert "## Second collection" in card and "## CPU latency" in card
    # Where the base's weights came from (random init offline, see test_cli_errors) is said in
    # the card's training section as well as the manifest.
    assert f"- base_weights: {flowers['training']['base_weights']}" in card


def test_bank_reports_both_variants_and_a_validation_threshold(quick_repository: Path) -> None:
    bank = read_manifest(quick_repository / "bank" / "1")
    metrics = bank["metrics"]
    for variant in (metrics, metrics["without_duration"]):
        for key in ("roc_auc", "pr_auc", "precision", "recall", "threshold"):
            assert 0 <= variant[key] <= 1
    assert bank["decision"]["threshold"] == metrics["threshold"]
    assert "duration" in bank["preprocessing"]["encoder"]["columns"]  # the served variant
    width = bank["signatures"]["predict"]["inputs"][0]["shape"][1]
    assert width == len(bank["preprocessing"]["encoder"]["feature_names"])
    card = (quick_repository / "bank" / "1" / "model_card.md").read_text()
    assert "| roc_auc |" in card and "without duration" in card


def test_autoencoder_exports_encoder_decoder_and_reconstructor(quick_repository: Path) -> None:
    directory = quick_repository / "autoencoder" / "1"
    manifest = read_manifest(directory)
    assert set(manifest["signatures"]) == {"encode", "decode", "reconstruct"}
    encoder = ort.InferenceSession(str(directory / "encoder.onnx"))
    decoder = ort.InferenceSession(str(directory / "decoder.onnx"))
    whole = ort.InferenceSession(str(directory / "model.onnx"))
    x = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    (code,) = encoder.run(None, {"pixels": x})
    assert code.shape == (5, 16)
    (rebuilt,) = decoder.run(None, {"code": code})
    (direct,) = whole.run(None, {"pixels": x})
    assert np.allclose(rebuilt, direct, atol=1e-5)
    assert manifest["metrics"]["validation_loss"] > 0


@pytest.fixture(scope="module")
def evaluations(quick_repository: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``evaluate`` through ONNX Runtime (every model, with a JSON report) and through the
    SavedModel (bank), run at once: each is mostly a process starting TensorFlow."""
    report = tmp_path_factory.mktemp("evaluate") / "evaluation.json"
    common = ("evaluate", "--repository", str(quick_repository), "--data-dir", str(data_dir))
    runs = {
        "onnx": (*common, "--json", str(report)),
        "saved_model": (*common, "--model", "bank", "--backend", "saved_model"),
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        done = {name: pool.submit(run_cli, *args) for name, args in runs.items()}
        return {name: future.result() for name, future in done.items()}, report


def test_evaluate_reproduces_the_recorded_metrics(evaluations) -> None:
    runs, report = evaluations
    result = runs["onnx"]
    assert result.returncode == 0, result.stdout + result.stderr
    results = {r["model"]: r for r in json.loads(report.read_text())}
    assert set(results) == set(MODEL_NAMES)
    digits = results["digits"]
    assert abs(digits["metrics"]["accuracy"] - digits["recorded"]["accuracy"]) < 1e-3
    assert "accuracy" in result.stdout and "roc_auc" in result.stdout


def test_evaluate_through_the_saved_model_backend(evaluations) -> None:
    result = evaluations[0]["saved_model"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bank v1 (saved_model)" in result.stdout and "roc_auc" in result.stdout
