"""A model repository on object storage, against real servers on loopback: moto's S3 server
and Azurite (Azure Blob); GCS by configuration (gcp-storage-emulator serves only the JSON API,
and obstore speaks GCS's XML API: README, "Model repository on object storage").

The CLI publishes straight to the bucket and a real ``bentoml serve`` follows it through the
standard endpoint variables, as it would follow the cloud.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.servers import Server
from modelspec import storage
from tests.conftest import ROOT, run_cli
from tests.storage_servers import Azurite, Moto

POLL_S = 1.0


def tiny_onnx(path: Path, scale: float) -> Path:
    """y = scale * x, x of shape (N, 4): each version answers with its own scale."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.full((4,), scale, np.float32), "k")],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def export(source: Path, url: str, env: dict[str, str], name: str = "tiny") -> str:
    result = run_cli("export", "--model", str(source), "--name", name, "--repository", url, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def infer(client: httpx.Client, name: str = "tiny") -> tuple[str, float]:
    """(the version that answered, its scale)."""
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}
    reply = client.post(f"/v2/models/{name}/infer", json=body)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    return answer["model_version"], answer["outputs"][0]["data"][0]


def served(client: httpx.Client) -> dict:
    return client.get("/models").json()


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last})")


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels (every worker's)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- locations and configuration (no server) -------------------------------------------------


def test_repository_locations_are_parsed_and_unknown_schemes_refused() -> None:
    remote = storage.parse("s3://bucket/some/prefix/")
    assert (remote.scheme, remote.bucket, remote.prefix) == ("s3", "bucket", "some/prefix")
    assert storage.parse("az://container").url == "az://container"
    assert storage.parse("models") == Path("models")
    for bad in ("ftp://host/models", "s3:///prefix", "file://x"):
        with pytest.raises(storage.RepositoryError):
            storage.parse(bad)


def test_gcs_is_configured_from_the_bucket_url_and_google_variables(monkeypatch, tmp_path) -> None:
    """GCS by configuration: the store is GCS, on the bucket, under the prefix, and takes its
    credentials from GOOGLE_APPLICATION_CREDENTIALS (a missing file is named in the error,
    before any request leaves the machine)."""
    from obstore.store import GCSStore

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    remote = storage.parse("gs://fleet-bucket/team/models")
    assert isinstance(remote.store, GCSStore)
    assert remote.store.config["bucket"] == "fleet-bucket"
    assert remote.store.prefix == "team/models"

    credentials = tmp_path / "no-such-credentials.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    remote = storage.parse("gs://fleet-bucket/team/models")
    with pytest.raises(storage.StorageError, match=re.escape(str(credentials))) as raised:
        remote.list()
    assert "\n" not in str(raised.value)


def test_the_service_refuses_to_start_on_a_bad_repository(tmp_path: Path) -> None:
    cases = {
        "ftp://host/models": "unknown scheme 'ftp'",
        str(tmp_path / "no-such-folder"): "no such folder",
    }
    servers = [  # both at once: each is a full `bentoml serve` start
        Server(env={"MODEL_REPOSITORY": location}, log=tmp_path / f"bad{i}.log").start()
        for i, location in enumerate(cases)
    ]
    try:
        codes = [server.process.wait(120) for server in servers]
    finally:
        for server in servers:
            server.__exit__()
    for i, (said, code) in enumerate(zip(cases.values(), codes, strict=True)):
        output = (tmp_path / f"bad{i}.log").read_text()
        assert code == 2, output[-2000:]
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and said in errors[0], output[-2000:]
        assert "Traceback" not in output


# -- S3 (moto) ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory):
    with Moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("sources")
    return {scale: tiny_onnx(folder / f"x{scale}" / "tiny.onnx", scale) for scale in (2, 3, 5)}


@pytest.fixture
def in_moto(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> Moto:
    """This test process reaches moto too (the same variables the CLI and service get)."""
    for key, value in moto.env.items():
        monkeypatch.setenv(key, value)
    return moto


def test_export_publishes_to_s3_manifest_last_and_never_writes_a_local_s3_folder(
    in_moto: Moto, sources: dict[int, Path]
) -> None:
    moto = in_moto
    url = moto.url("cli")
    first = export(sources[2], url, moto.env)
    assert first == f"{url}/tiny/1"
    assert not (ROOT / "s3:").exists()

    # An upload cut short: files of number 2 without a manifest. Not a version, and the
    # next publish goes past it instead of failing on it or mixing with it.
    import obstore

    remote = storage.parse(url)
    obstore.put(remote.store, "tiny/2/model.onnx", b"half an upload")
    assert sorted(remote.list().versions()["tiny"]) == [1]
    assert export(sources[3], url, moto.env) == f"{url}/tiny/3"

    listing = remote.list()
    assert sorted(listing.versions()["tiny"]) == [1, 3]
    manifest = json.loads(bytes(obstore.get(remote.store, "tiny/3/manifest.json").bytes()))
    assert manifest["version"] == 3
    assert set(manifest["files"]) == {
        k.removeprefix("tiny/3/") for k in listing.objects if k.startswith("tiny/3/")
    } - {"manifest.json"}


def test_a_publisher_that_loses_a_number_takes_its_files_back(
    in_moto: Moto, tmp_path: Path
) -> None:
    """Two exports of one model at once both pick number 1; the other one's model.onnx lands
    first. Ours gave the number up and published 2, but used to leave its external data file
    (uploaded before its model.onnx) inside the other's version 1, a file no manifest names."""
    import obstore

    remote = storage.parse(in_moto.url("race"))
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "a.bin").write_bytes(b"ours")  # sorts before model.onnx: uploaded first
    (stage / "model.onnx").write_bytes(b"our graph")

    def write_card(manifest: dict, directory: Path) -> None:
        (directory / "model_card.md").write_text(f"version {manifest['version']}")
        if manifest["version"] == 1:  # the other export, between our listing and our upload
            obstore.put(remote.store, "m/1/model.onnx", b"their graph", mode="create")

    published = remote.publish(stage, "m", {"name": "m"}, write_card)
    assert published == f"{remote.url}/m/2"
    assert sorted(k for k in remote.list().objects if k.startswith("m/1/")) == ["m/1/model.onnx"]


def test_a_manifest_naming_files_outside_its_version_is_refused_before_any_write(
    in_moto: Moto, tmp_path: Path
) -> None:
    import obstore

    remote = storage.parse(in_moto.url("hostile"))
    manifest = {"name": "evil", "version": 1, "files": {"../../outside.txt": "0" * 64}}
    obstore.put(remote.store, "evil/1/manifest.json", json.dumps(manifest).encode())
    obstore.put(remote.store, "evil/outside.txt", b"x")
    (tmp_path / "evil").mkdir()
    with pytest.raises(ValueError, match="outside its version"):
        remote.download_version("evil", 1, tmp_path / "evil" / "1")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil"]


def test_a_manifests_file_names_are_keys_as_a_local_repository_reads_them(
    in_moto: Moto, tmp_path: Path
) -> None:
    """``./model.onnx`` or ``a//b`` in a manifest name the file a local repository finds there
    (and ``aws s3 sync`` uploads as ``model.onnx``, ``a/b``); a name that is no object key
    at all refuses the version. Both were read as the store failing: the version was tried
    again at every poll, forever (a GET and an error line each time), and never served."""
    import hashlib

    import obstore

    remote = storage.parse(in_moto.url("names"))
    digest = hashlib.sha256(b"x").hexdigest()
    obstore.put(remote.store, "odd/1/model.onnx", b"x")
    obstore.put(remote.store, "odd/1/a/b", b"x")
    files = {"./model.onnx": digest, "a//b": digest}
    manifest = {"name": "odd", "version": 1, "files": files}
    obstore.put(remote.store, "odd/1/manifest.json", json.dumps(manifest).encode())
    (tmp_path / "odd").mkdir()
    remote.download_version("odd", 1, tmp_path / "odd" / "1")
    assert (tmp_path / "odd" / "1" / "model.onnx").read_bytes() == b"x"
    assert (tmp_path / "odd" / "1" / "a" / "b").read_bytes() == b"x"

    manifest = {"name": "odd", "version": 2, "files": {"a\nb": digest}}
    obstore.put(remote.store, "odd/2/manifest.json", json.dumps(manifest).encode())
    with pytest.raises(ValueError, match="not an object name") as refused:
        remote.download_version("odd", 2, tmp_path / "odd" / "2")
    assert not isinstance(refused.value, storage.StorageError)


def test_the_cache_refuses_a_version_past_its_bound(
    in_moto: Moto, sources: dict[int, Path], tmp_path: Path
) -> None:
    from service.metrics import Metrics
    from service.mirror import CacheFull, Mirror

    url = in_moto.url("bounded")
    export(sources[2], url, in_moto.env)
    size = storage.parse(url).list().version_bytes("tiny", 1)
    small = Mirror(storage.parse(url), tmp_path / "small", size - 1, Metrics("bound_small"))
    assert small.published() == {"tiny": {1: small.cache_dir / "tiny" / "1"}}
    with pytest.raises(CacheFull, match="over its limit"):
        small.fetch("tiny", 1)
    roomy = Mirror(storage.parse(url), tmp_path / "roomy", size, Metrics("bound_roomy"))
    roomy.published()
    copied = roomy.fetch("tiny", 1)
    assert (copied / "manifest.json").is_file()
    assert 0 <= roomy.size() - size < 100  # the version, and the ETag it was copied at


def test_a_models_config_yaml_is_followed_from_the_bucket(
    in_moto: Moto, sources: dict[int, Path], tmp_path: Path
) -> None:
    """``<model>/config.yaml`` in the bucket: read with one GET when its ETag changes (none
    while it stays), a bad one keeps the last good settings, a deleted one gives way to
    serving.yaml's. The registry a worker runs, polled here scan by scan."""
    import asyncio

    import obstore
    from prometheus_client import REGISTRY

    from service.admin import SharedState
    from service.config import load_config
    from service.metrics import Metrics
    from service.registry.following import Registry

    url = in_moto.url("rollout")
    export(sources[2], url, in_moto.env)
    export(sources[3], url, in_moto.env)
    remote = storage.parse(url)
    settings = load_config(
        {
            "MODEL_REPOSITORY": url,
            "SERVING_CACHE_DIR": str(tmp_path / "cache"),
            "SERVING_STATE_DIR": str(tmp_path / "state"),
        }
    )
    registry = Registry(settings, Metrics("rollout_s3"), SharedState(settings))

    def gets() -> float:
        labels = {"repository": url, "operation": "get"}
        return REGISTRY.get_sample_value("rollout_s3_repository_requests_total", labels) or 0

    async def follow() -> None:
        def put(text: str) -> None:
            obstore.put(remote.store, "tiny/config.yaml", text.encode())

        put("version_policy: {all: true}\nlabels: {stable: 1, canary: 2}\ntraffic: {canary: 1}\n")
        await registry.refresh()
        model = registry.find("tiny")
        assert model.routing.labels == {"stable": 1, "canary": 2}, model.file_error
        assert model.route(None, None).number == 2
        before = gets()
        await registry.refresh()  # unchanged: its ETag says so, nothing read
        assert gets() == before
        put("labels: {stable: 1\n")  # not YAML
        await registry.refresh()
        assert gets() == before + 1
        assert "not YAML" in model.describe()["config_file"]["error"]
        assert model.route(None, None).number == 2  # the last good settings
        put("version_policy: {all: true}\nlabels: {stable: 2}\ntraffic: {stable: 1}\n")
        await registry.refresh()
        assert model.routing.labels == {"stable": 2} and model.describe()["config_file"]["valid"]
        obstore.delete(remote.store, "tiny/config.yaml")
        await registry.refresh()
        assert model.routing.labels == {} and model.route(None, None).number == 2
        assert [v.number for v in model.ready_versions] == [2]  # latest 1: the default policy

    try:
        asyncio.run(follow())
    finally:
        registry.close()


@pytest.fixture
def own_moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A moto server of this test's own: the test stops it (the outage)."""
    with Moto(tmp_path) as server:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        yield server


def test_a_replica_follows_s3_verifies_every_version_and_survives_an_outage(
    own_moto: Moto, sources: dict[int, Path], tmp_path: Path
) -> None:
    import obstore

    moto = own_moto
    url = moto.url("follow")
    remote = storage.parse(url)
    export(sources[2], url, moto.env)  # version 1
    cache = tmp_path / "cache"
    env = {
        **moto.env,
        "MODEL_REPOSITORY": url,
        "SERVING_POLL_INTERVAL": str(POLL_S),
        "SERVING_CACHE_DIR": str(cache),
        "SERVING_STATE_DIR": str(tmp_path / "state"),
    }
    with Server(env=env, log=tmp_path / "serve.log") as server:
        server.wait_until("/readyz", timeout=300)
        client = httpx.Client(base_url=server.url, timeout=30)
        assert infer(client) == ("1", 2.0)

        # One poll, one LIST: count moto's own access log over several polls.
        metrics_before = client.get("/metrics").text
        lists_before = moto.list_requests_logged()
        requests_before = moto.requests_logged()
        time.sleep(8 * POLL_S)
        polls = metric(client.get("/metrics").text, "serving_repository_polls_total") - metric(
            metrics_before, "serving_repository_polls_total"
        )
        lists = moto.list_requests_logged() - lists_before
        requests = moto.requests_logged() - requests_before
        # Metrics and moto's log are read a moment apart: a poll in flight at either end of
        # the window may be counted by one and not the other, hence the one either way.
        assert polls >= 3, polls
        assert abs(lists - polls) <= 1 and requests == lists, (
            f"{requests} requests ({lists} LIST) to the store in {polls:.0f} polls"
        )

        # A version whose file does not match its manifest is never loaded.
        stage = Path(tempfile.mkdtemp())
        (stage / "model.onnx").write_bytes(tiny_onnx(stage / "t.onnx", 7).read_bytes())
        bad = json.loads(bytes(obstore.get(remote.store, "tiny/1/manifest.json").bytes()))
        bad["version"] = 2
        obstore.put(remote.store, "tiny/2/model.onnx", stage / "model.onnx")
        obstore.put(remote.store, "tiny/2/model_card.md", b"card")
        obstore.put(remote.store, "tiny/2/manifest.json", json.dumps(bad).encode())
        wait_for(
            lambda: any(
                v["version"] == 2 and v["state"] == "failed"
                for v in served(client)["models"][0]["versions"]
            ),
            60,
            "the tampered version refused",
        )
        failed = next(v for v in served(client)["models"][0]["versions"] if v["version"] == 2)
        assert "sha256 mismatch" in failed["reason"], failed
        assert infer(client) == ("1", 2.0)
        assert not (cache / "tiny" / "2").exists()
        obstore.delete(remote.store, "tiny/2/manifest.json")

        # Files without their manifest (an upload in progress) are not a version at all.
        obstore.put(remote.store, "tiny/3/model.onnx", stage / "model.onnx")
        time.sleep(3 * POLL_S)
        versions = {v["version"] for v in served(client)["models"][0]["versions"]}
        assert 3 not in versions, served(client)

        # A version exported straight to the bucket goes live; deleting it rolls back.
        published = time.monotonic()
        assert export(sources[5], url, moto.env) == f"{url}/tiny/4"
        wait_for(lambda: infer(client) == ("4", 5.0), 60, "version 4 live")
        live_s = time.monotonic() - published
        listed = served(client)
        newest = next(v for v in listed["models"][0]["versions"] if v["version"] == 4)
        assert newest["serving_since"], newest
        for key in [k for k in remote.list().objects if k.startswith("tiny/4/")]:
            obstore.delete(remote.store, key)
        deleted = time.monotonic()
        wait_for(lambda: infer(client) == ("1", 2.0), 60, "rolled back to version 1")
        gone_s = time.monotonic() - deleted
        print(f"publish->live {live_s:.1f} s, delete->gone {gone_s:.1f} s (poll {POLL_S} s)")
        text = client.get("/metrics").text
        assert metric(text, "serving_model_version_serving_since_seconds", version="1") > 0
        assert metric(text, "serving_model_version_serving_since_seconds", version="4") == 0
        # Retired versions leave the cache (after the grace other workers get).
        wait_for(lambda: not (cache / "tiny" / "4").exists(), 30, "version 4 evicted")

        # A version copied by a tool that uploads in any order (`aws s3 cp --recursive`): its
        # manifest before one of its files. Refused while the file is missing, served once it
        # arrives (the failure was kept until the manifest itself changed: never, here).
        early = dict(json.loads(bytes(obstore.get(remote.store, "tiny/1/manifest.json").bytes())))
        early["version"] = 10
        obstore.put(remote.store, "tiny/10/manifest.json", json.dumps(early).encode())
        obstore.put(
            remote.store,
            "tiny/10/model_card.md",
            obstore.get(remote.store, "tiny/1/model_card.md").bytes(),
        )
        wait_for(
            lambda: any(
                v["version"] == 10 and v["state"] == "failed" and "missing" in v["reason"]
                for v in served(client)["models"][0]["versions"]
            ),
            60,
            "version 10 refused while a file is missing",
        )
        obstore.put(
            remote.store,
            "tiny/10/model.onnx",
            obstore.get(remote.store, "tiny/1/model.onnx").bytes(),
        )
        wait_for(lambda: infer(client) == ("10", 2.0), 60, "version 10 served once whole")
        for key in [k for k in remote.list().objects if k.startswith("tiny/10/")]:
            obstore.delete(remote.store, key)
        wait_for(lambda: infer(client) == ("1", 2.0), 60, "rolled back to version 1 again")

        # The store goes away: the replica serves on, stays ready, and says why.
        moto.stop()
        wait_for(lambda: served(client)["repository"]["error"], 30, "the outage reported")
        assert infer(client) == ("1", 2.0)
        assert httpx.get(server.url + "/readyz").status_code == 200
        assert served(client)["repository"]["reachable"] is False
        assert metric(client.get("/metrics").text, "serving_repository_up") == 0
        client.close()


@pytest.mark.long
def test_a_replica_starting_during_an_outage_serves_its_cache_or_says_why_not(
    own_moto: Moto, sources: dict[int, Path], tmp_path: Path
) -> None:
    url = own_moto.url("outage")
    export(sources[2], url, own_moto.env)
    env = {
        **own_moto.env,
        "MODEL_REPOSITORY": url,
        "SERVING_POLL_INTERVAL": str(POLL_S),
        "SERVING_CACHE_DIR": str(tmp_path / "cache"),
        "SERVING_STATE_DIR": str(tmp_path / "state"),
    }
    with Server(env=env, log=tmp_path / "serve.log") as server:  # fills its cache
        server.wait_until("/readyz", timeout=300)
    own_moto.stop()

    cached = Server(env={**env, "SERVING_STATE_DIR": str(tmp_path / "state2")},
                    log=tmp_path / "serve2.log")  # fmt: skip
    empty = Server(
        env={**env, "SERVING_CACHE_DIR": str(tmp_path / "empty"),
             "SERVING_STATE_DIR": str(tmp_path / "state3")},
        log=tmp_path / "serve3.log",
    )  # fmt: skip
    with cached, empty:
        # The one with a cache serves from it ...
        cached.wait_until("/readyz", timeout=300)
        with httpx.Client(base_url=cached.url, timeout=30) as client:
            assert infer(client) == ("1", 2.0)
            assert served(client)["repository"]["serving_from_cache"] is True
        # ... the one without is not ready, and says why.
        reply = wait_for(lambda: _get(empty.url + "/readyz"), 300, "an answer from /readyz")
        assert reply.status_code == 503
        assert re.search(r"unreachable and the cache holds no verified version", reply.text)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


# -- Azure Blob (Azurite) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory):
    reason = Azurite.available()
    if reason is not None:
        pytest.skip(reason)
    with Azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


def test_export_to_azure_blob_and_a_replica_serves_it(
    azurite: Azurite, sources: dict[int, Path], tmp_path: Path
) -> None:
    url = azurite.url("fleet")
    assert export(sources[3], url, azurite.env) == f"{url}/tiny/1"
    env = {
        **azurite.env,
        "MODEL_REPOSITORY": url,
        "SERVING_POLL_INTERVAL": str(POLL_S),
        "SERVING_CACHE_DIR": str(tmp_path / "cache"),
        "SERVING_STATE_DIR": str(tmp_path / "state"),
    }
    with Server(env=env, log=tmp_path / "serve.log") as server:
        server.wait_until("/readyz", timeout=300)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert infer(client) == ("1", 3.0)
            assert export(sources[5], url, azurite.env) == f"{url}/tiny/2"
            wait_for(lambda: infer(client) == ("2", 5.0), 60, "version 2 live from Azure")


# -- two workers on one bucket -------------------------------------------------------------------


def per_worker(text: str, name: str, **labels: str) -> dict[str, float]:
    """A metric's value by worker (its ``pid`` label), for the samples with these labels."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            pid = re.search(r'pid="(\d+)"', line)
            if pid:
                found[pid.group(1)] = float(line.rsplit(" ", 1)[1])
    return found


def test_two_workers_copy_each_version_once_and_keep_each_others_api_calls(
    in_moto: Moto, sources: dict[int, Path], tmp_path: Path
) -> None:
    """SERVING_WORKERS=2 on one bucket. Each version is copied into the shared cache once
    (each worker copied it, and one could replace the folder the other was loading from); a
    retired version's ``serving_model_info`` goes to 0 on every worker (a series with empty
    backend and provider went to 0, the one at 1 stayed); an unload answered by one worker
    and another answered by the other within the same second both hold (each wrote its own
    view of the unloaded models: the first model came back); and no worker logs an error."""
    url = in_moto.url("workers")
    export(sources[2], url, in_moto.env)
    export(sources[3], url, in_moto.env, name="other")
    token = "workers-token"
    env = {
        **in_moto.env,
        "MODEL_REPOSITORY": url,
        "SERVING_WORKERS": "2",
        "SERVING_POLL_INTERVAL": str(POLL_S),
        "SERVING_ADMIN_TOKEN": token,
        "SERVING_CACHE_DIR": str(tmp_path / "cache"),
        "SERVING_STATE_DIR": str(tmp_path / "state"),
    }
    log = tmp_path / "serve.log"
    admin = {"authorization": f"Bearer {token}"}

    def copies(name: str, number: int) -> int:
        return log.read_text().count(f"copied {url}/{name}/{number} into the cache")

    def ready(name: str) -> dict[str, float]:
        return per_worker(client.get("/metrics").text, "serving_model_ready", model=name)

    with Server(env=env, log=log) as server, httpx.Client(base_url=server.url) as client:
        server.wait_until("/readyz", timeout=300)
        wait_for(lambda: len(ready("tiny")) == 2 == len(ready("other")), 60, "both workers")
        assert copies("tiny", 1) == 1 and copies("other", 1) == 1, log.read_text()[-3000:]

        export(sources[5], url, in_moto.env)  # tiny 2
        info = "serving_model_info"
        wait_for(
            lambda: (
                per_worker(client.get("/metrics").text, info, model="tiny", version="2")
                == dict.fromkeys(ready("tiny"), 1.0)
            ),
            60,
            "version 2 on both workers",
        )
        text = client.get("/metrics").text
        assert per_worker(text, info, model="tiny", version="1") == dict.fromkeys(
            ready("tiny"), 0.0
        ), [line for line in text.splitlines() if line.startswith(info)]
        assert copies("tiny", 2) == 1, log.read_text()[-3000:]

        # Connections to both workers: after an unload on the first, a connection that still
        # finds the model ready is to the other worker, which has not read the unload yet.
        for _attempt in range(5):
            connections = [
                httpx.Client(base_url=server.url, headers=admin, timeout=30) for _ in range(8)
            ]
            try:
                for connection in connections:
                    assert connection.get("/livez").status_code == 200
                assert connections[0].post("/v2/repository/models/tiny/unload").status_code == 200
                other_worker = next(
                    (
                        c
                        for c in connections[1:]
                        if c.get("/v2/models/tiny/ready").status_code == 200
                    ),
                    None,
                )
                if other_worker is not None:
                    unload = other_worker.post("/v2/repository/models/other/unload")
                    assert unload.status_code == 200, unload.text
                    break
                connections[0].post("/v2/repository/models/tiny/load")
                time.sleep(2 * POLL_S)
            finally:
                for connection in connections:
                    connection.close()
        else:
            raise AssertionError("no second connection reached the other worker in 5 tries")
        time.sleep(3 * POLL_S)  # both workers have read both unloads
        assert ready("tiny") == {pid: 0.0 for pid in ready("tiny")}, ready("tiny")
        assert ready("other") == {pid: 0.0 for pid in ready("other")}, ready("other")
        index = client.post("/v2/repository/index", headers=admin).json()
        assert all(e["state"] == "UNAVAILABLE" for e in index), index
    errors = [
        line for line in log.read_text().splitlines() if "Traceback" in line or " ERROR " in line
    ]
    assert not errors, errors[:5]


# -- a local repository copied to a bucket ------------------------------------------------------


@pytest.mark.slow
def test_a_local_repository_copied_to_a_bucket_file_for_file_is_served(
    in_moto: Moto, quick_repository: Path, tmp_path: Path
) -> None:
    """The seed models as `train` wrote them (SavedModel folders and all), uploaded key for
    path with no tool of ours, answer as they do from the folder."""
    import obstore

    url = in_moto.url("copied")
    remote = storage.parse(url)
    for name in ("digits", "bank"):
        for path in sorted((quick_repository / name).rglob("*")):
            if path.is_file() and ".staging-" not in str(path):
                key = path.relative_to(quick_repository).as_posix()
                obstore.put(remote.store, key, path)
    env = {
        **in_moto.env,
        "MODEL_REPOSITORY": url,
        "SERVING_CACHE_DIR": str(tmp_path / "cache"),
        "SERVING_STATE_DIR": str(tmp_path / "state"),
    }
    with Server(env=env, log=tmp_path / "serve.log") as server:
        server.wait_until("/readyz", timeout=300)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            listed = {m["name"]: m for m in served(client)["models"]}
            assert set(listed) == {"digits", "bank"}
            for name in listed:
                version = repository_latest(quick_repository, name)
                assert listed[name]["state"] == "ready" and listed[name]["version"] == version
            pixels = np.random.default_rng(0).random((2, 28, 28), dtype=np.float32)
            digits = client.post("/digits/predict", json={"inputs": pixels.tolist()})
            assert digits.status_code == 200, digits.text
            answered = np.array([p["probabilities"] for p in digits.json()["predictions"]])
            np.testing.assert_allclose(answered, _onnx_digits(quick_repository, pixels), atol=1e-5)
            assert served(client)["repository"]["cache"]["bytes"] > 0


def _onnx_digits(root: Path, pixels: np.ndarray) -> np.ndarray:
    """The digits model run by ONNX Runtime straight from the local folder."""
    import onnxruntime

    from modelspec.repository import latest_version, version_dir

    path = version_dir(root, "digits", latest_version(root, "digits")) / "model.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: pixels}
    return session.run(None, feed)[0]


def repository_latest(root: Path, name: str) -> int | None:
    from modelspec.repository import latest_version

    return latest_version(root, name)


def test_a_cache_hit_protects_the_version_from_another_workers_eviction(
    in_moto: Moto, sources: dict[int, Path], tmp_path: Path
) -> None:
    """A worker that finds a version in the shared cache (an API load, a restart) opens it
    next; another worker's eviction, which spares what was copied within its grace, took
    the copy time from the first download, so it could remove the folder being opened."""
    import os

    from service.metrics import Metrics
    from service.mirror import ETAG_SUFFIX, Mirror

    url = in_moto.url("evicted")
    export(sources[2], url, in_moto.env)
    cache = tmp_path / "cache"
    loader, evictor = (
        Mirror(storage.parse(url), cache, 10**9, Metrics(f"evict_{who}"))
        for who in ("loader", "evictor")
    )
    loader.published()
    loader.fetch("tiny", 1)
    marker = cache / "tiny" / f".1{ETAG_SUFFIX}"
    hour_ago = marker.stat().st_mtime - 3600
    os.utime(marker, (hour_ago, hour_ago))  # copied long ago
    assert (loader.fetch("tiny", 1) / "manifest.json").is_file()  # a hit: about to be opened
    evictor.evict(keep=set(), grace_s=60)  # the other worker serves nothing of it
    assert (cache / "tiny" / "1" / "manifest.json").is_file(), "evicted while being opened"
    os.utime(marker, (hour_ago, hour_ago))
    evictor.evict(keep=set(), grace_s=60)  # untouched since: evicted, as before
    assert not (cache / "tiny" / "1").exists()
