"""The real service: ``bentoml serve`` over HTTP against quick-profile models.

Served outputs are compared with golden values (``tests/golden.py``): ONNX Runtime run directly
on the version's published graph, with the preprocessing written out in the test from the
manifest's published contract, never with the service's own ``modelspec`` functions, so a
drift of the service from its contract fails here.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.payloads import bank_records, flower_files, mnist_test, png_bytes
from modelspec import bank, digits, repository
from reliability.traffic import Graphs
from tests import golden

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5
# The models a test's own server loads when flowers adds nothing to what it checks.
LIGHT_MODELS = ("digits", "bank", "autoencoder")


def run_onnx(repo: Path, model: str, onnx_file: str, inputs: np.ndarray) -> np.ndarray:
    return Graphs(repo).run(model, onnx_file, inputs)


@pytest.fixture(scope="module")
def client(service_url: str):
    with httpx.Client(base_url=service_url, timeout=60) as client:
        yield client


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """Sum of one metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def assert_client_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    assert body["error"]
    return body


# -- health, readiness and the model list ---------------------------------------------------


def test_health_and_models(client: httpx.Client, quick_repository: Path) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert set(models) == {"digits", "flowers", "bank", "autoencoder"}
    for name, model in models.items():
        assert model["state"] == "ready"
        assert model["version"] == repository.latest_version(quick_repository, name)
        assert model["backend"] == "onnx"
        assert model["provider"] == "CPUExecutionProvider"
        assert model["signatures"] and "metrics" in model
    flowers_manifest = repository.read_manifest(
        repository.version_dir(quick_repository, "flowers", models["flowers"]["version"])
    )
    assert models["flowers"]["labels"] == flowers_manifest["labels"]
    assert set(models["autoencoder"]["signatures"]) == {"encode", "decode", "reconstruct"}
    info = metric(client, "serving_model_info", model="digits", backend="onnx")
    assert info == 1


def test_openapi_documents_every_endpoint(client: httpx.Client) -> None:
    paths = client.get("/docs.json").json()["paths"]
    for path in ("/digits/predict", "/flowers/predict", "/bank/predict", "/autoencoder/encode",
                 "/autoencoder/reconstruct", "/autoencoder/decode", "/models"):  # fmt: skip
        assert path in paths
    assert "multipart/form-data" in paths["/digits/predict"]["post"]["requestBody"]["content"]


# -- each endpoint against ONNX Runtime directly --------------------------------------------


def test_digits_json_matches_onnx(client, quick_repository, data_dir) -> None:
    images, _ = mnist_test(data_dir, 5)
    golden.check_mnist_contract(golden.manifest(quick_repository, "digits"))
    pixels = golden.mnist_pixels(images)
    response = client.post("/digits/predict", json={"inputs": pixels.tolist()})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"]
    body = response.json()
    served = np.array([p["probabilities"] for p in body["predictions"]])
    expected = golden.onnx(quick_repository, "digits", "model.onnx", pixels, body["version"])
    np.testing.assert_allclose(served, expected, atol=TOLERANCE)
    assert [p["digit"] for p in body["predictions"]] == expected.argmax(1).tolist()


def test_digits_images_match_onnx(client, quick_repository, data_dir) -> None:
    """Dark-on-light pictures of other sizes, several in one multipart request."""
    images, _ = mnist_test(data_dir, 3)
    pictures = [Image.fromarray(255 - x).resize((90, 120)) for x in images]
    files = [
        ("image", (f"{i}.png", png_bytes(np.asarray(p)), "image/png"))
        for i, p in enumerate(pictures)
    ]
    response = client.post("/digits/predict", files=files)
    assert response.status_code == 200, response.text
    version = response.json()["version"]
    golden.check_mnist_contract(golden.manifest(quick_repository, "digits", version))
    prepared = np.stack([golden.digit_picture(p) for p in pictures])
    pixels = golden.mnist_pixels(prepared)
    expected = golden.onnx(quick_repository, "digits", "model.onnx", pixels, version)
    served = np.array([p["probabilities"] for p in response.json()["predictions"]])
    np.testing.assert_allclose(served, expected, atol=TOLERANCE)
    # The same pictures with invert=false are read as white-on-black: a different input.
    plain = client.post("/digits/predict?invert=false", files=files).json()["predictions"]
    assert not np.allclose([p["probabilities"] for p in plain], expected, atol=TOLERANCE)
    white_on_black = np.stack([golden.digit_picture(p, invert=False) for p in pictures])
    expected_plain = golden.onnx(
        quick_repository, "digits", "model.onnx", golden.mnist_pixels(white_on_black), version
    )
    np.testing.assert_allclose([p["probabilities"] for p in plain], expected_plain, atol=TOLERANCE)


def test_flowers_match_onnx(client, quick_repository, data_dir) -> None:
    files = flower_files(data_dir, 3)
    response = client.post(
        "/flowers/predict?top_k=5",
        files=[("image", (f.name, f.read_bytes(), "image/jpeg")) for f in files],
    )
    assert response.status_code == 200, response.text
    version = response.json()["version"]
    manifest = golden.manifest(quick_repository, "flowers", version)
    size = golden.check_photo_contract(manifest)
    photos = np.stack([golden.photo(f, size) for f in files])
    expected = golden.onnx(quick_repository, "flowers", "model.onnx", photos, version)
    labels = manifest["labels"]
    assert client.get("/models/flowers").json()["labels"] == labels
    for prediction, row in zip(response.json()["predictions"], expected, strict=True):
        assert len(prediction["top"]) == len(labels)
        served = {t["label"]: t["probability"] for t in prediction["top"]}
        np.testing.assert_allclose(
            [served[label] for label in labels], row, atol=golden.FLOWER_TOLERANCE
        )
        second, first = np.sort(row)[-2:]
        if first - second > 2 * golden.FLOWER_TOLERANCE:  # a close call may go either way
            assert prediction["label"] == labels[int(row.argmax())]
    # top_k cuts the same answer.
    two = client.post(
        "/flowers/predict?top_k=2",
        files=[("image", (f.name, f.read_bytes(), "image/jpeg")) for f in files],
    ).json()["predictions"]
    for short, full in zip(two, response.json()["predictions"], strict=True):
        assert [t["label"] for t in short["top"]] == [t["label"] for t in full["top"][:2]]
        np.testing.assert_allclose(
            [t["probability"] for t in short["top"]],
            [t["probability"] for t in full["top"][:2]],
            atol=TOLERANCE,
        )


def test_bank_matches_onnx(client, quick_repository, data_dir) -> None:
    records = bank_records(data_dir, 6)
    response = client.post("/bank/predict", json={"records": records})
    assert response.status_code == 200, response.text
    body = response.json()
    manifest = golden.manifest(quick_repository, "bank", body["version"])
    features = golden.bank_features(records, manifest)
    expected = golden.onnx(quick_repository, "bank", "model.onnx", features, body["version"])
    expected = expected[:, 0]
    assert body["threshold"] == pytest.approx(manifest["decision"]["threshold"])
    served = np.array([p["probability"] for p in body["predictions"]])
    np.testing.assert_allclose(served, expected, atol=TOLERANCE)
    for prediction, p in zip(body["predictions"], expected, strict=True):
        assert prediction["subscribe"] == bool(p >= body["threshold"])
        assert prediction["label"] == ("yes" if p >= body["threshold"] else "no")
    single = client.post("/bank/predict", json=records[0]).json()["predictions"]
    assert single[0]["probability"] == pytest.approx(expected[0], abs=TOLERANCE)


def test_autoencoder_endpoints_match_onnx(client, quick_repository, data_dir) -> None:
    images, _ = mnist_test(data_dir, 4)
    golden.check_mnist_contract(golden.manifest(quick_repository, "autoencoder"))
    pixels = golden.mnist_pixels(images).reshape(4, 784)
    codes = client.post("/autoencoder/encode", json={"inputs": pixels.tolist()}).json()["codes"]
    expected_codes = golden.onnx(quick_repository, "autoencoder", "encoder.onnx", pixels)
    np.testing.assert_allclose(codes, expected_codes, atol=1e-4)

    rebuilt = client.post("/autoencoder/reconstruct", json={"inputs": pixels.tolist()}).json()
    expected = golden.onnx(quick_repository, "autoencoder", "model.onnx", pixels)
    np.testing.assert_allclose(rebuilt["reconstructions"], expected, atol=TOLERANCE)

    decoded = client.post("/autoencoder/decode", json={"inputs": expected_codes.tolist()}).json()
    expected_decoded = golden.onnx(quick_repository, "autoencoder", "decoder.onnx", expected_codes)
    np.testing.assert_allclose(decoded["reconstructions"], expected_decoded, atol=TOLERANCE)

    # PNG out: one item -> an image/png body; several -> base64 PNGs in JSON.
    png = client.post(
        "/autoencoder/reconstruct",
        json={"inputs": pixels[0].tolist()},
        headers={"accept": "image/png"},
    )
    assert png.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(png.content)))
    assert image.shape == (28, 28)
    np.testing.assert_allclose(image / 255.0, expected[0].reshape(28, 28), atol=1 / 255 + 1e-6)
    several = client.post(
        "/autoencoder/decode?format=png", json={"inputs": expected_codes.tolist()}
    )
    assert len(several.json()["images"]) == 4

    # An image upload to encode gives the same code as its tensor.
    upload = client.post(
        "/autoencoder/encode", files=[("image", ("d.png", png_bytes(images[0]), "image/png"))]
    )
    np.testing.assert_allclose(upload.json()["codes"][0], expected_codes[0], atol=1e-4)


# -- batching and metrics --------------------------------------------------------------------


def test_concurrent_requests_are_batched_and_counted(client, data_dir) -> None:
    from benchmarks.loadgen import build_request, load

    images, _ = mnist_test(data_dir, 1)
    body = json.dumps({"inputs": digits.scale_pixels(images).tolist()}).encode()
    items_before = metric(client, "serving_items_processed_total", model="digits")
    batches_before = metric(client, "serving_batch_size_count", model="digits")
    predictions_before = metric(client, "serving_predictions_total", model="digits")
    port = int(str(client.base_url).rsplit(":", 1)[1].strip("/"))
    request = build_request("127.0.0.1", port, "/digits/predict", body, "application/json")
    result = load("127.0.0.1", port, [request], concurrency=32, seconds=1.5)
    assert result.statuses and set(result.statuses) == {200}
    items = metric(client, "serving_items_processed_total", model="digits") - items_before
    batches = metric(client, "serving_batch_size_count", model="digits") - batches_before
    assert items == result.requests
    assert metric(client, "serving_predictions_total", model="digits") - predictions_before == items
    assert batches < items, "32 concurrent clients never shared a batch"
    assert metric(client, "serving_inference_queue_wait_seconds_count", model="digits") > 0
    assert metric(client, "serving_inference_compute_seconds_count", model="digits") > 0
    assert metric(client, "serving_request_duration_seconds_count", model="digits") > 0
    # BentoML's own defaults are still on /metrics.
    assert "bentoml_service_request" in client.get("/metrics").text


def test_multi_item_request_counts_each_item(client, data_dir) -> None:
    images, _ = mnist_test(data_dir, 5)
    before = metric(client, "serving_items_processed_total", model="digits")
    response = client.post("/digits/predict", json={"inputs": digits.scale_pixels(images).tolist()})
    assert response.status_code == 200
    assert metric(client, "serving_items_processed_total", model="digits") - before == 5


def test_inference_takes_the_fast_path_not_bentomls_middleware(client, data_dir) -> None:
    """The fast path rests on BentoML's ``service_class=`` hook (``service.app.AppService``
    puts ``App`` in front of BentoML's ASGI app). A BentoML release that stops calling
    ``to_asgi`` there, or wraps it in its own middleware, fails this test by name: inference
    must be counted by our metrics and never by BentoML's per-request middleware.
    """
    images, _ = mnist_test(data_dir, 1)
    pixels = digits.scale_pixels(images)
    calls = {
        "/digits/predict": {"inputs": pixels.tolist()},
        "/v2/models/digits/infer": {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 28, 28],
                    "datatype": "FP32",
                    "data": pixels.ravel().tolist(),
                }
            ]
        },
        "/v1/models/digits:predict": {"instances": pixels.tolist()},
    }
    before = {path: metric(client, "serving_requests_total", endpoint=path) for path in calls}
    for path, body in calls.items():
        for _ in range(3):
            assert client.post(path, json=body).status_code == 200, path
    assert client.get("/livez").status_code == 200  # a BentoML route, counted by BentoML
    text = client.get("/metrics").text
    bentoml_counted = {
        line.split('endpoint="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("bentoml_service_request_total{")
    }
    assert "/livez" in bentoml_counted, "BentoML's own request metrics are gone"
    for path in calls:
        ours = metric(client, "serving_requests_total", endpoint=path) - before[path]
        assert ours == 3, f"{path}: inference no longer reaches service.app.App ({ours} counted)"
    leaked = {e for e in bentoml_counted if "digits" in e or e.startswith(("/v1/", "/v2/"))}
    assert not leaked, (
        f"inference went through BentoML's middleware (bentoml_service_request_total: {leaked})"
    )


# -- bad input: a 4xx with a JSON body, never a 500, and nobody else harmed -----------------

ZERO_IMAGE = np.zeros((28, 28)).tolist()
GOOD_RECORD = bank.EXAMPLE_RECORD


def _truncated_jpeg(data_dir: Path) -> bytes:
    return flower_files(data_dir, 1)[0].read_bytes()[:600]


def raw(body: bytes, content_type: str) -> dict:
    return {"content": body, "headers": {"content-type": content_type}}


BAD_REQUESTS = [
    # (path, kwargs for httpx, status, code)
    ("/digits/predict", {"json": {"inputs": [[1, 2, 3]]}}, 422, "invalid_shape"),
    ("/digits/predict", {"json": {"inputs": [["x"] * 784]}}, 422, "invalid_dtype"),
    ("/digits/predict", {"json": {"inputs": [[0.5] * 783 + [7.0]]}}, 422, "out_of_range"),
    ("/digits/predict", {"json": {"inputs": [[0.5] * 783 + [1e300]]}}, 422, "not_finite"),
    (
        "/digits/predict",
        raw(b'{"inputs": [Infinity]}', "application/json"),
        400,
        "invalid_json",
    ),
    ("/digits/predict", {"json": {"inputs": []}}, 422, "empty_batch"),
    ("/digits/predict", {"json": {"inputs": np.zeros((65, 784)).tolist()}}, 413, "too_many_items"),
    ("/digits/predict", {"json": {"input": ZERO_IMAGE}}, 422, "missing_field"),
    ("/digits/predict", {"json": {"inputs": ZERO_IMAGE, "extra": 1}}, 422, "unknown_field"),
    (
        "/digits/predict",
        raw(b"not json", "application/json"),
        400,
        "invalid_json",
    ),
    (
        "/digits/predict",
        raw(b"", "application/json"),
        400,
        "empty_body",
    ),
    (  # JSON whatever the declared type (README: one rule on every protocol)
        "/digits/predict",
        raw(b"hello", "text/plain"),
        400,
        "invalid_json",
    ),
    (
        "/digits/predict",
        raw(b"\x89PNG broken", "image/png"),
        415,
        "not_an_image",
    ),
    (
        "/digits/predict?invert=maybe",
        {"files": [("image", ("a.png", png_bytes(np.zeros((28, 28), np.uint8)), "image/png"))]},
        422,
        "invalid_parameter",
    ),
    (
        "/flowers/predict?top_k=9",
        {"files": [("image", ("a.png", png_bytes(np.zeros((9, 9, 3), np.uint8)), "image/png"))]},
        422,
        "invalid_parameter",
    ),
    (
        "/flowers/predict",
        {
            "json": {"inputs": np.zeros((1, 4, 4, 3)).tolist()},
            "headers": {"content-type": "multipart/form-data; boundary=x"},
        },
        400,
        "invalid_multipart",
    ),
    ("/bank/predict", {"json": {**GOOD_RECORD, "job": "astronaut"}}, 422, "invalid_value"),
    (
        "/bank/predict",
        {"json": {k: v for k, v in GOOD_RECORD.items() if k != "age"}},
        422,
        "missing_field",
    ),
    ("/bank/predict", {"json": {**GOOD_RECORD, "agee": 3}}, 422, "unknown_field"),
    ("/bank/predict", {"json": {**GOOD_RECORD, "balance": "lots"}}, 422, "invalid_value"),
    ("/bank/predict", {"json": {"records": []}}, 422, "empty_batch"),
    ("/bank/predict", {"json": [GOOD_RECORD] * 65}, 413, "too_many_items"),
    ("/bank/predict", {"json": "a string"}, 422, "invalid_type"),
    ("/autoencoder/decode", {"json": {"inputs": [[0.0] * 15]}}, 422, "invalid_shape"),
    (
        "/autoencoder/reconstruct",
        {"json": {"inputs": ZERO_IMAGE}, "headers": {"accept": "text/html"}},
        406,
        "not_acceptable",
    ),
    (
        "/autoencoder/reconstruct?format=gif",
        {"json": {"inputs": ZERO_IMAGE}},
        422,
        "invalid_parameter",
    ),
]


@pytest.mark.parametrize(("path", "kwargs", "status", "code"), BAD_REQUESTS)
def test_bad_input_gets_a_clear_4xx(client, path, kwargs, status, code) -> None:
    body = assert_client_error(client.post(path, **kwargs), status, code)
    if code in ("invalid_shape", "out_of_range"):
        assert body["field"] == "inputs" and body["expected"]
    assert client.get("/livez").status_code == 200


def test_image_faults_and_limits(client, data_dir) -> None:
    truncated = _truncated_jpeg(data_dir)
    body = assert_client_error(
        client.post(
            "/flowers/predict",
            files=[
                ("image", ("ok.jpg", flower_files(data_dir, 1)[0].read_bytes(), "image/jpeg")),
                ("image", ("bad.jpg", truncated, "image/jpeg")),
            ],
        ),
        422,
        "corrupt_image",
    )
    assert body["item"] == 1
    from tests.test_service_inputs import bomb_png

    assert_client_error(
        client.post(
            "/digits/predict", content=bomb_png(30_000), headers={"content-type": "image/png"}
        ),
        413,
        "image_too_large",
    )
    huge = b"0" * (21 * 1024 * 1024)
    assert_client_error(
        client.post("/digits/predict", content=huge, headers={"content-type": "application/json"}),
        413,
        "body_too_large",
    )
    validation = metric(client, "serving_validation_errors_total", reason="corrupt_image")
    assert validation >= 1


def test_bad_neighbours_do_not_harm_valid_requests(client, quick_repository, data_dir) -> None:
    images, _ = mnist_test(data_dir, 8)
    pixels = digits.scale_pixels(images)
    expected = run_onnx(quick_repository, "digits", "model.onnx", pixels)
    results: dict[int, httpx.Response] = {}

    def send(index: int) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            if index % 2:
                results[index] = own.post(
                    "/digits/predict", json={"inputs": [[float("1e39")] * 784]}
                )
            else:
                results[index] = own.post(
                    "/digits/predict", json={"inputs": pixels[index // 2].tolist()}
                )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(16)), "a client got no answer (its thread failed)"
    for index, response in results.items():
        if index % 2:
            assert_client_error(response, 422, "not_finite")
        else:
            served = response.json()["predictions"][0]["probabilities"]
            np.testing.assert_allclose(served, expected[index // 2], atol=TOLERANCE)


def test_unknown_routes_and_methods_are_json_4xx(client) -> None:
    assert_client_error(client.get("/digits/predict"), 405, "method_not_allowed")
    assert_client_error(client.post("/nowhere", json={}), 404, "not_found")
    assert_client_error(client.get("/models/nosuchmodel"), 404, "unknown_model")


# -- a model with a corrupted file: refused, reported, the others keep serving ------------


def test_corrupted_model_is_refused_and_others_serve(quick_repository, tmp_path, data_dir) -> None:
    import shutil

    from benchmarks.servers import Server

    repo = tmp_path / "models"
    for name in LIGHT_MODELS:  # flowers left out: its load and warm-up are most of a start
        shutil.copytree(quick_repository / name, repo / name)
    version = repository.latest_version(repo, "digits")
    onnx_file = repository.version_dir(repo, "digits", version) / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"tampered")
    log = tmp_path / "serve.log"
    env = {"MODEL_REPOSITORY": str(repo), "SERVING_LOG_JSON": "1", "SERVING_ACCESS_LOG": "1"}
    with Server(env=env, log=log) as server:
        server.wait_until("/livez", timeout=300)
        server.wait_until("/models", timeout=60)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            models = _wait_for_states(client)
            assert models["digits"]["state"] == "failed"
            assert "model.onnx: sha256 mismatch" in models["digits"]["reason"]
            assert all(models[m]["state"] == "ready" for m in ("bank", "autoencoder"))
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert "sha256 mismatch" in ready.text and "digits" in ready.text
            refused = client.post("/digits/predict", json={"inputs": ZERO_IMAGE})
            assert_client_error(refused, 503, "model_unavailable")
            records = bank_records(data_dir, 1)
            answer = client.post("/bank/predict", json=records, headers={"x-request-id": "rid-42"})
            assert answer.status_code == 200 and answer.headers["x-request-id"] == "rid-42"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(
        "model digits version 1 refused" in line["message"] and "sha256 mismatch" in line["message"]
        for line in lines
    )
    access = [line for line in lines if line.get("request_id") == "rid-42"]
    assert access and access[0]["message"].startswith("/bank/predict 200")


def _wait_for_states(client: httpx.Client, timeout: float = 120) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = {m["name"]: m for m in client.get("/models").json()["models"]}
        if all(m["state"] != "loading" for m in models.values()):
            return models
        time.sleep(0.2)
    raise TimeoutError("models still loading")


def test_saved_model_backend_serves_only_once_warm(quick_repository, data_dir, tmp_path) -> None:
    """TensorFlow takes seconds to load: the worker takes no request until every model is
    loaded and warmed (it listens only then), and /readyz is 200 from its first answer; the
    SavedModel backend then serves the ONNX numbers. Without flowers, the heaviest SavedModel
    to load and warm up (with it, this test took 172 s on a busy machine)."""
    import shutil

    from benchmarks.servers import Server, http_status

    for name in LIGHT_MODELS:
        shutil.copytree(quick_repository / name, tmp_path / "models" / name)
    env = {"MODEL_REPOSITORY": str(tmp_path / "models"), "SERVING_BACKEND": "saved_model"}
    with Server(env=env) as server:
        statuses = []
        deadline = time.monotonic() + 600  # a hang guard, not a speed limit
        while time.monotonic() < deadline:
            statuses.append(http_status(server.url + "/livez"))
            if statuses[-1] is not None:
                break
            time.sleep(0.05)
        assert statuses[-1] == 200 and set(statuses[:-1]) <= {None}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/readyz").status_code == 200
            models = client.get("/models").json()["models"]
            assert len(models) == len(LIGHT_MODELS)
            assert all(m["state"] == "ready" and m["backend"] == "saved_model" for m in models)
            images, _ = mnist_test(data_dir, 3)
            pixels = digits.scale_pixels(images)
            response = client.post("/digits/predict", json={"inputs": pixels.tolist()})
            served = np.array([p["probabilities"] for p in response.json()["predictions"]])
            expected = run_onnx(quick_repository, "digits", "model.onnx", pixels)
            np.testing.assert_allclose(served, expected, atol=1e-4)
