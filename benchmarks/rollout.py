"""Roll-out figures on a real server: how exact the weighted split is, and what a shadow at
sample 1.0 costs the live requests (p50/p99, one connection and eight).

``python -m benchmarks.rollout --repository models --data-dir ../shared/datasets``
builds a repository of digits version 1 and a copy as version 2 (the same graph), serves it
with ``traffic: {1: 95, 2: 5}``, sends ``--split-requests`` unversioned requests and counts
the versions that answered; then, with ``traffic: {1: 1}``, measures the live latency with no
shadow and with ``shadow: {target: 2, sample: 1.0}``, alternating the two twice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.loadgen import build_request, load
from benchmarks.payloads import mnist_test
from benchmarks.servers import Server
from tests import rollout_models


def _configure(server: Server, repo: Path, text: str, check) -> None:
    path = repo / "digits" / "config.yaml"
    path.with_suffix(".tmp").write_text(text)
    path.with_suffix(".tmp").replace(path)
    digest = hashlib.sha256(text.encode()).hexdigest()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        described = httpx.get(f"{server.url}/models/digits", timeout=30).json()
        if described["config_file"]["sha256"] == digest and check(described):
            return
        time.sleep(0.2)
    raise RuntimeError(f"config not taken: {text!r}")


def measure(repository: Path, data_dir: Path, split_requests: int, latency_requests: int):
    x = mnist_test(data_dir, 16)[0].astype(np.float32) / 255
    bodies = [json.dumps({"inputs": x[i : i + 1].round(4).tolist()}).encode() for i in range(16)]
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder) / "repository"
        (repo / "digits").mkdir(parents=True)
        rollout_models.same(repository / "digits" / "1", repo / "digits" / "1")
        rollout_models.same(repository / "digits" / "1", repo / "digits" / "2")
        base = "version_policy: {all: true}\n"
        (repo / "digits" / "config.yaml").write_text(base + "traffic: {1: 95, 2: 5}\n")
        env = {"MODEL_REPOSITORY": str(repo), "SERVING_POLL_INTERVAL": "0.5"}
        with Server(env=env, log=Path(folder) / "serve.log") as server:
            server.wait_until("/readyz", timeout=300)
            requests = [
                build_request(
                    "127.0.0.1", server.port, "/models/digits/predict", b, "application/json"
                )
                for b in bodies
            ]
            seen: Counter[str] = Counter()

            def count(_: int, status: int, body: bytes) -> None:
                seen[str(json.loads(body).get("version")) if status == 200 else status] += 1

            split = load("127.0.0.1", server.port, requests, 8, 600, split_requests, count, 1)
            found: dict[str, Any] = {
                "split": {
                    "weights": {"1": 95, "2": 5},
                    "requests": split.requests,
                    "answered_by": dict(seen),
                    "share_of_2_percent": round(100 * seen["2"] / max(1, sum(seen.values())), 3),
                    # binomial standard deviation of the share, in points
                    "sampling_sd_points": round(100 * (0.05 * 0.95 / split.requests) ** 0.5, 3),
                }
            }
            phases: dict[str, list[dict[str, Any]]] = {"no_shadow": [], "shadow_1.0": []}
            for _ in range(2):
                for name, text in (
                    ("no_shadow", base + "traffic: {1: 1}\n"),
                    ("shadow_1.0", base + "traffic: {1: 1}\nshadow: {target: 2, sample: 1.0}\n"),
                ):
                    _configure(
                        server, repo, text,
                        lambda d, n=name: (d["shadow"] is None) == (n == "no_shadow"),
                    )  # fmt: skip
                    load("127.0.0.1", server.port, requests, 1, 60, 200)  # warm
                    one = load("127.0.0.1", server.port, requests, 1, 600, latency_requests)
                    eight = load("127.0.0.1", server.port, requests, 8, 600, latency_requests)
                    phases[name].append(
                        {"concurrency_1": one.summary(), "concurrency_8": eight.summary()}
                    )
            shadow = httpx.get(f"{server.url}/models/digits", timeout=30).json()
            found["latency"] = phases
            found["summary"] = {
                name: {
                    f"concurrency_{c}": {
                        key: round(float(np.mean([r[f"concurrency_{c}"][key] for r in runs])), 3)
                        for key in ("p50_ms", "p99_ms", "requests_per_s")
                    }
                    for c in (1, 8)
                }
                for name, runs in phases.items()
            }
            found["shadow_state_after"] = shadow.get("shadow")
            shutil.copy(Path(folder) / "serve.log", Path(folder) / "kept.log")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", required=True, type=Path)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--split-requests", type=int, default=10_000)
    parser.add_argument("--latency-requests", type=int, default=3_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    found = measure(
        args.repository.resolve(), args.data_dir, args.split_requests, args.latency_requests
    )
    split = found["split"]
    print(
        f"split {{95, 5}} over {split['requests']} requests: version 2 answered "
        f"{split['share_of_2_percent']}% (sampling sd {split['sampling_sd_points']} points); "
        f"{split['answered_by']}"
    )
    for name, levels in found["summary"].items():
        for level, figures in levels.items():
            print(
                f"{name:11s} {level}: p50 {figures['p50_ms']:.3f} ms, p99 {figures['p99_ms']:.3f}"
                f" ms, {figures['requests_per_s']:.0f} req/s"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
