"""The floors measured in the same run as the servers: what HTTP costs, and what the model costs.

- The HTTP floor: ``floor_app`` under uvicorn with httptools and uvloop (the project's venv),
  driven by hey exactly like the servers, with the same body. No Python server can answer
  that body faster on this machine, so a server's requests/s over the floor's says how much
  of the machine its own work leaves. ``workers`` > 1 runs that many uvicorn workers, the
  floor of a server with as many.
- The model floor: ONNX Runtime in-process on the same graph and input, no HTTP: batch 1 is
  the most a server without batching could do, batch 64 what batching can reach. ``best_*``
  tries one intra-op thread and one per usable core and keeps the better: on a small or busy
  machine one thread can win, and a ceiling must be the best the machine does.
- The photo ceiling: decoding and resizing the same JPEG with ``modelspec.flowers`` (the code
  the service runs), on every usable core, overlapped with the model at batch 32, in-process:
  the most images/s a server could answer photos with, without HTTP.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelspec import flowers
from service.backends.cpus import available_cpus

ROOT = Path(__file__).resolve().parents[1]


def http_floor_command(port: int, workers: int = 1) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", "benchmarks.floor_app:app"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        *("--http", "httptools", "--loop", "uvloop", "--lifespan", "off"),
        *("--no-access-log", "--log-level", "warning"),
    ]


def session(onnx: Path, threads: int | None = None) -> ort.InferenceSession:
    """ONNX Runtime on the CPU: its default options (as in every peer), or ``threads``
    intra-op threads."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])


def thread_counts() -> list[int]:
    """The intra-op thread counts tried for a best in-process figure: on a busy or small
    machine one thread can beat all of them."""
    return sorted({1, available_cpus()})


def runs_per_s(job: Callable[[], Any], seconds: float) -> float:
    """How often ``job`` runs a second, after five runs that allocate."""
    for _ in range(5):
        job()
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        job()
        runs += 1
    return runs / elapsed


def images_per_s(session: ort.InferenceSession, batch: np.ndarray, seconds: float) -> float:
    feed = {session.get_inputs()[0].name: batch}
    return runs_per_s(lambda: session.run(None, feed), seconds) * len(batch)


def onnx_in_process(
    onnx: Path,
    image: np.ndarray,
    seconds: float,
    sizes: tuple[int, ...] = (1, 64),
    threads: int | None = None,
) -> dict[str, float]:
    """Images/s of ONNX Runtime on ``image`` (a batch of one) repeated to each batch size."""
    loaded = session(onnx, threads)
    return {
        f"batch_{size}_images_per_s": round(
            images_per_s(loaded, np.repeat(image, size, axis=0), seconds), 1
        )
        for size in sizes
    }


def best_of_threads(measure: Callable[[int], dict[str, float]]) -> dict[str, Any]:
    """``measure`` at each of ``thread_counts()``: the best figure of each key, and all."""
    runs = {threads: measure(threads) for threads in thread_counts()}
    best = {key: max(run[key] for run in runs.values()) for key in next(iter(runs.values()))}
    return {**best, "by_threads": runs}


def best_onnx_in_process(
    onnx: Path, image: np.ndarray, seconds: float, sizes: tuple[int, ...] = (1, 64)
) -> dict[str, Any]:
    """``onnx_in_process`` with each thread count; the best of each batch size."""
    return best_of_threads(lambda threads: onnx_in_process(onnx, image, seconds, sizes, threads))


def pair_in_process(
    model_onnx: Path,
    detector_onnx: Path,
    batch: np.ndarray,
    seconds: float,
    threads: int | None = None,
) -> dict[str, float]:
    """Images/s of the model and then its out-of-distribution detector (an autoencoder) on
    the same batch, with the reconstruction error scored: the batch job the service runs by
    default for a paired model (``service.monitoring.ood``), without HTTP or batching."""
    model, detector = session(model_onnx, threads), session(detector_onnx, threads)
    model_feed = {model.get_inputs()[0].name: batch}
    spec = detector.get_inputs()[0]
    items = batch.reshape(len(batch), -1)
    detector_feed = {spec.name: items.reshape(len(batch), *spec.shape[1:])}

    def job() -> np.ndarray:
        model.run(None, model_feed)
        difference = detector.run(None, detector_feed)[0].reshape(len(batch), -1) - items
        return np.vecdot(difference, difference)

    images = runs_per_s(job, seconds) * len(batch)
    return {f"batch_{len(batch)}_images_per_s": round(images, 1)}


def best_pair_in_process(
    model_onnx: Path, detector_onnx: Path, batch: np.ndarray, seconds: float
) -> dict[str, Any]:
    """``pair_in_process`` with each thread count; the best."""
    return best_of_threads(
        lambda threads: pair_in_process(model_onnx, detector_onnx, batch, seconds, threads)
    )


def photos_in_process(
    onnx: Path, photo: bytes, seconds: float, batch: int = 32, threads: int | None = None
) -> dict[str, float]:
    """Images/s of decode + resize (``modelspec.flowers.load_image``: the service's code,
    one thread per usable core; Pillow releases the GIL) and the model at ``batch``, the next
    batch decoding while the model runs this one (as a server's decoding overlaps its
    batches); decoding alone and the model alone beside it."""
    loaded = session(onnx, threads)
    size = int(loaded.get_inputs()[0].shape[1])
    name = loaded.get_inputs()[0].name
    with ThreadPoolExecutor(available_cpus()) as pool:

        def decode_batch() -> list[Future[np.ndarray]]:
            return [pool.submit(flowers.load_image, photo, size) for _ in range(batch)]

        def decoded(pending: list[Future[np.ndarray]]) -> np.ndarray:
            return np.stack([f.result() for f in pending]).astype(np.float32)

        started = time.perf_counter()
        runs = 0
        while (decode_s := time.perf_counter() - started) < seconds / 4 or runs < 2:
            decoded(decode_batch())
            runs += 1
        decode_rate = runs * batch / decode_s
        pending = decode_batch()
        for _ in range(2):  # first runs allocate
            pixels, pending = decoded(pending), decode_batch()
            loaded.run(None, {name: pixels})
        runs, model_s, started = 0, 0.0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            pixels, pending = decoded(pending), decode_batch()
            before = time.perf_counter()
            loaded.run(None, {name: pixels})
            model_s += time.perf_counter() - before
            runs += 1
        decoded(pending)
    return {
        f"decode_and_batch_{batch}_images_per_s": round(runs * batch / elapsed, 1),
        "decode_only_images_per_s": round(decode_rate, 1),
        f"model_only_batch_{batch}_images_per_s": round(runs * batch / max(model_s, 1e-9), 1),
    }


def best_photos_in_process(
    onnx: Path, photo: bytes, seconds: float, batch: int = 32
) -> dict[str, Any]:
    """``photos_in_process`` with each intra-op thread count; the best of each figure."""
    return best_of_threads(lambda threads: photos_in_process(onnx, photo, seconds, batch, threads))
