"""Ray Serve around the digits ONNX graph, batching with ``@serve.batch``, on the V2 route.

Ray Serve has no V2 protocol: the deployment reads the V2 body and answers a V2-shaped JSON.
One local Ray node on loopback, no dashboard; SIGTERM shuts Serve and Ray down.
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import onnxruntime as ort
import ray
from ray import serve
from starlette.requests import Request

MAX_BATCH = int(os.environ["PEER_MAX_BATCH"])
MAX_WAIT_S = float(os.environ["PEER_MAX_WAIT_MS"]) / 1000


# Ray's default of 5 requests in a replica at once would cap every batch at 5 (Ray warns so).
@serve.deployment(max_ongoing_requests=MAX_BATCH)
class Digits:
    def __init__(self, path: str) -> None:
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=MAX_WAIT_S)
    async def run(self, images: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self.session.run(None, {self.input_name: np.concatenate(images)})[0]
        return [row[None] for row in outputs]  # one image per request in this benchmark

    async def __call__(self, request: Request) -> dict:
        tensor = (await request.json())["inputs"][0]
        images = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        output = await self.run(images)
        return {
            "model_name": "digits",
            "outputs": [
                {
                    "name": self.output_name,
                    "shape": list(output.shape),
                    "datatype": "FP32",
                    "data": output.reshape(-1).tolist(),
                }
            ],
        }


if __name__ == "__main__":
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ray.init(
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=os.path.join(os.getcwd(), "ray"),
    )
    serve.start(http_options={"host": "127.0.0.1", "port": int(os.environ["PEER_PORT"])})
    serve.run(Digits.bind(os.environ["PEER_ONNX"]), route_prefix="/v2/models/digits/infer")
    stop.wait()
    serve.shutdown()
    ray.shutdown()
