"""Benchmark the service beside its floors, all measured in one run: what it does, next to
what HTTP alone and the model alone allow on this machine.

    python -m benchmarks.serve_bench --repository models --data-dir ../shared/datasets

Load comes from ``hey`` (a Go client, outside any Python interpreter) over HTTP, and from
Triton's ``perf_analyzer`` where hey cannot go (gRPC, compared with HTTP); our own Python
client only checks each answer against ONNX Runtime in-process before anything is timed.
Groups (``--only``; letters work too):

- ``single`` (a): one digit per request, V2 JSON and native JSON, at each ``--concurrency``
  (1 and 32): req/s, p50, p99, beside the bare ASGI floor (uvicorn+httptools reading the same
  body, answering a fixed JSON). Targets: >= 50% of its req/s at the highest concurrency, p50
  within 2x of its p50 at the lowest.
- ``binary`` (b): 64 digits per request, V2 binary tensors, at ``--batch-concurrency`` (8):
  images/s beside ONNX Runtime in-process at batch 64. Target >= 60%.
- ``flowers`` (c): one JPEG per request (``/flowers/predict``, raw image body), at
  ``--batch-concurrency``: images/s beside decode + resize (the service's own
  ``modelspec.flowers`` code, on every core) + the model at batch 32, in-process. Target >= 85%.
- ``workers`` (d): ``SERVING_WORKERS`` 1 and 2 (``--workers``, ``auto`` too) on V2 JSON at
  each concurrency, each beside a floor with as many uvicorn workers. Targets as (a).
- ``grpc`` (e): perf_analyzer over gRPC and over HTTP (binary tensors), one digit per request
  at each concurrency, each beside a replay floor of its protocol driven the same way
  (``replay_floor``).
- ``tracing`` (f): OpenTelemetry off, and on (OTLP/HTTP to a local sink, ``otlp_sink``) with
  sampling ratios 1.0 and 0.01, on V2 JSON: req/s at the highest concurrency, p50 at the lowest.
- ``baseline`` (g): stock BentoML (``baseline_service``) around the same graph, native JSON
  body, beside the same floor, and our figure over its.

Every server is a real process on a free loopback port (``serve_lab``), started for the rows
that need it: one service and one floor at most at a time, never both under load. Each row's
floor is measured just before our figure, with the same body at the same concurrency, and a
figure another group needs again is reused, not measured twice. ``--checkout DIR`` serves
another checkout's code (same venv, cwd ``DIR``) to compare commits with this same benchmark;
groups its code cannot run are rows saying "skipped". The output: a table per group on
stdout, ``serve_bench.json`` (command line, machine, every row with its floor and ratio) and
``serve_bench.png`` (ratios against targets) in ``--out``, and every server's log in
``--out``/serve-logs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import answers, floors, hey, otlp_sink, perf_analyzer, serve_report
from benchmarks.payloads import Payload, flower_files, json_payload, mnist_test, v2_binary, v2_json
from benchmarks.processes import ServerExited, ServerProcess, stop_servers_on_sigterm
from benchmarks.serve_lab import (
    OURS,
    STOCK,
    Body,
    Lab,
    LabSettings,
    Spec,
    Unavailable,
    floor_spec,
    mean_ms,
    ours_with,
    progress,
)
from benchmarks.servers import ROOT, free_port, ood_off_config
from modelspec import digits, flowers, repository
from service.backends.cpus import available_cpus
from service.descriptor import ood_pairing

Row = dict[str, Any]
GROUPS = {
    "single": "a",
    "binary": "b",
    "flowers": "c",
    "workers": "d",
    "grpc": "e",
    "tracing": "f",
    "baseline": "g",
}
# Run in this order (servers are reused: the default service for a, b, c, e; measurements
# are reused across groups), reported in the letters' order.
RUN_ORDER = ("single", "binary", "flowers", "grpc", "baseline", "workers", "tracing")
V2_PATH = "/v2/models/digits/infer"
NATIVE_DIGITS = "/digits/predict"
NATIVE_FLOWERS = "/flowers/predict"
THROUGHPUT_TARGET = 0.5  # of the HTTP floor's req/s at the highest concurrency
LATENCY_TARGET = 2.0  # p50 over the floor's at the lowest concurrency, at most
BINARY_TARGET = 0.6  # of ONNX Runtime in-process at batch 64
PHOTO_TARGET = 0.85  # of decode + resize + model at batch 32 in-process
PHOTO_BATCH = 32
DIGITS_PER_REQUEST = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[*GROUPS, *GROUPS.values()],
        metavar="GROUP",
        help=f"groups to run (default all): {', '.join(f'{n} ({k})' for n, k in GROUPS.items())}",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 32], help="one digit per request"
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=8, help="64 digits, or photos, per request"
    )
    parser.add_argument("--workers", nargs="+", default=["1", "2"], help="SERVING_WORKERS")
    parser.add_argument(
        "--sampling", type=float, nargs="+", default=[1.0, 0.01], help="trace ratios"
    )
    parser.add_argument(
        "--pa-stability",
        type=int,
        default=25,
        help="perf_analyzer: %% within which 3 windows must agree (it tries 10 windows)",
    )
    parser.add_argument(
        "--checkout", type=Path, default=ROOT, help="serve the code of this checkout"
    )
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds per server")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    args.only = [n for n in GROUPS if n in (args.only or GROUPS) or GROUPS[n] in args.only]
    args.concurrency = sorted(set(args.concurrency))
    args.checkout = args.checkout.resolve()
    return args


# -- what the checkout can do -------------------------------------------------------------


def features(checkout: Path) -> dict[str, bool]:
    """What the served code has, read from its files: an older commit may lack gRPC, tracing
    or the workers setting (which it would silently ignore, not refuse). Named as the groups
    that need them."""
    config = checkout / "service" / "config.py"
    text = config.read_text() if config.is_file() else ""
    return {
        "grpc": (checkout / "service" / "protocols" / "grpc.py").is_file(),
        "tracing": (checkout / "service" / "tracing.py").is_file(),
        "workers": re.search(r"^\s+workers\s*:", text, re.MULTILINE) is not None,
    }


def git_commit(checkout: Path) -> str | None:
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or None


# -- the requests, and the answers they should get ----------------------------------------


@dataclass
class Inputs:
    digits_onnx: Path
    flowers_onnx: Path | None
    digit: np.ndarray  # (1, 28, 28) float32
    digits64: np.ndarray  # (64, 28, 28) float32
    photo: bytes | None
    bodies: dict[str, Body] = field(default_factory=dict)


def onnx_of(repo: Path, name: str) -> Path | None:
    version = repository.latest_version(repo, name)
    if version is None:
        return None
    return (repository.version_dir(repo, name, version) / "model.onnx").resolve()


def detector_onnx(repo: Path, name: str) -> Path | None:
    """The ONNX file of the OOD detector ``name``'s latest manifest pairs it with (the
    signature it names, else the detector's first, as ``service.descriptor`` takes it), or
    None: no pairing, or the detector is not in the repository. The pairing with no settings
    over it: the benchmark serves the defaults."""
    version = repository.latest_version(repo, name)
    if version is None:
        return None
    manifest = repository.read_manifest(repository.version_dir(repo, name, version))
    pairing = ood_pairing(manifest, None)
    if pairing is None:
        return None
    detector = pairing["detector"]
    found = repository.latest_version(repo, detector)
    if found is None:
        return None
    folder = repository.version_dir(repo, detector, found)
    signatures = repository.read_manifest(folder)["signatures"]
    signature = signatures[pairing.get("signature") or next(iter(signatures))]
    return (folder / signature["onnx"]).resolve()


def prepare_inputs(args: argparse.Namespace, workspace: Path) -> Inputs:
    """The bodies from the real test data, and ONNX Runtime's answers to them."""
    digits_onnx = onnx_of(args.repository, "digits")
    if digits_onnx is None:
        sys.exit(f"no digits model in {args.repository}")
    images, _ = mnist_test(args.data_dir, DIGITS_PER_REQUEST)
    pixels = digits.scale_pixels(images)
    inputs = Inputs(digits_onnx, onnx_of(args.repository, "flowers"), pixels[:1], pixels, None)
    session = floors.session(digits_onnx)
    name = session.get_inputs()[0].name
    one = session.run(None, {name: inputs.digit})[0]
    many = session.run(None, {name: inputs.digits64})[0]
    bodies = [
        Body(
            "v2_json",
            "V2 JSON, 1 digit",
            V2_PATH,
            v2_json(inputs.digit),
            1,
            lambda body, _: answers.check(body, one),
        ),
        Body(
            "native_json",
            "native JSON, 1 digit",
            NATIVE_DIGITS,
            json_payload({"inputs": inputs.digit.tolist()}),
            1,
            lambda body, _: answers.check_native_digits(body, one),
        ),
        Body(
            "v2_binary_64",
            "V2 binary, 64 digits",
            V2_PATH,
            v2_binary(inputs.digits64),
            DIGITS_PER_REQUEST,
            lambda body, headers: answers.check_v2_binary(body, headers, many),
        ),
        Body(
            "baseline_json",
            "native JSON, 1 digit",
            "/predict",
            json_payload({"inputs": inputs.digit.tolist()}),
            1,
            lambda body, _: answers.check_array(body, one),
        ),
    ]
    if inputs.flowers_onnx is not None:
        inputs.photo = flower_files(args.data_dir, 1)[0].read_bytes()
        photos = floors.session(inputs.flowers_onnx)
        size = int(photos.get_inputs()[0].shape[1])
        prepared = flowers.load_image(inputs.photo, size)[None].astype(np.float32)
        expected = photos.run(None, {photos.get_inputs()[0].name: prepared})[0]
        manifest = repository.read_manifest(inputs.flowers_onnx.parent)
        labels = list(manifest["labels"])
        bodies.append(
            Body(
                "jpeg",
                "JPEG photo, 1 per request",
                NATIVE_FLOWERS,
                Payload(inputs.photo, "image/jpeg"),
                1,
                lambda body, _: answers.check_top_labels(body, expected, labels),
            )
        )
    for body in bodies:
        body.file = workspace / f"{body.name}.body"
        body.file.write_bytes(body.payload.body)
        inputs.bodies[body.name] = body
    return inputs


# -- rows ---------------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return float(f"{numerator / denominator:.4g}")


def target(name: str, value: float | None, limit: float, higher: bool = True) -> dict[str, Any]:
    met = None if value is None else (value >= limit if higher else value <= limit)
    return {"name": name, "value": value, "limit": limit, "higher_is_better": higher, "met": met}


def new_row(group: str, label: str, server: str, concurrency: int, unit: str, **extra: Any) -> Row:
    return {
        "group": group,
        "letter": GROUPS[group],
        "label": label,
        "server": server,
        "concurrency": concurrency,
        "unit": unit,
        "status": "ok",
        "reason": "",
        "ours": None,
        "floor": None,
        "ratio": None,
        "p50_ratio": None,
        "targets": [],
        **extra,
    }


def fail(row: Row, status: str, reason: str) -> Row:
    row.update(status=status, reason=reason)
    return row


def done(row: Row) -> Row:
    ours, floor = row["ours"], row["floor"]
    got = f"{ours['throughput']:,.0f} {row['unit']}" if ours else row["status"]
    against = f" vs floor {floor['throughput']:,.0f}" if floor else ""
    share = f" ({row['ratio']:.0%})" if row["ratio"] is not None else ""
    progress(f"({row['letter']}) {row['label']} c={row['concurrency']}", got + against + share)
    return row


@dataclass
class Run:
    """What every group gets: the command line, the inputs, the servers, a scratch folder."""

    args: argparse.Namespace
    inputs: Inputs
    lab: Lab
    workspace: Path

    @property
    def logs(self) -> Path:
        return self.lab.settings.logs


def measure_floor(run: Run, row: Row, spec: Spec, body: Body) -> None:
    try:
        measured, _ = run.lab.measure(spec, body, row["concurrency"])
    except (Unavailable, RuntimeError) as error:
        row["reason"] = f"floor: {error}"
        return
    row["floor"] = {"name": spec.label, **(measured or {})}


def measure_ours(run: Run, row: Row, spec: Spec, body: Body) -> bool:
    """Our figures into the row; False (the row saying why) when there are none."""
    try:
        measured, problem = run.lab.measure(spec, body, row["concurrency"])
    except Unavailable as error:
        fail(row, "start failed", str(error))
        return False
    except RuntimeError as error:  # hey failed
        fail(row, "error", str(error))
        return False
    if measured is None:
        fail(row, "error", problem or "no answer")
        return False
    row["ours"] = measured
    if problem:
        fail(row, "wrong answer", problem)
    elif measured["failed"]:
        fail(row, "failed requests", f"{measured['failed']} failed")
    return True


def hey_row(
    run: Run,
    group: str,
    spec: Spec,
    body: Body,
    concurrency: int,
    label: str | None = None,
    floor: Spec | None = None,
) -> Row:
    """One body at one concurrency against ``spec``, beside the HTTP floor on the same body
    (measured first, so the two are close in time)."""
    row = new_row(group, label or body.label, spec.label, concurrency, "req/s", path=body.path)
    row["client"] = "hey"
    measure_floor(run, row, floor or floor_spec(), body)
    if measure_ours(run, row, spec, body):
        score(row, run.args.concurrency)
    return done(row)


def score(row: Row, levels: list[int]) -> None:
    """Ratios to the floor; in (a) and (d) the targets: throughput at the highest concurrency,
    latency at the lowest."""
    ours, floor = row["ours"], row["floor"]
    if not ours or not floor:
        return
    row["ratio"] = ratio(ours["throughput"], floor["throughput"])
    row["p50_ratio"] = ratio(ours["p50_ms"], floor["p50_ms"])
    row["mean_latency_ratio"] = ratio(ours.get("mean_ms"), floor.get("mean_ms"))
    if row["group"] not in ("single", "workers"):
        return
    if row["concurrency"] == max(levels):
        row["targets"].append(target("req/s vs floor", row["ratio"], THROUGHPUT_TARGET))
    if row["concurrency"] == min(levels):
        row["targets"].append(
            target("p50 vs floor p50", row["p50_ratio"], LATENCY_TARGET, higher=False)
        )


def skipped(group: str, reason: str) -> list[Row]:
    row = new_row(group, "(whole group)", "-", 0, "-")
    return [done(fail(row, "skipped", reason))]


# -- the groups ---------------------------------------------------------------------------


def group_single(run: Run) -> list[Row]:
    return [
        hey_row(run, "single", OURS, run.inputs.bodies[name], level)
        for name in ("v2_json", "native_json")
        for level in run.args.concurrency
    ]


def model_row(run: Run, row: Row, body: Body, limit: float, name: str, spec: Spec = OURS) -> Row:
    """Ours beside an in-process figure (already in ``row["floor"]``), with its target."""
    if measure_ours(run, row, spec, body):
        row["ratio"] = ratio(row["ours"]["throughput"], row["floor"]["throughput"])
        row["targets"].append(target(name, row["ratio"], limit))
    return done(row)


def group_binary(run: Run) -> list[Row]:
    inputs, body = run.inputs, run.inputs.bodies["v2_binary_64"]
    progress("ONNX Runtime in-process", "measuring batch 1 and 64")
    model = floors.best_onnx_in_process(inputs.digits_onnx, inputs.digit, run.args.seconds)
    level = run.args.batch_concurrency
    row = new_row("binary", body.label, OURS.label, level, "images/s", path=body.path)
    row.update(client="hey", model_floor=model)
    row["floor"] = {
        "name": f"ONNX Runtime in-process, batch {DIGITS_PER_REQUEST}",
        "throughput": model[f"batch_{DIGITS_PER_REQUEST}_images_per_s"],
    }
    # The target is against the model alone; the service also runs digits' OOD detector on
    # every batch by default, so the same batch job in process is given beside it.
    detector = detector_onnx(run.args.repository, "digits")
    if detector is not None:
        progress("model + OOD detector in-process", f"measuring batch {DIGITS_PER_REQUEST}")
        pair = floors.best_pair_in_process(
            inputs.digits_onnx, detector, inputs.digits64, run.args.seconds
        )
        row["floor_with_detector"] = {
            "name": f"model + OOD detector in-process, batch {DIGITS_PER_REQUEST}",
            "throughput": pair[f"batch_{DIGITS_PER_REQUEST}_images_per_s"],
            "by_threads": pair["by_threads"],
        }
    goal = "images/s vs in-process batch 64"
    row = model_row(run, row, body, BINARY_TARGET, goal)
    if detector is None:
        return [row]
    if row["ours"]:
        floor = row["floor_with_detector"]["throughput"]
        row["ratio_with_detector"] = ratio(row["ours"]["throughput"], floor)
    # The same work as the floor: the flag off, the model alone on every batch.
    alone = ours_with("ours, OOD flag off", SERVING_CONFIG=str(ood_off_config(run.workspace)))
    label = f"{body.label}, OOD flag off"
    second = new_row("binary", label, alone.label, level, "images/s", path=body.path)
    second.update(client="hey", model_floor=model, floor=row["floor"])
    return [row, model_row(run, second, body, BINARY_TARGET, goal, alone)]


def group_flowers(run: Run) -> list[Row]:
    inputs = run.inputs
    if inputs.flowers_onnx is None or inputs.photo is None:
        return skipped("flowers", f"no flowers model in {run.args.repository}")
    body = inputs.bodies["jpeg"]
    progress("decode + resize + model in-process", f"measuring batch {PHOTO_BATCH}")
    ceiling = floors.best_photos_in_process(
        inputs.flowers_onnx, inputs.photo, run.args.seconds, PHOTO_BATCH
    )
    level = run.args.batch_concurrency
    row = new_row("flowers", body.label, OURS.label, level, "images/s", path=body.path)
    row.update(client="hey", model_floor=ceiling, photo_bytes=len(inputs.photo))
    row["floor"] = {
        "name": f"decode + resize + model in-process, batch {PHOTO_BATCH}",
        "throughput": ceiling[f"decode_and_batch_{PHOTO_BATCH}_images_per_s"],
    }
    return [model_row(run, row, body, PHOTO_TARGET, "images/s vs in-process ceiling")]


def worker_count(value: str) -> int:
    return available_cpus() if value == "auto" else int(value)


def group_workers(run: Run) -> list[Row]:
    body = run.inputs.bodies["v2_json"]
    rows = []
    for value in run.args.workers:
        # The default (1) is the service of the other groups: its measurements are reused.
        spec = OURS if value == "1" else ours_with(f"ours, {value} workers", SERVING_WORKERS=value)
        floor = floor_spec(worker_count(value))
        label = f"V2 JSON, SERVING_WORKERS={value}"
        for level in run.args.concurrency:
            rows.append(hey_row(run, "workers", spec, body, level, label, floor))
    return rows


def tracing_env(port: int, sampling: float) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}{otlp_sink.PATH}",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": f"{sampling:g}",
    }


def sink_stats(port: int) -> dict[str, int]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as answer:
            return json.loads(answer.read())
    except OSError:
        return {}


def group_tracing(run: Run) -> list[Row]:
    body = run.inputs.bodies["v2_json"]
    levels = run.args.concurrency
    # Tracing off is the default service: (a)'s figures when (a) ran.
    rows = [hey_row(run, "tracing", OURS, body, level, "V2 JSON, tracing off") for level in levels]
    off = {r["concurrency"]: r["ours"] for r in rows}
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.otlp_sink", "--port", str(port)]
    with ServerProcess(command, ROOT, {}, run.logs / "otlp-sink.log", port) as sink:
        try:
            sink.wait_listening(60)
        except (ServerExited, TimeoutError) as error:
            return rows + skipped("tracing", f"the OTLP sink did not start: {error}")
        for sampling in run.args.sampling:
            spec = ours_with(f"ours, traced at {sampling:g}", **tracing_env(port, sampling))
            label = f"V2 JSON, traced, ratio {sampling:g}"
            before = sink_stats(port)
            traced = [hey_row(run, "tracing", spec, body, level, label) for level in levels]
            run.lab.release("service")  # its last spans are exported as it stops
            after = sink_stats(port)
            exported = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            progress(label, f"the sink received {exported}")
            for row in traced:
                row["exported"] = exported
                base = off[row["concurrency"]]
                if row["ours"] and base:
                    row["vs_off"] = ratio(row["ours"]["throughput"], base["throughput"])
                    row["p50_vs_off"] = ratio(row["ours"]["p50_ms"], base["p50_ms"])
            rows += traced
    return rows


def group_baseline(run: Run) -> list[Row]:
    body = run.inputs.bodies["baseline_json"]
    rows = []
    for level in run.args.concurrency:
        row = hey_row(run, "baseline", STOCK, body, level, "stock BentoML, native JSON body")
        ours = run.lab.measured.get((OURS.key, "native_json", level))  # from (a), if it ran
        if ours and row["ours"]:
            row["ours_over_baseline"] = ratio(ours["throughput"], row["ours"]["throughput"])
            row["baseline_p50_over_ours"] = ratio(row["ours"]["p50_ms"], ours["p50_ms"])
        rows.append(row)
    return rows


def perf_measure(run: Run, url: str, protocol: str, level: int, side: str) -> dict[str, Any]:
    """One perf_analyzer run at one concurrency: windows of a third of ``--seconds``, at
    least three agreeing within ``--pa-stability`` %."""
    (result,) = perf_analyzer.run(
        url,
        "digits",
        run.workspace / "perf_analyzer_digits.json",
        str(level),
        run.logs,
        interval_ms=max(100, int(run.args.seconds * 1000 / 3)),
        protocol=protocol,
        stability_pct=run.args.pa_stability,
        label=f"{side}_c{level}",
    )
    rate = result["Inferences/Second"]
    return {
        "client": "perf_analyzer",
        "concurrency": level,
        "requests_per_s": round(rate, 1),
        "throughput": round(rate, 1),
        "p50_ms": round(result["p50 latency"] / 1000, 3),
        "p99_ms": round(result["p99 latency"] / 1000, 3),
        "mean_ms": mean_ms(level, rate),
    }


def perf_row(run: Run, protocol: str, level: int, ours_url: str, floor_url: str) -> Row:
    label = {"grpc": "gRPC", "http": "HTTP (binary tensors)"}[protocol]
    row = new_row("grpc", f"{label}, 1 digit", OURS.label, level, "req/s", client="perf_analyzer")
    floor_name = f"replay floor ({'grpc.aio' if protocol == 'grpc' else 'uvicorn+httptools'})"
    try:
        floor = perf_measure(run, floor_url, protocol, level, "floor")
        row["floor"] = {"name": floor_name, **floor}
        row["ours"] = perf_measure(run, ours_url, protocol, level, "ours")
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
        return done(fail(row, "error", " ".join(str(error).split())[-300:]))
    score(row, run.args.concurrency)
    return done(row)


def triton_check(url: str, inputs: Inputs, protocol: str) -> str | None:
    """Triton's own client asks once, over ``protocol``: the answer must be ONNX Runtime's."""
    if protocol == "grpc":
        from tritonclient import grpc as client
    else:
        from tritonclient import http as client
    model = floors.session(inputs.digits_onnx)
    expected = model.run(None, {model.get_inputs()[0].name: inputs.digit})[0]
    try:
        triton = client.InferenceServerClient(url)
        tensor = client.InferInput("image", list(inputs.digit.shape), "FP32")
        tensor.set_data_from_numpy(inputs.digit)
        got = triton.infer("digits", [tensor]).as_numpy("probabilities")
        triton.close()
    except Exception as error:  # any client error is the group's reason, not the run's end
        return f"{type(error).__name__}: {str(error)[:200]}"
    return answers.compare(got, expected)


def start_replay_floor(run: Run, protocol: str, upstream: str, stack: contextlib.ExitStack) -> str:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.replay_floor", protocol]
    command += ["--port", str(port), "--upstream", upstream]
    log = run.logs / f"replay-floor-{protocol}.log"
    stack.enter_context(ServerProcess(command, ROOT, {}, log, port)).wait_listening(60)
    return f"127.0.0.1:{port}"


def group_grpc(run: Run) -> list[Row]:
    try:
        perf_analyzer.command()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        return skipped("grpc", f"perf_analyzer is not available: {error}")
    images, _ = mnist_test(run.args.data_dir, 256)
    perf_analyzer.write_input_data(images, run.workspace / "perf_analyzer_digits.json")
    try:
        server = run.lab.server(OURS)
    except Unavailable as error:
        return skipped("grpc", f"the service did not start: {error}")
    ours = {"grpc": f"127.0.0.1:{server.grpc_port}", "http": f"127.0.0.1:{server.port}"}
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        floors_at = {}
        for protocol, url in ours.items():
            problem = triton_check(url, run.inputs, protocol)
            if problem:
                rows += skipped("grpc", f"{protocol}: the service's answer: {problem}")
                continue
            upstream = url if protocol == "grpc" else f"http://{url}"
            try:
                floors_at[protocol] = start_replay_floor(run, protocol, upstream, stack)
            except (ServerExited, TimeoutError) as error:
                rows += skipped("grpc", f"the {protocol} replay floor did not start: {error}")
        for level in run.args.concurrency:
            for protocol, floor_url in floors_at.items():
                rows.append(perf_row(run, protocol, level, ours[protocol], floor_url))
    return rows


RUNNERS: dict[str, Callable[[Run], list[Row]]] = {
    "single": group_single,
    "binary": group_binary,
    "flowers": group_flowers,
    "workers": group_workers,
    "grpc": group_grpc,
    "tracing": group_tracing,
    "baseline": group_baseline,
}


# -- the run ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = found.group(1).strip() if found else ""
    return {
        "usable_cpus": available_cpus(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stop_servers_on_sigterm()
    hey.require()
    args.out.mkdir(parents=True, exist_ok=True)
    found = features(args.checkout)
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join([Path(sys.executable).name, "-m", "benchmarks.serve_bench",
                               *(argv if argv is not None else sys.argv[1:])]),
        "machine": {**machine(), "load_average_start": load_average()},
        "checkout": {"path": str(args.checkout), "commit": git_commit(args.checkout),
                     "features": found},
        "repository": str(args.repository.resolve()),
        "seconds_per_measurement": args.seconds,
        "warmup_seconds": args.warmup,
        "concurrency": args.concurrency,
        "batch_concurrency": args.batch_concurrency,
        "load_generators": {
            "http": "hey (keep-alive; one body file per row; only 200 answers count)",
            "grpc_vs_http": "perf_analyzer (Triton), 256 MNIST digits cycled",
        },
        "targets": {
            "single_throughput_vs_floor_min": THROUGHPUT_TARGET,
            "single_p50_vs_floor_max": LATENCY_TARGET,
            "binary_vs_onnx_batch_64_min": BINARY_TARGET,
            "photos_vs_in_process_ceiling_min": PHOTO_TARGET,
        },
        "groups": args.only,
        "rows": [],
    }  # fmt: skip
    progress("serve_bench", f"groups {', '.join(args.only)}; checkout {args.checkout}")
    rows: list[Row] = []
    interrupted = False
    with workspace() as folder:
        inputs = prepare_inputs(args, folder)
        lab = Lab(
            LabSettings(
                logs=args.out / "serve-logs",
                repository=args.repository,
                checkout=args.checkout,
                baseline_onnx=inputs.digits_onnx,
                seconds=args.seconds,
                warmup=args.warmup,
                ready_timeout=args.ready_timeout,
            )
        )
        run = Run(args, inputs, lab, folder)
        try:
            for group in (g for g in RUN_ORDER if g in args.only):
                if not found.get(group, True):  # the groups named after a feature
                    rows += skipped(group, f"the checkout at {args.checkout} has no {group}")
                    continue
                progress(f"({GROUPS[group]}) {group}", "running")
                rows += RUNNERS[group](run)
        except KeyboardInterrupt:
            interrupted = True
            print("interrupted: every server started is stopped; writing what was measured")
        finally:
            lab.close()
    rows.sort(key=lambda r: r["letter"])
    report["rows"] = rows
    report["machine"]["load_average_end"] = load_average()
    print()
    print(serve_report.tables(rows, report))
    serve_report.write_json(report, args.out / "serve_bench.json")
    if rows:
        serve_report.plot(rows, report, args.out / "serve_bench.png")
    print(f"\nwrote {args.out / 'serve_bench.json'} and {args.out / 'serve_bench.png'}")
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
