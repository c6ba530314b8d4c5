"""Where a request's time goes: py-spy samples one worker of a real ``bentoml serve`` while
``hey`` drives it, and each sample is charged to the stage of the request path it was in.

    python -m benchmarks.profile --repository models --data-dir ../shared/datasets
    python -m benchmarks.profile ... --checkout ../before   # the same, on another checkout

The worker's CPU time over the run (user + system, from /proc) divided by the answered
requests gives microseconds of CPU per request; the stage shares split it. Samples are
taken without pausing the worker (``--nonblocking``), so the profiler costs it little.
Prints a table; writes JSON and the raw stacks (for flamegraph.pl or speedscope).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from benchmarks import hey
from benchmarks.payloads import Payload, json_payload, mnist_test, v2_binary, v2_json
from benchmarks.servers import ROOT, Server
from modelspec import digits

# Each sample goes to the first stage, from the innermost frame outwards, whose pattern is
# in the frame ("function (file:line)"); the order matters only within one frame.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model (ONNX Runtime)", ("Session.run", "onnxruntime")),
    ("metrics", ("service/metrics.py", "prometheus_client")),
    ("tracing", ("service/tracing.py", "opentelemetry")),
    (
        "read + decode + validate",
        ("service/inputs/", "v2_codec.py", "service/interfaces/", "RawRequest.body", "decode"),
    ),
    ("encode + write the answer", ("encode", "json_reply", "Reply.send", "service/http.py")),
    ("batching", ("service/batching.py",)),
    ("routing + dispatch", ("service/app.py", "service/routing.py", "service/inference.py")),
    ("HTTP (uvicorn, httptools, limits)", ("uvicorn", "httptools", "service/connection.py")),
    ("event loop (asyncio)", ("asyncio", "uvloop")),
)
OTHER = "other"
BODIES = {
    "v2": "V2 JSON, one digit",
    "native": "native JSON, one digit",
    "binary": "V2 binary, 64 digits",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument(
        "--body",
        choices=("v2", "native", "binary"),
        default="v2",
        help="V2 JSON or native JSON with one digit, or V2 binary tensors with 64 (make bench's b)",
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--checkout", type=Path, help="serve this checkout's code instead")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser.parse_args()


def stage_of(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for stage, patterns in STAGES:
            if any(p in frame for p in patterns):
                return stage
    return OTHER


def summarise(raw: Path) -> tuple[Counter[str], Counter[str]]:
    """Samples per stage, and per innermost frame."""
    stages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        stages[stage_of(stack)] += int(count)
        leaves[stack.split(";")[-1]] += int(count)
    return stages, leaves


def worker_of(server: Server) -> psutil.Process:
    assert server.process is not None
    children = psutil.Process(server.process.pid).children(recursive=True)
    workers = [c for c in children if "_bentoml_impl.worker" in " ".join(c.cmdline())]
    if len(workers) != 1:
        raise RuntimeError(f"expected one worker process, found {len(workers)}")
    return workers[0]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def payload(kind: str, data_dir: Path) -> tuple[str, Payload]:
    images, _ = mnist_test(data_dir, 64 if kind == "binary" else 1)
    pixels = digits.scale_pixels(images).astype("float32")
    if kind == "v2":
        return "/v2/models/digits/infer", v2_json(pixels)
    if kind == "binary":
        return "/v2/models/digits/infer", v2_binary(pixels)
    return "/digits/predict", json_payload({"inputs": pixels.tolist()})


def profile(args: argparse.Namespace, scratch: Path) -> dict:
    path, body = payload(args.body, args.data_dir)
    body_file = scratch / "body"
    body_file.write_bytes(body.body)
    env = {"MODEL_REPOSITORY": str(args.repository.resolve()), "SERVING_WORKERS": "1"}
    cwd = (args.checkout or ROOT).resolve()
    with Server(env=env, log=scratch / "serve.log", cwd=cwd) as server:
        server.wait_until("/readyz", timeout=300)
        url = server.url + path
        print(f"warming up {url}", flush=True)
        hey.run(url, body_file, args.concurrency, 2, body.content_type, body.headers)
        worker = worker_of(server)
        raw = scratch / "stacks.txt"
        load: dict[str, hey.HeyResult] = {}

        def drive() -> None:
            load["result"] = hey.run(
                url, body_file, args.concurrency, args.seconds + 2, body.content_type, body.headers
            )

        driver = threading.Thread(target=drive)
        driver.start()
        time.sleep(1)
        print(f"sampling worker {worker.pid} for {args.seconds:g} s", flush=True)
        cpu_before, started = cpu_seconds(worker), time.monotonic()
        subprocess.run(
            [
                str(Path(sys.executable).parent / "py-spy"),
                *("record", "--pid", str(worker.pid), "--rate", str(args.rate)),
                *("--duration", f"{args.seconds:g}", "--format", "raw", "--nonblocking"),
                *("--output", str(raw)),
            ],
            check=True,
            capture_output=True,
        )
        cpu = cpu_seconds(worker) - cpu_before
        elapsed = time.monotonic() - started
        driver.join()
    result = load["result"]
    requests = result.requests_per_s * elapsed  # answered while the worker was sampled
    stages, leaves = summarise(raw)
    total = sum(stages.values()) or 1
    per_request_us = cpu / requests * 1e6 if requests else None
    return {
        "command": " ".join(sys.argv),
        "checkout": str(cwd),
        "commit": _commit(cwd),
        "body": args.body,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "load": result.summary(),
        "worker_cpu_seconds": round(cpu, 3),
        "worker_cpu_share": round(cpu / elapsed, 3),
        "cpu_us_per_request": round(per_request_us, 1) if per_request_us else None,
        "samples": total,
        "stages": {
            stage: {
                "share": round(count / total, 4),
                "us_per_request": round(count / total * per_request_us, 1)
                if per_request_us
                else None,
            }
            for stage, count in stages.most_common()
        },
        "top_frames": [
            {"frame": frame, "share": round(count / total, 4)}
            for frame, count in leaves.most_common(15)
        ],
        "raw_stacks": raw.read_text(),
    }


def _commit(cwd: Path) -> str | None:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True
    )
    return done.stdout.strip() or None


def report(result: dict) -> str:
    lines = [
        f"commit {result['commit']} ({result['checkout']}), {BODIES[result['body']]}, "
        f"c={result['concurrency']}: {result['load']['requests_per_s']:,.0f} req/s, "
        f"worker CPU {result['worker_cpu_share']:.0%} of a core, "
        f"{result['cpu_us_per_request']} us CPU per request ({result['samples']} samples)",
        "",
        "| stage | share | us CPU per request |",
        "|---|---:|---:|",
    ]
    for stage, row in result["stages"].items():
        lines.append(f"| {stage} | {row['share']:.1%} | {row['us_per_request']} |")
    lines += ["", "innermost frames:"]
    lines += [f"  {f['share']:6.1%}  {f['frame'][:110]}" for f in result["top_frames"]]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="profile-") as scratch:
        result = profile(args, Path(scratch))
    name = f"profile-{result['commit']}-{args.body}-c{args.concurrency}"
    (args.out / f"{name}.stacks.txt").write_text(result.pop("raw_stacks"))
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(report(result))
    print(f"\nwrote {args.out / name}.json and .stacks.txt")


if __name__ == "__main__":
    main()
