"""The HTTP floor: a bare ASGI app that reads the request body and answers a fixed small JSON.

No framework, no parsing, no model: what uvicorn with httptools and uvloop costs per request
on this machine, the most any Python server on it could do with this body. Run with
``uvicorn benchmarks.floor_app:app --http httptools --loop uvloop --lifespan off``.
"""

from __future__ import annotations

# A V2 answer of the digits model's size (ten probabilities), fixed.
ANSWER = (
    b'{"model_name":"digits","outputs":[{"name":"probabilities","shape":[1,10],'
    b'"datatype":"FP32","data":[0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1]}]}'
)
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(ANSWER)).encode()),
]


async def app(scope, receive, send) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
