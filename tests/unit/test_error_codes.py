"""Error codes no other test provoked, provoked here through the service's real ASGI app and
its real gRPC servicer in this process (``tests.unit.synthetic.InProcess``): each answer's
code, its HTTP status and its gRPC status are the catalogue's (``service.errors.CATALOGUE``,
as each protocol answers it: ``errors.protocol_status``). Where a code cannot arise over
gRPC, the test says why and checks the catalogue's gRPC entry is the one its HTTP status
maps to. The connection-level codes (``header_timeout``, ``too_many_connections``) need a
real server's sockets: ``tests/test_error_codes.py``."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image
from tritonclient.grpc import service_pb2 as pb

from service.errors import CATALOGUE, protocol_status
from tests.unit.synthetic import (
    WIDTH,
    InProcess,
    affine_onnx,
    failing_onnx,
    manifest,
    publish,
    signature,
    tensor,
)
from tests.unit.test_errors import GRPC_OF_HTTP

TOKEN = "unit-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
LABELS = [f"class {i}" for i in range(10)]


def digits_onnx() -> bytes:
    """``p = softmax(reshape(x, 784) @ 0)``: an MNIST-shaped image model (uniform answer)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "flat"], ["f"]),
            helper.make_node("MatMul", ["f", "w"], ["h"]),
            helper.make_node("Softmax", ["h"], ["p"], axis=1),
        ],
        "digits",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 28, 28])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 10])],
        [
            numpy_helper.from_array(np.array([-1, 784], np.int64), "flat"),
            numpy_helper.from_array(np.zeros((784, 10), np.float32), "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("error-codes") / "models"
    publish(root, manifest("affine"), {"model.onnx": affine_onnx()})
    failing = signature(outputs=[tensor("y", [-1, WIDTH])])
    publish(
        root, manifest("failing", signatures={"predict": failing}), {"model.onnx": failing_onnx()}
    )
    image = signature(
        inputs=[tensor("x", [-1, 28, 28], range=[0.0, 1.0])],
        outputs=[tensor("p", [-1, 10])],
        input_kind="mnist_image",
        answer="digit",
    )
    described = manifest("digits", signatures={"predict": image}, labels=LABELS)
    publish(root, described, {"model.onnx": digits_onnx()})
    # published whole (its sha256 matches), but no ONNX graph: it never becomes ready
    publish(root, manifest("broken"), {"model.onnx": b"not an ONNX graph"})
    with InProcess(root, SERVING_ADMIN_TOKEN=TOKEN) as running:
        yield running


def expect_http(answer, code: str, protocol: str = "native") -> dict:
    status = CATALOGUE[code].status if protocol == "native" else protocol_status(code, protocol)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["code"] == code, body
    return body


def expect_grpc(service: InProcess, code: str, method: str, message) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        service.grpc(method, message)
    assert raised.value.code() is grpc.StatusCode[CATALOGUE[code].grpc], raised.value
    return raised.value.details()


def http_only(code: str) -> None:
    """A code that cannot arise over gRPC: its catalogued gRPC status is still the one its
    HTTP status maps to (what a gRPC client would see for the same fault)."""
    declared = CATALOGUE[code]
    assert declared.grpc == GRPC_OF_HTTP[declared.status], (code, declared)


def _infer(model: str, name: str, datatype: str, shape: list[int], **contents) -> object:
    request = pb.ModelInferRequest(model_name=model)
    entry = request.inputs.add(name=name, datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(entry.contents, field).extend(values)
    return request


def _png(side: int = 28) -> bytes:
    out = io.BytesIO()
    Image.new("L", (side, side)).save(out, "PNG")
    return out.getvalue()


# -- internal: a fault of the model is the catalogue's 500 on every protocol -----------------

FAULT = [[9.0, 0.0, 0.0, 0.0]]  # index 9 of a row of 4: ONNX Runtime fails the run


@pytest.mark.parametrize(
    ("path", "body", "protocol"),
    [
        ("/models/failing/predict", {"inputs": FAULT}, "native"),
        (
            "/v2/models/failing/infer",
            {"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": FAULT}]},
            "v2",
        ),
        ("/v1/models/failing:predict", {"instances": FAULT}, "tfserving"),
    ],
    ids=["native", "v2", "tfserving"],
)
def test_a_model_that_fails_is_internal_with_the_request_id(service, path, body, protocol) -> None:
    answer = service.request("POST", path, json=body, headers={"x-request-id": "fault-1"})
    reply = expect_http(answer, "internal", protocol)
    assert reply["error"] == "internal error" and reply["request_id"] == "fault-1", reply
    assert answer.headers["x-request-id"] == "fault-1"
    for leak in ("Traceback", "onnxruntime", ".py", "GatherElements", "out of", "/"):
        assert leak not in answer.text, f"{leak!r} leaked: {answer.text}"
    # the same model answers a valid request afterwards
    fine = {"inputs": [[1.0, 0.0, 0.0, 0.0]]}
    assert service.request("POST", "/models/failing/predict", json=fine).status_code == 200


def test_a_model_that_fails_is_internal_over_grpc(service) -> None:
    request = _infer("failing", "x", "FP32", [1, WIDTH], fp32_contents=FAULT[0])
    details = expect_grpc(service, "internal", "ModelInfer", request)
    assert details == "internal error", details


# -- the body ---------------------------------------------------------------------------------


def test_lists_nested_deeper_than_any_tensor_are_too_deeply_nested(service) -> None:
    deep = b"[" * 1000 + b"0" + b"]" * 1000
    # TF Serving's rows and columns are walked as nested lists (the native reader refuses
    # the same body as a ragged tensor before it walks it)
    for body in (b'{"instances": ' + deep + b"}", b'{"inputs": ' + deep + b"}"):
        answer = service.request(
            "POST",
            "/v1/models/affine:predict",
            content=body,
            headers={"content-type": "application/json"},
        )
        expect_http(answer, "too_deeply_nested", "tfserving")
    # JSON only: gRPC's tensors are typed protobuf contents with an explicit shape
    http_only("too_deeply_nested")


def test_an_empty_image_file_is_empty_image(service) -> None:
    files = [("image", ("a.png", _png(), "image/png")), ("image", ("b.png", b"", "image/png"))]
    body = expect_http(service.request("POST", "/digits/predict", files=files), "empty_image")
    assert body["item"] == 1
    request = _infer("digits", "x", "BYTES", [1], bytes_contents=[b""])
    assert "empty file" in expect_grpc(service, "empty_image", "ModelInfer", request)


def test_a_body_without_images_is_empty_batch_422_as_an_empty_json_batch(service) -> None:
    files = {"note": (None, "no file here")}
    expect_http(service.request("POST", "/digits/predict", files=files), "empty_batch")
    answer = service.request("POST", "/models/affine/predict", json={"inputs": []})
    expect_http(answer, "empty_batch")


# -- models and the repository ------------------------------------------------------------


def test_a_version_without_reference_data_is_no_reference(service) -> None:
    body = expect_http(service.request("GET", "/models/affine/drift.png"), "no_reference")
    assert "no reference.json" in body["error"]
    # an HTTP page of the model (a PNG): gRPC has no such method
    http_only("no_reference")


def test_a_model_that_never_loads_is_not_ready_and_model_not_ready(service) -> None:
    answer = service.request("GET", "/v2/health/ready")
    body = expect_http(answer, "not_ready")
    assert body["ready"] is False and "broken" in body["models"], body
    body = expect_http(service.request("GET", "/v2/models/broken/ready"), "model_not_ready")
    assert body["ready"] is False
    assert service.request("GET", "/v2/models/affine/ready").status_code == 200
    # gRPC's ServerReady and ModelReady answer OK with ready=false (the V2 protocol's
    # readiness is a boolean there), so the codes' gRPC statuses never travel
    assert service.grpc("ServerReady", pb.ServerReadyRequest()).ready is False
    assert service.grpc("ModelReady", pb.ModelReadyRequest(name="broken")).ready is False
    assert service.grpc("ModelReady", pb.ModelReadyRequest(name="affine")).ready is True
    http_only("not_ready")
    http_only("model_not_ready")


def test_a_repository_that_cannot_be_reached_is_repository_unreachable(
    tmp_path, monkeypatch
) -> None:
    """An S3 repository (moto's server, in this process) read once, then gone: the
    repository API's load is 503 ``repository_unreachable`` with ``Retry-After``, and
    gRPC's RepositoryModelLoad its catalogued UNAVAILABLE."""
    import boto3
    from moto.server import ThreadedMotoServer

    store = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    store.start()
    host, port = store.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models")
        environ = {
            "MODEL_REPOSITORY": "s3://models/repo",
            "SERVING_ADMIN_TOKEN": TOKEN,
            "SERVING_CACHE_DIR": str(tmp_path / "cache"),
        }
        with InProcess(tmp_path / "repo", **environ) as service:  # listed once: reachable
            store.stop()
            answer = service.request("POST", "/v2/repository/models/affine/load", headers=ADMIN)
            body = expect_http(answer, "repository_unreachable", "v2")
            assert int(answer.headers["retry-after"]) >= 1 and "unreachable" in body["error"]
            request = pb.RepositoryModelLoadRequest(model_name="affine")
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                service.grpc("RepositoryModelLoad", request, tuple(ADMIN.items()))
            assert raised.value.code() is grpc.StatusCode[CATALOGUE["repository_unreachable"].grpc]
    finally:
        store.stop()
