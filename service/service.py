"""The BentoML service: ``bentoml serve`` (see bentofile.yaml) starts this.

BentoML provides the server, workers, ``/livez``, ``/readyz``, ``/metrics`` and the OpenAPI
page; the model endpoints live in ``service.routes``, mounted at ``/``. Models load in the
background after start, so ``/readyz`` can say "not yet" (and why) instead of hanging.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os

import bentoml
import orjson
from starlette.exceptions import HTTPException

from service import connection
from service.config import load_config
from service.fastpath import FastPathService
from service.inference import Runtime
from service.logs import configure_logging
from service.metrics import Metrics
from service.registry import Registry
from service.routes import app

logger = logging.getLogger("service")
connection.install()  # before BentoML starts uvicorn in this process

WORKERS = int(os.environ.get("SERVING_WORKERS", "1"))


def settle_garbage_collector() -> None:
    """Keep the collector off the hot path: everything alive after start-up (BentoML, FastAPI,
    the models) is frozen out of collection, and young-generation collections run every 50,000
    allocations instead of 700 (a JSON image alone allocates ~800 objects)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


@bentoml.service(
    service_class=FastPathService,
    name="keras-models",
    workers=WORKERS,
    traffic={"timeout": 60, "max_concurrency": int(os.environ.get("SERVING_MAX_CONCURRENCY", 512))},
)
@bentoml.asgi_app(app, path="/")
class KerasModels:
    """Digits, flowers, bank and autoencoder models from the local model repository."""

    def __init__(self) -> None:
        config = load_config()
        configure_logging(config.log_json)
        metrics = Metrics()
        connection.limits = config.limits
        connection.on_refusal = metrics.connection_refused
        self.runtime = Runtime(config, metrics, Registry(config, metrics))
        app.state.runtime = self.runtime

    @bentoml.on_startup
    async def load_models(self) -> None:
        """Load and warm every model before this worker accepts a connection (uvicorn waits
        for start-up hooks before it listens). Workers share one listening socket, so a
        worker restarted beside a healthy one takes no request it would have to refuse
        while loading: a kill -9 under load used to fail ~19% of requests for that reason."""
        registry = self.runtime.registry
        logger.info("loading models from %s", registry.config.repository.resolve())
        await asyncio.to_thread(registry.load_all)
        settle_garbage_collector()

    async def __is_ready__(self) -> bool:
        registry = self.runtime.registry
        if not registry.ready:
            state = {"ready": False, "models": registry.not_ready_reasons()}
            raise HTTPException(status_code=503, detail=orjson.dumps(state).decode())
        return True

    @bentoml.on_shutdown
    async def stop(self) -> None:
        self.runtime.registry.close()
