"""Safe roll-outs on one real ``bentoml serve``: version labels on every protocol, weighted
and sticky traffic, shadow traffic compared with the live answers, the repository API's
routing call, and ``config.yaml`` followed at every poll (a bad one keeps the last good).

The repository holds the quick models' real graphs as versions: digits 1 and 2 the same
graph, 3 perturbed (other answers), 4 slow (same answers after a costly side branch), 5
failing (NaN for any real digit); bank 1 and 2 perturbed. One server serves every test, each
reconfigured by rewriting ``<model>/config.yaml`` and waiting for the poll to take it.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from benchmarks.payloads import bank_records, mnist_test
from benchmarks.servers import Server
from tests import rollout_models
from tests.test_service import metric

pytestmark = pytest.mark.slow  # the quick models (trained once per session, or reused)
TOKEN = "rollout-token"
BASE = "version_policy: {all: true}\nlabels: {stable: 1, canary: 3}\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, quick_repository: Path) -> Path:
    root = tmp_path_factory.mktemp("rollout-repository")
    digits, bank = quick_repository / "digits" / "1", quick_repository / "bank" / "1"
    for folder in ("digits", "bank"):
        (root / folder).mkdir()
    rollout_models.same(digits, root / "digits" / "1")
    rollout_models.same(digits, root / "digits" / "2")
    rollout_models.perturbed(digits, root / "digits" / "3", scale=0.5)
    rollout_models.slow(digits, root / "digits" / "4")
    rollout_models.failing(digits, root / "digits" / "5")
    rollout_models.same(bank, root / "bank" / "1")
    rollout_models.perturbed(bank, root / "bank" / "2", scale=0.5)
    (root / "digits" / "config.yaml").write_text(BASE)
    (root / "bank" / "config.yaml").write_text("version_policy: {all: true}\n")
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory):
    env = {
        "MODEL_REPOSITORY": str(repo),
        "SERVING_POLL_INTERVAL": "0.5",
        "SERVING_ADMIN_TOKEN": TOKEN,
        "SERVING_STATE_DIR": str(tmp_path_factory.mktemp("state")),
    }
    log = tmp_path_factory.mktemp("rollout-serve") / "serve.log"
    with Server(env=env, log=log) as started:
        started.wait_until("/readyz", timeout=300)
        yield started


@pytest.fixture(scope="module")
def client(server: Server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def digits_x(data_dir: Path) -> np.ndarray:
    return mnist_test(data_dir, 64)[0].astype(np.float32) / 255


def configure(repo: Path, client: httpx.Client, text: str, model: str = "digits", until=None):
    """Write ``config.yaml`` as a publisher would (a whole file renamed into place) and wait
    for the server to have read it (its sha256 in /models) and ``until(described)``, by
    default the file taken."""
    path = repo / model / "config.yaml"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)
    deadline = time.monotonic() + 30
    while True:
        described = client.get(f"/models/{model}").json()
        taken = described["config_file"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
        if taken and (until(described) if until else described["config_file"]["valid"]):
            return described
        assert time.monotonic() < deadline, f"config.yaml not taken: {described['config_file']}"
        time.sleep(0.2)


def weighted(repo, client, text, model="digits"):
    """A config whose traffic weights are in force once /models shows them."""
    import yaml

    weights = {str(k): float(v) for k, v in yaml.safe_load(text)["traffic"].items()}
    return configure(
        repo,
        client,
        text,
        model,
        lambda d: d["traffic"]["weights"] == weights and d["config_file"]["valid"],
    )


def predict(client: httpx.Client, x: np.ndarray, query: str = "", **headers) -> httpx.Response:
    return client.post(
        f"/models/digits/predict{query}", json={"inputs": x.tolist()}, headers=headers
    )


# -- which settings win (no server) -----------------------------------------------------------


def test_config_yaml_wins_over_serving_yaml_key_by_key_and_the_api_over_both(tmp_path) -> None:
    from service.config import load_config
    from service.rollout import merge, read_file, routing_for

    serving = tmp_path / "serving.yaml"
    serving.write_text(
        "models:\n  digits:\n    version_policy: {latest: 2}\n"
        "    labels: {stable: 1, canary: 2}\n    traffic: {stable: 90, canary: 10}\n"
    )
    base = load_config({"SERVING_CONFIG": str(serving)}).model("digits")
    merged, sources = merge(base, None, None)
    assert merged.traffic == {"stable": 90, "canary": 10} and sources["labels"] == "serving.yaml"
    file = read_file(b"traffic: {stable: 50, canary: 50}\n")  # weighs serving.yaml's labels
    merged, sources = merge(base, file, None)
    assert merged.labels == {"stable": 1, "canary": 2} and merged.traffic["canary"] == 50
    assert sources == {"version_policy": "serving.yaml", "labels": "serving.yaml",
                       "traffic": "config.yaml", "shadow": "serving.yaml"}  # fmt: skip
    merged, sources = merge(base, file, {"traffic": {"2": 1}})
    assert merged.traffic == {"2": 1} and sources["traffic"] == "repository API"
    routing = routing_for(merged, {1, 2}, {})
    assert routing.shares() == {"2": 100.0} and routing.pick("anyone") == 2
    with pytest.raises(ValueError, match="names version 2, which is not ready"):
        routing_for(merge(base, file, None)[0], {1}, {2: "loading"})
    with pytest.raises(ValueError, match="neither a label"):
        merge(base, read_file(b"labels: {beta: 3}\n"), None)  # traffic's labels gone


def test_a_version_of_thousands_of_digits_is_no_version() -> None:
    """A weight or shadow target of 5,000 digits (config.yaml, or the repository API's
    routing call) was refused with Python's own "Exceeds the limit (4300 digits) for integer
    string conversion"; it is a target that is neither a label nor a version, as any other."""
    from service.config import ModelConfig, ShadowConfig, check_routing

    huge = "9" * 5000
    with pytest.raises(ValueError, match="neither a label") as refused:
        check_routing({}, {huge: 1.0}, None)
    assert "4300" not in str(refused.value) and len(str(refused.value)) < 300
    with pytest.raises(ValueError, match="neither a label"):
        check_routing({}, {}, ShadowConfig(target=huge, sample=0.5))
    check_routing({"stable": 1}, {"1": 1.0, "stable": 2.0}, None)  # versions, labels: fine
    assert ModelConfig(traffic={"123456789012345678": 1}).traffic  # 18 digits: a version


def test_a_sticky_key_moves_only_with_the_slice_of_weight_that_moves() -> None:
    from service.config import ModelConfig
    from service.rollout import routing_for

    def split(first: float):
        config = ModelConfig(traffic={"1": first, "2": 100 - first})
        return routing_for(config, {1, 2}, {})

    keys = [f"user-{i}" for i in range(20_000)]
    before, after = split(95), split(90)
    picked = {k: (before.pick(k), after.pick(k)) for k in keys}
    moved = [k for k, (a, b) in picked.items() if a != b]
    assert all(picked[k] == (1, 2) for k in moved)  # only from 1 to 2, never back
    share = len(moved) / len(keys)
    assert abs(share - 0.05) < 5 * (0.05 * 0.95 / len(keys)) ** 0.5, share
    assert sum(1 for a, _ in picked.values() if a == 2) / len(keys) == pytest.approx(0.05, abs=0.01)


# -- labels --------------------------------------------------------------------------------


def test_labels_work_on_every_protocol(server, client, repo, digits_x) -> None:
    described = configure(repo, client, BASE)
    assert described["version_labels"] == {"canary": 3, "stable": 1}
    x = digits_x[:2]
    by_version = {
        v: predict(client, x, f"?version={v}").json()["outputs"]["probabilities"] for v in (1, 3)
    }
    assert by_version[1] != by_version[3]  # the perturbed graph answers otherwise

    # native, both routes
    answer = predict(client, x, "?version=canary")
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 3 and answer.headers["x-model-version"] == "3"
    assert answer.json()["outputs"]["probabilities"] == by_version[3]
    rich = client.post("/digits/predict?version=stable", json={"inputs": x.tolist()})
    assert rich.json()["version"] == 1 and rich.headers["x-model-version"] == "1"

    # V2 over HTTP: infer, metadata, ready, config
    body = {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}  # fmt: skip
    v2 = client.post("/v2/models/digits/versions/canary/infer", json=body)
    assert v2.status_code == 200, v2.text
    assert v2.json()["model_version"] == "3"
    assert np.allclose(np.reshape(v2.json()["outputs"][0]["data"], (2, 10)), by_version[3])
    assert client.get("/v2/models/digits/versions/stable/ready").json()["ready"] is True
    assert client.get("/v2/models/digits/versions/canary").status_code == 200
    assert client.get("/v2/models/digits/versions/canary/config").status_code == 200

    # gRPC: model_version is the label; the answer names the version
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensor = grpcclient.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = grpc.infer("digits", [tensor], model_version="canary")
    assert result.get_response().model_version == "3"
    assert np.allclose(result.as_numpy("probabilities"), by_version[3])
    assert grpc.is_model_ready("digits", "stable")
    assert grpc.get_model_metadata("digits", "canary").name == "digits"
    with pytest.raises(InferenceServerException, match="no version or label 'beta'"):
        grpc.infer("digits", [tensor], model_version="beta")

    # TensorFlow Serving: /labels/{label} for status, metadata and predict
    status = client.get("/v1/models/digits/labels/canary").json()
    assert [s["version"] for s in status["model_version_status"]] == ["3"]
    metadata = client.get("/v1/models/digits/labels/stable/metadata").json()
    assert metadata["model_spec"]["version"] == "1"
    tf = client.post("/v1/models/digits/labels/canary:predict", json={"instances": x.tolist()})
    assert tf.status_code == 200, tf.text
    assert tf.headers["x-model-version"] == "3"
    assert np.allclose(tf.json()["predictions"], by_version[3])
    assert client.get("/v1/models/digits/labels/3").status_code == 404  # a number is no label

    # the model card by label; unknown labels are 404s naming the labels there are
    assert client.get("/models/digits/versions/stable/card").status_code == 200
    for response in (
        predict(client, x, "?version=beta"),
        client.post("/v2/models/digits/versions/beta/infer", json=body),
        client.get("/v1/models/digits/labels/beta"),
        client.post("/v1/models/digits/labels/beta:predict", json={"instances": x.tolist()}),
    ):
        assert response.status_code == 404, response.text
        assert "beta" in response.text and "canary" in response.text


def test_an_invalid_config_keeps_the_last_good_settings(server, client, repo, digits_x) -> None:
    configure(repo, client, BASE)
    good = client.get("/models/digits").json()
    bad_files = {
        "not YAML": "labels: {stable: 1\n",
        "unknown key": BASE + "weights: {stable: 1}\n",
        "a number as a label": "labels: {'7': 1}\n",
        "a weight on no label": "traffic: {beta: 10}\n",
        "a sample above 1": "shadow: {target: 2, sample: 1.5}\n",
        # taken as valid, every share NaN or 0: all the traffic went to one version
        "an infinite weight": BASE + "traffic: {stable: .inf, canary: 1}\n",
        "weights whose sum is infinite": BASE + "traffic: {stable: 1.0e308, canary: 1.0e308}\n",
        "a label on a version not served": BASE.replace("canary: 3", "canary: 9"),
    }
    for what, text in bad_files.items():
        described = configure(repo, client, text, until=lambda d: not d["config_file"]["valid"])
        assert described["config_file"]["error"], what
        assert described["version_labels"] == good["version_labels"], what
        assert metric(client, "serving_model_config_valid", model="digits") == 0, what
        answer = predict(client, digits_x[:1], "?version=canary")
        assert answer.headers["x-model-version"] == "3", what  # the last good labels serve
    assert (
        "9" in described["config_file"]["error"]
        and "not ready" in described["config_file"]["error"]
    )
    log = server.log_path.read_text()
    assert "config.yaml refused, the last good settings stay" in log
    assert "roll-out settings refused" in log
    configure(repo, client, BASE)
    assert metric(client, "serving_model_config_valid", model="digits") == 1


# -- weighted and sticky traffic -------------------------------------------------------------


def _versions(client, x, count, threads=4, **headers) -> Counter:
    seen: Counter = Counter()
    lock = threading.Lock()

    def run(n):
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            for _ in range(n):
                answer = predict(own, x, **headers)
                assert answer.status_code == 200, answer.text
                with lock:
                    seen[int(answer.headers["x-model-version"])] += 1

    workers = [threading.Thread(target=run, args=(count // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return seen


def test_traffic_is_split_by_the_weights(client, repo, digits_x) -> None:
    weighted(repo, client, BASE + "traffic: {stable: 80, canary: 20}\n")
    seen = _versions(client, digits_x[:1], 1000)
    assert sum(seen.values()) == 1000 and set(seen) == {1, 3}, seen
    # Binomial(1000, 0.2): sd 12.6; 5 sd either way fails about once in 3.5 million runs.
    assert abs(seen[3] - 200) < 5 * (1000 * 0.2 * 0.8) ** 0.5, seen
    shares = client.get("/models/digits").json()["traffic"]["split"]
    assert shares == {"1": 80.0, "3": 20.0}


def test_a_routing_key_keeps_one_version(server, client, repo, digits_x) -> None:
    weighted(repo, client, BASE + "traffic: {stable: 50, canary: 50}\n")
    x = digits_x[:1]
    chosen = {}
    for key in (f"user-{i}" for i in range(40)):
        versions = {
            predict(client, x, **{"x-routing-key": key}).headers["x-model-version"]
            for _ in range(4)
        }
        assert len(versions) == 1, (key, versions)
        chosen[key] = versions.pop()
    assert set(chosen.values()) == {"1", "3"}, chosen  # 40 keys at 50/50: both versions
    # the same key over gRPC metadata gets the same version
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensor = grpcclient.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    for key in list(chosen)[:6]:
        result = grpc.infer("digits", [tensor], headers={"x-routing-key": key})
        assert result.get_response().model_version == chosen[key], key
    # moving 10 points of weight moves only keys of the slice that changes hands
    weighted(repo, client, BASE + "traffic: {stable: 60, canary: 40}\n")
    for key, version in chosen.items():
        now = predict(client, x, **{"x-routing-key": key}).headers["x-model-version"]
        assert version == "1" or now == version or now == "1", (key, version, now)
        if version == "1":
            assert now == "1", key


def test_weights_change_under_load_without_a_failed_request(server, client, repo, digits_x):
    weighted(repo, client, BASE + "traffic: {stable: 100}\n")
    failures: Counter = Counter()
    answered: list[str] = []
    stop = threading.Event()

    def load():
        with httpx.Client(base_url=server.url, timeout=60) as own:
            while not stop.is_set():
                try:
                    answer = predict(own, digits_x[:2])
                except httpx.HTTPError as error:
                    failures[type(error).__name__] += 1
                    continue
                if answer.status_code != 200:
                    failures[answer.status_code] += 1
                else:
                    answered.append(answer.headers["x-model-version"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for weights in ("{stable: 50, canary: 50}", "{canary: 100}", "{stable: 10, 2: 90}"):
            weighted(repo, client, BASE + f"traffic: {weights}\n")
            time.sleep(0.5)
        # the repository API too, while the load runs
        response = client.post(
            "/v2/repository/models/digits/routing",
            json={"traffic": {"stable": 100}},
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 200, response.text
        time.sleep(0.5)
        mark = len(answered)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == Counter(), failures
    assert {"1", "2", "3"} <= set(answered), Counter(answered)
    assert set(answered[mark:]) == {"1"}, Counter(answered[mark:])


def test_the_repository_api_sets_labels_and_weights(client, repo, digits_x) -> None:
    configure(repo, client, BASE)
    url = "/v2/repository/models/digits/routing"
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert client.post(url, json={"traffic": {"2": 1}}).status_code == 401
    refused = client.post(url, json={"labels": {"beta": 9}}, headers=auth)
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_routing"
    assert "not ready" in refused.json()["error"]
    assert client.post(url, json={"weights": {}}, headers=auth).status_code == 400
    overflow = client.post(url, json={"traffic": {"1": 1e308, "3": 1e308}}, headers=auth)
    assert overflow.status_code == 400 and overflow.json()["code"] == "invalid_routing"
    assert "finite" in overflow.json()["error"], overflow.text
    done = client.post(url, json={"labels": {"beta": 2}, "traffic": {"beta": 1}}, headers=auth)
    assert done.status_code == 200, done.text
    assert done.json()["version_labels"] == {"beta": 2}
    assert done.json()["rollout_sources"]["traffic"] == "repository API"
    assert set(_versions(client, digits_x[:1], 40)) == {2}
    # config.yaml changing after the call wins again (the fleet-wide decision)
    weighted(repo, client, BASE + "traffic: {stable: 1}\n")
    assert set(_versions(client, digits_x[:1], 40)) == {1}


# -- shadow --------------------------------------------------------------------------------


def _shadow_pair(client, model: str, shadow: int, items: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = client.get(f"/models/{model}").json()["shadow"]
        pairs = [p for p in (found or {}).get("pairs", []) if p["shadow_version"] == shadow]
        done = pairs and pairs[0]["items"] + pairs[0]["requests"]["failed"] * 0 >= items
        if done or time.monotonic() > deadline:
            return pairs[0] if pairs else {}
        time.sleep(0.2)


def test_shadow_of_the_same_graph_agrees_and_another_does_not(client, repo, digits_x, data_dir):
    shadowed = BASE + "traffic: {stable: 1}\nshadow: {target: %s, sample: 1.0}\n"
    configure(repo, client, shadowed % 2, until=lambda d: (d["shadow"] or {}).get("version") == 2)
    for start in range(0, 64, 8):
        assert predict(client, digits_x[start : start + 8]).headers["x-model-version"] == "1"
    same = _shadow_pair(client, "digits", 2, 64)
    assert same["items"] == 64 and same["agreement"] == 1.0, same
    assert same["agreement_of"] == "top_class"
    assert same["outputs"]["probabilities"]["max_abs_diff"] == 0.0, same
    labels = {"model": "digits", "live_version": "1", "shadow_version": "2"}
    assert metric(client, "serving_shadow_items_total", **labels) == 64
    assert metric(client, "serving_shadow_agreed_items_total", **labels) == 64

    configure(repo, client, shadowed % "canary",
              until=lambda d: (d["shadow"] or {}).get("version") == 3)  # fmt: skip
    for start in range(0, 64, 8):
        predict(client, digits_x[start : start + 8])
    other = _shadow_pair(client, "digits", 3, 64)
    assert other["items"] == 64 and other["agreement"] < 1.0, other
    assert other["outputs"]["probabilities"]["max_abs_diff"] > 0.01, other
    labels["shadow_version"] = "3"
    assert 0 < metric(client, "serving_shadow_agreed_items_total", **labels) < 64

    # bank: the decision at each version's own threshold
    configure(repo, client, "version_policy: {all: true}\ntraffic: {1: 1}\n"
              "shadow: {target: 2, sample: 1.0}\n", model="bank",
              until=lambda d: (d["shadow"] or {}).get("version") == 2)  # fmt: skip
    records = bank_records(data_dir, 40)
    for start in range(0, 40, 8):
        answer = client.post("/bank/predict", json=records[start : start + 8])
        assert answer.status_code == 200 and answer.headers["x-model-version"] == "1"
    bank = _shadow_pair(client, "bank", 2, 40)
    assert bank["agreement_of"] == "decision" and bank["items"] == 40, bank
    assert 0.5 < bank["agreement"] <= 1.0 and bank["outputs"]["probability"]["max_abs_diff"] > 0


def _timed(client, x, count) -> tuple[list[float], list[list]]:
    seconds, answers = [], []
    for i in range(count):
        started = time.perf_counter()
        answer = predict(client, x[i % len(x) : i % len(x) + 1])
        seconds.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == "1"
        answers.append(answer.json()["outputs"])
    return seconds, answers


def test_a_failing_or_slow_shadow_leaves_live_answers_right_and_fast(client, repo, digits_x):
    configure(repo, client, BASE + "traffic: {stable: 1}\n",
              until=lambda d: d["shadow"] is None and d["config_file"]["valid"])  # fmt: skip
    _timed(client, digits_x, 20)  # warm
    baseline, expected = _timed(client, digits_x, 200)
    base_p50 = float(np.percentile(baseline, 50))
    for version, name in ((5, "failing"), (4, "slow")):
        configure(
            repo,
            client,
            BASE + f"traffic: {{stable: 1}}\nshadow: {{target: {version}, sample: 1.0}}\n",
            until=lambda d, v=version: (d["shadow"] or {}).get("version") == v,
        )
        seconds, answers = _timed(client, digits_x, 200)
        assert answers == expected, f"{name} shadow changed a live answer"
        p50 = float(np.percentile(seconds, 50))
        # Generous: the slow shadow takes the CPU the live requests share on this machine.
        limit = 5 * base_p50 + 0.010
        assert p50 < limit, (
            f"{name} shadow: live p50 {p50 * 1000:.2f} ms, baseline {base_p50 * 1000:.2f} ms, "
            f"limit {limit * 1000:.2f} ms"
        )
        pair = _shadow_pair(client, "digits", version, 0)
        requests = pair["requests"]
        print(f"{name} shadow: live p50 {p50 * 1000:.2f} ms (baseline {base_p50 * 1000:.2f}), "
              f"shadow {requests}, {pair['mean_shadow_seconds']} s each")  # fmt: skip
        if name == "failing":
            assert requests["failed"] >= 150 and requests["compared"] == 0, pair
            assert "not finite" in pair["last_error"], pair
        else:
            assert requests["compared"] + requests["dropped"] >= 150, pair
            assert pair["agreement"] in (None, 1.0), pair


def test_the_page_shows_labels_traffic_and_shadow_agreement(
    server, client, repo, digits_x, tmp_path
):
    import asyncio

    from tests.test_page import BROWSER, _visit

    if BROWSER is None:
        pytest.fail("no chromium: install Debian's package `chromium`")
    text = BASE + "traffic: {stable: 80, canary: 20}\nshadow: {target: 2, sample: 1.0}\n"
    configure(repo, client, text, until=lambda d: (d["shadow"] or {}).get("version") == 2)
    for start in range(0, 64, 16):  # live answers from 1 or 3, each compared with 2
        assert predict(client, digits_x[start : start + 16]).status_code == 200
    _shadow_pair(client, "digits", 2, 1)
    paths = list(client.get("/docs.json").json()["paths"])
    dom, _, _ = asyncio.run(_visit(BROWSER, server.url + "/", tmp_path / "profile", paths))
    assert "canary \u2192 v3, stable \u2192 v1" in dom
    assert "v1 80%, v3 20%" in dom
    assert re.search(r"v2 at 100%: [0-9.]+% top class agreement; probabilities max", dom), dom
    assert 'class="config-error"' not in dom


def test_the_dashboard_and_rules_query_rollout_series_that_exist(client) -> None:
    """After the shadow tests above, every shadow and config.yaml series deploy/monitoring
    queries is on this server's /metrics."""
    from service.rollout import SHADOW_METRICS
    from tests.test_deploy import ROOT, used_metrics

    monitoring = ROOT / "deploy" / "monitoring"
    queried = used_metrics((monitoring / "dashboard.json").read_text())
    queried |= used_metrics((monitoring / "prometheusrule.yaml").read_text())
    wanted = {n for n in queried if n.startswith("serving_shadow_")}
    assert wanted == set(SHADOW_METRICS), wanted
    assert "serving_model_config_valid" in queried
    exposed = {
        line.split("{")[0].split(" ")[0]
        for line in client.get("/metrics").text.splitlines()
        if line and not line.startswith("#")
    }
    assert wanted | {"serving_model_config_valid"} <= exposed, sorted(wanted - exposed)


def test_a_specific_version_policy_serves_those_versions_only(client, repo, digits_x) -> None:
    """``specific`` on the running server, followed from ``config.yaml``: versions 1 and 3
    answer, by number and by label; 2 is unloaded and refused as unknown; a request naming
    none goes to the newest served, 3."""
    ready = lambda d: sorted(v["version"] for v in d["versions"] if v["state"] == "ready")  # noqa: E731
    configure(repo, client, "version_policy: {specific: [1, 3]}\nlabels: {stable: 1}\n",
              until=lambda d: ready(d) == [1, 3])  # fmt: skip
    x = digits_x[:2]
    for number in (1, 3):
        answer = predict(client, x, f"?version={number}")
        assert answer.status_code == 200 and answer.headers["x-model-version"] == str(number)
    assert predict(client, x).headers["x-model-version"] == "3"
    assert predict(client, x, "?version=stable").headers["x-model-version"] == "1"
    refused = predict(client, x, "?version=2")
    assert refused.status_code == 404 and refused.json()["code"] == "unknown_version"
    entry = {"name": "image", "shape": [2, 28, 28], "datatype": "FP32", "data": x.ravel().tolist()}
    v2 = client.post("/v2/models/digits/versions/2/infer", json={"inputs": [entry]})
    assert v2.status_code == 404 and v2.json()["code"] == "unknown_version", v2.text
    assert client.get("/v2/models/digits/versions/3/ready").status_code == 200
    configure(repo, client, BASE, until=lambda d: ready(d) == [1, 2, 3, 4, 5])
