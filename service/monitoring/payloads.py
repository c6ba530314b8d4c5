"""Sampled payload logs: a share of the answered inference requests as JSON lines.

Off by default (``payload_log_sample: 0``). A sampled request costs the hot path one random
draw and one ``put_nowait`` per sink; everything else (hashing, JSON, writing, sending) runs
in one thread per sink. Each sink has its own bounded queue: when it is full (a slow disk, a
dead collector) the record is dropped and counted in ``serving_payload_log_dropped_total
{sink}``, so no request ever waits for a log.

A record: ``id`` (the request id), ``model``, ``version``, ``time`` (ISO 8601, UTC),
``endpoint``, ``inputs`` (the request body: parsed JSON, or base64 for images and binary
bodies), ``inputs_sha256`` (with ``payload_log_inputs: hash``, instead of the inputs; absent
with ``none``), ``outputs`` (the answer's tensors) and ``latency_ms``.

Sinks: a local file rotated by size (``logging.handlers.RotatingFileHandler``), and an HTTP
endpoint that receives each record as a CloudEvent in binary mode, as KServe's payload logger
sends them (``ce-type: org.kubeflow.serving.inference.response``, ``ce-id`` the request id).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import logging.handlers
import os
import queue
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

logger = logging.getLogger(__name__)
CE_TYPE = "org.kubeflow.serving.inference.response"
CE_SOURCE = "keras-model-serving"
HTTP_TIMEOUT_S = 2.0
STOP = object()


def _outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in outputs.items()}


def render(record: tuple[Any, ...], inputs_mode: str) -> dict[str, Any]:
    """The JSON document of one sampled request (in the sink's thread, off the hot path)."""
    rid, model, version, endpoint, at, body, content_type, outputs, latency = record
    document: dict[str, Any] = {
        "id": rid,
        "model": model,
        "version": version,
        "endpoint": endpoint,
        "time": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds"),
    }
    if inputs_mode == "full":
        if body[:64].lstrip()[:1] in (b"{", b"["):
            try:
                document["inputs"] = orjson.loads(body)
            except orjson.JSONDecodeError:
                document["inputs"] = body.decode("utf-8", "replace")
        else:
            document["inputs"] = {
                "content_type": content_type,
                "base64": base64.b64encode(body).decode("ascii"),
            }
    elif inputs_mode == "hash":
        document["inputs_sha256"] = hashlib.sha256(body).hexdigest()
    document["outputs"] = _outputs(outputs)
    document["latency_ms"] = round(latency * 1000, 3)
    return document


def _dumps(document: dict[str, Any]) -> bytes:
    # NaN (an unavailable ood_score) becomes null, as in the answers.
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


class Sink:
    """One destination, its bounded queue and its thread."""

    name = "sink"

    def __init__(self, size: int, inputs_mode: str, dropped: Any, written: Any) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.inputs_mode = inputs_mode
        self.dropped = dropped.labels(self.name) if dropped is not None else None
        self.written = written.labels(self.name) if written is not None else None
        self.drops = 0
        self.thread = threading.Thread(target=self._run, name=f"payloads-{self.name}", daemon=True)

    def offer(self, record: tuple[Any, ...]) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.drops += 1
            if self.dropped is not None:
                self.dropped.inc()

    def _run(self) -> None:
        while True:
            record = self.queue.get()
            if record is STOP:
                return
            try:
                self.write(record, _dumps(render(record, self.inputs_mode)))
                if self.written is not None:
                    self.written.inc()
            except Exception as error:  # a sink's failure is the log's, never the request's
                self.drops += 1
                if self.dropped is not None:
                    self.dropped.inc()
                logger.warning("payload log %s: %s", self.name, error)

    def write(self, record: tuple[Any, ...], line: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        try:
            self.queue.put(STOP, timeout=1)
        except queue.Full:
            return
        self.thread.join(timeout=HTTP_TIMEOUT_S + 1)


class FileSink(Sink):
    """The workers of a server write one file: each record is written, and the file rotated,
    holding an flock on ``<file>.lock``, into the file the path names now. Alone, each
    worker's RotatingFileHandler rotated under the other: one went on writing into the file
    the other had renamed, then deleted as the oldest backup (2 workers, 1 KB files: records
    out of order across files; 3 backups: a worker's last records lost, counted written)."""

    name = "file"

    def __init__(self, path: Path, max_bytes: int, backups: int, *args: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.lock = open(path.with_name(path.name + ".lock"), "ab")  # noqa: SIM115 (kept open)
        super().__init__(*args)

    def write(self, record: tuple[Any, ...], line: bytes) -> None:
        message = logging.LogRecord("payloads", logging.INFO, "", 0, line.decode(), None, None)
        handler = self.handler
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        try:
            stream = handler.stream
            try:
                moved = (
                    stream is None
                    or os.fstat(stream.fileno()).st_ino != os.stat(handler.baseFilename).st_ino
                )
            except FileNotFoundError:
                moved = True
            if moved:  # another worker rotated it: write where the path points now
                if stream is not None:
                    stream.close()
                handler.stream = handler._open()
            handler.emit(message)
        finally:
            fcntl.flock(self.lock, fcntl.LOCK_UN)

    def close(self) -> None:
        super().close()
        self.handler.close()
        self.lock.close()


class HttpSink(Sink):
    name = "http"

    def __init__(self, url: str, *args: Any) -> None:
        import httpx  # BentoML's own dependency

        self.url = url
        self.client = httpx.Client(timeout=HTTP_TIMEOUT_S)
        super().__init__(*args)

    def write(self, record: tuple[Any, ...], line: bytes) -> None:
        rid, model, version = record[:3]
        headers = {
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": rid,
            "ce-type": CE_TYPE,
            "ce-source": CE_SOURCE,
            "ce-time": datetime.fromtimestamp(record[4], UTC).isoformat(),
            "ce-inferenceservicename": model,
            "ce-modelversion": str(version),
        }
        self.client.post(self.url, content=line, headers=headers).raise_for_status()


class PayloadLog:
    def __init__(self, config: Any, dropped: Any = None, written: Any = None) -> None:
        self.sample = config.payload_log_sample
        args = (config.payload_log_queue, config.payload_log_inputs, dropped, written)
        self.sinks: list[Sink] = []
        if config.payload_log_file is not None:
            self.sinks.append(
                FileSink(
                    config.payload_log_file,
                    config.payload_log_max_bytes,
                    config.payload_log_backups,
                    *args,
                )
            )
        if config.payload_log_url:
            self.sinks.append(HttpSink(config.payload_log_url, *args))
        for sink in self.sinks:
            sink.thread.start()
        self._random = random.random

    @property
    def on(self) -> bool:
        return self.sample > 0 and bool(self.sinks)

    def sampled(self) -> bool:
        return self._random() < self.sample

    def offer(self, record: tuple[Any, ...]) -> None:
        for sink in self.sinks:
            sink.offer(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def record(
    rid: str,
    model: str,
    version: int,
    endpoint: str,
    body: bytes,
    content_type: str,
    outputs: dict[str, Any],
    latency: float,
) -> tuple[Any, ...]:
    return (rid, model, version, endpoint, time.time(), body, content_type, outputs, latency)
