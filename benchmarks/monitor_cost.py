"""What drift checks, OOD flags and payload logging cost per request, on and off, in one run.

Four real servers on one repository (bank and digits with reference statistics, the
autoencoder as digits' detector), started together and sent the same requests in turn, one
at a time, so machine noise falls on all of them alike:

- ``off``: drift off, no OOD flags, no payload log;
- ``drift``: drift checks on (window 1000);
- ``drift+ood``: and digits' out-of-distribution flag (the autoencoder in digits' batch job);
- ``drift+ood+log``: and every request logged (sample 1.0, inputs in full, to a file).

Then the request path's own additions, timed in this process: the drift append and the
payload sampling and enqueueing.

    python -m benchmarks.monitor_cost --repository REPO --requests 2000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.servers import Server, ood_off_config

CONFIGS: dict[str, dict[str, str]] = {
    "off": {"drift": "false"},
    "drift": {},
    "drift+ood": {},
    "drift+ood+log": {"payload_log_sample": "1"},
}


def _servers(repository: Path, folder: Path) -> dict[str, Server]:
    ood_off = ood_off_config(folder)
    servers = {}
    for name, settings in CONFIGS.items():
        env = {"MODEL_REPOSITORY": str(repository), "SERVING_POLL_INTERVAL": "0"}
        env.update({f"SERVING_{k.upper()}": v for k, v in settings.items()})
        if "ood" not in name:
            env["SERVING_CONFIG"] = str(ood_off)
        if "log" in name:
            env["SERVING_PAYLOAD_LOG_FILE"] = str(folder / "payloads.jsonl")
        servers[name] = Server(env=env, log=folder / f"{name.replace('+', '-')}.log")
    return servers


def _requests() -> dict[str, dict[str, Any]]:
    from modelspec.bank import EXAMPLE_RECORD

    digit = np.random.default_rng(0).random((1, 28, 28)).round(3).tolist()
    return {
        "bank": {"url": "/bank/predict", "json": EXAMPLE_RECORD},
        "digits": {"url": "/digits/predict", "json": {"inputs": digit}},
    }


def hot_path_micro() -> dict[str, float]:
    """Microseconds per call of what the request path adds (this process, no server)."""
    from service.config import load_config
    from service.monitoring.drift import Drift
    from service.monitoring.payloads import PayloadLog, record

    drift = Drift(1000, 3600)
    x, classes = np.zeros((1, 51), np.float32), np.zeros(1, np.int64)
    version = object()
    n = 200_000
    append = timeit.timeit(lambda: drift.observe(version, x, classes), number=n) / n
    with tempfile.TemporaryDirectory() as folder:
        config = load_config(
            {
                "SERVING_PAYLOAD_LOG_SAMPLE": "0.01",
                "SERVING_PAYLOAD_LOG_FILE": f"{folder}/p.jsonl",
                "SERVING_PAYLOAD_LOG_QUEUE": "1000000",
            }
        )
        log = PayloadLog(config)
        n = 100_000
        draw = timeit.timeit(log.sampled, number=n) / n
        item = record("r", "bank", 1, "/bank/predict", b"{}", "application/json", {}, 0.001)
        offer = timeit.timeit(lambda: log.offer(item), number=20_000) / 20_000
        log.close()
    return {
        "drift_append_us": round(append * 1e6, 3),
        "payload_sampling_draw_us": round(draw * 1e6, 3),
        "payload_enqueue_us": round(offer * 1e6, 3),
    }


def monitor_micro(repository: Path) -> dict[str, float]:
    """``Monitor.observe`` on and off for one bank item, and the counting thread's binning
    of 1,000 bank items and scoring of its 17 features (this process, no server)."""
    from service.config import load_config
    from service.descriptor import Version
    from service.monitoring import Monitor
    from service.monitoring.drift import Window
    from service.monitoring.ood import Detectors

    folder = repository / "bank" / "1"
    manifest = json.loads((folder / "manifest.json").read_text())
    version = Version("bank", 1, folder, manifest)
    registry = type("Registry", (), {"models": {}})()
    registry.detectors = Detectors(registry)
    on = Monitor(load_config({}), registry, namespace="bench_on")
    off = Monitor(load_config({"SERVING_DRIFT": "false"}), registry, namespace="bench_off")
    x = np.zeros((1, version.signatures["predict"].inputs[0].shape[1]), np.float32)
    feed, outputs = {"features": x}, {"probability": np.zeros((1, 1), np.float32)}
    classes, n = np.zeros(1, np.int64), 100_000
    observe_on = timeit.timeit(
        lambda: on.observe(version, "predict", feed, outputs, classes), number=n
    )
    observe_off = timeit.timeit(
        lambda: off.observe(version, "predict", feed, outputs, classes), number=n
    )
    reference = json.loads((folder / "reference.json").read_text())
    window = Window(reference, manifest["preprocessing"], 1000)
    batch = np.tile(x, (1000, 1))
    binning = timeit.timeit(lambda: window.add(batch, np.zeros(1000, np.int64), None), number=20)
    scoring = timeit.timeit(window.snapshot, number=20)
    return {
        "observe_drift_on_us": round(observe_on / n * 1e6, 3),
        "observe_drift_off_us": round(observe_off / n * 1e6, 3),
        "thread_bin_1000_bank_items_ms": round(binning / 20 * 1e3, 3),
        "thread_score_bank_window_ms": round(scoring / 20 * 1e3, 3),
    }


def measure(repository: Path, count: int) -> dict[str, Any]:
    requests = _requests()
    with tempfile.TemporaryDirectory() as folder:
        servers = _servers(repository, Path(folder))
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_until("/readyz", timeout=300)
            clients = {n: httpx.Client(base_url=s.url, timeout=60) for n, s in servers.items()}
            timings: dict[str, dict[str, list[float]]] = {
                n: {m: [] for m in requests} for n in servers
            }
            for i in range(count + 50):  # the first 50 warm up
                for model, request in requests.items():
                    for name, client in clients.items():
                        started = time.perf_counter()
                        reply = client.post(request["url"], json=request["json"])
                        elapsed = time.perf_counter() - started
                        assert reply.status_code == 200, reply.text
                        if i >= 50:
                            timings[name][model].append(elapsed)
            logged = sum(1 for _ in (Path(folder) / "payloads.jsonl").open())
        finally:
            for server in servers.values():
                server.stop()
    results: dict[str, Any] = {}
    for name, models in timings.items():
        results[name] = {
            model: {
                "median_ms": round(statistics.median(values) * 1000, 3),
                "p90_ms": round(float(np.percentile(values, 90)) * 1000, 3),
            }
            for model, values in models.items()
        }
    for name in results:
        for model in requests:
            results[name][model]["added_median_ms"] = round(
                results[name][model]["median_ms"] - results["off"][model]["median_ms"], 3
            )
    return {
        "requests_per_config_and_model": count,
        "payload_records_logged": logged,
        "end_to_end": results,
        "hot_path": hot_path_micro(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", required=True, type=Path)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--micro-only", action="store_true", help="only the in-process timings (no servers)"
    )
    args = parser.parse_args()
    repository = args.repository.resolve()
    if args.micro_only:
        found = {"hot_path": {**hot_path_micro(), **monitor_micro(repository)}}
        print(json.dumps(found, indent=1))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(found, indent=2) + "\n")
        return
    found = measure(repository, args.requests)
    found["hot_path"].update(monitor_micro(repository))
    for name, models in found["end_to_end"].items():
        line = "  ".join(
            f"{m}: median {v['median_ms']:.3f} ms (+{v['added_median_ms']:.3f}), "
            f"p90 {v['p90_ms']:.3f} ms"
            for m, v in models.items()
        )
        print(f"{name:14s} {line}")
    print("hot path:", found["hot_path"], "records logged:", found["payload_records_logged"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
