"""The Open Inference Protocol over gRPC with Triton's own clients (``tritonclient.grpc`` and
``perf_analyzer -i grpc``) against a real ``bentoml serve``: every model answers what the
same request answers over HTTP and the golden value (``tests/golden.py``: ONNX Runtime on the
published graph, preprocessing written in the test), errors are gRPC status codes, and the
calls count in the same metrics."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from benchmarks import perf_analyzer
from benchmarks.payloads import bank_records, flower_files, mnist_test, png_bytes
from modelspec import bank
from service import portclaim
from tests import golden
from tests.test_hostile import AUTH, HOSTILE_SHAPES, _field, _raw_call
from tests.test_service import metric

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def clients(grpc_url: str, service_url: str):
    over_grpc = tgrpc.InferenceServerClient(grpc_url)
    over_http = thttp.InferenceServerClient(service_url.removeprefix("http://"))
    yield over_grpc, over_http
    over_grpc.close()
    over_http.close()


def _input(module, name: str, value: np.ndarray, datatype: str):
    item = module.InferInput(name, list(value.shape), datatype)
    item.set_data_from_numpy(value)
    return item


def _both(clients, model: str, inputs: list[tuple[str, np.ndarray, str]], outputs: list[str]):
    """The same request over gRPC and over HTTP; each output from both."""
    over_grpc, over_http = clients
    answers = []
    for module, client in ((tgrpc, over_grpc), (thttp, over_http)):
        result = client.infer(model, [_input(module, n, v, d) for n, v, d in inputs])
        answers.append({o: result.as_numpy(o) for o in outputs})
    return answers


def test_every_model_answers_as_over_http(clients, data_dir: Path, quick_repository: Path) -> None:
    images, _ = mnist_test(data_dir, 3)
    pixels = golden.mnist_pixels(images)
    pngs = np.array([png_bytes(image) for image in images], dtype=object)
    photos = np.array([f.read_bytes() for f in flower_files(data_dir, 2)], dtype=object)
    records = bank_records(data_dir, 3)
    columns = [
        (
            c,
            np.array([[r[c]] for r in records], np.int64 if c in bank.NUMERIC else object),
            "INT64" if c in bank.NUMERIC else "BYTES",
        )
        for c in bank.COLUMNS
    ]
    flat = pixels.reshape(3, 784)
    cases = [
        ("digits", [("image", pixels, "FP32")], ["probabilities"]),
        ("digits", [("image", pngs, "BYTES")], ["probabilities"]),
        ("flowers", [("image", photos, "BYTES")], ["probabilities"]),
        ("bank", columns, ["probability", "label"]),
        ("autoencoder_encode", [("pixels", flat, "FP32")], ["code"]),
        ("autoencoder_reconstruct", [("pixels", flat, "FP32")], ["reconstruction"]),
    ]
    size = golden.check_photo_contract(golden.manifest(quick_repository, "flowers"))
    bank_manifest = golden.manifest(quick_repository, "bank")
    # Each case's first output by ONNX Runtime on the graph (its file, its prepared input,
    # the tolerance): neither protocol's answer is the reference for the other.
    graphs = [
        ("digits", "model.onnx", pixels, TOLERANCE),
        ("digits", "model.onnx", golden.digit_files(list(pngs)), TOLERANCE),
        (
            "flowers",
            "model.onnx",
            np.stack([golden.photo(f, size) for f in photos]),
            golden.FLOWER_TOLERANCE,
        ),
        ("bank", "model.onnx", golden.bank_features(records, bank_manifest), TOLERANCE),
        ("autoencoder", "encoder.onnx", flat, 1e-4),  # as tests/test_service.py
        ("autoencoder", "model.onnx", flat, TOLERANCE),
    ]
    for (model, inputs, outputs), graph in zip(cases, graphs, strict=True):
        over_grpc, over_http = _both(clients, model, inputs, outputs)
        for name in outputs:
            if over_http[name].dtype == object:
                assert over_grpc[name].tolist() == over_http[name].tolist(), model
            else:
                np.testing.assert_allclose(over_grpc[name], over_http[name], atol=TOLERANCE)
        expected = golden.onnx(quick_repository, *graph[:3])
        np.testing.assert_allclose(over_grpc[outputs[0]], expected, atol=graph[3], err_msg=model)
        if model == "bank":
            threshold = bank_manifest["decision"]["threshold"]
            labels = [v.decode() if isinstance(v, bytes) else v for v in over_grpc["label"].ravel()]
            assert labels == ["yes" if p >= threshold else "no" for p in expected[:, 0]]
    codes = _both(clients, "autoencoder_encode", [("pixels", flat, "FP32")], ["code"])[0]["code"]
    decoded = _both(clients, "autoencoder_decode", [("code", codes, "FP32")], ["reconstruction"])
    np.testing.assert_allclose(
        decoded[0]["reconstruction"], decoded[1]["reconstruction"], atol=TOLERANCE
    )


def test_metadata_config_and_health(clients) -> None:
    over_grpc, over_http = clients
    assert over_grpc.is_server_live() and over_grpc.is_server_ready()
    assert "binary_tensor_data" in over_grpc.get_server_metadata().extensions
    for name in ("digits", "flowers", "bank", "autoencoder_encode"):
        assert over_grpc.is_model_ready(name) and over_grpc.is_model_ready(name, "1")
        metadata = over_grpc.get_model_metadata(name, as_json=True)
        for tensor in metadata["inputs"] + metadata["outputs"]:
            tensor["shape"] = [int(d) for d in tensor["shape"]]  # protobuf JSON: int64 as text
        assert metadata == over_http.get_model_metadata(name)
    assert not over_grpc.is_model_ready("digits", "7")
    config = over_grpc.get_model_config("digits", as_json=True)["config"]
    assert config["max_batch_size"] == 64
    assert config["input"][0]["data_type"] == "TYPE_FP32"


def test_errors_are_grpc_status_codes(clients) -> None:
    over_grpc, _ = clients
    image = _input(tgrpc, "image", np.zeros((1, 27, 28), np.float32), "FP32")
    cases = [
        ("nope", [image], grpc.StatusCode.NOT_FOUND, "no model named 'nope'"),
        ("digits", [image], grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        (
            "digits",
            [_input(tgrpc, "pixels", np.zeros((1, 28, 28), np.float32), "FP32")],
            grpc.StatusCode.INVALID_ARGUMENT,
            "no input 'pixels'",
        ),
    ]
    for model, inputs, code, text in cases:
        with pytest.raises(InferenceServerException) as raised:
            over_grpc.infer(model, inputs)
        assert raised.value.status() == str(code) and text in raised.value.message()
    good = _input(tgrpc, "image", np.zeros((1, 28, 28), np.float32), "FP32")
    with pytest.raises(InferenceServerException) as raised:
        over_grpc.infer("digits", [good], outputs=[tgrpc.InferRequestedOutput("logits")])
    assert raised.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "no output 'logits'" in raised.value.message()
    with pytest.raises(InferenceServerException) as raised:
        over_grpc.infer("digits", [image], model_version="9")
    assert raised.value.status() == str(grpc.StatusCode.NOT_FOUND)
    with pytest.raises(InferenceServerException) as raised:
        over_grpc.get_model_repository_index()
    assert raised.value.status() == str(grpc.StatusCode.PERMISSION_DENIED)  # no token set


def test_malformed_protobuf_requests_are_refused_by_code(grpc_url: str) -> None:
    """What tritonclient never sends but a hand-written client can: each refused with a
    status code and a bounded message, never INTERNAL or UNKNOWN."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    def tensor(datatype: str, shape: list[int], **contents):
        return service_pb2.ModelInferRequest.InferInputTensor(
            name="image",
            datatype=datatype,
            shape=shape,
            contents=service_pb2.InferTensorContents(**contents) if contents else None,
        )

    zeros = np.zeros((1, 28, 28), np.float32)
    both = service_pb2.ModelInferRequest(
        model_name="digits",
        inputs=[tensor("FP32", [1, 28, 28], fp32_contents=zeros.ravel().tolist())],
        raw_input_contents=[zeros.tobytes()],
    )
    # bank's numeric columns take INT8 (digits' image would refuse the datatype itself)
    age = service_pb2.ModelInferRequest.InferInputTensor(
        name="age", datatype="INT8", shape=[1, 1], contents={"int_contents": [1000]}
    )
    # Every other column present (headers are checked before any data: a missing one would be
    # refused first), each with its declared datatype; age comes first, so its data is read first.
    others = [
        service_pb2.ModelInferRequest.InferInputTensor(
            name=column.name,
            datatype=column.datatype,
            shape=[1, 1],
            contents={"bytes_contents": [b"x"]}
            if column.datatype == "BYTES"
            else {"fp32_contents": [0.0]},
        )
        for column in bank_inputs(grpc_url)
        if column.name != "age"
    ]
    wide = service_pb2.ModelInferRequest(model_name="bank", inputs=[age, *others])
    half = service_pb2.ModelInferRequest(
        model_name="digits", inputs=[tensor("FP16", [1, 28, 28], fp32_contents=[0.0] * 784)]
    )
    long_name = service_pb2.ModelInferRequest(model_name="x" * 100_000)
    with grpc.insecure_channel(
        grpc_url, options=[("grpc.max_send_message_length", 8 << 20)]
    ) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        cases = [
            (both, grpc.StatusCode.INVALID_ARGUMENT, "raw"),
            (wide, grpc.StatusCode.INVALID_ARGUMENT, "does not fit INT8"),
            (half, grpc.StatusCode.INVALID_ARGUMENT, "FP16"),
            (long_name, grpc.StatusCode.NOT_FOUND, "no model named"),
        ]
        for request, code, text in cases:
            with pytest.raises(grpc.RpcError) as raised:
                stub.ModelInfer(request, timeout=10)
            assert raised.value.code() == code, raised.value.details()
            assert text in raised.value.details() and len(raised.value.details()) <= 1000
        with pytest.raises(grpc.RpcError) as raised:
            stub.CudaSharedMemoryStatus(service_pb2.CudaSharedMemoryStatusRequest(), timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def bank_inputs(grpc_url: str) -> list:
    """bank's inputs as its gRPC ModelMetadata declares them."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return list(stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="bank")).inputs)


def test_perf_analyzer_over_grpc_and_the_shared_metrics(grpc_url, service_url, data_dir, tmp_path):
    images, _ = mnist_test(data_dir, 64)
    data = perf_analyzer.write_input_data(images, tmp_path / "digits.json")
    path = "/v2/models/digits/infer"
    with httpx.Client(base_url=service_url, timeout=30) as client:
        before = metric(client, "serving_requests_total", endpoint=path, status="200")
        rows = perf_analyzer.run(
            grpc_url,
            "digits",
            data,
            "1:2",
            tmp_path,
            interval_ms=500,
            protocol="grpc",
            stability_pct=100,
        )
        assert sorted(row["Concurrency"] for row in rows) == [1, 2]  # CSV by throughput
        assert all(row["Inferences/Second"] > 0 for row in rows)
        # At least one 0.5 s window per level of what perf_analyzer measured in this run.
        served = metric(client, "serving_requests_total", endpoint=path, status="200") - before
        windows = sum(row["Inferences/Second"] * 0.5 for row in rows)
        assert served >= max(1.0, windows), f"server counted {served}, perf_analyzer {windows:.0f}"


def test_port_claims_let_one_servers_workers_share_and_refuse_others(tmp_path: Path) -> None:
    port = 40000 + os.getpid() % 20000  # a lock file no real server of this run uses
    first, second = portclaim.claim(port, server=111), portclaim.claim(port, server=111)
    with pytest.raises(portclaim.PortTaken, match="process 111"):
        portclaim.claim(port, server=222)
    first.close()
    with pytest.raises(portclaim.PortTaken):
        portclaim.claim(port, server=222)  # one worker of server 111 still holds it
    second.close()
    portclaim.claim(port, server=222).close()  # server 111 is gone: the port is free


def test_a_second_server_cannot_join_the_grpc_port(
    service, clients, quick_repository: Path, tmp_path: Path
) -> None:
    """Workers share their gRPC port (SO_REUSEPORT); a second server started on the same port
    must not silently take a share of the first one's calls: it serves HTTP only and says why.
    """
    from benchmarks.servers import Server

    over_grpc, _ = clients
    image = _input(tgrpc, "image", np.zeros((1, 28, 28), np.float32), "FP32")
    env = {"MODEL_REPOSITORY": str(quick_repository), "SERVING_GRPC_PORT": str(service.grpc_port)}
    log = tmp_path / "second.log"
    with Server(env=env, log=log) as second:
        second.wait_until("/readyz", timeout=300)
        assert f"gRPC port {service.grpc_port} is served by another server" in log.read_text()
        counted = {"endpoint": "/v2/models/digits/infer"}
        before = metric(httpx.Client(base_url=service.url), "serving_requests_total", **counted)
        for _ in range(40):  # new connections, which the kernel would spread over listeners
            with tgrpc.InferenceServerClient(f"127.0.0.1:{service.grpc_port}") as client:
                client.infer("digits", [image])
        after = metric(httpx.Client(base_url=service.url), "serving_requests_total", **counted)
        assert after - before == 40, "the second server answered some of the first's gRPC calls"
        assert httpx.get(second.url + "/v2/health/ready").status_code == 200
    over_grpc.infer("digits", [image])  # the first server's gRPC is untouched


# -- hostile messages (issue 22): never UNKNOWN or INTERNAL -------------------------------------


@pytest.fixture(scope="module")
def channel(grpc_url: str):
    with grpc.insecure_channel(grpc_url) as channel:
        yield channel


def test_shapes_no_array_can_hold_are_refused_over_grpc(channel: grpc.Channel) -> None:
    for shape in [*HOSTILE_SHAPES, [2**64 - 1, 0]]:
        for form in ("raw", "typed"):
            request = pb.ModelInferRequest(model_name="digits")
            tensor = request.inputs.add(name="image", datatype="FP32", shape=[])
            # int64 on the wire: 2**64 - 1 arrives as -1
            tensor.shape.extend([d if d < 2**63 else d - 2**64 for d in shape])
            if form == "raw":
                request.raw_input_contents.append(b"")
            else:
                tensor.contents.fp32_contents.extend([])
            error = _raw_call(channel, "ModelInfer", request.SerializeToString())
            assert isinstance(error, grpc.RpcError), (shape, form)
            assert error.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ), (shape, form, error.code(), error.details())


def test_malformed_grpc_messages_are_invalid_argument(channel: grpc.Channel) -> None:
    not_utf8 = [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"abc\x80"]
    cases = {
        # undecodable bytes: a truncated field, a bad wire type, a varint that never ends
        "garbage": [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x0f", b"\x08" + b"\xff" * 11],
        # string fields that are not UTF-8
        "ModelInfer": [_field(1, s) for s in not_utf8]  # model_name
        + [_field(2, s) for s in not_utf8]  # model_version
        + [_field(3, s) for s in not_utf8]  # id
        + [_field(5, _field(1, s)) for s in not_utf8],  # inputs[0].name
        "ModelMetadata": [_field(1, s) for s in not_utf8],
        "ModelReady": [_field(1, s) for s in not_utf8],
        "ModelConfig": [_field(1, s) for s in not_utf8],
        "RepositoryModelLoad": [_field(2, s) for s in not_utf8],
        "RepositoryModelUnload": [_field(2, s) for s in not_utf8],
        "RepositoryIndex": [_field(1, s) for s in not_utf8],
    }
    methods = [
        "ModelInfer",
        "ModelMetadata",
        "ModelReady",
        "ModelConfig",
        "ServerLive",
        "RepositoryIndex",
        "RepositoryModelLoad",
    ]
    for method in methods:
        for data in cases["garbage"]:
            error = _raw_call(
                channel, method, data, metadata=(("authorization", AUTH["authorization"]),)
            )
            assert isinstance(error, grpc.RpcError), (method, data)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, data, error)
            assert "Traceback" not in (error.details() or "")
    for method, messages in cases.items():
        if method == "garbage":
            continue
        for data in messages:
            error = _raw_call(
                channel, method, data, metadata=(("authorization", AUTH["authorization"]),)
            )
            assert isinstance(error, grpc.RpcError), (method, data)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, data, error)
    live = _raw_call(channel, "ServerLive", b"")
    assert pb.ServerLiveResponse.FromString(live).live


def test_odd_parameters_are_invalid_argument(channel: grpc.Channel) -> None:
    """Output parameters no answer can honour: NaN, infinite, negative, text and bool class
    counts, on a classifier's output and on a non-classifier's."""
    for model, output in (("digits", "probabilities"), ("autoencoder_encode", "code")):
        for value in (
            {"double_param": float("nan")},
            {"double_param": float("inf")},
            {"double_param": 2.5},
            {"int64_param": -1},
            {"string_param": "3"},
            {"bool_param": True},
        ):
            request = pb.ModelInferRequest(model_name=model)
            name = "image" if model == "digits" else "pixels"
            shape = [1, 28, 28] if model == "digits" else [1, 784]
            tensor = request.inputs.add(name=name, datatype="FP32", shape=shape)
            tensor.contents.fp32_contents.extend([0.0] * 784)
            wanted = request.outputs.add(name=output)
            setattr(wanted.parameters["classification"], *next(iter(value.items())))
            error = _raw_call(channel, "ModelInfer", request.SerializeToString())
            assert isinstance(error, grpc.RpcError), (model, value)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (model, value, error)
