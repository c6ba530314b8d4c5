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
from tests.unit.synthetic import (
    InProcess,
    digits_onnx,
    manifest,
    onnx_model,
    publish,
    signature,
    tensor,
)

ROOT = Path(__file__).resolve().parents[2]


def _halving_detector() -> bytes:
    """28x28 pictures to their half: a "reconstruction" whose error grows with the ink."""
    from onnx import helper

    return onnx_model(
        [helper.make_node("Mul", ["image", "half"], ["rebuilt"])],
        {"image": ["batch", 28, 28]},
        {"rebuilt": ["batch", 28, 28]},
        {"half": np.array(0.5, np.float32)},
    )


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
    weights = (np.arange(784 * 10, dtype=np.float32).reshape(784, 10) % 7 - 3) / 100
    publish(root, described, {"model.onnx": digits_onnx("image", "probabilities", weights)})
    if flagged:
        rebuild = signature(
            inputs=[tensor("image", [-1, 28, 28])], outputs=[tensor("rebuilt", [-1, 28, 28])]
        )
        detector = manifest("halving", signatures={"predict": rebuild})
        publish(root, detector, {"model.onnx": _halving_detector()})
    settings = tmp_path / "serving.yaml"  # batches on the followed thread, however loaded
    settings.write_text("models:\n  pictures:\n    batching: {offload: false}\n")
    with InProcess(root, SERVING_CONFIG=str(settings)) as server:
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
