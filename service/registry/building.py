"""Building: a published version folder made into a runnable, warmed version.

Every file is checked against the manifest's sha256 (and must lie inside the folder), the
manifest is read into a ``descriptor.Version``, each signature's backend is opened (ONNX
Runtime or a SavedModel) and warmed up at batch 1 and at full batch, and its batcher is made,
with the batch size from which batches run off the event loop (a paired OOD detector scoring
in the same batch job). Runs in a thread; what it
builds goes live only when ``service.registry.following`` says so.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelspec import repository
from modelspec.tensors import Signature
from service.backends import Backend, Feed, Outputs
from service.backends.cpus import available_cpus
from service.batching import Batcher
from service.config import BatchingConfig, Settings
from service.descriptor import ManifestError, Version
from service.metrics import Metrics
from service.monitoring.ood import Detectors
from service.registry.lookup import Loaded, ServedModel

OFFLOAD_ABOVE_S = 0.001  # a batch slower than this (inline) runs off the event loop


class LoadError(RuntimeError):
    pass


def _outside(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """The manifest's files that resolve outside the version folder (a symbolic link out, or
    a ``..`` in a name): their bytes are not the version's to serve, whatever their hash."""
    home = os.path.realpath(directory)
    return [
        f"{name[:100]}: outside the version folder (a symbolic link out?)"
        for name in manifest.get("files", {})
        if os.path.commonpath([home, os.path.realpath(os.path.join(home, name))]) != home
    ]


def _offload_from(batching: BatchingConfig, one: float, full: float) -> int | None:
    """The batch size from which batches run in a worker thread: 1 for models slow even on
    one item, the size whose estimated inline time passes OFFLOAD_ABOVE_S for models only
    big batches make slow, None (never) for the rest; ``offload`` true or false decides."""
    if batching.offload is not None:
        return 1 if batching.offload else None
    if one > OFFLOAD_ABOVE_S:
        return 1
    if full <= OFFLOAD_ABOVE_S or not batching.enabled or batching.max_batch_size < 2:
        return None
    per_item = full / batching.max_batch_size
    return max(2, math.ceil(OFFLOAD_ABOVE_S / per_item))


class Builder:
    """Opens, checks and warms up one version at a time, for the registry's loads."""

    def __init__(self, config: Settings, metrics: Metrics, detectors: Detectors) -> None:
        self.config = config
        self.metrics = metrics
        self.detectors = detectors
        self.cpus = available_cpus()

    def open(self, model: ServedModel, loaded: Loaded, directory: Path) -> None:
        """Fill ``loaded`` (version, backends, batchers) from the folder; raises when the
        folder is not a servable version (the registry reports it and serves on)."""
        manifest = repository.read_manifest(directory)
        unused = repository.unused_by(self.config.backend)  # the Bento packs no others
        problems = _outside(directory, manifest) or repository.verify_files(
            directory, manifest, unused
        )
        if problems:
            raise LoadError("integrity check failed: " + "; ".join(problems))
        try:
            version = Version(model.name, loaded.number, directory, manifest, model.config.ood)
        except ManifestError as error:
            raise LoadError(str(error)) from None
        batching = model.config.batching
        for name, view in version.views.items():
            # Small batches run on the event loop's thread with one intra-op thread, leaving
            # the other cores to HTTP work and other workers; batches slow enough to offload
            # run in a worker thread on every usable core (service.batching).
            forced = batching.offload is True
            inline = self._backend(directory, view.signature, threads=None if forced else 1)
            # A flagged signature's batch job also runs the OOD detector (service.monitoring.
            # ood), so that is what is timed: with digits' autoencoder the job takes ~1.5x
            # the CNN's time. A detector not served yet (loads go in name order) is not.
            job = self.detectors.scoring(version, inline.run) if view.flagged else None
            one, full = self._warm_up(inline, version, name, batching.max_batch_size, job)
            offload_from = _offload_from(batching, one, full)
            offloaded = inline
            if offload_from is not None and not forced and self._threads(True) > 1:
                offloaded = self._backend(directory, view.signature, threads=None)
                self._warm_up(offloaded, version, name, batching.max_batch_size)
            backend = offloaded if offload_from == 1 else inline
            loaded.backend, loaded.provider = backend.name, backend.provider
            loaded.backends[name] = backend
            run, run_offloaded = backend.run, offloaded.run
            on_batch = self.metrics.batch_recorder(model.name, name)
            if view.flagged:
                # The OOD detector runs in the same batch job, after the model
                # (service.monitoring.ood): no second batcher round trip per request.
                # Shadow traffic takes a batcher of the model alone (Loaded.shadow_batchers).
                loaded.shadow_batchers[name] = Batcher(
                    run, batching, on_batch, offload_from, run_offloaded
                )
                run = self.detectors.scoring(version, run)
                run_offloaded = self.detectors.scoring(version, run_offloaded)
            loaded.batchers[name] = Batcher(run, batching, on_batch, offload_from, run_offloaded)
        loaded.version = version

    def _threads(self, offload: bool) -> int:
        if self.config.inference_threads:
            return self.config.inference_threads
        return self.cpus if offload else 1

    def _backend(self, directory: Path, signature: Signature, threads: int | None) -> Backend:
        """``threads``: intra-op threads; None for the offloaded count."""
        count = threads if threads is not None else self._threads(True)
        if self.config.inference_threads:
            count = self.config.inference_threads
        if self.config.backend == "saved_model":
            if not (directory / repository.SAVED_MODEL_DIR).is_dir():
                raise LoadError("no SavedModel in this version (an ONNX file published as is)")
            from service.backends.saved_model import SavedModelBackend

            key = signature.saved_model_signature or signature.name
            return SavedModelBackend(directory / repository.SAVED_MODEL_DIR, key, count)
        from service.backends.onnx import OnnxBackend, choose_providers

        providers = choose_providers(self.config.provider, self.config.tf32)
        return OnnxBackend(directory / signature.onnx_file, providers, count)

    @staticmethod
    def _warm_up(
        backend: Backend,
        version: Version,
        signature: str,
        max_batch: int,
        job: Callable[[Feed], Outputs] | None = None,
    ) -> tuple[float, float]:
        """Run the signature at batch 1 and at full batch before it goes live, so the first
        real request pays no lazy allocation or kernel selection; returns the seconds of a
        steady-state run at each (the second of two) of ``job``, the batch job built on
        ``backend`` (default: the backend's own run)."""
        contracts = version.contracts(signature)
        timed = job or backend.run
        timings = []
        for batch in (1, max_batch):
            feed: Feed = {
                name: np.zeros((batch, *[d or 1 for d in c.shapes[0]]), dtype=c.dtype)
                for name, c in contracts.items()
            }
            outputs = backend.run(feed)
            if job is not None:
                job(feed)  # its own first run: the detector's plan is worked out once
            started = time.perf_counter()
            timed(feed)
            timings.append(time.perf_counter() - started)
            for name, value in outputs.items():
                if len(value) != batch or (
                    value.dtype.kind == "f" and not np.isfinite(value).all()
                ):
                    raise LoadError(f"warm-up of {signature} gave unusable output {name!r}")
        return timings[0], timings[1]
