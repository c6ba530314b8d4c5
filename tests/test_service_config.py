"""Service configuration and packaging: what operators set is what the service runs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from service.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_serve_all_four_models() -> None:
    config = load_config({})
    assert [m.name for m in config.models] == ["digits", "flowers", "bank", "autoencoder"]
    assert config.backend == "onnx" and config.provider == "auto" and not config.tf32
    assert config.model("flowers").batching.offload
    assert not config.model("digits").batching.offload


def test_yaml_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "serving.yaml"
    path.write_text(
        "backend: saved_model\n"
        "limits: {max_items_per_request: 8}\n"
        "models:\n"
        "  digits: {version: 3, batching: {max_batch_size: 16, max_wait_ms: 1}}\n"
        "  bank: {}\n"
    )
    config = load_config({"SERVING_CONFIG": str(path), "SERVING_BATCHING": "0"})
    assert config.backend == "saved_model"
    assert [m.name for m in config.models] == ["digits", "bank"]
    digits = config.model("digits")
    assert digits.version == 3 and digits.batching.max_batch_size == 16
    assert not digits.batching.enabled
    assert config.limits.max_items_per_request == 8
    assert load_config({"SERVING_CONFIG": str(path), "SERVING_BACKEND": "onnx"}).backend == "onnx"


@pytest.mark.parametrize(
    "text",
    [
        "backend: torch\n",
        "provider: rocm\n",
        "models: {resnet: {}}\n",
        "models: {digits: {batching: {max_batch: 3}}}\n",
        "models: {digits: {batching: {max_batch_size: 0}}}\n",
    ],
)
def test_bad_configuration_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "serving.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config({"SERVING_CONFIG": str(path)})


def _requirements(name: str) -> set[str]:
    lines = (ROOT / "deploy" / name).read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_bento_requirements_match_the_serve_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = set(project["dependencies"]) | set(project["optional-dependencies"]["serve"])
    assert _requirements("requirements-serve.txt") == pinned
    gpu = _requirements("requirements-serve-gpu.txt")
    cpu_runtime = {p for p in pinned if p.startswith("onnxruntime==")}
    assert gpu - pinned == {"onnxruntime-gpu==1.31.1"}
    assert pinned - gpu == cpu_runtime
