"""Hostile input on the service's newer surfaces (issue 22, part 2), against one real
``bentoml serve`` of a repository of its own (the tests change files in it): shapes no array
can hold, malformed gRPC messages, client strings aimed at the logs, a repository changing
under the index, files that are not what the manifest says, a client leaving mid-body, a
half-made model folder, load parameters the service does not apply, and 405's ``Allow``.

Each test covers a class with several members, over every protocol that carries it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from benchmarks.servers import Server
from reliability.corpus import surface_cases
from reliability.scenarios.hostile import check_case

pytestmark = pytest.mark.slow
TOKEN = "hostile-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
HUGE = 4611686018427387904  # 2**62
GRPC_METHOD = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, quick_repository: Path) -> Path:
    root = tmp_path_factory.mktemp("hostile-repository")
    shutil.copytree(quick_repository / "digits", root / "digits")
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory):
    env = {
        "MODEL_REPOSITORY": str(repo),
        "SERVING_POLL_INTERVAL": "1",
        "SERVING_ADMIN_TOKEN": TOKEN,
        "SERVING_STATE_DIR": str(tmp_path_factory.mktemp("state")),
        "SERVING_ACCESS_LOG": "1",
    }
    log = tmp_path_factory.mktemp("hostile-serve") / "serve.log"
    with Server(env=env, log=log) as started:
        try:
            started.wait_until("/readyz", timeout=300)
        except Exception:
            print(log.read_text()[-4000:])
            raise
        yield started


@pytest.fixture(scope="module")
def client(server: Server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def channel(server: Server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield channel


def _raw_call(
    channel: grpc.Channel, method: str, data: bytes, metadata=()
) -> grpc.RpcError | bytes:
    """Exactly these bytes as the request message of ``method``."""
    call = channel.unary_unary(GRPC_METHOD + method)  # no serializer: raw bytes both ways
    try:
        return call(data, metadata=metadata, timeout=30)
    except grpc.RpcError as error:
        return error


def _refused_json(response: httpx.Response, statuses=(400, 413)) -> dict:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"], body
    return body


# -- shapes ----------------------------------------------------------------------------------

# Zero next to huge, huge alone, negative, past int64, too many dimensions, more values per
# item than the input declares, a bool as a dimension: none may reach numpy.
HOSTILE_SHAPES = [
    [1, 0, HUGE],
    [0, HUGE, HUGE],
    [1, 0, 28, HUGE],
    [HUGE, 0],
    [0, 2**63 - 1],
    [1, 0] + [2**31] * 4,
    [1] * 17,
    [1, 28, 28, 1, 1],
    [1, 28, 29],
    [1, 0, 28, 28],
]


def test_shapes_no_array_can_hold_are_refused_over_http(client: httpx.Client) -> None:
    for shape in HOSTILE_SHAPES:
        entry = {"name": "image", "shape": shape, "datatype": "FP32", "data": []}
        response = client.post("/v2/models/digits/infer", json={"inputs": [entry]})
        _refused_json(response)
        # The binary tensor data extension: the same header with no bytes after it.
        header = json.dumps(
            {"inputs": [{**entry, "data": None, "parameters": {"binary_data_size": 0}}]}
        ).encode()
        header = header.replace(b', "data": null', b"")
        response = client.post(
            "/v2/models/digits/infer",
            content=header,
            headers={
                "inference-header-content-length": str(len(header)),
                "content-type": "application/octet-stream",
            },
        )
        _refused_json(response)
    for shape in ([-1, 28, 28], [1, -HUGE], [2**64, 1], [True, 28, 28], [1.5, 28, 28], []):
        entry = {"name": "image", "shape": shape, "datatype": "FP32", "data": []}
        _refused_json(client.post("/v2/models/digits/infer", json={"inputs": [entry]}))
    # TF Serving and the native routes take their shape from the data: empty and ragged
    # nests of every depth are refused, not reshaped.
    for body in ([[]], [[[]]], [[[[]]]], [[], [[]]], [[[0.0] * 28] * 28, []]):
        _refused_json(
            client.post("/v1/models/digits:predict", json={"instances": body}), (400, 422)
        )
        _refused_json(client.post("/models/digits/predict", json={"inputs": body}), (400, 422))
    assert client.get("/livez").status_code == 200


# -- shared with the gRPC cases in tests/test_grpc.py ---------------------------------------


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2); payloads here stay under 128 bytes."""
    return bytes([number << 3 | 2, len(payload)]) + payload


# -- logs --------------------------------------------------------------------------------------


def test_client_strings_never_forge_a_log_line(server: Server, client, channel) -> None:
    marker = "FORGED-%d"
    forged = [
        # model names decoded from the path, on every protocol's route
        ("POST", f"/v1/models/x%0A{marker % 1}%20line:predict"),
        ("POST", f"/v2/models/x%0D%0A{marker % 2}/infer"),
        ("POST", f"/models/x%0A{marker % 3}/predict"),
        ("GET", f"/models/x%0A{marker % 4}"),
        ("GET", f"/v2/models/x%1B[31m%0A{marker % 5}/ready"),
        # paths that fall through to BentoML (its access log)
        ("GET", f"/x%0A{marker % 6}/y"),
        ("GET", f"/static_content/%0A{marker % 7}"),
        ("GET", f"/metrics%0A{marker % 8}"),
        ("POST", f"/v2/repository/models/x%0A{marker % 9}/load"),
    ]
    for method, path in forged:
        response = client.request(method, path, content=b"{}", headers=AUTH)
        assert response.status_code < 500, (path, response.status_code)
    # request ids: control characters are not taken as an id (nor echoed back)
    response = client.post(
        "/v2/models/digits/infer",
        content=b"{}",
        headers={"x-request-id": f"id\x1b[2J{marker % 10}"},
    )
    assert "\x1b" not in response.headers.get("x-request-id", "")  # or refused at the door
    request = pb.ModelInferRequest(model_name=f"x\n{marker % 11}\x1b[31m")
    _raw_call(channel, "ModelInfer", request.SerializeToString())
    for rid in (f"id\n{marker % 12}", f"id\x1b[31m{marker % 13}", f"id\u2028{marker % 14}"):
        with contextlib.suppress(ValueError):  # the client may refuse to send it at all
            _raw_call(
                channel,
                "ModelInfer",
                request.SerializeToString(),
                metadata=(("x-request-id", rid),),
            )
    time.sleep(1.5)  # the access log lines are written after the answers
    text = server.log_path.read_text(errors="replace")
    assert "FORGED-1" in text, "the injected name never reached the log: the test tests nothing"
    for line in text.splitlines():
        assert not line.lstrip().startswith("FORGED"), line
        assert not line.lstrip().startswith("line"), line
    assert "\x1b[" not in text
    assert "\u2028" not in text


# -- the repository changing under the index ------------------------------------------------------


def test_the_index_never_fails_while_folders_come_and_go(server, client, channel, repo) -> None:
    stop = threading.Event()

    def churn() -> None:
        count = 0
        while not stop.is_set():
            folder = repo / f"churn{count % 3}"
            version = folder / "1"
            with contextlib.suppress(OSError):  # the other thread removed it meanwhile
                version.mkdir(parents=True, exist_ok=True)
                (version / "manifest.json").write_text("{}")
                (folder / "2").mkdir(exist_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
            count += 1

    workers = [threading.Thread(target=churn) for _ in range(2)]
    for worker in workers:
        worker.start()
    statuses, codes = set(), set()
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            response = client.post("/v2/repository/index", headers=AUTH)
            statuses.add(response.status_code)
            assert str(repo) not in response.text
            answer = _raw_call(
                channel,
                "RepositoryIndex",
                b"",
                metadata=(("authorization", AUTH["authorization"]),),
            )
            if isinstance(answer, grpc.RpcError):
                codes.add(answer.code())
                assert str(repo) not in (answer.details() or "")
            else:
                codes.add(grpc.StatusCode.OK)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert statuses == {200} and codes == {grpc.StatusCode.OK}, (statuses, codes)


# -- files behind the card routes -----------------------------------------------------------------


def test_card_files_are_regular_files_matching_their_manifest(server, client, repo) -> None:
    version = repo / "digits" / "1"
    plot = "training_curves.png"
    original = (version / plot).read_bytes()
    card = client.get("/models/digits/versions/1/card")
    assert card.status_code == 200 and card.content == (version / "model_card.md").read_bytes()

    # A plot changed after the version was verified: refused, named, never served.
    (version / plot).write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    answer = client.get(f"/models/digits/versions/1/files/{plot}")
    assert answer.status_code == 503 and answer.json()["code"] == "file_integrity", answer.text
    assert "sha256" in answer.json()["error"] and str(repo) not in answer.text
    (version / plot).write_bytes(original)
    assert client.get(f"/models/digits/versions/1/files/{plot}").content == original

    # A FIFO (it would block its reader forever), a symbolic link out of the version and a
    # device: refused at once, and the worker serves on meanwhile.
    other = "confusion_matrix.png"
    kept = version / "kept.png"
    (version / other).rename(kept)
    outside = repo.parent / "outside.png"
    outside.write_bytes(kept.read_bytes())
    try:
        for make in (
            lambda p: os.mkfifo(p),
            lambda p: p.symlink_to(outside),
            lambda p: p.symlink_to("/dev/zero"),
        ):
            make(version / other)
            started = time.monotonic()
            answer = client.get(f"/models/digits/versions/1/files/{other}")
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "file_integrity" and str(repo) not in answer.text
            assert time.monotonic() - started < 10
            assert client.get("/livez").status_code == 200
            (version / other).unlink()
    finally:
        kept.rename(version / other)
    assert client.get(f"/models/digits/versions/1/files/{other}").status_code == 200
    for name in ("..%2Fmanifest.json", "%00.png", "manifest.json", "model.onnx", "..", "x.png"):
        response = client.get(f"/models/digits/versions/1/files/{name}")
        assert response.status_code == 404, (name, response.status_code)


# -- admin API -----------------------------------------------------------------------------------


def _leave_mid_body(server: Server, path: str) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"ready"'.encode()
        )
        time.sleep(0.2)


def test_a_client_leaving_mid_body_logs_no_traceback(server: Server, client) -> None:
    before = server.log_path.read_text(errors="replace").count("Traceback")
    for path in (
        "/v2/repository/index",
        "/v2/repository/models/digits/load",
        "/v2/repository/models/nope/unload",
    ):
        _leave_mid_body(server, path)
    time.sleep(1)
    assert client.get("/livez").status_code == 200
    after = server.log_path.read_text(errors="replace")
    assert after.count("Traceback") == before, after[-3000:]


def test_load_parameters_are_refused_not_ignored(client, channel) -> None:
    for parameters in (
        {"config": json.dumps({"max_batch_size": 4})},
        {"file:1/model.onnx": "AAAA"},
        {"config": "{}", "file:1/model.onnx": "AAAA"},
        {"anything": 1},
    ):
        response = client.post(
            "/v2/repository/models/digits/load", json={"parameters": parameters}, headers=AUTH
        )
        body = _refused_json(response, (400,))
        assert body["code"] == "unsupported_parameter"
        assert sorted(parameters)[0] in body["error"]
    _refused_json(
        client.post("/v2/repository/models/digits/load", json={"parameters": [1]}, headers=AUTH),
        (400,),
    )
    assert client.post("/v2/repository/models/digits/load", headers=AUTH).status_code == 200
    request = pb.RepositoryModelLoadRequest(model_name="digits")
    request.parameters["config"].string_param = "{}"
    error = _raw_call(
        channel,
        "RepositoryModelLoad",
        request.SerializeToString(),
        metadata=(("authorization", AUTH["authorization"]),),
    )
    assert isinstance(error, grpc.RpcError)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "config" in error.details()


# -- readiness with a half-made folder ----------------------------------------------------------


def test_a_folder_without_a_version_does_not_take_the_service_out(server, client, repo) -> None:
    for name in ("half", "staging"):
        (repo / name).mkdir()
    (repo / "staging" / "1.partial").mkdir()  # an export writing: not a version yet
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            models = {m["name"]: m for m in client.get("/models").json()["models"]}
            if {"half", "staging"} <= set(models):
                break
            time.sleep(0.5)
        for name in ("half", "staging"):
            assert models[name]["state"] == "no_published_version", models[name]
            assert "no published version" in models[name]["reason"]
        assert client.get("/readyz").status_code == 200
        assert client.get("/v2/health/ready").json()["ready"] is True
        index = client.post("/v2/repository/index", headers=AUTH).json()
        assert {"name": "half", "version": "", "state": "UNAVAILABLE"}.items() <= next(
            e for e in index if e["name"] == "half"
        ).items()
        answer = client.post("/v2/models/half/infer", json={"inputs": []})
        assert answer.status_code in (404, 503), answer.text
    finally:
        for name in ("half", "staging"):
            shutil.rmtree(repo / name)


# -- 405 ---------------------------------------------------------------------------------------


def test_405_allow_lists_every_method_served(client) -> None:
    for method, path in (
        ("POST", "/models"),
        ("DELETE", "/models/digits"),
        ("PUT", "/v2/models/digits"),
        ("POST", "/models/digits/versions/1/card"),
        ("GET", "/v2/models/digits/infer"),
        ("GET", "/v2/repository/index"),
        ("POST", "/livez"),  # BentoML's own routes: their 405s made JSON, Allow kept
        ("DELETE", "/readyz"),
        ("PUT", "/metrics"),
    ):
        response = client.request(method, path)
        assert response.status_code == 405, (method, path)
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert set(response.json()["expected"].replace(" ", "").split(",")) == allowed
        for other in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"):
            served = client.request(other, path, headers=AUTH, content=b"{}")
            assert (served.status_code != 405) == (other in allowed), (other, path, allowed)


def test_shape_bounds_leave_valid_requests_alone(client) -> None:
    pixels = np.zeros((2, 28, 28), np.float32)
    for shape in ([2, 28, 28], [2, 784]):
        entry = {"name": "image", "shape": shape, "datatype": "FP32"}
        response = client.post(
            "/v2/models/digits/infer", json={"inputs": [{**entry, "data": pixels.ravel().tolist()}]}
        )
        assert response.status_code == 200, response.text
        raw = pixels.tobytes()
        header = json.dumps({"inputs": [{**entry, "parameters": {"binary_data_size": len(raw)}}]})
        response = client.post(
            "/v2/models/digits/infer",
            content=header.encode() + raw,
            headers={"inference-header-content-length": str(len(header))},
        )
        assert response.status_code == 200, response.text
    assert struct.calcsize("<f") == 4


def test_the_corpus_surface_cases_are_refused(server: Server) -> None:
    """The reliability corpus's cases for these surfaces, with the admin token (the
    reliability run has none, so its load cases stop at 403)."""
    problems = []
    for case in surface_cases():
        authorised = replace(case, headers={**case.headers, **AUTH})
        problem = check_case(server, authorised)
        if problem:
            problems.append(f"{case.name}: {problem}")
    assert not problems, problems


def test_a_version_with_a_file_linked_out_of_it_is_refused(client, repo) -> None:
    """A manifest file that is a symbolic link out of its version folder is refused at load,
    even when the linked file's hash is the manifest's; the served version goes on."""
    outside = repo.parent / "card-outside.md"
    shutil.copy(repo / "digits" / "1" / "model_card.md", outside)
    version = repo / "digits" / "2"
    shutil.copytree(repo / "digits" / "1", version)
    (version / "model_card.md").unlink()
    (version / "model_card.md").symlink_to(outside)
    os.utime(version / "manifest.json")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            versions = {v["version"]: v for v in client.get("/models/digits").json()["versions"]}
            if versions.get(2, {}).get("state") == "failed":
                break
            time.sleep(0.5)
        assert versions[2]["state"] == "failed", versions
        assert "outside the version folder" in versions[2]["reason"]
        assert str(repo) not in versions[2]["reason"]
        assert versions[1]["state"] == "ready"  # and digits serves on
        image = {"name": "image", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}
        assert client.post("/v2/models/digits/infer", json={"inputs": [image]}).is_success
    finally:
        shutil.rmtree(version)
    deadline = time.monotonic() + 60
    while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.get("/readyz").status_code == 200
