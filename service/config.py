"""Service settings: environment variables over an optional YAML file over defaults.

Operators set a few environment variables (``MODEL_REPOSITORY``, ``SERVING_BACKEND``...) or
point ``SERVING_CONFIG`` at a YAML file for per-model settings; both are read once at start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from modelspec import MODEL_NAMES

BACKENDS = ("onnx", "saved_model")
PROVIDERS = ("auto", "cuda", "tensorrt", "cpu")


@dataclass(frozen=True)
class BatchingConfig:
    """How many items one inference may take, and how long a first item may wait for company."""

    enabled: bool = True
    max_batch_size: int = 64
    max_wait_ms: float = 2.0
    # Run batches in a worker thread: worth it for models slower than a millisecond or so,
    # whose compute would otherwise stall the event loop; cheap models run inline.
    offload: bool = False
    # Items waiting beyond this are refused at once with 503 + Retry-After (load shedding):
    # a fast "come back later" instead of a timeout.
    max_queued_items: int = 4096


@dataclass(frozen=True)
class ModelConfig:
    name: str
    version: int | None = None  # None: the newest published version
    batching: BatchingConfig = field(default_factory=BatchingConfig)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may carry and how long it may take to arrive: the
    service's first line of defence (README, "Threat model")."""

    max_body_bytes: int = 20 * 1024 * 1024
    max_items_per_request: int = 64
    max_image_pixels: int = 40_000_000  # one image, read from its header before decoding
    # All images of one request together: 24 PNGs of 6300x6300 (each within the per-image
    # limit, 1 MB in all) took 4 s of decoding; 50 M pixels is ~0.3 s on one core.
    max_request_pixels: int = 50_000_000
    max_header_bytes: int = 64 * 1024  # request line and headers (431 beyond)
    max_headers: int = 100
    header_timeout_s: float = 10.0  # from a connection's or request's first byte (408)
    body_timeout_s: float = 30.0  # the whole body, from the end of the headers (408)
    # Open connections per worker (503 beyond). Each holds at most max_header_bytes while
    # its headers arrive, so 4096 bound that memory to 256 MiB in the worst case.
    max_connections: int = 4096


@dataclass(frozen=True)
class ServiceConfig:
    repository: Path = Path("models")
    backend: str = "onnx"
    provider: str = "auto"
    tf32: bool = False
    models: tuple[ModelConfig, ...] = tuple(ModelConfig(n) for n in MODEL_NAMES)
    limits: Limits = field(default_factory=Limits)
    log_json: bool = False
    access_log: bool = False  # one line per model request; off by default (hot path)
    inference_threads: int | None = None  # None: the CPUs this process may use

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)


class ConfigError(ValueError):
    pass


def _default_batching(name: str) -> BatchingConfig:
    # Flowers costs ~100x digits per image: smaller batches keep its tail latency bounded.
    if name == "flowers":
        return BatchingConfig(max_batch_size=32, max_wait_ms=5.0, offload=True)
    return BatchingConfig()


def _batching_from(data: dict[str, Any], base: BatchingConfig) -> BatchingConfig:
    unknown = set(data) - set(BatchingConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown batching settings {sorted(unknown)}")
    batching = replace(base, **data)
    if batching.max_batch_size < 1 or batching.max_wait_ms < 0 or batching.max_queued_items < 1:
        raise ConfigError(
            "batching needs max_batch_size >= 1, max_wait_ms >= 0 and max_queued_items >= 1"
        )
    return batching


def _models_from(data: dict[str, Any] | None, batching_enabled: bool) -> tuple[ModelConfig, ...]:
    data = data or {name: {} for name in MODEL_NAMES}
    models = []
    for name, settings in data.items():
        if name not in MODEL_NAMES:
            raise ConfigError(f"unknown model {name!r}; known: {list(MODEL_NAMES)}")
        settings = settings or {}
        base = replace(_default_batching(name), enabled=batching_enabled)
        batching = _batching_from(settings.get("batching", {}), base)
        version = settings.get("version")
        models.append(ModelConfig(name, int(version) if version else None, batching))
    return tuple(models)


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _optional_int(value: str | None) -> int | None:
    return int(value) if value else None


def load_config(environ: dict[str, str] | None = None) -> ServiceConfig:
    """Read ``SERVING_CONFIG`` (YAML) if set, then apply environment overrides."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path := env.get("SERVING_CONFIG"):
        data = yaml.safe_load(Path(path).read_text()) or {}
    batching_enabled = _flag(env.get("SERVING_BATCHING"), data.get("batching", True))
    limits_data = data.get("limits", {})
    unknown = set(limits_data) - set(Limits.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown limits {sorted(unknown)}")
    limits = replace(Limits(), **limits_data)
    for name, spec in Limits.__dataclass_fields__.items():  # SERVING_BODY_TIMEOUT_S=2 ...
        if (value := env.get(f"SERVING_{name.upper()}")) is not None:
            limits = replace(limits, **{name: (float if spec.type == "float" else int)(value)})
    config = ServiceConfig(
        repository=Path(env.get("MODEL_REPOSITORY", data.get("repository", "models"))),
        backend=env.get("SERVING_BACKEND", data.get("backend", "onnx")),
        provider=env.get("SERVING_PROVIDER", data.get("provider", "auto")),
        tf32=_flag(env.get("SERVING_TF32"), data.get("tf32", False)),
        models=_models_from(data.get("models"), batching_enabled),
        limits=limits,
        log_json=_flag(env.get("SERVING_LOG_JSON"), data.get("log_json", False)),
        access_log=_flag(env.get("SERVING_ACCESS_LOG"), data.get("access_log", False)),
        inference_threads=_optional_int(env.get("SERVING_INFERENCE_THREADS"))
        or data.get("inference_threads"),
    )
    return validate(config)


def validate(config: ServiceConfig) -> ServiceConfig:
    if config.backend not in BACKENDS:
        raise ConfigError(f"backend {config.backend!r}: expected one of {list(BACKENDS)}")
    if config.provider not in PROVIDERS:
        raise ConfigError(f"provider {config.provider!r}: expected one of {list(PROVIDERS)}")
    return config
