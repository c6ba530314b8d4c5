"""An MLServer custom runtime around the digits ONNX graph (MLServer has no ONNX runtime).

MLServer speaks V2 itself and does the adaptive batching (``max_batch_size`` and
``max_batch_time`` in model-settings.json): ``predict`` gets one merged request.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxDigits(MLModel):
    async def load(self) -> bool:
        self.session = ort.InferenceSession(
            self.settings.parameters.uri, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = NumpyCodec.decode_input(payload.inputs[0]).astype("float32")
        outputs = self.session.run(None, {self.input_name: images})[0]
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(self.output_name, outputs)],
        )
