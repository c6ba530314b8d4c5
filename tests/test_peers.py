"""The peers benchmark's own parts, on real processes and a real graph, without any peer.

hey runs against the real HTTP floor app under uvicorn; its output is parsed as captured.
The answer check runs a small real ONNX graph (a softmax over a linear layer) in ONNX
Runtime. Installing peers is the benchmark's job, not the tests': the one peer started here
(slow) is stock BentoML, which lives in the project's own venv.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import floors, hey
from benchmarks.answers import check
from benchmarks.peers import catalog, report
from benchmarks.peers.catalog import ROUTE
from benchmarks.peers.request import build
from benchmarks.peers.run import drive, measure_http_floor, measure_peer
from benchmarks.processes import ServerProcess
from benchmarks.servers import free_port

needs_hey = pytest.mark.skipif(shutil.which("hey") is None, reason=hey.INSTALL_HINT)


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits-shaped ONNX graph: image (N, 28, 28) -> probabilities (N, 10)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(1).normal(0, 0.1, (784, 10)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "digits",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 28, 28])],
            [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
            [numpy_helper.from_array(weights, "weights")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    path = tmp_path_factory.mktemp("graph") / "model.onnx"
    onnx.save(model, path)
    return path


def args_for(out: Path) -> argparse.Namespace:
    return argparse.Namespace(
        seconds=0.5, concurrency=[1, 4], warmup=0.2, ready_timeout=60.0, out=out
    )


@pytest.fixture(scope="module")
def http_floor(tmp_path_factory: pytest.TempPathFactory):
    """One floor server for the module: the tests only read from it."""
    port = free_port()
    log = tmp_path_factory.mktemp("floor") / "floor.log"
    with ServerProcess(floors.http_floor_command(port), floors.ROOT, {}, log, port) as server:
        server.wait_ready(ROUTE, b"{}", timeout=30)
        yield server


@needs_hey
def test_hey_output_of_a_real_run_parses(http_floor: ServerProcess, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"inputs": []}')
    started = time.monotonic()
    result = hey.run(http_floor.url + ROUTE, body, concurrency=2, seconds=0.5)
    wall = time.monotonic() - started

    # How many requests fit in 0.5 s depends on the machine; what is parsed must not. hey
    # fills its p-th percentile slot when some i < n has i * 100 // n >= p (n >= 100 for p99).
    n = result.ok + result.failed
    filled = {p for p in (10, 25, 50, 75, 90, 95, 99) if (n - 1) * 100 // n >= p}
    assert result.ok > 0 and result.failed == 0, (result.ok, result.failed)
    assert set(result.percentiles_ms) == filled, (n, result.percentiles_ms)
    ordered = [result.percentiles_ms[p] for p in sorted(filled)]
    # hey prints seconds to 4 decimals: a fast floor's 10th percentile reads 0.0000 s (seen
    # on an idle machine), so only the slowest must be above 0.
    assert min(ordered) >= 0 and ordered[-1] > 0, result.percentiles_ms
    assert ordered == sorted(ordered), result.percentiles_ms
    # hey's total lies between its -z duration (less its last tick) and our wall clock.
    assert 0.4 < result.seconds <= wall, f"hey: {result.seconds} s, wall {wall:.3f} s, -z 0.5s"
    assert result.requests_per_s == pytest.approx(result.ok / result.seconds)


@needs_hey
def test_hey_errors_count_as_failures(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text("{}")
    nobody = f"http://127.0.0.1:{free_port()}{ROUTE}"  # nothing listens there

    result = hey.run(nobody, body, concurrency=1, seconds=0.2)

    assert result.ok == 0
    assert result.requests_per_s == 0
    assert result.failed > 0
    assert any("connection refused" in message for message in result.errors)


def test_hey_non_200_answers_are_failures() -> None:
    # hey's layout; the "0% in" line is what it prints for a percentile too few requests fill.
    captured = """
Summary:
  Total:\t1.0007 secs
  Requests/sec:\t300.0000

Latency distribution:
  50% in 0.0031 secs
  99% in 0.0102 secs
  0% in 0.0000 secs

Status code distribution:
  [200]\t200 responses
  [503]\t100 responses
"""
    result = hey.parse(captured)

    assert (result.ok, result.failed) == (200, 100)
    assert result.percentiles_ms == {50: 3.1, 99: 10.2}
    assert result.requests_per_s == pytest.approx(200 / 1.0007)


def test_the_answer_check_uses_onnx_runtime_in_process(graph: Path) -> None:
    request = build(graph, data_dir=None)
    body = json.loads(request.body)["inputs"][0]
    right = {"outputs": [{"name": "probabilities", "data": request.expected.ravel().tolist()}]}
    off = request.expected + 1e-3

    assert body["shape"] == [1, 28, 28] and len(body["data"]) == 784
    assert check(json.dumps(right).encode(), request.expected) is None
    # Stock BentoML answers the outputs list without the object around it.
    assert check(json.dumps(right["outputs"]).encode(), request.expected) is None
    wrong = {"outputs": [{"name": "probabilities", "data": off.ravel().tolist()}]}
    assert "wrong answer" in check(json.dumps(wrong).encode(), request.expected)
    assert "unreadable" in check(b'{"error": "no"}', request.expected)


@needs_hey
def test_the_http_floor_and_the_driver_make_a_row(graph: Path, tmp_path: Path) -> None:
    args = args_for(tmp_path)
    (tmp_path / "peers-logs").mkdir()
    request = build(graph, data_dir=None)
    body_file = tmp_path / "body.json"
    body_file.write_bytes(request.body)

    row = measure_http_floor(request, body_file, args)

    assert row["status"] == "ok"
    assert [r["concurrency"] for r in row["runs"]] == [1, 4]
    assert all(r["requests_per_s"] > 0 and r["failed"] == 0 for r in row["runs"])
    table = report.table([row], args.concurrency)
    assert "| HTTP floor" in table and "1.00x" in table
    report.plot([row], args.concurrency, tmp_path / "peers.png", "test")
    assert (tmp_path / "peers.png").stat().st_size > 1000


@needs_hey
def test_a_wrong_answer_is_marked(http_floor: ServerProcess, graph: Path, tmp_path: Path) -> None:
    request = build(graph, data_dir=None)
    body_file = tmp_path / "body.json"
    body_file.write_bytes(request.body)

    # The floor answers ten 0.1s, whatever the input: not the graph's answer.
    row = drive(http_floor.url + ROUTE, request, body_file, args_for(tmp_path))

    assert row["status"].startswith("wrong answer")
    assert len(row["runs"]) == 2


@pytest.mark.slow
@pytest.mark.long  # a whole peer server started the benchmark's way: make bench-peers' part
@needs_hey
def test_stock_bentoml_peer_serves_the_v2_body(graph: Path, tmp_path: Path) -> None:
    args = args_for(tmp_path)
    (tmp_path / "peers-logs").mkdir()
    request = build(graph, data_dir=None)
    body_file = tmp_path / "body.json"
    body_file.write_bytes(request.body)

    row = measure_peer(catalog.PEERS["bentoml"], request, body_file, graph, tmp_path, args)

    assert row["status"] == "ok", row["status"]
    assert row["native_v2"] is False
    assert all(r["requests_per_s"] > 0 for r in row["runs"])


def test_triton_runs_on_a_model_repository_of_its_own(graph: Path, tmp_path: Path) -> None:
    # The strongest Triton set-up here: its own binary on config.pbtxt + model.py with the
    # dynamic batcher, no PyTriton in the request path (the PyTriton variant says so).
    triton, pytriton = catalog.PEERS["triton"], catalog.PEERS["pytriton"]
    python = tmp_path / "venv" / "bin" / "python"
    launch = catalog.Launch(python, tmp_path, 8000, {"metrics": 8002}, graph)

    config = triton.files(launch)["models/digits/config.pbtxt"]

    assert 'backend: "python"' in config and f"max_batch_size: {catalog.MAX_BATCH}" in config
    assert 'name: "image" data_type: TYPE_FP32 dims: [ 28, 28 ]' in config
    assert 'name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ]' in config
    delay = int(catalog.TRITON_QUEUE_DELAY_MS * 1000)
    assert f"dynamic_batching {{ max_queue_delay_microseconds: {delay} }}" in config
    assert "count: 1 kind: KIND_CPU" in config and str(graph) in config
    assert triton.destination == "models/digits/1/model.py"
    assert "TritonPythonModel" in (catalog.APPS / triton.app).read_text()
    # The layout of nvidia-pytriton's wheel in a venv: the binary's folder and its libraries.
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "pytriton" / "tritonserver").mkdir(parents=True)
    env = triton.env(launch)
    assert env["PATH"].startswith(str(python.parent) + ":")
    assert str(site / "nvidia_pytriton.libs") in env["LD_LIBRARY_PATH"].split(":")
    assert triton.command(launch)[0] == str(site / "pytriton/tritonserver/bin/tritonserver")
    assert "PyTriton" in pytriton.label and pytriton.venv_name == triton.venv_name == "triton"


@needs_hey
def test_our_model_only_row_runs_the_classifier_alone(
    quick_repository: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Every peer runs the classifier alone; our row beside them that does the same work
    answers without the OOD detector's outputs, which our defaults add."""
    from benchmarks.peers.run import measure_ours, onnx_file

    request = build(onnx_file(quick_repository), data_dir)
    body_file = tmp_path / "body.json"
    body_file.write_bytes(request.body)
    args = args_for(tmp_path)
    args.repository = quick_repository
    (tmp_path / "peers-logs").mkdir()
    row = measure_ours(request, body_file, args, model_only=True)
    assert row["status"] == "ok", row
    assert row["kind"] == "ours, model only"
    assert row["outputs"] == ["probabilities"], row["outputs"]
    assert all(r["requests_per_s"] > 0 for r in row["runs"])
