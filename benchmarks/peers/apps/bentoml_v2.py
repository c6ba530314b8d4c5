"""Stock BentoML around the digits ONNX graph, taking the V2 request body as it is.

Runs in the project's own venv (the same ``bentoml`` as the service). A batchable API takes
one argument and batches it by concatenation, so the argument is the V2 ``inputs`` list: each
request brings a list of one tensor, the batch is the list of everyone's tensors. BentoML
answers each request with its slice of the returned list, so the answer is the V2 ``outputs``
list without the object around it; a second, non-batchable API in front would add a hop
through another process, which is not what a stock service would be measured for.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np
import onnxruntime as ort

MAX_BATCH = int(os.environ.get("PEER_MAX_BATCH", "64"))


@bentoml.service(workers=1)
class StockDigitsV2:
    def __init__(self) -> None:
        self.session = ort.InferenceSession(
            os.environ["PEER_ONNX"], providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, route="/v2/models/digits/infer")
    def infer(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        arrays = [np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]) for t in inputs]
        outputs = self.session.run(None, {self.input_name: np.concatenate(arrays)})[0]
        answers, start = [], 0
        for array in arrays:
            rows = outputs[start : start + len(array)]
            start += len(array)
            answers.append(
                {
                    "name": self.output_name,
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": rows.reshape(-1).tolist(),
                }
            )
        return answers
