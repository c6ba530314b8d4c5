"""``make bench``'s parts on real processes: the whole benchmark on a few groups with short
measurements (real ``bentoml serve``, hey, perf_analyzer, floors, OTLP sink), the replay
floors against the real service, the OTLP sink fed by OpenTelemetry's own exporter, and a
checkout without gRPC or tracing giving rows that say so. Nothing here asserts a speed: the
numbers exist, are consistent, and sit beside their floors.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from benchmarks import hey, otlp_sink
from benchmarks.payloads import mnist_test
from benchmarks.processes import ServerProcess
from benchmarks.servers import ROOT, free_port
from modelspec import digits

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("hey") is None, reason=hey.INSTALL_HINT),
]


def serve_bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def smoke_run(quick_repository: Path, data_dir: Path, tmp_path_factory) -> dict:
    """The whole benchmark on a few groups: a dozen servers and floors, 89 s of a busy
    machine's time; its tests are marked long (``make test-long``)."""
    out = tmp_path_factory.mktemp("serve-bench")
    done = serve_bench(
        *("--repository", str(quick_repository), "--data-dir", str(data_dir)),
        *("--only", "single", "binary", "grpc", "tracing", "baseline"),
        *("--seconds", "0.5", "--warmup", "0.2", "--concurrency", "1", "2"),
        *("--batch-concurrency", "2", "--sampling", "1.0", "--pa-stability", "100"),
        *("--out", str(out)),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "serve_bench.json").read_text())
    return {"report": report, "stdout": done.stdout, "out": out}


def rows_of(report: dict, group: str) -> list[dict]:
    return [r for r in report["rows"] if r["group"] == group]


@pytest.mark.long
def test_every_row_has_its_floor_and_ratio(smoke_run: dict) -> None:
    report = smoke_run["report"]
    assert {r["group"] for r in report["rows"]} == {
        "single",
        "binary",
        "grpc",
        "tracing",
        "baseline",
    }
    for row in report["rows"]:
        assert row["status"] == "ok", row
        ours, floor = row["ours"], row["floor"]
        assert ours["throughput"] > 0 and floor["throughput"] > 0 and floor["name"]
        assert row["ratio"] == pytest.approx(ours["throughput"] / floor["throughput"], rel=1e-2)
    assert report["machine"]["usable_cpus"] >= 1
    assert len(report["machine"]["load_average_start"]) == 3
    assert "--only single binary grpc tracing baseline" in report["command"]
    assert (smoke_run["out"] / "serve_bench.png").stat().st_size > 1000


@pytest.mark.long
def test_single_digit_rows_are_scored_against_their_targets(smoke_run: dict) -> None:
    single = rows_of(smoke_run["report"], "single")
    assert sorted((r["label"], r["concurrency"]) for r in single) == [
        ("V2 JSON, 1 digit", 1),
        ("V2 JSON, 1 digit", 2),
        ("native JSON, 1 digit", 1),
        ("native JSON, 1 digit", 2),
    ]
    for row in single:
        assert row["client"] == "hey" and row["floor"]["client"] == "hey"
        (goal,) = row["targets"]
        if row["concurrency"] == 2:  # the highest: throughput
            assert (goal["name"], goal["limit"], goal["value"]) == (
                "req/s vs floor",
                0.5,
                row["ratio"],
            )
        else:  # the lowest: latency
            assert (goal["limit"], goal["higher_is_better"]) == (2.0, False)
            assert goal["value"] == row["p50_ratio"]
        assert goal["met"] == (
            goal["value"] >= goal["limit"]
            if goal["higher_is_better"]
            else goal["value"] <= goal["limit"]
        )
    assert "### (a) One digit per request" in smoke_run["stdout"]


@pytest.mark.long
def test_batches_beside_onnx_runtime_in_process(smoke_run: dict) -> None:
    row, alone = rows_of(smoke_run["report"], "binary")
    assert row["unit"] == "images/s" and row["concurrency"] == 2
    assert row["ours"]["throughput"] == pytest.approx(row["ours"]["requests_per_s"] * 64, rel=1e-2)
    model = row["model_floor"]
    assert row["floor"]["throughput"] == model["batch_64_images_per_s"]
    assert model["batch_64_images_per_s"] == max(
        run["batch_64_images_per_s"] for run in model["by_threads"].values()
    )
    assert row["targets"][0]["limit"] == 0.6
    # digits' manifest pairs it with the autoencoder: the batch job the service runs by
    # default, in process, is given beside it, slower than the model alone
    paired = row["floor_with_detector"]
    assert 0 < paired["throughput"] < model["batch_64_images_per_s"]
    assert paired["throughput"] == max(
        run["batch_64_images_per_s"] for run in paired["by_threads"].values()
    )
    assert row["ratio_with_detector"] == pytest.approx(
        row["ours"]["throughput"] / paired["throughput"], rel=1e-3
    )
    assert "of the model + its OOD detector in-process" in smoke_run["stdout"]
    # beside it, the same work as the floor: ours with the flag off, the model alone
    assert (alone["label"], alone["server"]) == (
        "V2 binary, 64 digits, OOD flag off",
        "ours, OOD flag off",
    )
    assert alone["floor"] == row["floor"] and alone["targets"][0]["limit"] == 0.6
    assert alone["ratio"] == pytest.approx(
        alone["ours"]["throughput"] / row["floor"]["throughput"], rel=1e-2
    )
    assert "ratio_with_detector" not in alone


@pytest.mark.long
def test_grpc_and_http_beside_their_replay_floors(smoke_run: dict) -> None:
    rows = rows_of(smoke_run["report"], "grpc")
    assert sorted((r["label"].split(",")[0], r["concurrency"]) for r in rows) == [
        ("HTTP (binary tensors)", 1),
        ("HTTP (binary tensors)", 2),
        ("gRPC", 1),
        ("gRPC", 2),
    ]
    assert all(r["client"] == "perf_analyzer" for r in rows)
    assert all(r["floor"]["name"].startswith("replay floor") for r in rows)


@pytest.mark.long
def test_tracing_exports_to_the_sink(smoke_run: dict) -> None:
    rows = rows_of(smoke_run["report"], "tracing")
    off = [r for r in rows if "off" in r["label"]]
    traced = [r for r in rows if "traced" in r["label"]]
    assert len(off) == len(traced) == 2
    for row in traced:
        # Real exports reached the sink (how many: the exporter drops spans when its queue
        # is full, which depends on speed).
        assert row["exported"]["spans"] > 0 and row["exported"]["unreadable"] == 0
        assert row["vs_off"] > 0
    # Tracing off is (a)'s V2 JSON service, measured once.
    single = {
        r["concurrency"]: r
        for r in rows_of(smoke_run["report"], "single")
        if r["label"].startswith("V2 JSON")
    }
    for row in off:
        assert row["ours"] == single[row["concurrency"]]["ours"]


@pytest.mark.long
def test_the_stock_baseline_beside_ours(smoke_run: dict) -> None:
    rows = rows_of(smoke_run["report"], "baseline")
    assert [r["concurrency"] for r in rows] == [1, 2]
    assert all(r["ours_over_baseline"] > 0 for r in rows)
    assert all(r["server"].startswith("stock BentoML") for r in rows)
    # The same bytes as (a)'s native JSON: the floor is measured once for both.
    native = {
        r["concurrency"]: r
        for r in rows_of(smoke_run["report"], "single")
        if r["label"].startswith("native JSON")
    }
    assert all(r["floor"] == native[r["concurrency"]]["floor"] for r in rows)


def test_replay_floors_answer_what_the_service_answered_first(
    service, data_dir: Path, tmp_path: Path
) -> None:
    images, _ = mnist_test(data_dir, 2)
    pixels = digits.scale_pixels(images)
    upstreams = {"grpc": f"127.0.0.1:{service.grpc_port}", "http": service.url}
    clients = {"grpc": tgrpc, "http": thttp}
    for protocol, upstream in upstreams.items():
        port = free_port()
        command = [sys.executable, "-m", "benchmarks.replay_floor", protocol]
        command += ["--port", str(port), "--upstream", upstream]
        with ServerProcess(command, ROOT, {}, tmp_path / f"{protocol}.log", port) as floor:
            floor.wait_listening(30)
            module = clients[protocol]
            direct_url = upstream.removeprefix("http://")
            answers = []
            for url, image in ((direct_url, 0), (f"127.0.0.1:{port}", 0), (f"127.0.0.1:{port}", 1)):
                client = module.InferenceServerClient(url)
                tensor = module.InferInput("image", [1, 28, 28], "FP32")
                tensor.set_data_from_numpy(pixels[image : image + 1])
                answers.append(client.infer("digits", [tensor]).as_numpy("probabilities"))
                client.close()
        # The first answer through the floor is the service's; the next is the same bytes,
        # whatever the input.
        np.testing.assert_allclose(answers[1], answers[0], atol=1e-6)
        np.testing.assert_array_equal(answers[2], answers[1])


def test_the_otlp_sink_counts_what_the_exporter_sends(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    port = free_port()
    command = [sys.executable, "-m", "benchmarks.otlp_sink", "--port", str(port)]
    with ServerProcess(command, ROOT, {}, tmp_path / "sink.log", port) as sink:
        sink.wait_listening(30)
        provider = TracerProvider()
        url = f"http://127.0.0.1:{port}{otlp_sink.PATH}"
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url)))
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("request"):
            for step in ("decode", "compute"):
                tracer.start_span(step).end()
        provider.shutdown()
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as answer:
            stats = json.loads(answer.read())
    assert stats["spans"] == 3 and stats["exports"] == 3 and stats["unreadable"] == 0
    assert stats["bytes"] > 0


def test_a_checkout_without_grpc_or_tracing_says_so(
    quick_repository: Path, data_dir: Path, tmp_path: Path
) -> None:
    """The commit before gRPC and tracing came, from this repository's history: its groups
    are rows saying "skipped", and the run ends normally."""
    git = ["git", "-C", str(ROOT)]
    added = subprocess.run(
        [*git, "log", "--diff-filter=A", "--format=%H", "--", "service/tracing.py"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if not added:
        pytest.skip("no git history here")
    archive = subprocess.run([*git, "archive", f"{added[-1]}^", "service"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip("the commit before tracing is not in this clone")
    checkout = tmp_path / "before"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(checkout, filter="data")
    done = serve_bench(
        *("--repository", str(quick_repository), "--data-dir", str(data_dir)),
        *("--only", "grpc", "tracing", "--checkout", str(checkout)),
        *("--out", str(tmp_path / "out")),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "serve_bench.json").read_text())
    assert report["checkout"]["features"]["grpc"] is False
    assert {(r["group"], r["status"]) for r in report["rows"]} == {
        ("grpc", "skipped"),
        ("tracing", "skipped"),
    }
    assert "has no grpc" in done.stdout and "has no tracing" in done.stdout
