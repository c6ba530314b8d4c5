"""The models this process serves: found in the repository, verified, loaded and warmed up.

A model that cannot be served (no version, a file whose sha256 differs from the manifest, a
graph that does not load) is refused with its reason; the other models keep serving.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from modelspec import repository
from modelspec.bank import BankEncoder
from modelspec.tensors import Signature, signatures_from_manifest
from service.backends import Backend
from service.backends.cpus import available_cpus
from service.batching import Batcher
from service.config import ModelConfig, ServiceConfig
from service.errors import NotFound, Unavailable
from service.metrics import Metrics

logger = logging.getLogger(__name__)

LOADING, READY, FAILED = "loading", "ready", "failed"


@dataclass
class ServedModel:
    name: str
    config: ModelConfig
    state: str = LOADING
    reason: str | None = None
    version: int | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    signatures: dict[str, Signature] = field(default_factory=dict)
    backends: dict[str, Backend] = field(default_factory=dict)
    batchers: dict[str, Batcher] = field(default_factory=dict)
    backend: str | None = None
    provider: str | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels", []))

    @cached_property
    def bank_encoder(self) -> BankEncoder:
        return BankEncoder.from_dict(self.manifest["preprocessing"]["encoder"])

    def input_range(self, input_name: str) -> tuple[float, float] | None:
        """The value range the manifest declares for an input (the autoencoder's codes, from
        its training data), or None."""
        for signature in self.signatures.values():
            for tensor in signature.inputs:
                if tensor.name == input_name and tensor.range is not None:
                    return tensor.range
        return None

    @property
    def threshold(self) -> float:
        return float(self.manifest["decision"]["threshold"])

    def describe(self) -> dict[str, Any]:
        """What ``GET /models`` shows: enough for a client to call the model correctly."""
        manifest = self.manifest
        return {
            "name": self.name,
            "version": self.version,
            "state": self.state,
            "reason": self.reason,
            "backend": self.backend,
            "provider": self.provider,
            "title": manifest.get("title"),
            "signatures": manifest.get("signatures", {}),
            "labels": manifest.get("labels"),
            "preprocessing": manifest.get("preprocessing"),
            "decision": manifest.get("decision"),
            "metrics": manifest.get("metrics"),
            "created_at": manifest.get("created_at"),
            "batching": {
                "enabled": self.config.batching.enabled,
                "max_batch_size": self.config.batching.max_batch_size,
                "max_wait_ms": self.config.batching.max_wait_ms,
            },
        }


class Registry:
    def __init__(self, config: ServiceConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.cpus = available_cpus()
        self.models = {m.name: ServedModel(m.name, m) for m in config.models}

    @property
    def ready(self) -> bool:
        return all(m.state == READY for m in self.models.values())

    def not_ready_reasons(self) -> dict[str, str]:
        return {m.name: m.reason or m.state for m in self.models.values() if m.state != READY}

    def find(self, name: str) -> ServedModel:
        """The configured model of that name, whatever its state; a 404 otherwise."""
        model = self.models.get(name)
        if model is None:
            raise NotFound(
                "unknown_model", f"no model named {name!r}", expected=str(list(self.models))
            )
        return model

    def require(self, name: str) -> ServedModel:
        """The model if it can take requests now; a 404 or 503 saying why otherwise."""
        model = self.find(name)
        if model.state == READY:
            return model
        if model.state == LOADING:
            raise Unavailable(
                "model_loading", f"model {name!r} is loading", headers={"Retry-After": "5"}
            )
        raise Unavailable("model_unavailable", f"model {name!r} was refused: {model.reason}")

    def load_all(self) -> None:
        for model in self.models.values():
            self._load(model)

    def _load(self, model: ServedModel) -> None:
        started = time.perf_counter()
        try:
            self._open(model)
            self._warm_up(model)
        except Exception as error:
            model.state, model.reason = FAILED, str(error) or type(error).__name__
            logger.error("model %s refused: %s", model.name, model.reason)
            self.metrics.model_ready.labels(model.name).set(0)
            return
        model.state = READY
        self.metrics.model_ready.labels(model.name).set(1)
        self.metrics.model_info.labels(
            model.name, str(model.version), model.backend, model.provider
        ).set(1)
        logger.info(
            "model %s version %s ready on %s/%s in %.1f s",
            model.name,
            model.version,
            model.backend,
            model.provider,
            time.perf_counter() - started,
        )

    def _open(self, model: ServedModel) -> None:
        root = self.config.repository
        version = model.config.version or repository.latest_version(root, model.name)
        if version is None:
            raise LoadError(f"no published version under {root / model.name}")
        directory = repository.version_dir(root, model.name, version)
        if not (directory / repository.MANIFEST).is_file():
            raise LoadError(f"version {version} not found under {root / model.name}")
        model.version = version
        model.manifest = repository.read_manifest(directory)
        problems = repository.verify_files(directory, model.manifest)
        if problems:
            raise LoadError("integrity check failed: " + "; ".join(problems))
        model.signatures = {s.name: s for s in signatures_from_manifest(model.manifest)}
        for signature in model.signatures.values():
            backend = self._backend(directory, signature, self._threads(model))
            model.backend, model.provider = backend.name, backend.provider
            model.backends[signature.name] = backend
            model.batchers[signature.name] = Batcher(
                backend.run,
                model.config.batching,
                on_batch=self.metrics.batch_recorder(model.name, signature.name),
            )

    def _threads(self, model: ServedModel) -> int:
        """Offloaded (slow) models use every CPU; inline ones run on the event loop's thread
        and take one, leaving the rest to HTTP work and other workers."""
        if self.config.inference_threads:
            return self.config.inference_threads
        return self.cpus if model.config.batching.offload else 1

    def _backend(self, directory: Path, signature: Signature, threads: int) -> Backend:
        if self.config.backend == "saved_model":
            from service.backends.saved_model import SavedModelBackend

            return SavedModelBackend(
                directory / repository.SAVED_MODEL_DIR,
                signature.name,
                signature.inputs[0].name,
                threads,
            )
        from service.backends.onnx import OnnxBackend, choose_providers

        providers = choose_providers(self.config.provider, self.config.tf32)
        return OnnxBackend(directory / signature.onnx_file, providers, threads)

    def _warm_up(self, model: ServedModel) -> None:
        """Run each signature once at batch 1 and once at full batch before reporting ready,
        so the first real request pays no lazy allocation or kernel selection."""
        for name, signature in model.signatures.items():
            shape = tuple(d for d in signature.inputs[0].shape[1:])
            backend = model.backends[name]
            for batch in sorted({1, model.config.batching.max_batch_size}):
                outputs = backend.run(np.zeros((batch, *shape), dtype=np.float32))
                if len(outputs) != batch or not np.isfinite(outputs).all():
                    raise LoadError(f"warm-up of {name} gave unusable outputs")

    def close(self) -> None:
        for model in self.models.values():
            for batcher in model.batchers.values():
                batcher.close()


class LoadError(RuntimeError):
    pass
