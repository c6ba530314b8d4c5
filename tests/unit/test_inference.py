"""service.inference through the service's real ASGI app, in this process: a synthetic ONNX
graph (``y = x @ W + b``) published into a temporary repository and loaded by the real
Registry. Expected answers are numpy's ``x @ W + b``, never the service's own functions."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from service.errors import CATALOGUE, RequestError
from service.inference import require_finite
from tests.unit.synthetic import CLASSES, WIDTH, B, InProcess, W, affine_onnx, manifest, publish

X = np.array([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]], np.float32)
GOLDEN = X @ W + B
# Each term of y[:, 2] is positive here: 3.6e38, past float32's 3.4e38.
OVERFLOWING = [[-3e38, -3e38, 3e38, 3e38]]
CARD = b"# affine\n"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("inference") / "models"
    publish(root, manifest("affine"), {"model.onnx": affine_onnx(), "model_card.md": CARD})
    with InProcess(root) as running:
        yield running


def _refusal(answer, code: str, status: int | None = None) -> dict:
    body = answer.json()
    assert body.get("code") == code, body
    assert answer.status_code == (status or CATALOGUE[code].status), body
    return body


def test_native_tensors_answer_x_at_w_plus_b(service) -> None:
    answer = service.request("POST", "/models/affine/predict", json={"inputs": X.tolist()})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["version"], body["signature"]) == ("affine", 1, "predict")
    np.testing.assert_allclose(body["outputs"]["y"], GOLDEN, rtol=1e-6)
    named = service.request("POST", "/models/affine/predict", json={"inputs": {"x": X.tolist()}})
    np.testing.assert_allclose(named.json()["outputs"]["y"], GOLDEN, rtol=1e-6)


def test_v2_json_and_binary_answer_the_same(service) -> None:
    entry = {"name": "x", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}
    answer = service.request("POST", "/v2/models/affine/infer", json={"inputs": [entry]})
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert (output["name"], output["shape"]) == ("y", [2, CLASSES])
    np.testing.assert_allclose(np.reshape(output["data"], (2, CLASSES)), GOLDEN, rtol=1e-6)
    header = json.dumps(
        {
            "inputs": [{**entry, "data": None, "parameters": {"binary_data_size": X.nbytes}}],
            "parameters": {"binary_data_output": True},
        }
    ).replace(', "data": null', "")
    body = header.encode() + struct.pack(f"<{X.size}f", *X.ravel())
    answer = service.request(
        "POST",
        "/v2/models/affine/versions/1/infer",
        content=body,
        headers={"inference-header-content-length": str(len(header))},
    )
    assert answer.status_code == 200, answer.text
    size = int(answer.headers["inference-header-content-length"])
    values = struct.unpack(f"<{GOLDEN.size}f", answer.content[size:])
    np.testing.assert_allclose(np.reshape(values, GOLDEN.shape), GOLDEN, rtol=1e-6)


def test_tf_serving_rows_answer_the_same(service) -> None:
    answer = service.request("POST", "/v1/models/affine:predict", json={"instances": X.tolist()})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], GOLDEN, rtol=1e-6)


def test_an_overflowing_answer_is_no_finite_answer_on_every_protocol(service) -> None:
    native = service.request("POST", "/models/affine/predict", json={"inputs": OVERFLOWING})
    assert _refusal(native, "no_finite_answer")["item"] == 0
    entry = {"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": OVERFLOWING[0]}
    v2 = service.request("POST", "/v2/models/affine/infer", json={"inputs": [entry]})
    _refusal(v2, "no_finite_answer", 400)  # V2 answers 422s as 400
    tf = service.request("POST", "/v1/models/affine:predict", json={"instances": OVERFLOWING})
    _refusal(tf, "no_finite_answer", 400)


def test_a_body_of_more_values_than_any_request_holds_is_refused_before_parsing(service) -> None:
    rows = ",".join(["[0.0,0.0,0.0,0.0]"] * 30_000)  # 540 KB: past the 256 KiB parsed in a thread
    body = ('{"inputs": [' + rows + "]}").encode()
    answer = service.request("POST", "/models/affine/predict", content=body)
    _refusal(answer, "too_many_values")


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/models/nope/predict", "unknown_model"),
        ("/models/affine/predict?version=9", "unknown_version"),
        ("/v2/models/affine/versions/9/infer", "unknown_version"),
        ("/v2/models/nope/infer", "unknown_model"),
    ],
)
def test_unknown_models_and_versions_are_404(service, path: str, code: str) -> None:
    answer = service.request("POST", path, json={"inputs": X.tolist()})
    _refusal(answer, code)


def test_the_files_route_serves_listed_cards_only(service) -> None:
    card = service.request("GET", "/models/affine/versions/1/files/model_card.md")
    assert card.status_code == 200 and card.content == CARD
    assert card.headers["content-type"].startswith("text/markdown")
    assert service.request("GET", "/models/affine/versions/1/card").content == CARD


@pytest.mark.parametrize(
    "path",
    [
        "/models/affine/versions/1/files/manifest.json",
        "/models/affine/versions/1/files/model.onnx",
        "/models/affine/versions/1/files/..",
        "/models/affine/versions/1/files/..%2Fmanifest.json",
        "/models/affine/versions/1/files/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/models/affine/versions/1/files/model_card.md%00.png",
        "/models/affine/versions/9/files/model_card.md",
        "/models/affine/versions/x/files/model_card.md",
        "/models/..%2Faffine/versions/1/files/model_card.md",
    ],
)
def test_the_files_route_refuses_hostile_names_with_a_404(service, path: str) -> None:
    answer = service.request("GET", path)
    assert answer.status_code == 404, answer.text
    assert answer.json()["code"] in ("not_found", "unknown_version", "unknown_model")
    assert CARD not in answer.content


def test_require_finite_names_the_first_item_at_fault() -> None:
    require_finite({"y": np.ones((3, 2), np.float32), "n": np.array([1, 2])})
    values = np.ones((3, 2), np.float32)
    values[2, 1] = np.nan
    with pytest.raises(RequestError) as raised:
        require_finite({"y": values})
    assert (raised.value.code, raised.value.item) == ("no_finite_answer", 2)
    big = np.full((2, 2), 3e38, np.float32)  # finite, though its float64 sum is not small
    require_finite({"y": big})


def test_an_unknown_tf_serving_signature_is_400_as_its_server_answers(service) -> None:
    """errors.PROTOCOL_STATUS: TF Serving's own server answers INVALID_ARGUMENT (400)."""
    body = {"signature_name": "nope", "instances": X.tolist()}
    answer = service.request("POST", "/v1/models/affine:predict", json=body)
    assert _refusal(answer, "unknown_signature", 400)["field"] == "signature_name"
    v2 = service.request("POST", "/v2/models/affine/infer", json={"inputs": []})
    assert v2.status_code == 400 and v2.json()["code"] != "unknown_signature", v2.text
