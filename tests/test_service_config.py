"""Service configuration and packaging: what operators set is what the service runs."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from service.backends.cpus import available_cpus
from service.config import (
    BatchingConfig,
    ConfigError,
    Limits,
    ModelConfig,
    Settings,
    VersionPolicy,
    load_config,
    unknown_variables,
)

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_serve_every_model_of_the_repository() -> None:
    config = load_config({})
    assert config.discover and config.models == {} and config.repository == Path("models")
    assert config.backend == "onnx" and config.provider == "auto" and not config.tf32
    digits = config.model("digits")  # any name gets the defaults
    assert digits.batching.offload is None  # decided from the warm-up
    assert digits.version_policy.choose([1, 2, 3]) == {3}
    assert config.poll_interval == 10 and config.admin_token is None
    assert config.limits.body_timeout_s == 30 and config.limits.max_connections == 4096


def test_yaml_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "serving.yaml"
    path.write_text(
        "backend: saved_model\n"
        "limits: {max_items_per_request: 8, body_timeout_s: 5}\n"
        "models:\n"
        "  digits: {version: 3, batching: {max_batch_size: 16, max_wait_ms: 1}}\n"
        "  bank: {version_policy: {latest: 2}}\n"
    )
    env = {"SERVING_CONFIG": str(path), "SERVING_BATCHING": "0", "SERVING_BODY_TIMEOUT_S": "2"}
    config = load_config(env)
    assert config.backend == "saved_model"
    assert sorted(config.models) == ["bank", "digits"]
    digits = config.model("digits")
    assert digits.version_policy.choose([1, 2, 3, 4]) == {3}  # the older pin form
    assert digits.batching.max_batch_size == 16 and not digits.batching.enabled
    assert config.model("bank").version_policy.choose([1, 2, 3]) == {2, 3}
    assert config.limits.max_items_per_request == 8
    assert config.limits.body_timeout_s == 2  # the variable beats the file
    assert load_config({"SERVING_CONFIG": str(path), "SERVING_BACKEND": "onnx"}).backend == "onnx"


def test_every_setting_from_the_environment() -> None:
    config = load_config(
        {
            "MODEL_REPOSITORY": "/srv/models",
            "SERVING_WORKERS": "auto",
            "SERVING_MAX_CONCURRENCY": "64",
            "SERVING_POLL_INTERVAL": "0",
            "SERVING_ADMIN_TOKEN": "s3cret",
            "SERVING_REQUEST_TIMEOUT_S": "5",
            "SERVING_GRPC_PORT": "0",
        }
    )
    assert config.repository == Path("/srv/models") and config.worker_count(6) == 6
    assert config.max_concurrency == 64 and config.poll_interval == 0
    assert config.admin_token.get_secret_value() == "s3cret" and "s3cret" not in repr(config)
    assert config.request_timeout_s == 5 and config.grpc_port == 0
    assert unknown_variables({"SERVING_WORKRES": "2", "SERVING_WORKERS": "2"}) == [
        "SERVING_WORKRES"
    ]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("backend: torch\n", "backend"),
        ("provider: rocm\n", "provider"),
        ("batchnig: false\n", "batchnig"),  # unknown keys are refused, not ignored
        ("models: {digits: {batching: {max_batch: 3}}}\n", "max_batch"),
        ("models: {digits: {batching: {max_batch_size: 0}}}\n", "max_batch_size"),
        ("models: {digits: {version_policy: {latest: 1, all: true}}}\n", "version_policy"),
        ("limits: {body_timeout: 3}\n", "body_timeout"),
        ("- a list\n", "mapping"),
    ],
)
def test_bad_configuration_is_refused_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "serving.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named):
        load_config({"SERVING_CONFIG": str(path)})


def test_bad_environment_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="workers"):
        load_config({"SERVING_WORKERS": "many"})
    with pytest.raises(ConfigError, match="max_connections"):
        load_config({"SERVING_MAX_CONNECTIONS": "0"})


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


# What a setting is read through: the settings object or one of its sections, by the names
# the service gives them (``config.provider``, ``runtime.config.limits.max_body_bytes``,
# ``batching.max_wait_ms``, ``SETTINGS.decode_threads``); the sections' own methods read
# their fields through ``self`` (service/config.py only).
SETTINGS_HOLDERS = {"config", "_config", "settings", "SETTINGS", "limits", "batching", "policy"}


def setting_reads(paths: list[Path]) -> set[str]:
    """Names read as attributes of a settings holder: loads only (an assignment is not a
    read), never a method called (``.all(axis=1)``), never an import line, never another
    object's attribute of the same name (``tracing.provider``, ``registry.models``)."""
    found = set()
    for path in paths:
        tree = ast.parse(path.read_text())
        called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not isinstance(node.ctx, ast.Load):
                continue
            if id(node) in called:
                continue
            base = node.value
            holder = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
            if holder in SETTINGS_HOLDERS or (holder == "self" and path.name == "config.py"):
                found.add(node.attr)
    return found


def test_every_setting_is_read_by_the_service() -> None:
    """A setting that validates but changes nothing is worse than none: each field of the
    settings is read, as an attribute of the settings or a section, somewhere in service/."""
    reads = setting_reads(sorted((ROOT / "service").rglob("*.py")))
    sections = (Settings, Limits, BatchingConfig, ModelConfig, VersionPolicy)
    unread = [
        f"{section.__name__}.{name}"
        for section in sections
        for name in section.model_fields
        if name not in {"config", "name", "version"} and name not in reads
    ]
    assert not unread, f"settings nothing reads: {unread}"


def test_the_read_finder_sees_reads_and_nothing_else(tmp_path: Path) -> None:
    """The finder above on code written here: it must be able to fail."""
    code = tmp_path / "code.py"
    code.write_text(
        "from service import batching, models\n"
        "import service.models as provider\n"
        "self.tracing.provider = 1\n"
        "x = tracing.provider + registry.models\n"
        "ok = values.all(axis=1)\n"
        "config.limits = other\n"
        "timeout = runtime.config.request_timeout_s\n"
        "size = limits.max_body_bytes\n"
    )
    assert setting_reads([code]) == {"request_timeout_s", "max_body_bytes"}


def test_decode_threads_size_the_runtimes_decoding_pool(tmp_path: Path) -> None:
    from service.admin import SharedState
    from service.inference import Runtime
    from service.metrics import Metrics
    from service.registry.following import Registry

    settings = load_config({"SERVING_DECODE_THREADS": "3", "SERVING_STATE_DIR": str(tmp_path)})
    metrics = Metrics("decode_threads_test")  # its own names: one registry per process
    runtime = Runtime(settings, metrics, Registry(settings, metrics, SharedState(settings)))
    try:
        assert runtime.decoder.pool._max_workers == 3
        assert Runtime(load_config({}), metrics, runtime.registry).decoder.pool._max_workers == (
            available_cpus()
        )
    finally:
        runtime.decoder.close()
