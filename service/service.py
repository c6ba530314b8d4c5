"""The BentoML service: ``bentoml serve`` (see bentofile.yaml) starts this.

BentoML provides the server, its workers and graceful shutdown, and ``/livez``, ``/readyz``
and ``/metrics``; every other route is ``service.app`` (the route table in
``service.routes``). Each worker loads the models before it accepts a connection, then
keeps them in step with the repository (``service.registry``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any

import bentoml
import orjson
from starlette.exceptions import HTTPException

from service import auth, connection, logs, startup, tracing
from service.admin import SharedState
from service.app import AppService
from service.backends.cpus import available_cpus
from service.config import ConfigError, settings, unknown_variables
from service.inference import Runtime
from service.logs import configure_logging
from service.metrics import Metrics
from service.monitoring import Monitor
from service.protocols import grpc, v2_names
from service.registry.following import Registry

logger = logging.getLogger("service")
startup.prepare_server()  # in the `bentoml serve` process only: port check, metrics folder
logs.install()  # every log record of this worker escapes client strings (service.logs)
# `bentoml build` imports this module to package it, where the repository need not exist
# (the bucket Bento has none); `bentoml serve` is where a missing one must stop the start.
BUILDING = sys.argv[1:2] == ["build"]
try:
    SETTINGS = settings()
    if not BUILDING:
        SETTINGS.check_repository()
except ConfigError as error:  # one line, not a traceback: it is the operator's to fix
    print(f"error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
connection.install(SETTINGS.limits)  # before BentoML starts uvicorn in this process
SHUTDOWN_GRACE_S = 30
# Keys and JWT keys are read here, at import, so that a missing or broken file stops
# ``bentoml serve`` with its error instead of serving every model open (service.auth).
GUARD = auth.Guard(SETTINGS)


def tls_options() -> dict[str, Any]:
    """BentoML's ``ssl`` settings (uvicorn's) from ours: HTTPS on the HTTP port, and a client
    certificate signed by ``tls_client_ca_file`` required when that is set (mTLS)."""
    if SETTINGS.tls_cert_file is None:
        return {}
    import ssl

    options: dict[str, Any] = {
        "enabled": True,
        "certfile": str(SETTINGS.tls_cert_file),
        "keyfile": str(SETTINGS.tls_key_file),
    }
    if SETTINGS.tls_client_ca_file is not None:
        options["ca_certs"] = str(SETTINGS.tls_client_ca_file)
        options["cert_reqs"] = int(ssl.CERT_REQUIRED)
    return {"ssl": options}


def settle_garbage_collector() -> None:
    """Keep the collector off the hot path: everything alive after start-up (BentoML, the
    models) is frozen out of collection, and young-generation collections run every 50,000
    allocations instead of 700 (a JSON image alone allocates ~800 objects)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def flush_metrics(metrics: Metrics, every_s: float = 0.5) -> None:
    """Hand the hot path's counts to prometheus_client (``service.metrics``)."""
    while True:
        await asyncio.sleep(every_s)
        metrics.flush()


@bentoml.service(
    service_class=AppService,
    name="keras-model-serving",
    workers=SETTINGS.worker_count(available_cpus()),
    traffic={"timeout": SETTINGS.request_timeout_s, "max_concurrency": SETTINGS.max_concurrency},
    **tls_options(),
)
class KerasModels:
    """Every model of the local model repository, over native, V2 and TF Serving routes."""

    def __init__(self) -> None:
        configure_logging(SETTINGS.log_json)
        for name in unknown_variables(dict(os.environ)):
            logger.warning("environment variable %s is not a setting; ignored", name)
        startup.forget_dead_workers(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))  # restarted?
        metrics = Metrics()
        connection.on_refusal = metrics.connection_refused
        registry = Registry(SETTINGS, metrics, SharedState(SETTINGS))
        self.runtime = Runtime(SETTINGS, metrics, registry, tracing.from_environment(), guard=GUARD)
        self.runtime.monitor = Monitor(SETTINGS, registry)
        metrics.flushers.append(self.runtime.monitor.flush)
        runtime = self.runtime
        GUARD.resolve = lambda name: v2_names.served(runtime).get(name, (name,))[0]
        GUARD.start_metrics()
        metrics.flushers.append(GUARD.flush)
        self._watching: asyncio.Task[None] | None = None
        self._polling: asyncio.Task[None] | None = None  # held so the task is not collected
        self._grpc: Any = None
        self._sweeping: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None

    @bentoml.on_startup
    async def load_models(self) -> None:
        """Load and warm every model before this worker accepts a connection (uvicorn waits
        for start-up hooks before it listens). Workers share one listening socket, so a
        worker restarted beside a healthy one takes no request it would have to refuse
        while loading: a kill -9 under load used to fail ~19% of requests for that reason.
        Then follow the repository: new versions, removed ones, the repository API."""
        registry = self.runtime.registry
        where = SETTINGS.remote or Path(SETTINGS.repository).resolve()
        logger.info("loading models from %s", where)
        await registry.refresh()
        settle_garbage_collector()
        self._polling = asyncio.create_task(registry.poll_forever())
        self._sweeping = asyncio.create_task(self.runtime.deadlines.sweep_forever())
        self._flushing = asyncio.create_task(flush_metrics(self.runtime.metrics))
        self._watching = asyncio.create_task(GUARD.watch_forever())
        self._grpc = await grpc.start(self.runtime)
        if self.runtime.monitor is not None:
            self.runtime.monitor.start()

    async def __is_ready__(self) -> bool:
        registry = self.runtime.registry
        if not registry.ready:
            state = {"ready": False, "models": registry.not_ready_reasons()}
            raise HTTPException(status_code=503, detail=orjson.dumps(state).decode())
        return True

    @bentoml.on_shutdown
    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=SHUTDOWN_GRACE_S)  # calls in progress finish
        for task in (self._polling, self._sweeping, self._flushing, self._watching):
            if task is not None:
                task.cancel()
        self.runtime.metrics.flush()
        if self.runtime.monitor is not None:
            self.runtime.monitor.stop()  # the payload records queued are written first
        self.runtime.registry.close()
        self.runtime.decoder.close()
        if self.runtime.tracing is not None:
            self.runtime.tracing.shutdown()  # exports the spans still buffered
