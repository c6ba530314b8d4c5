"""A tiny OTLP/HTTP trace receiver: answers 200 to ``POST /v1/traces`` and counts what came.

So that a traced server's exports are real (serialised, posted, answered) when its cost is
measured, with no collector to install. Each export is parsed (protobuf, or JSON) to count its
spans; ``GET /stats`` answers ``{"exports", "spans", "bytes"}`` so far. It runs on the same
machine as the server, so its own (small) work is charged to the traced rows too.

    python -m benchmarks.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse
import gzip
import json
import zlib

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PATH = "/v1/traces"
STATS = {"exports": 0, "spans": 0, "bytes": 0, "unreadable": 0}
ANSWER = ExportTraceServiceResponse().SerializeToString()


def count_spans(body: bytes, content_type: str) -> int:
    if "json" in content_type:
        document = json.loads(body)
        return sum(
            len(scope.get("spans", []))
            for resource in document.get("resourceSpans", [])
            for scope in resource.get("scopeSpans", [])
        )
    request = ExportTraceServiceRequest.FromString(body)
    return sum(
        len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans
    )


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


async def _reply(send, status: int, body: bytes, kind: bytes) -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["method"] == "GET" and scope["path"] == "/stats":
        await _reply(send, 200, json.dumps(STATS).encode(), b"application/json")
        return
    if scope["method"] != "POST" or scope["path"] != PATH:
        await _reply(send, 404, b"", b"text/plain")
        return
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    body = b"".join(chunks)
    STATS["exports"] += 1
    STATS["bytes"] += len(body)
    try:
        raw = _decompress(body, headers.get("content-encoding", ""))
        STATS["spans"] += count_spans(raw, headers.get("content-type", ""))
    except Exception:  # counted, still answered: the exporter must not retry
        STATS["unreadable"] += 1
    await _reply(send, 200, ANSWER, b"application/x-protobuf")


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
