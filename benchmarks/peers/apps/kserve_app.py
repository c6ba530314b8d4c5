"""KServe's Python ModelServer with a custom Model around the digits ONNX graph (V2 native).

The Python ModelServer has no batching: KServe batches in its Go agent, a sidecar in a
cluster, which is not part of this package.
"""

from __future__ import annotations

import os

import onnxruntime as ort
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import generate_uuid


class LoopbackConfig(uvicorn.Config):
    """KServe hard-codes host 0.0.0.0 for its REST server; this benchmark binds loopback only."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


uvicorn.Config = LoopbackConfig


class Digits(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        images = payload.inputs[0].as_numpy().astype("float32")
        outputs = self.session.run(None, {self.input_name: images})[0]
        answer = InferOutput(name=self.output_name, shape=list(outputs.shape), datatype="FP32")
        answer.set_data_from_numpy(outputs)
        # The request's id, or a new one as KServe's own models do: the answer must have one.
        return InferResponse(
            response_id=payload.id or generate_uuid(),
            model_name=self.name,
            infer_outputs=[answer],
        )


if __name__ == "__main__":
    model = Digits("digits", os.environ["PEER_ONNX"])
    ModelServer(http_port=int(os.environ["PEER_PORT"]), enable_grpc=False).start([model])
