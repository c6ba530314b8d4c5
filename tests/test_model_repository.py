"""Any model, any version, live: models the project never saw, trained here, exported by the
real CLI, served by a real ``bentoml serve`` and called through V2 (tritonclient), TF Serving
REST and the native tensor route; new versions rolled out and back under load; a corrupt
version refused while the old one serves; the repository API with and without its token.

Two user models: the README's kind (one input, one output) and one with two inputs (one
INT64) and two outputs; they are exported at once, each by its own CLI process. New versions
of the session's digits are published as the CLI publishes them (a finished folder renamed
into place), without another export: ``tests/test_export.py`` exports a next version.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from benchmarks.payloads import mnist_test
from benchmarks.servers import Server
from modelspec import digits
from tests.conftest import run_cli
from tests.test_service import metric

pytestmark = pytest.mark.slow
TOKEN = "s3cret-token"
POLL_SECONDS = 1.0
TOLERANCE = 1e-5


def _train_user_models(folder: Path) -> dict[str, Path]:
    """Two models of shapes the project has no recipe for, trained on the spot."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from sklearn.datasets import load_iris

    keras.utils.set_random_seed(0)
    x, y = load_iris(return_X_y=True)
    iris = keras.Sequential(
        [
            keras.Input((4,), name="measurements"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(3, activation="softmax", name="species"),
        ],
        name="iris",
    )
    iris.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    iris.fit(x.astype("float32"), y, epochs=20, verbose=0)

    features = keras.Input((3,), name="features")
    group = keras.Input((1,), dtype="int64", name="group")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(4, 2)(group))
    hidden = keras.layers.Dense(8, activation="relu")(
        keras.layers.Concatenate()([features, embedded])
    )
    two = keras.Model(
        [features, group],
        [
            keras.layers.Dense(1, name="score")(hidden),
            keras.layers.Dense(3, activation="softmax", name="kind")(hidden),
        ],
        name="two_heads",
    )
    paths = {}
    for model in (iris, two):
        paths[model.name] = folder / f"{model.name}.keras"
        model.save(paths[model.name])
    return paths


@pytest.fixture(scope="module")
def user_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _train_user_models(tmp_path_factory.mktemp("user-models"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, quick_repository: Path, user_models) -> Path:
    """A repository with the quick digits model and the user models, exported by the CLI as
    a user would (both at once: most of an export is starting TensorFlow)."""
    root = tmp_path_factory.mktemp("live-repository")
    for name in ("digits", "autoencoder"):  # autoencoder: a model of several signatures
        shutil.copytree(quick_repository / name, root / name)

    def export(path: Path):
        return run_cli("export", "--model", str(path), "--repository", str(root))

    with ThreadPoolExecutor(len(user_models)) as pool:
        results = dict(zip(user_models, pool.map(export, user_models.values()), strict=True))
    for name, result in results.items():
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().endswith(f"{name}/1")
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory):
    env = {
        "MODEL_REPOSITORY": str(repo),
        "SERVING_POLL_INTERVAL": str(POLL_SECONDS),
        "SERVING_ADMIN_TOKEN": TOKEN,
        "SERVING_STATE_DIR": str(tmp_path_factory.mktemp("state")),
    }
    log = tmp_path_factory.mktemp("live-serve") / "serve.log"
    with Server(env=env, log=log) as started:
        started.wait_until("/readyz", timeout=300)
        yield started


@pytest.fixture(scope="module")
def client(server: Server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _keras(path: Path, *inputs: np.ndarray) -> list[np.ndarray]:
    import keras

    model = keras.saving.load_model(path, compile=False)
    out = model.predict(list(inputs) if len(inputs) > 1 else inputs[0], verbose=0)
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


# -- models the project never saw -------------------------------------------------------------


def test_user_models_through_tritonclient_equal_keras(server: Server, user_models) -> None:
    rng = np.random.default_rng(1)
    measurements = rng.uniform(0, 7, (5, 4)).astype(np.float32)
    features = rng.standard_normal((6, 3)).astype(np.float32)
    groups = rng.integers(0, 4, (6, 1)).astype(np.int64)
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        for binary in (True, False):
            measured = triton.InferInput("measurements", [5, 4], "FP32")
            measured.set_data_from_numpy(measurements, binary_data=binary)
            species = client.infer("iris", [measured]).as_numpy("species")
            np.testing.assert_allclose(
                species, _keras(user_models["iris"], measurements)[0], atol=TOLERANCE
            )
            first = triton.InferInput("features", [6, 3], "FP32")
            first.set_data_from_numpy(features, binary_data=binary)
            second = triton.InferInput("group", [6, 1], "INT64")
            second.set_data_from_numpy(groups, binary_data=binary)
            answer = client.infer("two_heads", [first, second])
            score, kind = _keras(user_models["two_heads"], features, groups)
            np.testing.assert_allclose(answer.as_numpy("score"), score, atol=TOLERANCE)
            np.testing.assert_allclose(answer.as_numpy("kind"), kind, atol=TOLERANCE)
        metadata = client.get_model_metadata("two_heads")
        datatypes = {t["name"]: (t["datatype"], t["shape"]) for t in metadata["inputs"]}
        assert datatypes == {"features": ("FP32", [-1, 3]), "group": ("INT64", [-1, 1])}
        assert client.is_model_ready("two_heads")
        assert client.get_model_config("iris")["max_batch_size"]
        with pytest.raises(InferenceServerException, match="400"):
            bad = triton.InferInput("group", [1, 1], "FP32")  # an INT64 input given fractions
            bad.set_data_from_numpy(np.array([[0.5]], np.float32))
            client.infer("two_heads", [first, bad])
    finally:
        client.close()


def test_user_models_through_tf_serving_and_native_tensors(client, user_models) -> None:
    measurements = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], np.float32)
    expected = _keras(user_models["iris"], measurements)[0]
    rows = client.post("/v1/models/iris:predict", json={"instances": measurements.tolist()})
    np.testing.assert_allclose(rows.json()["predictions"], expected, atol=TOLERANCE)
    columns = client.post("/v1/models/iris:predict", json={"inputs": measurements.tolist()})
    np.testing.assert_allclose(columns.json()["outputs"], expected, atol=TOLERANCE)
    native = client.post("/models/iris/predict", json={"inputs": measurements.tolist()})
    assert native.json()["signature"] == "predict" and native.json()["version"] == 1
    np.testing.assert_allclose(native.json()["outputs"]["species"], expected, atol=TOLERANCE)
    features, groups = np.array([[0.1, 0.2, 0.3]], np.float32), np.array([[3]], np.int64)
    score, kind = _keras(user_models["two_heads"], features, groups)
    named = client.post(
        "/v1/models/two_heads:predict",
        json={"instances": [{"features": features[0].tolist(), "group": groups[0].tolist()}]},
    ).json()["predictions"][0]
    np.testing.assert_allclose(named["score"], score[0], atol=TOLERANCE)
    both = client.post(
        "/models/two_heads/predict",
        json={"inputs": {"features": features.tolist(), "group": groups.tolist()}},
    ).json()["outputs"]
    np.testing.assert_allclose(both["kind"], kind, atol=TOLERANCE)
    # An INT64 input takes whole numbers only; a missing input is named.
    fractional = client.post(
        "/models/two_heads/predict",
        json={"inputs": {"features": features.tolist(), "group": [[1.5]]}},
    )
    assert fractional.status_code == 422 and fractional.json()["field"] == "group"
    missing = client.post("/models/two_heads/predict", json={"inputs": {"group": [[1]]}})
    assert missing.status_code == 422 and missing.json()["field"] == "features"


def test_every_model_has_its_place_in_models_openapi_and_metrics(client) -> None:
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert set(models) == {"digits", "autoencoder", "iris", "two_heads"}
    assert models["iris"]["origin"] == "user" and models["digits"]["origin"] == "trained"
    assert models["two_heads"]["signatures"]["predict"]["native_route"] is None
    assert models["digits"]["signatures"]["predict"]["native_route"] == "/digits/predict"
    card = client.get(models["iris"]["model_card"])
    assert card.status_code == 200 and "User-supplied" in card.text
    paths = client.get("/docs.json").json()["paths"]
    assert "/digits/predict" in paths and "/models/{name}/predict" in paths
    names = paths["/v2/models/{name}/infer"]["post"]["parameters"][0]["schema"]["enum"]
    assert {"iris", "two_heads", "digits"} <= set(names)
    assert metric(client, "serving_model_ready", model="two_heads") == 1
    assert metric(client, "serving_requests_total", model="iris") > 0


# -- versions: policy, roll-out, roll-back, a corrupt version -----------------------------


class Traffic:
    """Clients sending digits requests without pause, recording each answer's version."""

    def __init__(self, url: str, body: dict, clients: int = 4) -> None:
        self.url, self.body = url, body
        self.answers: list[tuple[float, int | str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = client.post("/digits/predict", json=self.body)
                    outcome = (
                        response.json()["version"]
                        if response.status_code == 200
                        else (f"status {response.status_code}")
                    )
                except (httpx.HTTPError, ValueError, KeyError) as error:
                    outcome = type(error).__name__
                self.answers.append((time.time(), outcome))

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def first(self, version: int, after: float) -> float | None:
        return next((t for t, v in self.answers if t >= after and v == version), None)

    def failures(self) -> Counter:
        return Counter(v for _, v in self.answers if not isinstance(v, int))


def _wait(condition, timeout: float = 600) -> None:
    """A hang guard: the speed is judged by the budgets the tests compute."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out after {timeout} s"
        time.sleep(0.1)


def publish_copy(repo: Path, name: str, version: int) -> float:
    """Version 1 of ``name`` published again as ``version``, the way the CLI publishes (a
    finished folder renamed into place); the time it was published."""
    staging = repo / name / f".staging-copy-{version}"
    shutil.copytree(repo / name / "1", staging)
    staging.rename(repo / name / str(version))
    return time.time()


def test_a_new_version_rolls_out_and_back_under_load(server, client, repo, data_dir) -> None:
    images, _ = mnist_test(data_dir, 1)
    body = {"inputs": digits.scale_pixels(images).tolist()}
    load_sum = metric(client, "serving_model_load_seconds_sum", model="digits")
    load_count = metric(client, "serving_model_load_seconds_count", model="digits")
    with Traffic(server.url, body) as traffic:
        time.sleep(1)
        published = publish_copy(repo, "digits", 2)
        _wait(lambda: traffic.first(2, published) is not None)
        live_after = traffic.first(2, published) - published
        time.sleep(1)
        shutil.rmtree(repo / "digits" / "2")
        removed = time.time()
        _wait(lambda: traffic.answers[-1][1] == 1 and traffic.first(1, removed) is not None)
        back_after = traffic.first(1, removed) - removed
        time.sleep(1)
    answered = [v for _, v in traffic.answers]
    print(
        f"roll-out: {len(answered)} requests, {sum(traffic.failures().values())} failed; "
        f"live after {live_after:.1f} s, rolled back after {back_after:.1f} s"
    )
    assert traffic.failures() == Counter(), traffic.failures()
    assert answered.count(2) > 0 and answered[-1] == 1
    # Budgets from this run: the scan interval, then the verify, load and warm-up time the
    # server itself measured for version 2 (a busy machine makes that slower too), three
    # times over, plus 10 s; rolling back loads nothing.
    loads = metric(client, "serving_model_load_seconds_count", model="digits") - load_count
    load_total = metric(client, "serving_model_load_seconds_sum", model="digits") - load_sum
    load_s = load_total / max(loads, 1)
    out_budget = 3 * (POLL_SECONDS + load_s) + 10
    back_budget = 3 * POLL_SECONDS + 10
    assert live_after < out_budget, f"live after {live_after:.1f} s; budget {out_budget:.1f} s"
    assert back_after < back_budget, f"back after {back_after:.1f} s; budget {back_budget:.1f} s"
    versions = {v["version"]: v["state"] for v in client.get("/models/digits").json()["versions"]}
    assert versions == {1: "ready"}
    assert metric(client, "serving_model_events_total", model="digits", event="loaded") >= 2


def test_a_corrupt_new_version_is_refused_and_the_old_one_serves(client, repo) -> None:
    before = metric(client, "serving_model_events_total", model="iris", event="load_failed")
    staging = repo / "iris" / ".staging-by-hand"
    shutil.copytree(repo / "iris" / "1", staging)
    graph = staging / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-50] + b"x" * 50)
    staging.rename(repo / "iris" / "2")  # published atomically, as the CLI does

    def refused() -> bool:
        states = {v["version"]: v for v in client.get("/models/iris").json()["versions"]}
        return 2 in states and states[2]["state"] == "failed"

    _wait(refused, timeout=60)
    model = client.get("/models/iris").json()
    assert model["version"] == 1 and model["state"] == "ready"
    failed = next(v for v in model["versions"] if v["version"] == 2)
    assert "sha256 mismatch" in failed["reason"]
    answer = client.post("/models/iris/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})
    assert answer.status_code == 200 and answer.json()["version"] == 1
    assert (
        client.post("/models/iris/predict?version=2", json={"inputs": [[1, 2, 3, 4]]}).json()[
            "code"
        ]
        == "unknown_version"
    )
    after = metric(client, "serving_model_events_total", model="iris", event="load_failed")
    assert after == before + 1
    status = client.get("/v1/models/iris").json()["model_version_status"]
    assert {s["version"]: s["state"] for s in status} == {"2": "END", "1": "AVAILABLE"}
    shutil.rmtree(repo / "iris" / "2")


def test_a_version_copied_file_by_file_is_served_once_whole(client, repo) -> None:
    """A version copied in place file by file (rsync writes manifest.json first, cp -r in
    the folder's order), not renamed whole: refused while a file is missing, then served once
    it is there. The failure was kept until the manifest itself changed: never, here."""
    source, target = repo / "iris" / "1", repo / "iris" / "3"
    target.mkdir()
    try:
        shutil.copy2(source / "manifest.json", target / "manifest.json")

        def state() -> dict:
            found = {v["version"]: v for v in client.get("/models/iris").json()["versions"]}
            return found.get(3, {})

        _wait(lambda: state().get("state") == "failed", timeout=60)
        assert "missing" in state()["reason"], state()
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.name != "manifest.json":
                (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.relative_to(source))
        _wait(lambda: state().get("state") == "ready", timeout=60)
        answer = client.post("/models/iris/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})
        assert answer.status_code == 200 and answer.json()["version"] == 3, answer.text
    finally:
        shutil.rmtree(target)
    _wait(lambda: client.get("/models/iris").json()["version"] == 1, timeout=60)


def test_a_version_policy_serves_several_versions(repo, tmp_path) -> None:
    """latest 2: both versions answer by number; the unnumbered route takes the highest. On
    the same server, models of the repository it was configured not to serve are 404s on
    every protocol (one server for both: a start is most of either test's time)."""
    publish_copy(repo, "digits", 2)
    zeros = {"inputs": np.zeros((1, 28, 28)).tolist()}
    config = tmp_path / "serving.yaml"
    config.write_text("models:\n  digits: {version_policy: {latest: 2}}\ndiscover: false\n")
    env = {"MODEL_REPOSITORY": str(repo), "SERVING_CONFIG": str(config)}
    try:
        with Server(env=env) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            server.wait_until("/readyz", timeout=300)
            for number in (1, 2):
                v2 = client.get(f"/v2/models/digits/versions/{number}/ready")
                assert v2.status_code == 200
                native = client.post(f"/models/digits/predict?version={number}", json=zeros)
                assert native.json()["version"] == number
            assert client.post("/models/digits/predict", json=zeros).json()["version"] == 2
            assert client.get("/v2/models/digits").json()["versions"] == ["1", "2"]
            assert [m["name"] for m in client.get("/models").json()["models"]] == ["digits"]
            for path in ("/v1/models/iris", "/v1/models/iris/metadata", "/v2/models/iris",
                         "/v2/models/autoencoder_encode/ready", "/models/iris"):  # fmt: skip
                response = client.get(path)
                assert response.status_code == 404, (path, response.text)
                assert response.json()["code"] == "unknown_model"
            predict = client.post("/v1/models/iris:predict", json={"instances": [[1, 2, 3, 4]]})
            assert predict.status_code == 404
            assert client.get("/v1/models/digits").status_code == 200
    finally:
        shutil.rmtree(repo / "digits" / "2")


# -- the model repository API -----------------------------------------------------------------


def test_the_repository_api_needs_its_token(client, service_url: str) -> None:
    """No token configured (the quick service): 403. Here: no or a wrong token, 401."""
    closed = httpx.post(f"{service_url}/v2/repository/index", timeout=30)
    assert closed.status_code == 403 and closed.json()["code"] == "admin_disabled"
    assert client.post("/v2/repository/index").status_code == 401
    wrong = client.post("/v2/repository/index", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    unload = client.post("/v2/repository/models/iris/unload")
    assert unload.status_code == 401


def test_unload_and_load_through_tritonclient(server: Server, client, repo: Path) -> None:
    admin = triton.InferenceServerClient(server.url.removeprefix("http://"), verbose=False)
    headers = {"authorization": f"Bearer {TOKEN}"}
    try:
        index = {m["name"]: m for m in admin.get_model_repository_index(headers=headers)}
        assert index["iris"]["state"] == "READY" and index["two_heads"]["version"] == "1"
        before = metric(client, "serving_model_events_total", model="iris", event="unloaded")
        admin.unload_model("iris", headers=headers)
        assert not admin.is_model_ready("iris")
        status = client.get("/v1/models/iris").json()["model_version_status"]
        assert status[0]["state"] == "END"
        refused = client.post("/models/iris/predict", json={"inputs": [[1, 2, 3, 4]]})
        assert refused.status_code == 503
        # Any /iris/<name> reaches the model while it has no version to say which names
        # exist: the name must not become a metric label (a time series per made-up name).
        made_up = f"made-up-{time.time_ns()}"
        assert client.post(f"/iris/{made_up}", json={}).status_code == 503
        assert made_up not in client.get("/metrics").text
        assert client.get("/readyz").status_code == 200  # unloaded on purpose: still ready
        index = {m["name"]: m for m in admin.get_model_repository_index(headers=headers)}
        assert index["iris"]["state"] == "UNAVAILABLE" and "unloaded" in index["iris"]["reason"]
        # Polling does not bring it back: a folder made now is seen only by a poll (GET
        # /models/<name> answers 404 until one runs), then iris is still unloaded.
        probe = repo / f"poll-probe-{time.time_ns()}"
        probe.mkdir()
        try:
            _wait(lambda: client.get(f"/models/{probe.name}").status_code == 200, 60)
        finally:
            probe.rmdir()
        assert not admin.is_model_ready("iris")
        _wait(lambda: client.get(f"/models/{probe.name}").status_code == 404, 60)  # forgotten
        admin.load_model("iris", headers=headers)
        assert admin.is_model_ready("iris")
        after = metric(client, "serving_model_events_total", model="iris", event="unloaded")
        assert after == before + 1
        assert metric(client, "serving_model_load_seconds_count", model="iris") >= 2
        with pytest.raises(InferenceServerException) as raised:
            admin.load_model("nowhere", headers=headers)
        assert raised.value.status() == "404", raised.value
        assert "no model 'nowhere' in the repository" in raised.value.message()

        # A load and an unload at once: one waits for the other, neither fails.
        def at_once(action: str) -> None:
            own = triton.InferenceServerClient(server.url.removeprefix("http://"))
            try:
                getattr(own, action)("iris", headers=headers)
            finally:
                own.close()

        with ThreadPoolExecutor(2) as pool:
            for call in [pool.submit(at_once, a) for a in ("unload_model", "load_model")]:
                call.result()
        admin.load_model("iris", headers=headers)
        assert admin.is_model_ready("iris")
    finally:
        admin.close()
