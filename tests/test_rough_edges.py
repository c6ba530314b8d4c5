"""What a new user hit in the first hour (issue 22, part 4), each checked on a real server:
the whole reason in the message tritonclient prints, datatypes as strict as Triton's, the
versions that exist when one does not, one content-type rule on every protocol, quick-profile
models marked as such, a protocol label on the metrics, a metrics folder per server, one line
for a port in use, and a favicon.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from PIL import Image
from tritonclient.utils import InferenceServerException

from benchmarks.servers import Server
from modelspec import bank
from service.startup import METRICS_PREFIX
from tests.test_service import metric
from training import card

ROOT = Path(__file__).resolve().parent.parent
SEVEN = np.asarray(Image.open(ROOT / "tests/data/samples/seven.png"), np.float32)[None] / 255


@pytest.fixture(scope="module")
def clients(service, grpc_url: str):
    over_http = thttp.InferenceServerClient(service.url.removeprefix("http://"))
    over_grpc = tgrpc.InferenceServerClient(grpc_url)
    yield {"http": (thttp, over_http), "grpc": (tgrpc, over_grpc)}
    over_http.close()
    over_grpc.close()


def _input(module, name: str, value: np.ndarray, datatype: str):
    item = module.InferInput(name, list(value.shape), datatype)
    item.set_data_from_numpy(value)
    return item


def _refusal(client, model: str, inputs) -> str:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, inputs)
    return str(caught.value)


# -- what tritonclient prints: the whole reason ---------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonclient_prints_the_whole_reason(clients, protocol: str) -> None:
    module, client = clients[protocol]
    wrong = np.zeros((1, 28, 27), np.float32)  # one column short
    printed = _refusal(client, "digits", [_input(module, "image", wrong, "FP32")])
    assert "expected" in printed and "28, 28" in printed, printed


def test_structured_fields_stay_beside_the_message(service) -> None:
    body = {"inputs": [{"name": "image", "shape": [1, 28, 27], "datatype": "FP32",
                        "data": [0.0] * 756}]}  # fmt: skip
    answer = httpx.post(service.url + "/v2/models/digits/infer", json=body)
    assert answer.status_code == 400
    error = answer.json()
    assert error["code"] == "invalid_shape" and error["field"] == "image", error
    assert error["expected"] in error["error"], error  # the same reason, also in the text


# -- datatypes -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.float16, np.uint8])
def test_a_datatype_other_than_the_inputs_is_refused(clients, protocol: str, dtype) -> None:
    module, client = clients[protocol]
    datatype = {np.float64: "FP64", np.int32: "INT32", np.float16: "FP16", np.uint8: "UINT8"}
    sent = _input(module, "image", SEVEN.astype(dtype), datatype[dtype])
    printed = _refusal(client, "digits", [sent])
    assert datatype[dtype] in printed and "expected FP32" in printed, printed
    if protocol == "grpc":
        assert "INVALID_ARGUMENT" in printed or "StatusCode.INVALID_ARGUMENT" in printed, printed


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_inputs_own_datatypes_still_serve(clients, protocol: str) -> None:
    module, client = clients[protocol]
    pixels = client.infer("digits", [_input(module, "image", SEVEN, "FP32")])
    png = np.array([(ROOT / "tests/data/samples/seven.png").read_bytes()], dtype=object)
    files = client.infer("digits", [_input(module, "image", png, "BYTES")])
    for result in (pixels, files):
        assert result.as_numpy("probabilities").shape == (1, 10)
    # bank's numeric columns document any numeric type (or numbers as text) besides INT64
    record = bank.EXAMPLE_RECORD
    columns = [
        _input(module, c, np.array([[float(v)]]), "FP64")
        if c in bank.NUMERIC
        else _input(module, c, np.array([[v]], dtype=object), "BYTES")
        for c, v in record.items()
    ]
    assert client.infer("bank", columns).as_numpy("probability").shape == (1, 1)


def test_v2_json_datatype_mismatch_names_the_expected_one(service) -> None:
    body = {"inputs": [{"name": "code", "shape": [1, 16], "datatype": "INT32", "data": [0] * 16}]}
    answer = httpx.post(service.url + "/v2/models/autoencoder_decode/infer", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["code"] == "invalid_dtype" and error["expected"] == "FP32", error


# -- versions that exist ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/digits/predict?version=v1"),
        ("POST", "/models/digits/predict?version=v1"),
        ("POST", "/v2/models/digits/versions/v1/infer"),
        ("GET", "/v2/models/digits/versions/v1"),
        ("GET", "/v2/models/digits/versions/v1/ready"),
        ("POST", "/v1/models/digits/versions/v1:predict"),
        ("GET", "/v1/models/digits/versions/v1"),
        ("GET", "/models/digits/versions/v1/card"),
        ("POST", "/digits/predict?version=99"),
    ],
)
def test_an_unknown_version_lists_the_versions_served(service, method: str, path: str) -> None:
    body = {"inputs": SEVEN.tolist()} if "/v2/" not in path and "/v1/" not in path else {}
    answer = httpx.request(method, service.url + path, json=body if method == "POST" else None)
    assert answer.status_code == 404, answer.text
    error = answer.json()
    served = httpx.get(service.url + "/models/digits").json()["versions"]
    numbers = [v["version"] for v in served if v["state"] == "ready"]
    # in the message itself where the protocol's clients show nothing else (V2, TF Serving)
    shown = error["error"] if path.startswith("/v") else error["expected"]
    assert f"one of {numbers}" in shown, error
    assert ("'v1'" if "v1" in path else "99") in error["error"], error


def test_an_unknown_version_over_grpc_lists_them(clients) -> None:
    _, client = clients["grpc"]
    sent = [_input(tgrpc, "image", SEVEN, "FP32")]
    with pytest.raises(InferenceServerException) as caught:
        client.infer("digits", sent, model_version="v1")
    assert "one of [" in str(caught.value) and "NOT_FOUND" in str(caught.value), caught.value


# -- one content-type rule -------------------------------------------------------------------

DECLARED = [None, "application/x-www-form-urlencoded", "text/plain", "application/json"]
JSON_BODIES = {
    "/bank/predict": bank.EXAMPLE_RECORD,
    "/digits/predict": {"inputs": SEVEN.tolist()},
    "/models/autoencoder/predict?signature=decode": {"inputs": [[0.0] * 16]},
    "/v2/models/autoencoder_decode/infer": {
        "inputs": [{"name": "code", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]
    },
    "/v1/models/bank:predict": {"instances": [bank.EXAMPLE_RECORD]},
}


@pytest.mark.parametrize("declared", DECLARED)
@pytest.mark.parametrize("path", list(JSON_BODIES))
def test_json_is_read_whatever_type_is_declared(service, path: str, declared) -> None:
    headers = {"content-type": declared} if declared else {}
    content = json.dumps(JSON_BODIES[path]).encode()
    answer = httpx.post(service.url + path, content=content, headers=headers)
    assert answer.status_code == 200, (declared, answer.text)


@pytest.mark.parametrize("path", ["/bank/predict", "/digits/predict", "/v2/models/digits/infer"])
def test_a_body_that_is_not_json_names_the_declared_type(service, path: str) -> None:
    answer = httpx.post(
        service.url + path, content=b"hello", headers={"content-type": "text/plain"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_json"
    if "/v2/" not in path:
        assert "'text/plain'" in answer.json()["error"], answer.json()


def test_image_routes_still_take_files(service) -> None:
    png = (ROOT / "tests/data/samples/seven.png").read_bytes()
    raw = httpx.post(
        service.url + "/digits/predict", content=png, headers={"content-type": "image/png"}
    )
    form = httpx.post(service.url + "/digits/predict", files={"image": ("7.png", png)})
    assert raw.status_code == form.status_code == 200
    assert raw.json()["predictions"] == form.json()["predictions"]


# -- quick profile marked --------------------------------------------------------------------


def test_quick_models_say_so(service) -> None:
    models = httpx.get(service.url + "/models").json()["models"]
    assert models and all(m["profile"] == "quick" for m in models), models
    assert all(v["profile"] == "quick" for m in models for v in m["versions"])
    page = httpx.get(service.url + "/").text
    assert page.count("quick profile</strong>") == len(models)


def test_the_card_of_a_quick_model_says_so_first(quick_repository: Path) -> None:
    manifest = json.loads((quick_repository / "digits" / "1" / "manifest.json").read_text())
    rendered = card.render(manifest, "Digits", "trials", [], [], [])
    first, notice = rendered.split("\n\n")[:2]
    assert first.endswith("(quick profile)") and notice == card.QUICK_NOTICE
    manifest["training"]["profile"] = "full"
    rendered = card.render(manifest, "Digits", "trials", [], [], [])
    assert "quick" not in rendered.split("\n\n")[0] and card.QUICK_NOTICE not in rendered


# -- favicon ---------------------------------------------------------------------------------


def test_favicon_is_an_icon(service) -> None:
    answer = httpx.get(service.url + "/favicon.ico")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/x-icon"
    assert Image.open(io.BytesIO(answer.content)).size == (16, 16)


# -- metrics: the protocol label ---------------------------------------------------------------


def test_metrics_tell_the_protocols_apart(service, clients) -> None:
    client = httpx.Client(base_url=service.url)
    path = "/v2/models/digits/infer"
    before = {
        p: metric(client, "serving_requests_total", endpoint=path, protocol=p, status="200")
        for p in ("v2", "grpc")
    }
    for name in ("http", "grpc"):
        module, triton = clients[name]
        for _ in range(3 if name == "grpc" else 2):
            triton.infer("digits", [_input(module, "image", SEVEN, "FP32")])
    client.post("/digits/predict", json={"inputs": SEVEN.tolist()})
    client.post("/v1/models/bank:predict", json={"instances": [bank.EXAMPLE_RECORD]})
    time.sleep(1.2)  # counts reach prometheus_client every half second
    after = {
        p: metric(client, "serving_requests_total", endpoint=path, protocol=p, status="200")
        for p in ("v2", "grpc")
    }
    assert after["v2"] - before["v2"] == 2 and after["grpc"] - before["grpc"] == 3, after
    assert metric(client, "serving_requests_total", protocol="native") > 0
    assert metric(client, "serving_requests_total", protocol="tfserving") > 0
    text = client.get("/metrics").text
    values = {line.split('protocol="')[1].split('"')[0] for line in text.splitlines()
              if 'protocol="' in line}  # fmt: skip
    assert values <= {"native", "v2", "tfserving", "grpc"}, values


# -- two servers on one machine; ports in use ------------------------------------------------


def _held_port(family: int = socket.AF_INET) -> socket.socket:
    """A port another process holds (not shared: no SO_REUSEPORT)."""
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    holder.listen()
    return holder


def test_a_taken_http_port_is_one_line(tmp_path: Path) -> None:
    with _held_port() as holder:
        port = holder.getsockname()[1]
        env = {"MODEL_REPOSITORY": str(tmp_path), "SERVING_GRPC_PORT": "0",
               "BENTOML_HOME": str(tmp_path / "home")}  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "bentoml", "serve", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, lines
    assert f"HTTP port {port}" in lines[0] and "--port" in lines[0], lines


def test_two_servers_keep_their_own_metrics(quick_repository: Path, tmp_path: Path) -> None:
    """Two servers with one BENTOML_HOME (the default: ~/bentoml): the second's start used to
    empty the folder the first one's workers count in. The second also meets a gRPC port
    held by another process: one line, and it serves HTTP."""
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "digits").symlink_to(quick_repository / "digits")
    home = tmp_path / "home"
    env = {"MODEL_REPOSITORY": str(repository), "BENTOML_HOME": str(home)}
    body = {"inputs": SEVEN.tolist()}
    with _held_port(socket.AF_INET6) as holder, Server(env=env, log=tmp_path / "1.log") as first:
        first.wait_until("/readyz", timeout=300)
        # generous timeouts: a busy two-core machine once took over 5 s to answer /metrics
        client = httpx.Client(base_url=first.url, timeout=120)
        for _ in range(5):
            assert client.post("/digits/predict", json=body).status_code == 200
        counted = metric(client, "serving_requests_total", endpoint="/digits/predict")
        assert counted == 5
        taken = holder.getsockname()[1]
        second_env = {**env, "SERVING_GRPC_PORT": str(taken)}
        with Server(env=second_env, log=tmp_path / "2.log") as second:
            second.wait_until("/readyz", timeout=300)
            answer = httpx.post(second.url + "/digits/predict", json=body, timeout=120)
            assert answer.status_code == 200
            folders = sorted(p.name for p in home.glob(METRICS_PREFIX + "*"))
            assert len(folders) == 2, folders
            assert metric(client, "serving_requests_total", endpoint="/digits/predict") == 5
            log = (tmp_path / "2.log").read_text()
            lines = [line for line in log.splitlines() if f"gRPC port {taken}" in line]
            assert len(lines) == 1 and "SERVING_GRPC_PORT" in lines[0], log[-3000:]
            assert "Traceback" not in log, log[-3000:]
        assert metric(client, "serving_requests_total", endpoint="/digits/predict") == 5
    assert not list(home.glob(METRICS_PREFIX + "*")), "a stopped server's folder is left"
