"""The request path's shape (issue 23): a V2 request and a native picture, followed with a
profiler through the real app in this process (``benchmarks.request_path``), call nothing
back up from ``inference.py`` into a protocol module, and the V2 request passes through at
most 8 service modules (those calling on into another; leaves it only visits return), with
and without an out-of-distribution flag scored in its batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.request_path import follow, requests_of
from tests.unit.synthetic import InProcess, manifest, publish, signature, tensor

ROOT = Path(__file__).resolve().parents[2]


def _digit_classifier() -> bytes:
    """28x28 pictures to 10 softmax scores: flatten, one dense layer, softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = (np.arange(784 * 10, dtype=np.float32).reshape(784, 10) % 7 - 3) / 100
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "digits_like",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        [
            numpy_helper.from_array(np.array([-1, 784], np.int64), "flat_shape"),
            numpy_helper.from_array(weights, "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the pinned ONNX Runtime reads
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _halving_detector() -> bytes:
    """28x28 pictures to their half: a "reconstruction" whose error grows with the ink."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["image", "half"], ["rebuilt"])],
        "halving",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 28, 28])],
        [helper.make_tensor_value_info("rebuilt", TensorProto.FLOAT, ["batch", 28, 28])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.mark.parametrize("flagged", [False, True], ids=["plain", "ood-flagged"])
def test_a_v2_request_passes_through_8_modules_and_nothing_calls_back_up(
    tmp_path: Path, flagged: bool
) -> None:
    predict = signature(
        inputs=[tensor("image", [-1, 28, 28], range=[0.0, 1.0])],
        outputs=[tensor("probabilities", [-1, 10])],
        input_kind="mnist_image",
        answer="digit",
    )
    pairing = {"ood": {"detector": "halving", "threshold": 0.01}} if flagged else {}
    described = manifest(
        "pictures", signatures={"predict": predict}, labels=list("0123456789"), **pairing
    )
    root = tmp_path / "models"
    publish(root, described, {"model.onnx": _digit_classifier()})
    if flagged:
        rebuild = signature(
            inputs=[tensor("image", [-1, 28, 28])], outputs=[tensor("rebuilt", [-1, 28, 28])]
        )
        detector = manifest("halving", signatures={"predict": rebuild})
        publish(root, detector, {"model.onnx": _halving_detector()})
    with InProcess(root) as server:
        followed = {
            label: follow(ROOT, send, status)
            for label, (send, status) in requests_of(server, "pictures").items()
        }
    for label, (modules, onward, calls, up) in followed.items():
        assert up == 0, f"{label}: {up} calls from inference.py back up into a protocol module"
        assert calls > 0 and set(onward) <= set(modules), (label, modules, onward)
    modules, onward, _, _ = followed["V2 JSON /v2/models/pictures/infer"]
    assert len(onward) <= 8, f"the V2 request passes through {len(onward)}: {onward}"
    # The steps a reader follows are there: entry, protocol, the request's life, the batch.
    for step in ("app.py", "protocols/common.py", "protocols/v2_codec.py", "inference.py"):
        assert f"service/{step}" in onward, (step, onward)
    assert "service/backends/onnx.py" in modules
    if flagged:  # the detector really ran in the batch job, and nothing else was queued
        assert "service/monitoring/ood.py" in onward, onward
