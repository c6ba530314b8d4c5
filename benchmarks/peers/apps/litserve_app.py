"""LitServe around the digits ONNX graph, with its batching, on the V2 route and body.

LitServe has no V2 protocol: ``decode_request`` reads the V2 body, ``encode_response`` writes
a V2-shaped answer. Batching: ``max_batch_size`` and ``batch_timeout`` on the LitAPI.
"""

from __future__ import annotations

import os

import litserve as ls
import numpy as np
import onnxruntime as ort


class Digits(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.session = ort.InferenceSession(
            os.environ["PEER_ONNX"], providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def decode_request(self, request: dict) -> np.ndarray:
        tensor = request["inputs"][0]
        return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(inputs)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: images})[0]

    def unbatch(self, outputs: np.ndarray) -> list[np.ndarray]:
        # One image per request in this benchmark: split row by row.
        return [row[None] for row in outputs]

    def encode_response(self, output: np.ndarray) -> dict:
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
    api = Digits(
        max_batch_size=int(os.environ["PEER_MAX_BATCH"]),
        batch_timeout=float(os.environ["PEER_MAX_WAIT_MS"]) / 1000,
        api_path="/v2/models/digits/infer",
    )
    server = ls.LitServer(api, accelerator="cpu")
    server.run(host="127.0.0.1", port=int(os.environ["PEER_PORT"]), generate_client_file=False)
