"""The OOD flags scored in the model's batch job (service.monitoring.ood): only a paired
default signature's ``ood_score`` is the detector's; any other output of that name is the
model's own, held to the same rules as its other outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.errors import RequestError
from service.inference import require_finite
from tests.unit.synthetic import (
    WIDTH,
    InProcess,
    affine_onnx,
    manifest,
    onnx_model,
    publish,
    signature,
    tensor,
)


def _scale_onnx(output: str, factor: float = 4.0) -> bytes:
    """``output = x * factor``, batch first."""
    from onnx import helper

    return onnx_model(
        [helper.make_node("Mul", ["x", "k"], [output])],
        {"x": ["batch", WIDTH]},
        {output: ["batch", WIDTH]},
        {"k": np.array(factor, np.float32)},
    )


def _publish_detector(root: Path, name: str, graph: bytes) -> None:
    """A detector of the synthetic inputs: ``x`` in, ``r`` (one value per input value) out."""
    described = manifest(
        name, signatures={"predict": signature(outputs=[tensor("r", [-1, WIDTH])])}
    )
    publish(root, described, {"model.onnx": graph})


def test_require_finite_skips_ood_score_only_when_a_detector_scored() -> None:
    nan = {"ood_score": np.array([np.nan, 1.0], np.float32)}
    require_finite(nan, scored=True)
    with pytest.raises(RequestError) as raised:
        require_finite(nan)
    assert (raised.value.code, raised.value.item) == ("no_finite_answer", 0)


def test_an_unpaired_models_own_ood_score_output_must_be_finite(tmp_path: Path) -> None:
    root = tmp_path / "models"
    own = signature(outputs=[tensor("ood_score", [-1, WIDTH])])
    publish(
        root,
        manifest("scorer", signatures={"predict": own}),
        {"model.onnx": _scale_onnx("ood_score")},
    )
    body = {
        "inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": [1e38] * WIDTH}]
    }
    with InProcess(root) as server:
        answer = server.request("POST", "/v2/models/scorer/infer", json=body)
    # 4e38 is past float32: refused as any other output would be, not answered as nulls
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "no_finite_answer"


def _sqrt_onnx() -> bytes:
    """A detector that gives NaN for negative inputs: ``r = sqrt(x)``."""
    from onnx import helper

    return onnx_model(
        [helper.make_node("Sqrt", ["x"], ["r"])], {"x": ["batch", WIDTH]}, {"r": ["batch", WIDTH]}
    )


def test_items_the_detector_gives_nan_are_counted_whatever_their_place(tmp_path: Path) -> None:
    from service.monitoring import Monitor

    root = tmp_path / "models"
    paired = manifest("paired", ood={"detector": "sqrt", "threshold": 100.0})
    publish(root, paired, {"model.onnx": affine_onnx()})
    _publish_detector(root, "sqrt", _sqrt_onnx())
    counted = []
    with InProcess(root) as server:
        monitor = Monitor(server.runtime.config, server.registry, namespace="unit_ood_nan")
        server.runtime.monitor = monitor
        for data in ([-1.0] * WIDTH + [4.0] * WIDTH, [4.0] * WIDTH + [-1.0] * WIDTH):
            before = list(monitor.detectors.flagged.get("paired", [0, 0]))
            body = {
                "inputs": [{"name": "x", "shape": [2, WIDTH], "datatype": "FP32", "data": data}]
            }
            answer = server.request("POST", "/v2/models/paired/infer", json=body)
            assert answer.status_code == 200, answer.text
            outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
            assert sorted(outputs["in_distribution"]) == [False, True]
            after = monitor.detectors.flagged.get("paired", [0, 0])
            counted.append([after[0] - before[0], after[1] - before[1]])
    # the same two items, one scored 4.0 and one NaN (flagged), in either order
    assert counted == [[2, 1], [2, 1]]


def _text_onnx() -> bytes:
    """A "detector" whose graph answers strings, though its manifest says float32."""
    from onnx import TensorProto, helper

    return onnx_model(
        [helper.make_node("Cast", ["x"], ["r"], to=TensorProto.STRING)],
        {"x": ["batch", WIDTH]},
        {"r": ["batch", WIDTH]},
        types={"r": TensorProto.STRING},
    )


def test_a_detector_answer_that_cannot_be_scored_leaves_the_batch_answered(
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"
    paired = manifest("paired", ood={"detector": "text", "threshold": 1.0})
    publish(root, paired, {"model.onnx": affine_onnx()})
    _publish_detector(root, "text", _text_onnx())
    body = {"inputs": [{"name": "x", "shape": [2, WIDTH], "datatype": "FP32", "data": [0.1] * 8}]}
    with InProcess(root) as server:
        answer = server.request("POST", "/v2/models/paired/infer", json=body)
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        assert outputs["ood_score"] == [None, None]
        assert outputs["in_distribution"] == [True, True]
        reason = server.registry.detectors.unavailable[("paired", 1)]
        assert "could not be scored" in reason


def test_a_shadows_batches_run_no_detector_and_leave_the_live_versions_flags_be(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Shadow traffic takes a batcher of the model alone: its flags are never compared, so
    its detector does not run (here it is missing, which only its warm-up finds and logs,
    once); the live version's flags are its own."""
    import asyncio
    import logging

    root = tmp_path / "models"
    live = manifest("paired", 1, ood={"detector": "half", "threshold": 1.0})
    shadow = manifest("paired", 2, ood={"detector": "gone", "threshold": 1.0})
    publish(root, live, {"model.onnx": affine_onnx()})
    publish(root, shadow, {"model.onnx": affine_onnx()})
    _publish_detector(root, "half", _scale_onnx("r", 0.5))
    settings = tmp_path / "serving.yaml"
    settings.write_text(
        "models:\n  paired:\n    version_policy: {latest: 2}\n"
        '    traffic: {"1": 1.0}\n    shadow: {target: "2", sample: 1.0}\n  half: {}\n'
    )
    body = {"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": [0.1] * 4}]}
    logging_warnings = caplog.at_level(logging.WARNING, "service.monitoring.ood")
    with logging_warnings, InProcess(root, SERVING_CONFIG=str(settings)) as server:
        detectors = server.registry.detectors
        # Found at load: the warm-up times the batch job, detector included.
        assert detectors.unavailable == {("paired", 2): "detector 'gone' is not served"}
        detectors.unavailable.clear()  # a flagged batch of version 2 would set it again
        for _ in range(4):
            answer = server.request("POST", "/v2/models/paired/infer", json=body)
            assert answer.headers["x-model-version"] == "1", answer.text
            outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
            assert outputs["ood_score"][0] is not None
            server.loop.run_until_complete(asyncio.sleep(0.02))  # the shadow's run
        (pair,) = server.runtime.shadows.pairs.values()
        unavailable = dict(detectors.unavailable)
    assert (pair.compared, pair.failed) == (4, 0), pair.last_error
    missing = [r for r in caplog.records if "no out-of-distribution flags" in r.getMessage()]
    assert len(missing) == 1, [r.getMessage() for r in missing]
    assert unavailable == {}, "a shadow batch ran the detector"


def test_tf_serving_answers_an_unpaired_models_own_ood_score_output(tmp_path: Path) -> None:
    root = tmp_path / "models"
    own = signature(outputs=[tensor("ood_score", [-1, WIDTH])])
    publish(
        root,
        manifest("scorer", signatures={"predict": own}),
        {"model.onnx": _scale_onnx("ood_score", 2.0)},
    )
    with InProcess(root) as server:
        answer = server.request(
            "POST", "/v1/models/scorer:predict", json={"instances": [[1.0] * WIDTH]}
        )
        metadata = server.request("GET", "/v1/models/scorer/metadata").json()
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [[2.0] * WIDTH]}
    signature_def = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(signature_def["outputs"]) == ["ood_score"]


def test_tf_serving_answers_of_a_paired_model_keep_their_one_output_form(tmp_path: Path) -> None:
    root = tmp_path / "models"
    paired = manifest("paired", ood={"detector": "half", "threshold": 1.0})
    publish(root, paired, {"model.onnx": affine_onnx()})
    _publish_detector(root, "half", _scale_onnx("r", 0.5))
    with InProcess(root) as server:
        answer = server.request(
            "POST", "/v1/models/paired:predict", json={"instances": [[1.0] * WIDTH]}
        )
        metadata = server.request("GET", "/v1/models/paired/metadata").json()
    assert answer.status_code == 200, answer.text
    assert list(answer.json()) == ["predictions"] and len(answer.json()["predictions"][0]) == 3
    for signature_def in metadata["metadata"]["signature_def"]["signature_def"].values():
        assert list(signature_def["outputs"]) == ["y"]


def test_a_pairing_that_cannot_be_planned_keeps_no_batch_alive(tmp_path: Path) -> None:
    """Why a detector version cannot score (here: no threshold) is worked out once; raising
    that one exception object again on every batch grew its traceback by the batch's frames
    (and their inputs) each time."""
    import gc
    import weakref

    root = tmp_path / "models"
    publish(root, manifest("paired", ood={"detector": "half"}), {"model.onnx": affine_onnx()})
    _publish_detector(root, "half", _scale_onnx("r", 0.5))
    with InProcess(root) as server:
        detectors = server.registry.detectors
        (version,) = [
            loaded.version for loaded in server.registry.models["paired"].versions.values()
        ]
        x = np.full((3, WIDTH), 0.25, np.float32)
        for _ in range(3):
            detectors.score(version, x.copy())
        batch = x.copy()
        kept = weakref.ref(batch)
        flags = detectors.score(version, batch)
        del batch
        gc.collect()
        assert np.isnan(flags["ood_score"]).all()
        assert "no threshold" in detectors.unavailable[("paired", 1)]
        assert kept() is None, "a batch's input stays referenced after its scoring"


def _heavy_onnx(hidden: int = 1536) -> bytes:
    """A detector far slower than the model it flags: ``r = (x @ A) @ B @ C``, with a
    ``hidden``-square product (300 MFLOP at batch 64: milliseconds on any CPU)."""
    from onnx import helper

    return onnx_model(
        [
            helper.make_node("MatMul", ["x", "a"], ["h1"]),
            helper.make_node("MatMul", ["h1", "b"], ["h2"]),
            helper.make_node("MatMul", ["h2", "c"], ["r"]),
        ],
        {"x": ["batch", WIDTH]},
        {"r": ["batch", WIDTH]},
        {
            "a": np.full((WIDTH, hidden), 0.01, np.float32),
            "b": np.full((hidden, hidden), 1 / hidden, np.float32),
            "c": np.full((hidden, WIDTH), 0.01, np.float32),
        },
    )


def test_the_offload_decision_counts_the_detector_in_the_batch_job(tmp_path: Path) -> None:
    """Which batches leave the event loop is decided on the batch job's time at load: for a
    flagged signature that is the model and its detector (loaded first: names in order)."""
    root = tmp_path / "models"
    _publish_detector(root, "heavy", _heavy_onnx())
    pairing = {"detector": "heavy", "threshold": 1.0}
    publish(root, manifest("paired", ood=pairing), {"model.onnx": affine_onnx()})
    publish(root, manifest("plain"), {"model.onnx": affine_onnx()})
    with InProcess(root) as server:
        offload = {
            name: server.registry.models[name].latest().batchers["predict"].offload_from
            for name in ("paired", "plain")
        }
        body = {
            "inputs": [{"name": "x", "shape": [2, WIDTH], "datatype": "FP32", "data": [0.5] * 8}]
        }
        answer = server.request("POST", "/v2/models/paired/infer", json=body)
    # The same tiny affine graph: never offloaded alone (microseconds at any batch); with
    # its detector, batches from some size on take more than OFFLOAD_ABOVE_S inline.
    assert offload["plain"] is None, offload
    assert offload["paired"] is not None, offload
    assert answer.status_code == 200, answer.text
    scores = {o["name"]: o["data"] for o in answer.json()["outputs"]}["ood_score"]
    assert len(scores) == 2 and all(np.isfinite(scores)), scores
