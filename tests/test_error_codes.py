"""Each error code that no other test provoked, provoked here against a real ``bentoml serve``,
asserting its code, its HTTP status and, where the request can travel over gRPC, its gRPC
status, all as ``service.errors.CATALOGUE`` declares them; 5xx refusals are read back from
``serving_requests_shed_total``.

The image codes use the session's server (the quick models). The rest need a repository of
their own: ``affine`` (a user's ONNX graph, ``y = x @ w + b``, that overflows to infinity
for huge but finite inputs) and ``slow`` (the same answer after a loop of 256x256 matrix
products, ~0.5 ms each here: ``BASE_TRIPS`` of them always, so loading and warming it up
takes seconds, plus as many as the largest input value, so a request can outlast the
timeout), served with a 1 s request timeout and room for one request in progress.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from PIL import Image
from tritonclient.utils import InferenceServerException

from benchmarks.servers import Server
from service.errors import CATALOGUE
from tests.conftest import run_cli
from tests.test_service import metric
from tests.unit.test_errors import GRPC_OF_HTTP
from tests.user_models import CLASSES, WIDTH, onnx_weights, tiny_onnx

pytestmark = pytest.mark.slow
TOKEN = "error-codes-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
TIMEOUT_S = 1.0
BASE_TRIPS = 1500  # ~0.75 s a run here; the warm-up runs it four times
SIDE = 256
V2_AS_400 = (406, 415, 422)  # V2 and TF Serving answer these as 400
HEADER_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 8


def expect_http(response: httpx.Response, code: str, protocol: str = "native") -> dict:
    """The response is the code's refusal, with the catalogue's status (as the protocol
    answers it) and a JSON body naming the code."""
    status = CATALOGUE[code].status
    if protocol != "native" and status in V2_AS_400:
        status = 400
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    return body


def expect_grpc(raised: pytest.ExceptionInfo, code: str, text: str) -> None:
    error = raised.value
    assert error.status() == str(grpc.StatusCode[CATALOGUE[code].grpc]), error
    assert text in error.message(), error.message()


def _input(name: str, value: np.ndarray, datatype: str) -> tgrpc.InferInput:
    item = tgrpc.InferInput(name, list(value.shape), datatype)
    item.set_data_from_numpy(value)
    return item


def _png(size: tuple[int, int], frames: int = 1) -> bytes:
    images = [Image.new("L", size, color=40 * i) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "PNG", save_all=frames > 1, append_images=images[1:])
    return out.getvalue()


# -- codes the quick models reach (the session's server) ------------------------------------


@pytest.fixture(scope="module")
def session_clients(service, grpc_url: str):
    over_grpc = tgrpc.InferenceServerClient(grpc_url)
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client, over_grpc
    over_grpc.close()


@pytest.mark.parametrize(
    ("code", "png", "text"),
    [
        ("image_too_small", _png((4, 28)), "4x28 pixels"),
        ("animated_image", _png((28, 28), frames=2), "animated"),
    ],
    ids=["image_too_small", "animated_image"],
)
def test_image_codes(session_clients, code: str, png: bytes, text: str) -> None:
    client, over_grpc = session_clients
    answer = client.post("/digits/predict", content=png, headers={"content-type": "image/png"})
    body = expect_http(answer, code)
    assert text in body["error"] and body["item"] == 0
    files = {"image": ("a.png", png, "image/png")}
    expect_http(client.post("/digits/predict", files=files), code)
    with pytest.raises(InferenceServerException) as raised:  # the PNG as a BYTES input
        over_grpc.infer("digits", [_input("image", np.array([png], dtype=object), "BYTES")])
    expect_grpc(raised, code, text)


def test_an_input_given_twice_is_duplicate_input(session_clients) -> None:
    client, over_grpc = session_clients
    image = {"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}
    answer = client.post("/v2/models/digits/infer", json={"inputs": [image, image]})
    expect_http(answer, "duplicate_input", "v2")
    pixels = np.zeros((1, 28, 28), np.float32)
    twice = [_input("image", pixels, "FP32"), _input("image", pixels, "FP32")]
    with pytest.raises(InferenceServerException) as raised:
        over_grpc.infer("digits", twice)
    expect_grpc(raised, "duplicate_input", "given twice")


# -- codes that need a repository and settings of their own ---------------------------------


def slow_onnx(path: Path) -> Path:
    """``affine``'s answer after ``BASE_TRIPS + max(x)`` products of a 256x256 matrix (a
    Loop whose result is multiplied by zero: the answer stays ``x @ w + b``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    square = [SIDE, SIDE]
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["s_in", "m"], ["p"]),
            helper.make_node("Tanh", ["p"], ["s_out"]),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_in", TensorProto.FLOAT, square),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_out", TensorProto.FLOAT, square),
        ],
    )
    w, b = onnx_weights()
    rng = np.random.default_rng(0)
    constants = {
        "w": w,
        "b": b,
        "base": np.array(BASE_TRIPS, np.int64),
        "yes": np.array(True),
        "zero": np.float32(0),
        "s0": rng.standard_normal(square).astype(np.float32) / 16,
        "m": rng.standard_normal(square).astype(np.float32) / 16,
    }
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
        helper.make_node("Cast", ["top"], ["extra"], to=TensorProto.INT64),
        helper.make_node("Add", ["extra", "base"], ["trips"]),
        helper.make_node("Loop", ["trips", "yes", "s0"], ["s"], body=body),
        helper.make_node("ReduceSum", ["s"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["h2"]),
        helper.make_node("Add", ["h2", "nothing"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the pinned ONNX Runtime reads
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def copy_version(source: Path, target: Path, name: str, graph: bytes) -> Path:
    """A published version of ``source`` under another name, with another model.onnx (its
    manifest's sha256 updated: the file is what the manifest says, whatever it holds)."""
    shutil.copytree(source, target)
    (target / "model.onnx").write_bytes(graph)
    manifest_path = target / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["name"] = name
    manifest["files"]["model.onnx"] = hashlib.sha256(graph).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return target


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("error-codes")
    repository = work / "models"
    result = run_cli(
        "export", "--model", str(tiny_onnx(work / "affine.onnx")), "--out", str(repository)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    slow = slow_onnx(work / "slow.onnx").read_bytes()
    copy_version(repository / "affine" / "1", repository / "slow" / "1", "slow", slow)
    env = {
        "MODEL_REPOSITORY": str(repository),
        "SERVING_ADMIN_TOKEN": TOKEN,
        "SERVING_STATE_DIR": str(work / "state"),
        "SERVING_POLL_INTERVAL": "0",  # the repository changes only through the API here
        "SERVING_REQUEST_TIMEOUT_S": str(TIMEOUT_S),
        "SERVING_MAX_CONCURRENCY": "1",
        "SERVING_WORKERS": "1",
        # The connection layer's codes: headers due within 2 s, and few connections (this
        # file's clients hold at most 3 at once: a request in a thread beside a probe loop)
        "SERVING_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "SERVING_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    log = work / "serve.log"
    with Server(env=env, log=log) as server:
        try:
            server.wait_until("/readyz", timeout=300)
        except Exception:
            print(log.read_text()[-4000:])
            raise
        over_grpc = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield client, over_grpc, repository
        over_grpc.close()


def _row(value: float) -> list[list[float]]:
    return [[value] * WIDTH]


def _trips_taking(client: httpx.Client, seconds: float) -> float:
    """Loop trips of the slow model that take about ``seconds`` on this machine now: 6,000
    took ~3 s on a busy day and under the 1 s timeout on an idle one, so it is measured."""

    def took(trips: float) -> float | None:
        started = time.monotonic()
        answer = client.post("/models/slow/predict", json={"inputs": _row(trips)})
        if answer.status_code == 504:  # this machine is slower than the probe allowed for
            return None
        assert answer.status_code == 200, answer.text
        return time.monotonic() - started

    # Two sizes, so the request's own time (HTTP, batching) cancels out of the per-trip time;
    # both well under the timeout on a busy machine (~0.5 ms a trip there).
    small, large = took(200.0), took(1000.0)
    if small is None or large is None:
        return 12_000.0
    per_trip = max((large - small) / 800, 1e-6)
    return float(min(max(6000.0, seconds / per_trip), 200_000))


def test_a_request_while_the_model_loads_is_model_loading(edge) -> None:
    """Unload ``slow``, then load it again: its warm-up takes seconds, and every request
    meanwhile is 503 ``model_loading`` with ``Retry-After: 5`` (UNAVAILABLE over gRPC)."""
    client, over_grpc, _ = edge
    assert client.post("/v2/repository/models/slow/unload", headers=AUTH).status_code == 200
    before = metric(client, "serving_requests_shed_total", reason="model_loading")
    loaded: list[httpx.Response] = []
    loading = threading.Thread(
        target=lambda: loaded.append(client.post("/v2/repository/models/slow/load", headers=AUTH))
    )
    loading.start()
    answers, grpc_errors = [], []
    try:
        while loading.is_alive():
            answer = client.post("/models/slow/predict", json={"inputs": _row(0.0)})
            answers.append(answer)
            if answer.status_code == 503 and answer.json()["code"] == "model_loading":
                try:
                    over_grpc.infer("slow", [_input("x", np.zeros((1, WIDTH), np.float32), "FP32")])
                except InferenceServerException as error:
                    grpc_errors.append(error)
            time.sleep(0.02)
    finally:
        loading.join()
    seen = [a.json()["code"] for a in answers if a.status_code != 200]
    # Before the load begins, the unloaded model is model_unavailable; then it loads.
    assert set(seen) <= {"model_unavailable", "model_loading"}, seen
    loading_answers = [
        a for a in answers if a.status_code != 200 and a.json()["code"] == "model_loading"
    ]
    assert loading_answers, f"no request saw the load ({len(answers)} sent: {seen})"
    for answer in loading_answers:
        expect_http(answer, "model_loading")
        assert answer.headers["retry-after"] == "5"
    assert any(e.status() == str(grpc.StatusCode.UNAVAILABLE) for e in grpc_errors), grpc_errors
    assert all("is loading" in e.message() for e in grpc_errors if "UNAVAILABLE" in e.status())
    after = metric(client, "serving_requests_shed_total", reason="model_loading")
    assert after - before >= len(loading_answers), (before, after, len(loading_answers))
    assert loaded[0].status_code == 200, loaded[0].text
    answer = client.post("/models/slow/predict", json={"inputs": _row(0.0)})
    assert answer.status_code == 200, answer.text


def test_a_finite_input_with_no_finite_answer_is_no_finite_answer(edge) -> None:
    client, over_grpc, _ = edge
    huge = 3e38  # finite in float32; 64 of them times weights up to 1 overflow
    body = expect_http(
        client.post("/models/affine/predict", json={"inputs": _row(huge)}), "no_finite_answer"
    )
    assert body["item"] == 0 and "'y'" in body["error"]
    v2 = {"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": _row(huge)}]}
    expect_http(client.post("/v2/models/affine/infer", json=v2), "no_finite_answer", "v2")
    with pytest.raises(InferenceServerException) as raised:
        over_grpc.infer("affine", [_input("x", np.full((1, WIDTH), huge, np.float32), "FP32")])
    expect_grpc(raised, "no_finite_answer", "no finite 'y'")
    assert client.post("/models/affine/predict", json={"inputs": _row(1.0)}).status_code == 200


def test_a_request_past_the_timeout_is_request_timeout(edge) -> None:
    """``max(x)`` more loop trips than the warm-up's: seconds of work, answered 504 after
    the 1 s timeout (DEADLINE_EXCEEDED over gRPC); the worker still answers afterwards."""
    client, over_grpc, _ = edge
    trips = _trips_taking(client, 4 * TIMEOUT_S)
    before = metric(client, "serving_requests_shed_total", reason="request_timeout")
    started = time.monotonic()
    answer = client.post("/models/slow/predict", json={"inputs": _row(trips)})
    took = time.monotonic() - started
    body = expect_http(answer, "request_timeout")
    assert f"within {TIMEOUT_S:g} s" in body["error"]
    assert took < 30, f"the 504 came after {took:.1f} s, not soon after the {TIMEOUT_S} s timeout"
    with pytest.raises(InferenceServerException) as raised:
        over_grpc.infer("slow", [_input("x", np.full((1, WIDTH), trips, np.float32), "FP32")])
    expect_grpc(raised, "request_timeout", f"no answer within {TIMEOUT_S:g} s")
    after = metric(client, "serving_requests_shed_total", reason="request_timeout")
    assert after - before >= 2, (before, after)
    assert client.post("/models/affine/predict", json={"inputs": _row(1.0)}).status_code == 200


def test_requests_beyond_the_concurrency_limit_are_shed_and_counted(edge) -> None:
    """One request in progress is all this server takes: while a slow one runs, another
    is 503 ``overloaded`` (UNAVAILABLE over gRPC), counted in serving_requests_shed_total."""
    client, over_grpc, _ = edge
    before = metric(client, "serving_requests_shed_total")

    def hold() -> None:
        # A probe in flight at the moment it arrives sheds the slow request itself (seen on a
        # busy machine): it tries again until it holds the place (answered, or 504 at the
        # timeout), within the probe loop's deadline.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = client.post("/models/slow/predict", json={"inputs": _row(6000.0)})
            if answer.status_code != 503:
                return

    holding = threading.Thread(target=hold)
    holding.start()
    shed, grpc_errors = [], []
    try:
        deadline = time.monotonic() + 30
        while holding.is_alive() and not (shed and grpc_errors) and time.monotonic() < deadline:
            answer = client.post("/models/affine/predict", json={"inputs": _row(1.0)})
            if answer.status_code == 503:
                shed.append(answer)
                try:
                    over_grpc.infer(
                        "affine", [_input("x", np.ones((1, WIDTH), np.float32), "FP32")]
                    )
                except InferenceServerException as error:
                    grpc_errors.append(error)
            time.sleep(0.01)
    finally:
        holding.join()
    assert shed, "no request was shed while the slow one held the only place"
    for answer in shed:
        expect_http(answer, "overloaded")
        assert answer.headers["retry-after"] == "1"
    assert grpc_errors and grpc_errors[0].status() == str(grpc.StatusCode.UNAVAILABLE)
    assert "requests in progress" in grpc_errors[0].message()
    after = metric(client, "serving_requests_shed_total")
    assert after - before >= len(shed) + len(grpc_errors), (before, after)


def test_a_model_that_cannot_be_loaded_is_load_failed(edge) -> None:
    """A version whose graph is no ONNX (its sha256 matches its manifest: it is what was
    published): the repository API's load answers 400 ``load_failed`` with the reason, and
    gRPC's RepositoryModelLoad INVALID_ARGUMENT."""
    client, over_grpc, repository = edge
    source = repository / "affine" / "1"
    copy_version(source, repository / "broken" / "1", "broken", b"not an ONNX graph")
    answer = client.post("/v2/repository/models/broken/load", headers=AUTH)
    body = expect_http(answer, "load_failed", "v2")
    assert "failed to load 'broken'" in body["error"]
    with pytest.raises(InferenceServerException) as raised:
        over_grpc.load_model("broken", headers=AUTH)
    expect_grpc(raised, "load_failed", "failed to load 'broken'")
    expect_http(
        client.post("/models/broken/predict", json={"inputs": _row(1.0)}), "model_unavailable"
    )


# -- the connection layer's codes (raw sockets: no client would send these) -----------------


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    """The one answer the connection layer sends before it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def _connection_code(status: int, headers: dict[str, str], body: dict, code: str) -> None:
    assert (status, body["code"]) == (CATALOGUE[code].status, code), (status, body)
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    # A refusal of an HTTP/1.1 connection: gRPC's HTTP/2 has its own limits and never sees
    # it. Its catalogued gRPC status is the one its HTTP status maps to.
    assert CATALOGUE[code].grpc == GRPC_OF_HTTP[CATALOGUE[code].status]


def test_headers_that_never_end_are_header_timeout(edge) -> None:
    client, _, _ = edge
    before = metric(client, "serving_connection_refusals_total", reason="header_timeout")
    with socket.create_connection(("127.0.0.1", client.base_url.port), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /livez HTTP/1.1\r\nhost: x\r\n")  # no blank line: never ends
        status, headers, body = _answer(sock)
        took = time.monotonic() - started
    _connection_code(status, headers, body, "header_timeout")
    assert took >= HEADER_TIMEOUT_S * 0.9, f"answered after {took:.2f} s, before the timeout"
    after = metric(client, "serving_connection_refusals_total", reason="header_timeout")
    assert after == before + 1, (before, after)


def test_connections_past_the_limit_are_too_many_connections(edge) -> None:
    """Open connections, each answered and kept alive, until one is refused: within the limit
    plus this file's pooled ones, with 503 ``too_many_connections`` and ``Retry-After: 1``."""
    client, _, _ = edge
    port = client.base_url.port
    held: list[socket.socket] = []
    refused = None
    try:
        for _ in range(MAX_CONNECTIONS + 4):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            held.append(sock)
            sock.sendall(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
            reply = sock.recv(65536)
            if not reply.startswith(b"HTTP/1.1 200"):
                rest = b""
                while chunk := sock.recv(65536):
                    rest += chunk
                refused = reply + rest
                break
        assert refused is not None, f"{len(held)} connections open, none refused"
        assert len(held) > MAX_CONNECTIONS - 3, f"refused at connection {len(held)}"
    finally:
        for sock in held:
            sock.close()
    head, _, body = refused.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    _connection_code(int(lines[0].split()[1]), headers, json.loads(body), "too_many_connections")
    assert headers["retry-after"] == "1"
    time.sleep(0.5)  # the closed connections leave the worker's count
    assert client.get("/livez").status_code == 200
