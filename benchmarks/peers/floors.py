"""The two floors measured in the same run: what HTTP costs, and what the model costs.

- The HTTP floor: ``floor_app`` under uvicorn with httptools and uvloop (the project's venv),
  driven by hey exactly like the servers. No Python server can answer this body faster on
  this machine, so a server's requests/s over the floor's says how much of the machine its
  own work leaves.
- The model floor: ONNX Runtime in-process on the same graph, batch 1 and batch 64, no HTTP.
  Batch 1 is the most a server without batching could do; batch 64 what batching can reach.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]


def http_floor_command(port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", "benchmarks.peers.floor_app:app"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--http", "httptools", "--loop", "uvloop", "--lifespan", "off"),
        *("--no-access-log", "--log-level", "warning"),
    ]


def images_per_s(session: ort.InferenceSession, batch: np.ndarray, seconds: float) -> float:
    feed = {session.get_inputs()[0].name: batch}
    for _ in range(5):  # first runs allocate
        session.run(None, feed)
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        session.run(None, feed)
        runs += 1
    return runs * len(batch) / elapsed


def onnx_in_process(onnx: Path, image: np.ndarray, seconds: float) -> dict[str, float]:
    """Images/s of ONNX Runtime (default session options, as in every peer) at batch 1, 64."""
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    return {
        f"batch_{size}_images_per_s": round(
            images_per_s(session, np.repeat(image, size, axis=0), seconds), 1
        )
        for size in (1, 64)
    }
