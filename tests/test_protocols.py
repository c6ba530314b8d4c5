"""Standard protocols with their real clients: Triton's ``tritonclient`` and ``perf_analyzer``
over the Open Inference Protocol (V2), and TF Serving REST requests, against a real
``bentoml serve``. Every served result must equal the native endpoint's for the same input,
and the golden value (``tests/golden.py``: ONNX Runtime on the published graph, preprocessing
written in the test), so a fault shared by every protocol fails here too.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from benchmarks import perf_analyzer
from benchmarks.payloads import bank_records, flower_files, mnist_test, png_bytes
from modelspec import bank
from tests import golden
from tests.test_service import metric

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5
V2_MODELS = (
    "digits",
    "flowers",
    "bank",
    "autoencoder_encode",
    "autoencoder_reconstruct",
    "autoencoder_decode",
)


@pytest.fixture(scope="module")
def client(service_url: str):
    with httpx.Client(base_url=service_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def triton_client(service_url: str):
    client = triton.InferenceServerClient(service_url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def pixels(data_dir: Path) -> np.ndarray:
    images, _ = mnist_test(data_dir, 4)
    return golden.mnist_pixels(images)


def native(client: httpx.Client, path: str, **kwargs) -> dict:
    response = client.post(path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def tensor(name: str, value: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    item = triton.InferInput(name, list(value.shape), datatype)
    item.set_data_from_numpy(value, binary_data=binary)
    return item


def image_bytes(files: list[bytes], binary: bool) -> np.ndarray:
    """BYTES elements: raw files in binary form, base64 text in JSON."""
    if binary:
        return np.array(files, dtype=object)
    return np.array([base64.b64encode(f).decode() for f in files], dtype=object)


def infer(client: triton.InferenceServerClient, model: str, inputs, outputs, binary: bool):
    wanted = [triton.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    return client.infer(model, inputs, outputs=wanted)


# -- V2: health and metadata ----------------------------------------------------------------


def test_v2_health_and_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    server = triton_client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    assert "classification" in server["extensions"]
    for name in V2_MODELS:
        assert triton_client.is_model_ready(name)
        assert triton_client.is_model_ready(name, "1")
        metadata = triton_client.get_model_metadata(name)
        assert metadata["name"] == name and metadata["versions"] == ["1"]
        assert metadata["platform"] == "onnxruntime_onnx"
    assert not triton_client.is_model_ready("digits", "7")
    digits_meta = triton_client.get_model_metadata("digits")
    assert digits_meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28]}]
    assert digits_meta["outputs"][0]["shape"] == [-1, 10]
    bank_inputs = triton_client.get_model_metadata("bank")["inputs"]
    assert [i["name"] for i in bank_inputs] == list(bank.COLUMNS)
    assert {i["datatype"] for i in bank_inputs} == {"INT64", "BYTES"}
    config = triton_client.get_model_config("digits")
    assert config["max_batch_size"] == 64
    assert config["input"][0] == {"name": "image", "data_type": "TYPE_FP32", "dims": [28, 28]}


# -- V2: inference equals the native endpoints ----------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_v2_digits(triton_client, client, pixels, data_dir, quick_repository, binary) -> None:
    inputs = [tensor("image", pixels, "FP32", binary)]
    result = infer(triton_client, "digits", inputs, ["probabilities"], binary)
    served = result.as_numpy("probabilities")
    expected = native(client, "/digits/predict", json={"inputs": pixels.tolist()})
    np.testing.assert_allclose(
        served, [p["probabilities"] for p in expected["predictions"]], atol=TOLERANCE
    )
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_allclose(
        served, golden.onnx(quick_repository, "digits", "model.onnx", pixels, "1"), atol=TOLERANCE
    )

    images, _ = mnist_test(data_dir, 2)
    files = [png_bytes(image) for image in images]
    by_file = infer(
        triton_client,
        "digits",
        [tensor("image", image_bytes(files, binary), "BYTES", binary)],
        ["probabilities"],
        binary,
    ).as_numpy("probabilities")
    uploads = [("image", (f"{i}.png", f, "image/png")) for i, f in enumerate(files)]
    expected = native(client, "/digits/predict", files=uploads)
    np.testing.assert_allclose(
        by_file, [p["probabilities"] for p in expected["predictions"]], atol=TOLERANCE
    )
    prepared = golden.digit_files(files)
    np.testing.assert_allclose(
        by_file, golden.onnx(quick_repository, "digits", "model.onnx", prepared), atol=TOLERANCE
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_v2_flowers(triton_client, client, data_dir, quick_repository, binary: bool) -> None:
    files = [f.read_bytes() for f in flower_files(data_dir, 2)]
    served = infer(
        triton_client,
        "flowers",
        [tensor("image", image_bytes(files, binary), "BYTES", binary)],
        ["probabilities"],
        binary,
    ).as_numpy("probabilities")
    uploads = [("image", (f"{i}.jpg", f, "image/jpeg")) for i, f in enumerate(files)]
    expected = native(client, "/flowers/predict?top_k=5", files=uploads)["predictions"]
    labels = client.get("/models/flowers").json()["labels"]  # the training data's folders
    for row, prediction in zip(served, expected, strict=True):
        by_label = {t["label"]: t["probability"] for t in prediction["top"]}
        np.testing.assert_allclose(row, [by_label[label] for label in labels], atol=TOLERANCE)
    size = golden.check_photo_contract(golden.manifest(quick_repository, "flowers"))
    photos = np.stack([golden.photo(f, size) for f in files])
    expected = golden.onnx(quick_repository, "flowers", "model.onnx", photos)
    np.testing.assert_allclose(served, expected, atol=golden.FLOWER_TOLERANCE)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_v2_bank(triton_client, client, data_dir, quick_repository, binary: bool) -> None:
    records = bank_records(data_dir, 3)
    inputs = []
    for column in bank.COLUMNS:
        values = [r[column] for r in records]
        if column in bank.NUMERIC:
            inputs.append(tensor(column, np.array(values, np.int64)[:, None], "INT64", binary))
        else:
            encoded = np.array([[v.encode()] for v in values], dtype=object)
            inputs.append(tensor(column, encoded, "BYTES", binary))
    result = infer(triton_client, "bank", inputs, ["probability", "label"], binary)
    expected = native(client, "/bank/predict", json={"records": records})["predictions"]
    np.testing.assert_allclose(
        result.as_numpy("probability")[:, 0], [p["probability"] for p in expected], atol=TOLERANCE
    )
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels == [p["label"] for p in expected]
    features = golden.bank_features(records, golden.manifest(quick_repository, "bank"))
    np.testing.assert_allclose(
        result.as_numpy("probability"),
        golden.onnx(quick_repository, "bank", "model.onnx", features),
        atol=TOLERANCE,
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_v2_autoencoder(triton_client, client, pixels, quick_repository, binary: bool) -> None:
    flat = pixels.reshape(len(pixels), -1)
    inputs = [tensor("pixels", flat, "FP32", binary)]
    codes = infer(triton_client, "autoencoder_encode", inputs, ["code"], binary).as_numpy("code")
    expected_codes = native(client, "/autoencoder/encode", json={"inputs": flat.tolist()})["codes"]
    np.testing.assert_allclose(codes, expected_codes, atol=TOLERANCE)
    golden_codes = golden.onnx(quick_repository, "autoencoder", "encoder.onnx", flat)
    np.testing.assert_allclose(codes, golden_codes, atol=1e-4)  # as tests/test_service.py

    rebuilt = infer(
        triton_client,
        "autoencoder_reconstruct",
        [tensor("pixels", flat, "FP32", binary)],
        ["reconstruction"],
        binary,
    ).as_numpy("reconstruction")
    expected = native(client, "/autoencoder/reconstruct", json={"inputs": flat.tolist()})
    np.testing.assert_allclose(rebuilt, expected["reconstructions"], atol=TOLERANCE)

    decoded = infer(
        triton_client, "autoencoder_decode", [tensor("code", codes, "FP32", binary)], [], binary
    ).as_numpy("reconstruction")
    expected = native(client, "/autoencoder/decode", json={"inputs": codes.tolist()})
    np.testing.assert_allclose(decoded, expected["reconstructions"], atol=TOLERANCE)


def test_v2_classification_extension(triton_client, pixels) -> None:
    inputs = [tensor("image", pixels, "FP32", True)]
    full = triton_client.infer("digits", inputs).as_numpy("probabilities")
    wanted = [triton.InferRequestedOutput("probabilities", class_count=3)]
    top = triton_client.infer("digits", inputs, outputs=wanted).as_numpy("probabilities")
    assert top.shape == (len(pixels), 3)
    for row, probabilities in zip(top, full, strict=True):
        entries = [entry.decode().split(":") for entry in row]
        ranked = list(np.argsort(-probabilities)[:3])
        assert [int(index) for _, index, _ in entries] == ranked
        assert [label for _, _, label in entries] == [str(i) for i in ranked]
        assert float(entries[0][0]) == pytest.approx(probabilities.max(), abs=1e-6)


def test_v2_errors(triton_client, client, pixels) -> None:
    with pytest.raises(InferenceServerException) as error:
        triton_client.infer("digits", [tensor("image", pixels[:, :27], "FP32", True)])
    assert error.value.status() == "400" and "shape" in error.value.message()
    with pytest.raises(InferenceServerException) as error:
        triton_client.infer("nope", [tensor("image", pixels, "FP32", True)])
    assert error.value.status() == "404"
    with pytest.raises(InferenceServerException) as error:
        triton_client.infer("digits", [tensor("image", pixels, "FP32", True)], model_version="9")
    assert error.value.status() == "404"
    response = client.post(
        "/v2/models/digits/infer",
        json={"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [1]}]},
    )
    assert response.status_code == 400 and "error" in response.json()
    assert client.get("/v2/models/nope").status_code == 404
    assert "error" in client.get("/v2/models/nope").json()


def test_v2_shares_batchers_and_metrics(triton_client, client, pixels) -> None:
    path = "/v2/models/digits/infer"
    before = metric(client, "serving_requests_total", endpoint=path, status="200")
    items = metric(client, "serving_items_processed_total", model="digits")
    triton_client.infer("digits", [tensor("image", pixels, "FP32", True)])
    assert metric(client, "serving_requests_total", endpoint=path, status="200") == before + 1
    assert metric(client, "serving_items_processed_total", model="digits") >= items + len(pixels)


def test_perf_analyzer_on_digits(service_url, client, data_dir, tmp_path) -> None:
    images, _ = mnist_test(data_dir, 64)
    data = perf_analyzer.write_input_data(images, tmp_path / "digits.json")
    path = "/v2/models/digits/infer"
    before = metric(client, "serving_requests_total", endpoint=path, status="200")
    refused = metric(client, "serving_requests_total", endpoint=path, status="400")
    rows = perf_analyzer.run(
        service_url.removeprefix("http://"),
        "digits",
        data,
        "1:2",
        tmp_path,
        interval_ms=500,
        stability_pct=100,
    )
    # perf_analyzer's CSV lists the levels by throughput, not by concurrency: on a busy machine
    # concurrency 2 came first.
    assert sorted(row["Concurrency"] for row in rows) == [1, 2]
    assert all(row["Inferences/Second"] > 0 for row in rows)
    # The server counted at least what perf_analyzer measured in one 0.5 s window per level
    # (it measures three or more): relative to this run's throughput, not a fixed count.
    served = metric(client, "serving_requests_total", endpoint=path, status="200") - before
    windows = sum(row["Inferences/Second"] * 0.5 for row in rows)
    assert served >= max(1.0, windows), f"server counted {served}, perf_analyzer {windows:.0f}"
    assert metric(client, "serving_requests_total", endpoint=path, status="400") == refused


# -- TensorFlow Serving REST ---------------------------------------------------------------


def test_tfserving_status_and_metadata(client: httpx.Client) -> None:
    for name in ("digits", "flowers", "bank", "autoencoder"):
        status = client.get(f"/v1/models/{name}").json()["model_version_status"]
        ok = {"error_code": "OK", "error_message": ""}
        assert status == [{"version": "1", "state": "AVAILABLE", "status": ok}]
        assert client.get(f"/v1/models/{name}/versions/1").status_code == 200
    signatures = client.get("/v1/models/autoencoder/metadata").json()["metadata"]["signature_def"]
    defs = signatures["signature_def"]
    assert set(defs) == {"serving_default", "encode", "decode", "reconstruct"}
    assert defs["encode"]["outputs"]["code"]["dtype"] == "DT_FLOAT"
    assert client.get("/v1/models/nope").status_code == 404
    assert client.get("/v1/models/digits/versions/5").status_code == 404


def test_tfserving_digits_rows_columns_and_b64(client, pixels, data_dir, quick_repository) -> None:
    expected = native(client, "/digits/predict", json={"inputs": pixels.tolist()})
    expected = [p["probabilities"] for p in expected["predictions"]]
    rows = native(client, "/v1/models/digits:predict", json={"instances": pixels.tolist()})
    np.testing.assert_allclose(rows["predictions"], expected, atol=TOLERANCE)
    graph = golden.onnx(quick_repository, "digits", "model.onnx", pixels)
    np.testing.assert_allclose(rows["predictions"], graph, atol=TOLERANCE)
    named = native(
        client,
        "/v1/models/digits/versions/1:predict",
        json={"signature_name": "serving_default", "inputs": {"image": pixels.tolist()}},
    )
    np.testing.assert_allclose(named["outputs"], expected, atol=TOLERANCE)

    images, _ = mnist_test(data_dir, 2)
    files = [png_bytes(image) for image in images]
    b64 = [{"b64": base64.b64encode(f).decode()} for f in files]
    by_file = native(client, "/v1/models/digits:predict", json={"instances": b64})
    uploads = [("image", (f"{i}.png", f, "image/png")) for i, f in enumerate(files)]
    expected = native(client, "/digits/predict", files=uploads)["predictions"]
    np.testing.assert_allclose(
        by_file["predictions"], [p["probabilities"] for p in expected], atol=TOLERANCE
    )
    prepared = golden.digit_files(files)
    np.testing.assert_allclose(
        by_file["predictions"],
        golden.onnx(quick_repository, "digits", "model.onnx", prepared),
        atol=TOLERANCE,
    )


def test_tfserving_flowers_bank_autoencoder(client, pixels, data_dir, quick_repository) -> None:
    files = [f.read_bytes() for f in flower_files(data_dir, 2)]
    instances = [{"image": {"b64": base64.b64encode(f).decode()}} for f in files]
    served = native(client, "/v1/models/flowers:predict", json={"instances": instances})
    uploads = [("image", (f"{i}.jpg", f, "image/jpeg")) for i, f in enumerate(files)]
    expected = native(client, "/flowers/predict?top_k=1", files=uploads)["predictions"]
    for row, prediction in zip(served["predictions"], expected, strict=True):
        assert max(row) == pytest.approx(prediction["top"][0]["probability"], abs=TOLERANCE)
    size = golden.check_photo_contract(golden.manifest(quick_repository, "flowers"))
    photos = np.stack([golden.photo(f, size) for f in files])
    np.testing.assert_allclose(
        served["predictions"],
        golden.onnx(quick_repository, "flowers", "model.onnx", photos),
        atol=golden.FLOWER_TOLERANCE,
    )

    records = bank_records(data_dir, 3)
    expected = native(client, "/bank/predict", json={"records": records})["predictions"]
    rows = native(client, "/v1/models/bank:predict", json={"instances": records})["predictions"]
    assert [r["label"] for r in rows] == [p["label"] for p in expected]
    np.testing.assert_allclose(
        [r["probability"][0] for r in rows], [p["probability"] for p in expected], atol=TOLERANCE
    )
    features = golden.bank_features(records, golden.manifest(quick_repository, "bank"))
    np.testing.assert_allclose(
        [r["probability"] for r in rows],
        golden.onnx(quick_repository, "bank", "model.onnx", features),
        atol=TOLERANCE,
    )
    columns = {c: [r[c] for r in records] for c in bank.COLUMNS}
    outputs = native(client, "/v1/models/bank:predict", json={"inputs": columns})["outputs"]
    assert outputs["label"] == [p["label"] for p in expected]

    flat = pixels.reshape(len(pixels), -1).tolist()
    encode = {"signature_name": "encode", "instances": flat}
    codes = native(client, "/v1/models/autoencoder:predict", json=encode)["predictions"]
    expected_codes = native(client, "/autoencoder/encode", json={"inputs": flat})["codes"]
    np.testing.assert_allclose(codes, expected_codes, atol=TOLERANCE)
    default = native(client, "/v1/models/autoencoder:predict", json={"instances": flat})
    expected = native(client, "/autoencoder/reconstruct", json={"inputs": flat})["reconstructions"]
    np.testing.assert_allclose(default["predictions"], expected, atol=TOLERANCE)
    decoded = native(
        client, "/v1/models/autoencoder:predict", json={"signature_name": "decode", "inputs": codes}
    )["outputs"]
    expected = native(client, "/autoencoder/decode", json={"inputs": codes})["reconstructions"]
    np.testing.assert_allclose(decoded, expected, atol=TOLERANCE)


TF_BAD_REQUESTS = [
    ("/v1/models/digits:predict", {"instances": []}, 400),
    ("/v1/models/digits:predict", {"instances": [[1]], "inputs": [[1]]}, 400),
    ("/v1/models/digits:predict", {"instances": [[0.5] * 27] * 28}, 400),
    ("/v1/models/digits:predict", {"instances": [{"b64": "not base64!"}]}, 400),
    ("/v1/models/digits:predict", {"instances": [{"b64": "aGVsbG8="}]}, 400),
    ("/v1/models/digits:predict", {"signature_name": "encode", "instances": [[1]]}, 400),
    ("/v1/models/bank:predict", {"instances": [{"age": 30}]}, 400),
    ("/v1/models/autoencoder:predict", {"signature_name": "decode", "inputs": [[1e39] * 16]}, 400),
    ("/v1/models/nope:predict", {"instances": [[1]]}, 404),
    ("/v1/models/digits/versions/3:predict", {"instances": [[1]]}, 404),
]


@pytest.mark.parametrize(("path", "body", "status"), TF_BAD_REQUESTS)
def test_tfserving_errors(client, path: str, body: dict, status: int) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["error"], str)
