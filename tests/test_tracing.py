"""Traces of inference requests: the service's real ASGI app and models, in this process, with
OpenTelemetry's in-memory exporter in place of an OTLP collector."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from benchmarks.payloads import mnist_test
from modelspec import digits
from service.admin import SharedState
from service.app import App
from service.config import load_config
from service.inference import Runtime
from service.metrics import Metrics
from service.registry.following import Registry
from service.tracing import Tracing, from_environment

pytestmark = pytest.mark.slow
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def _bentoml_stand_in(scope, receive, send) -> None:
    """Routes the service leaves to BentoML (/livez, /metrics...): none are asked here."""
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def traced(quick_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    exporter = InMemorySpanExporter()
    # The two models the tests call: loading and warming flowers would be most of the setup.
    config = tmp_path_factory.mktemp("tracing") / "serving.yaml"
    config.write_text("discover: false\nmodels: {digits: {}, autoencoder: {}}\n")
    environ = {"MODEL_REPOSITORY": str(quick_repository), "SERVING_CONFIG": str(config)}
    settings = load_config({**environ, "SERVING_GRPC_PORT": "0"})
    metrics = Metrics()
    registry = Registry(settings, metrics, SharedState(settings))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(registry.refresh())
    runtime = Runtime(settings, metrics, registry, Tracing.with_exporter(exporter, batch=False))
    yield loop, App(_bentoml_stand_in, runtime), exporter
    registry.close()
    loop.close()


def _post(traced, path: str, **kwargs) -> httpx.Response:
    loop, asgi, _ = traced

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return await client.post(path, **kwargs)

    return loop.run_until_complete(go())


def test_one_span_per_request_with_its_steps(traced, data_dir: Path) -> None:
    _, _, exporter = traced
    exporter.clear()
    images, _ = mnist_test(data_dir, 3)
    response = _post(
        traced,
        "/digits/predict",
        json={"inputs": digits.scale_pixels(images).tolist()},
        headers={"traceparent": CALLER},
    )
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.parent is None or s.parent.span_id == 0x00F067AA0BA902B7]
    assert root.name == "POST /digits/predict"
    assert f"{root.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"  # the caller's
    assert root.attributes["model"] == "digits" and root.attributes["model.version"] == 1
    assert root.attributes["items"] == 3 and root.attributes["batch.size"] >= 3
    assert root.attributes["http.response.status_code"] == 200
    children = {s.name: s for s in spans if s.parent and s.parent.span_id == root.context.span_id}
    assert list(children) == ["read body", "decode", "queue", "compute", "encode"]
    for child in children.values():
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time
    returned = response.headers["traceparent"].split("-")
    assert returned[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert returned[2] == f"{root.context.span_id:016x}"


def test_refused_requests_are_traced_with_their_status(traced) -> None:
    _, _, exporter = traced
    exporter.clear()
    response = _post(traced, "/v2/models/digits/infer", json={"inputs": [{"name": "image"}]})
    assert response.status_code == 400
    (root,) = exporter.get_finished_spans()
    assert root.name == "POST /v2/models/digits/infer"
    assert root.attributes["http.response.status_code"] == 400
    assert "traceparent" in response.headers


def test_every_protocol_is_traced(traced) -> None:
    _, _, exporter = traced
    exporter.clear()
    pixels = np.zeros((1, 784)).tolist()
    tf = _post(traced, "/v1/models/autoencoder:predict", json={"instances": pixels})
    generic = _post(traced, "/models/autoencoder/predict?signature=encode", json={"inputs": pixels})
    assert tf.status_code == generic.status_code == 200
    names = {s.name for s in exporter.get_finished_spans() if s.parent is None}
    assert names == {"POST /v1/models/autoencoder:predict", "POST /models/autoencoder/predict"}


def test_off_by_default_and_set_by_the_standard_variables() -> None:
    assert from_environment({}) is None
    assert from_environment({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert (
        from_environment({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) is None
    )
    console = from_environment({"OTEL_TRACES_EXPORTER": "console"})
    assert console is not None
    console.shutdown()


def test_a_ratio_sampler_decides_a_root_request_before_any_span(monkeypatch) -> None:
    # Roots are decided on a trace id drawn before the span (no OpenTelemetry object for an
    # unsampled one); the share sampled, the sampled spans' ids and a caller's traceparent
    # must be what the SDK's own sampler gives.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    exporter = InMemorySpanExporter()
    tracing = Tracing.with_exporter(exporter, batch=False)
    bound = tracing.provider.sampler._root.bound
    n = 4000

    started = [tracing.start("POST /x", {"content-type": "application/json"}) for _ in range(n)]

    sampled = [t for t in started if t is not None]
    # Binomial(4000, 0.25): mean 1000, sd 27; 5 sd either side.
    assert 863 <= len(sampled) <= 1137, f"{len(sampled)} of {n} sampled at 0.25"
    for found in sampled:
        context = found.span.get_span_context()
        assert context.trace_flags.sampled and context.trace_id & ((1 << 64) - 1) < bound
        found.finish(200)
    assert len(exporter.get_finished_spans()) == len(sampled)
    # A caller's decision is followed, with the caller's trace id.
    child = tracing.start("POST /x", {"traceparent": CALLER})
    assert child is not None
    assert child.span.get_span_context().trace_id == int(CALLER.split("-")[1], 16)
    assert tracing.start("POST /x", {"traceparent": CALLER[:-2] + "00"}) is None
    tracing.shutdown()


def test_a_clients_long_model_name_is_clipped_in_span_names_and_log_lines(traced, caplog) -> None:
    """A model name is the client's text: a 20,000-character one made a span named by it
    and a 40 KB log line (the route and the 404's message, each with the whole name): 60 KB
    of logs and traces for each request of 20 KB (found by helper rt3). Real names are at
    most 64 characters, so a few hundred keep every real call's."""
    _, _, exporter = traced
    exporter.clear()
    name = "B" * 20_000
    caplog.set_level("INFO", logger="service")
    for path in (f"/v1/models/{name}:predict", f"/models/{name}/predict"):
        assert _post(traced, path, json={"instances": [[0.0]]}).status_code == 404
    spans = exporter.get_finished_spans()
    assert len(spans) == 2 and all(len(s.name) <= 300 for s in spans), [len(s.name) for s in spans]
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("service")]
    assert lines and all(len(line) <= 600 for line in lines), [len(line) for line in lines]
