"""The baseline the benchmark compares against: a stock BentoML batchable endpoint.

Default settings, one worker, the same ONNX digits model, the same JSON tensor in
(``{"inputs": [[28x28]]}``); what a hand-written BentoML service would look like.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np
import onnxruntime as ort


@bentoml.service(workers=1)
class StockDigits:
    def __init__(self) -> None:
        self.session = ort.InferenceSession(
            os.environ["BASELINE_ONNX"], providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    @bentoml.api(batchable=True)
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: inputs.astype(np.float32)})[0]
