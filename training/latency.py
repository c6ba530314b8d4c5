"""CPU latency of an exported graph, as the service would run it: ONNX Runtime, every core.

Recorded in each manifest and card, so a model's cost is known before it is deployed, and
the flowers resolutions can be compared on the same footing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelspec import Signature

BATCH_SIZES = (1, 32)
SECONDS = 2.0  # per batch size, after a warm-up run


def cpu_latency(onnx_file: Path, signature: Signature, seconds: float = SECONDS) -> dict[str, Any]:
    """Milliseconds per item at each of BATCH_SIZES, on inputs of the signature's dtypes and
    shapes (free dimensions besides the batch: 8)."""
    import onnxruntime as ort

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    result: dict[str, Any] = {"runtime": f"onnxruntime {ort.__version__} CPU", "threads": threads}
    rng = np.random.default_rng(0)
    for batch in BATCH_SIZES:
        feed = {
            spec.name: rng.random((batch, *[d or 8 for d in spec.shape[1:]])).astype(spec.dtype)
            for spec in signature.inputs
        }
        session.run(None, feed)
        runs, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or runs < 3:
            session.run(None, feed)
            runs += 1
        result[f"batch_{batch}_ms_per_item"] = round(1000 * elapsed / (runs * batch), 3)
    return result
