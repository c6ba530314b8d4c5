"""Triton Inference Server (the binary PyTriton bundles) with a Python function bound as the
digits model; Triton speaks V2 and its dynamic batcher merges requests before the function.
"""

from __future__ import annotations

import json
import os
import sysconfig

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

# Triton's Python backend stub links libpython3.X.so.1.0 by name, and the loader finds the
# system's (Debian's 3.11.2) before this interpreter's (pyenv's 3.11.7): the stub then ran
# 3.11.2's C code under 3.11.7's standard library, and multiprocessing failed at model load.
# PyTriton passes this process's environment on to tritonserver and the stub.
os.environ["LD_LIBRARY_PATH"] = ":".join(
    filter(None, [sysconfig.get_config_var("LIBDIR"), os.environ.get("LD_LIBRARY_PATH")])
)

session = ort.InferenceSession(os.environ["PEER_ONNX"], providers=["CPUExecutionProvider"])
INPUT = session.get_inputs()[0].name
OUTPUT = session.get_outputs()[0].name


@batch
def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
    return {OUTPUT: session.run(None, {INPUT: inputs[INPUT].astype(np.float32)})[0]}


if __name__ == "__main__":
    ports = json.loads(os.environ["PEER_PORTS"])
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=int(os.environ["PEER_PORT"]),
        grpc_address="127.0.0.1",
        grpc_port=ports["grpc"],
        metrics_address="127.0.0.1",
        metrics_port=ports["metrics"],
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="digits",
            infer_func=infer,
            inputs=[Tensor(name=INPUT, dtype=np.float32, shape=(28, 28))],
            outputs=[Tensor(name=OUTPUT, dtype=np.float32, shape=(10,))],
            config=ModelConfig(
                max_batch_size=int(os.environ["PEER_MAX_BATCH"]),
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=int(float(os.environ["PEER_MAX_WAIT_MS"]) * 1000)
                ),
            ),
        )
        triton.serve()
