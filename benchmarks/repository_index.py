"""The repository index on a repository of many models: how long the walk and the answer
take, and whether the event loop serves other requests meanwhile.

    python -m benchmarks.repository_index --repository models --models 1000

Builds a repository of the quick ``digits`` model beside ``--models - 1`` model folders, each
with one published version whose manifest the service refuses at once (no graph to load:
the index walks and lists them all the same), serves it, and measures ``POST
/v2/repository/index`` and ``GET /livez`` while index calls run back to back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.servers import Server

TOKEN = "index-benchmark"


def build(source: Path, root: Path, count: int) -> None:
    shutil.copytree(source / "digits", root / "digits")
    for index in range(count - 1):
        version = root / f"model{index:04d}" / "1"
        version.mkdir(parents=True)
        (version / "manifest.json").write_text("{}")


def milliseconds(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def measure(url: str, calls: int) -> dict[str, object]:
    headers = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=60) as client:
        quiet = []
        for _ in range(50):
            started = time.perf_counter()
            client.get("/livez")
            quiet.append(time.perf_counter() - started)
        index, entries = [], 0
        busy: list[float] = []
        done = threading.Event()

        def probe() -> None:
            with httpx.Client(base_url=url, timeout=60) as prober:
                while not done.is_set():
                    started = time.perf_counter()
                    prober.get("/livez")
                    busy.append(time.perf_counter() - started)
                    time.sleep(0.005)

        prober = threading.Thread(target=probe)
        prober.start()
        for _ in range(calls):
            started = time.perf_counter()
            answer = client.post("/v2/repository/index", headers=headers)
            index.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text[:300]
            entries = len(answer.json())
        done.set()
        prober.join()
    return {
        "entries": entries,
        "index": milliseconds(index),
        "livez_quiet": milliseconds(quiet),
        "livez_during_index": milliseconds(busy),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "repository"
        build(args.repository, root, args.models)
        env = {
            "MODEL_REPOSITORY": str(root),
            "SERVING_ADMIN_TOKEN": TOKEN,
            "SERVING_POLL_INTERVAL": "0",
            "SERVING_STATE_DIR": str(Path(folder) / "state"),
        }
        with Server(env=env, log=Path(folder) / "serve.log") as server:
            server.wait_until("/livez", timeout=300)
            server.wait_until("/v2/models/digits/ready", timeout=300)
            figures = {"models": args.models, **measure(server.url, args.calls)}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
