"""Triton's Python backend model around the digits ONNX graph: ``models/digits/1/model.py``.

Triton (the ``tritonserver`` binary PyTriton bundles, started directly on a model repository;
no PyTriton in the request path) parses the V2 request in C++, and its dynamic batcher hands
``execute`` every request of a batch at once: one ``session.run`` on their concatenation, and
each request gets its rows back. The graph's path is the ``onnx`` parameter of config.pbtxt.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        path = config["parameters"]["onnx"]["string_value"]
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def execute(self, requests: list) -> list:
        arrays = [
            pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            for request in requests
        ]
        outputs = self.session.run(None, {self.input_name: np.concatenate(arrays)})[0]
        responses, start = [], 0
        for array in arrays:
            rows = outputs[start : start + len(array)]
            start += len(array)
            tensor = pb_utils.Tensor(self.output_name, rows)
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
