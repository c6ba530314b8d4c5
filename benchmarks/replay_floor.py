"""The floors for perf_analyzer: bare servers that answer each request with the bytes the real
service answered the first time.

perf_analyzer asks for the model's metadata and configuration before it infers, and reads
every answer, so the HTTP floor's one fixed JSON will not do. These floors forward the first
request of each kind (HTTP: method and path; gRPC: the method) to the service, keep its answer
and give it to every later request of that kind, having read the request and nothing more:

- ``http``: an ASGI app under uvicorn with httptools and uvloop, as ``floor_app``;
- ``grpc``: a ``grpc.aio`` server (the library the service's gRPC runs on) with a generic
  handler: no protobuf parsed or built, raw bytes in and out.

    python -m benchmarks.replay_floor http --port 9000 --upstream http://127.0.0.1:3000
    python -m benchmarks.replay_floor grpc --port 9001 --upstream 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio
import urllib.error
import urllib.request
from typing import Any

# Request headers the answer depends on, forwarded on the first request of a kind; answer
# headers kept with it.
FORWARDED = ("content-type", "inference-header-content-length", "accept")
KEPT = ("content-type", "inference-header-content-length")


class HttpReplay:
    """The ASGI app: ``upstream`` is the service's base URL."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.answers: dict[tuple[str, str], dict[str, Any]] = {}

    def _fetch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> dict:
        sent = {k: v for k, v in headers.items() if k in FORWARDED}
        request = urllib.request.Request(
            self.upstream + target, data=body or None, method=method, headers=sent
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, got, data = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, got, data = error.code, error.headers, error.read()
        kept = [(k.encode(), got[k].encode()) for k in KEPT if got.get(k) is not None]
        kept.append((b"content-length", str(len(data)).encode()))
        return {"status": status, "headers": kept, "body": data}

    async def __call__(self, scope, receive, send) -> None:
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        key = (scope["method"], scope["path"])
        answer = self.answers.get(key)
        if answer is None:
            target = scope["path"] + (
                "?" + scope["query_string"].decode() if scope["query_string"] else ""
            )
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            answer = await asyncio.to_thread(
                self._fetch, scope["method"], target, headers, b"".join(chunks)
            )
            self.answers[key] = answer
        start = {"type": "http.response.start", "status": answer["status"]}
        await send({**start, "headers": answer["headers"]})
        await send({"type": "http.response.body", "body": answer["body"]})


def serve_http(port: int, upstream: str) -> None:
    import uvicorn

    uvicorn.run(
        HttpReplay(upstream),
        host="127.0.0.1",
        port=port,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


async def serve_grpc(port: int, upstream: str) -> None:
    import grpc

    channel = grpc.aio.insecure_channel(upstream)
    answers: dict[str, bytes | grpc.aio.AioRpcError] = {}

    def handler(method: str):
        async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            found = answers.get(method)
            if found is None:
                try:
                    found = await channel.unary_unary(method)(request)
                except grpc.aio.AioRpcError as error:
                    found = error
                answers[method] = found
            if isinstance(found, grpc.aio.AioRpcError):
                await context.abort(found.code(), found.details() or "")
            return found

        return grpc.unary_unary_rpc_method_handler(answer)

    class Replay(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails):
            return handler(details.method)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Replay(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=["http", "grpc"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the service: URL (http), host:port")
    args = parser.parse_args()
    if args.protocol == "http":
        serve_http(args.port, args.upstream)
    else:
        import uvloop

        uvloop.run(serve_grpc(args.port, args.upstream))


if __name__ == "__main__":
    main()
