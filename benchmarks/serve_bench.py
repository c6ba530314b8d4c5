"""Benchmark the running service: throughput and latency per endpoint and concurrency.

Starts real ``bentoml serve`` processes (ours with batching on, off, and on the SavedModel
backend; the stock BentoML baseline around the same ONNX digits model), drives each with
the keep-alive load generator, prints a table, writes JSON and a latency/throughput PNG.

    python -m benchmarks.serve_bench --repository models --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.loadgen import build_request, load
from benchmarks.payloads import endpoint_payloads
from benchmarks.servers import BASELINE, Server
from modelspec import repository
from service.backends.cpus import available_cpus

CONCURRENCY = (1, 8, 32, 128)
SERVERS: dict[str, dict[str, str]] = {
    "onnx+batching": {},
    "onnx, no batching": {"SERVING_BATCHING": "0"},
    "saved_model+batching": {"SERVING_BACKEND": "saved_model"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--endpoints", nargs="+", help="subset of endpoint names")
    parser.add_argument("--servers", nargs="+", choices=list(SERVERS), default=list(SERVERS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser.parse_args()


def measure(
    server: Server,
    name: str,
    path: str,
    payloads: list[Any],
    concurrency: list[int],
    seconds: float,
    progress: tqdm,
) -> list[dict[str, Any]]:
    requests = [
        build_request("127.0.0.1", server.port, path, p.body, p.content_type) for p in payloads
    ]
    load("127.0.0.1", server.port, requests, 4, 0.5)  # warm the connection path
    rows = []
    for level in concurrency:
        result = load("127.0.0.1", server.port, requests, level, seconds)
        rows.append({"endpoint": name, "concurrency": level, **result.summary()})
        progress.update()
    return rows


def run_server(
    label: str, env: dict[str, str], args: argparse.Namespace, endpoints: dict, progress: tqdm
) -> dict[str, Any]:
    log = args.out / f"server-{label.replace(' ', '_').replace(',', '')}.log"
    with Server(env={"MODEL_REPOSITORY": str(args.repository.resolve()), **env}, log=log) as server:
        startup = server.wait_until("/readyz", timeout=600)
        rows = []
        for name, (path, payloads) in endpoints.items():
            rows += measure(server, name, path, payloads, args.concurrency, args.seconds, progress)
    return {"server": label, "startup_seconds": round(startup, 1), "runs": rows}


def run_baseline(args: argparse.Namespace, endpoints: dict, progress: tqdm) -> dict[str, Any]:
    version = repository.latest_version(args.repository, "digits")
    onnx_file = repository.version_dir(args.repository, "digits", version) / "model.onnx"
    _, payloads = endpoints["digits_json"]
    env = {"BASELINE_ONNX": str(onnx_file.resolve())}
    with Server(BASELINE, env=env, log=args.out / "server-baseline.log") as server:
        server.wait_until("/readyz", timeout=300)
        rows = measure(
            server, "digits_json", "/predict", payloads, args.concurrency, args.seconds, progress
        )
    return {"server": "stock BentoML baseline", "runs": rows}


def find(results: list[dict], server: str, endpoint: str, concurrency: int) -> dict | None:
    for block in results:
        if block["server"] == server:
            for row in block["runs"]:
                if row["endpoint"] == endpoint and row["concurrency"] == concurrency:
                    return row
    return None


def targets(results: list[dict]) -> dict[str, Any]:
    """The issue's bar: >= 5x the baseline's requests/s at c=32, <= 1/5 of its p50 at c=1."""
    ours32 = find(results, "onnx+batching", "digits_json", 32)
    base32 = find(results, "stock BentoML baseline", "digits_json", 32)
    ours1 = find(results, "onnx+batching", "digits_json", 1)
    base1 = find(results, "stock BentoML baseline", "digits_json", 1)
    out: dict[str, Any] = {}
    if ours32 and base32:
        out["rps_ratio_c32"] = round(ours32["requests_per_s"] / base32["requests_per_s"], 2)
        out["rps_target_met"] = out["rps_ratio_c32"] >= 5
    if ours1 and base1:
        out["p50_ratio_c1"] = round(base1["p50_ms"] / ours1["p50_ms"], 2)
        out["p50_target_met"] = out["p50_ratio_c1"] >= 5
    return out


def print_table(results: list[dict]) -> None:
    header = (
        f"{'server':<24}{'endpoint':<26}{'conc':>5}{'req/s':>10}{'items/s':>10}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'fail':>6}"
    )
    print(header)
    print("-" * len(header))
    for block in results:
        for r in block["runs"]:
            print(
                f"{block['server']:<24}{r['endpoint']:<26}{r['concurrency']:>5}"
                f"{r['requests_per_s']:>10.0f}{r['items_per_s']:>10.0f}{r['p50_ms']:>9.2f}"
                f"{r['p95_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['failed']:>6}"
            )


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    endpoints = sorted({r["endpoint"] for b in results for r in b["runs"]})
    cols = 3
    rows = (len(endpoints) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    for ax, endpoint in zip(axes.flat, endpoints, strict=False):
        for block in results:
            runs = [r for r in block["runs"] if r["endpoint"] == endpoint]
            if runs:
                ax.plot(
                    [r["requests_per_s"] for r in runs],
                    [r["p50_ms"] for r in runs],
                    marker="o",
                    label=f"{block['server']} p50",
                )
                ax.plot(
                    [r["requests_per_s"] for r in runs],
                    [r["p99_ms"] for r in runs],
                    linestyle="--",
                    alpha=0.6,
                    label=f"{block['server']} p99",
                )
        ax.set_title(endpoint)
        ax.set_xlabel("requests/s (points: concurrency 1, 8, 32, 128)")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(endpoints) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    endpoints = endpoint_payloads(args.data_dir)
    if args.endpoints:
        endpoints = {k: v for k, v in endpoints.items() if k in args.endpoints}
    steps = len(args.concurrency) * (len(endpoints) * len(args.servers) + 1)
    results = []
    with tqdm(total=steps, desc="benchmark", unit="run") as progress:
        for label in args.servers:
            results.append(run_server(label, SERVERS[label], args, endpoints, progress))
        if "digits_json" in endpoints:
            results.append(run_baseline(args, endpoints, progress))
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": available_cpus(), "platform": platform.platform()},
        "seconds_per_run": args.seconds,
        "targets": targets(results),
        "results": results,
    }
    print_table(results)
    print("targets:", json.dumps(report["targets"]))
    (args.out / "serve_bench.json").write_text(json.dumps(report, indent=2))
    plot(results, args.out / "latency_throughput.png")
    print(f"wrote {args.out / 'serve_bench.json'} and {args.out / 'latency_throughput.png'}")


if __name__ == "__main__":
    main()
