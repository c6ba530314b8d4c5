"""Who may call what, and encryption in transit, against real ``bentoml serve`` processes:
API keys scoped to models, JWTs, quotas, the admin token as one more admin key, key rotation
under load, TLS and mTLS on HTTP and gRPC, with real clients (httpx, curl, tritonclient HTTP
and gRPC) and a CA and certificates made here (trustme).

Two servers for the whole module: one with keys, JWTs and TLS; one with mTLS only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac as hmac_module
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import jwt
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import trustme
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from benchmarks.servers import Server
from service.auth import Guard
from service.config import ConfigError, load_config
from service.errors import CATALOGUE
from tests.test_service import metric

pytestmark = pytest.mark.slow

ISSUER, AUDIENCE = "https://id.example.test", "keras-model-serving"
KEYS = {  # id -> (key, models, admin, rate)
    "shop": ("shop-key-0123456789", ["digits"], False, None),
    "ops": ("ops-key-0123456789", ["*"], True, None),
    "tiny": ("tiny-key-0123456789", ["digits"], False, {"per_second": 0.2, "burst": 2}),
}
ADMIN_TOKEN = "admin-token-0123456789"
# A server given a keys file it cannot read stops at import, and bentoml prints that traceback
# (test_a_typo_or_a_missing_keys_file_stops_bentoml_serve); any other is a fault.
EXPECTED_TRACEBACKS = ("service.config.ConfigError:",)
PIXELS = np.zeros((1, 28, 28), dtype=np.float32)
V2_BODY = {
    "inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]
}


def keys_yaml(extra: dict[str, tuple] | None = None) -> str:
    keys = []
    for key_id, (key, models, admin, rate) in {**KEYS, **(extra or {})}.items():
        entry = {
            "id": key_id,
            "sha256": hashlib.sha256(key.encode()).hexdigest(),
            "models": models,
            "admin": admin,
        }
        if rate:
            entry["rate"] = rate
        keys.append(entry)
    return yaml.safe_dump({"keys": keys})


def replace(path: Path, text: str) -> None:
    """Write a new version the way Kubernetes does: whole, then renamed over the old."""
    temporary = path.with_suffix(".new")
    temporary.write_text(text)
    os.replace(temporary, path)


class TlsServer(Server):
    """A ``Server`` answering HTTPS: readiness is polled with the test CA (and a client
    certificate when the server asks for one)."""

    def __init__(self, *args, context: ssl.SSLContext, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.context = context

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def wait_until(self, path: str, status: int = 200, timeout: float = 180.0) -> float:
        started = time.monotonic()
        with httpx.Client(verify=self.context, timeout=2) as client:
            while time.monotonic() - started < timeout:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.target} exited with {self.process.returncode}")
                try:
                    if client.get(self.url + path).status_code == status:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.3)
        raise TimeoutError(f"{self.url}{path} did not answer {status} within {timeout} s")


def _started(server: Server, log: Path):
    with server:
        try:
            server.wait_until("/readyz", timeout=300)
        except Exception:
            print(log.read_text()[-4000:])
            raise
        yield server


@pytest.fixture(scope="module")
def small_repository(quick_repository, tmp_path_factory) -> Path:
    """digits and bank only: they load in seconds, where flowers' warm-up took 9 minutes on
    this loaded machine, and two models are all these tests need."""
    folder = tmp_path_factory.mktemp("repository")
    for name in ("digits", "bank"):
        (folder / name).symlink_to(Path(quick_repository) / name)
    return folder


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, the server's certificate (127.0.0.1 and localhost), a client certificate from
    the same CA and one from another CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.test")
    stranger = other_ca.issue_cert("client@example.test")
    paths = {"ca": folder / "ca.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    for issued, name in ((server, "server"), (client, "client"), (stranger, "stranger")):
        paths[name] = folder / f"{name}.pem"
        paths[f"{name}.key"] = folder / f"{name}.key"
        issued.private_key_pem.write_to_path(str(paths[f"{name}.key"]))
        for blob in issued.cert_chain_pems:
            blob.write_to_path(str(paths[name]), append=True)
    paths["cert"], paths["key"] = paths["server"], paths["server.key"]
    return paths


def _context(pki: dict[str, Path], client: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if client is not None:
        context.load_cert_chain(str(pki[client]), str(pki[f"{client}.key"]))
    return context


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(key: rsa.RSAPrivateKey, **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "app-1", "iat": now, "exp": now + 300}
    body.update(claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def secured(small_repository, pki, signing_key, tmp_path_factory):
    """Keys, JWTs (a JWKS file), the admin token and TLS on both ports; one worker, so that
    one quota bucket serves every request."""
    folder = tmp_path_factory.mktemp("secured")
    keys = folder / "keys.yaml"
    keys.write_text(keys_yaml())
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwks = folder / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    env = {
        "MODEL_REPOSITORY": str(small_repository),
        "SERVING_API_KEYS_FILE": str(keys),
        "SERVING_JWT_KEYS_FILE": str(jwks),
        "SERVING_JWT_ISSUER": ISSUER,
        "SERVING_JWT_AUDIENCE": AUDIENCE,
        "SERVING_ADMIN_TOKEN": ADMIN_TOKEN,
        "SERVING_TLS_CERT_FILE": str(pki["cert"]),
        "SERVING_TLS_KEY_FILE": str(pki["key"]),
        "SERVING_WORKERS": "1",
    }
    log = folder / "serve.log"
    server = TlsServer(env=env, log=log, context=_context(pki))
    server.keys_file = keys  # type: ignore[attr-defined]
    server.jwks_file = jwks  # type: ignore[attr-defined]
    yield from _started(server, log)


@pytest.fixture(scope="module")
def mtls(small_repository, pki, tmp_path_factory):
    """TLS with client certificates required (signed by the test CA); no keys."""
    log = tmp_path_factory.mktemp("mtls") / "serve.log"
    env = {
        "MODEL_REPOSITORY": str(small_repository),
        "SERVING_TLS_CERT_FILE": str(pki["cert"]),
        "SERVING_TLS_KEY_FILE": str(pki["key"]),
        "SERVING_TLS_CLIENT_CA_FILE": str(pki["ca"]),
        "SERVING_WORKERS": "1",
    }
    server = TlsServer(env=env, log=log, context=_context(pki, "client"))
    yield from _started(server, log)


@pytest.fixture
def client(secured, pki):
    with httpx.Client(base_url=secured.url, verify=_context(pki), timeout=30) as client:
        yield client


def _key(key_id: str) -> dict[str, str]:
    return {"x-api-key": KEYS[key_id][0]}


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    return body


# -- without a server ------------------------------------------------------------------------


def test_a_typo_of_a_setting_stops_the_start_and_names_the_setting() -> None:
    for typo, meant in (
        ("SERVING_API_KEY_FILE", "SERVING_API_KEYS_FILE"),
        ("SERVING_TLS_CERT", "SERVING_TLS_CERT_FILE"),
        ("SERVING_JWT_AUDIENCES", "SERVING_JWT_AUDIENCE"),
        ("SERVING_KEYS_FILE_API", "SERVING_API_KEYS_FILE"),
    ):
        with pytest.raises(ConfigError, match=f"^{typo} is not a setting; did you mean {meant}"):
            load_config({typo: "x"})
    # What Kubernetes injects for a Service named "serving", and names near no setting: not
    # errors (the service logs them as warnings).
    for harmless in (
        "SERVING_SERVICE_HOST",
        "SERVING_SERVICE_PORT",
        "SERVING_SERVICE_PORT_HTTP",
        "SERVING_PORT",
        "SERVING_PORT_3000_TCP_ADDR",
        "SERVING_DEBUG",
    ):
        load_config({harmless: "1"})


def test_half_a_security_setting_is_refused(tmp_path: Path) -> None:
    for environ, message in (
        ({"SERVING_TLS_CERT_FILE": "a.pem"}, "go together"),
        ({"SERVING_TLS_CLIENT_CA_FILE": "ca.pem"}, "needs tls_cert_file"),
        ({"SERVING_JWT_KEYS_FILE": "jwks.json", "SERVING_JWT_ISSUER": "x"}, "jwt_audience"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(environ)
    keys = tmp_path / "keys.yaml"
    for text, message in (
        ("keys: [{id: a, sha256: abc, models: ['*']}]", "sha256"),
        ("keys: [{id: a, sha256: " + "0" * 64 + ", model: [digits]}]", "model"),
        ("keys: [{id: a, sha256: " + "0" * 64 + "}, {id: a, sha256: " + "1" * 64 + "}]", "id"),
        ("keys: [", "api_keys_file"),
    ):
        keys.write_text(text)
        with pytest.raises(ConfigError, match=message):
            Guard(load_config({"SERVING_API_KEYS_FILE": str(keys)}))
    with pytest.raises(ConfigError, match="No such file"):
        Guard(load_config({"SERVING_API_KEYS_FILE": str(tmp_path / "missing.yaml")}))


def test_every_route_needs_what_its_kind_says(tmp_path: Path) -> None:
    """Each route of the table has a kind, and the settings open what they say: probes open
    unless ``public_health`` is off, the page and cards closed unless ``public_docs``."""
    from service import auth
    from service.routes import TABLE

    kinds = {route.template: auth.route_kind(route.template) for route in TABLE}
    assert kinds["/v2/repository/index"] == auth.ADMIN
    assert kinds["/v2/health/ready"] == auth.HEALTH
    assert kinds["/"] == kinds["/docs.json"] == auth.DOCS
    assert kinds["/models/{name}/versions/{version}/card"] == auth.DOCS
    assert kinds["/v2/models/{name}[/versions/{version}]/infer"] == auth.MODEL
    assert kinds["/models"] == kinds["/v2"] == auth.ANY
    keys = tmp_path / "keys.yaml"
    keys.write_text(keys_yaml())
    for public_health, public_docs in ((True, False), (False, True)):
        guard = Guard(
            load_config(
                {
                    "SERVING_API_KEYS_FILE": str(keys),
                    "SERVING_PUBLIC_HEALTH": str(public_health),
                    "SERVING_PUBLIC_DOCS": str(public_docs),
                }
            )
        )
        probe = auth.http_refusal(guard, {}, None, {"path": "/metrics"})
        assert (probe is None) == public_health
        page = auth.http_refusal(guard, {}, "/", {})
        assert (page is None) == public_docs
        other = auth.http_refusal(guard, {}, None, {"path": "/docs"})  # BentoML's own
        assert other is not None and other.status == 401
        keyed = auth.http_refusal(guard, _key("shop"), None, {"path": "/metrics"})
        assert keyed is None


def test_a_v2_alias_is_its_model_on_v2_routes_only(tmp_path: Path) -> None:
    """``<model>_<signature>`` names its model on the V2 routes (HTTP and gRPC) alone; the
    other routes look names up exactly. The guard let a key for ``autoencoder`` through on
    ``/v1/models/autoencoder_encode`` and ``/models/autoencoder_encode``, whose 404 then
    listed every model of the server (found against a real server with the autoencoder)."""
    from service import auth

    keys = tmp_path / "keys.yaml"
    keys.write_text(keys_yaml({"ae": ("ae-key-0123456789", ["autoencoder"], False, None)}))
    guard = Guard(load_config({"SERVING_API_KEYS_FILE": str(keys)}))
    aliases = {"autoencoder_encode": "autoencoder"}  # what service.service sets from V2's index
    guard.resolve = lambda name: aliases.get(name, name)
    headers, alias = {"x-api-key": "ae-key-0123456789"}, {"name": "autoencoder_encode"}
    for template in ("/v2/models/{name}[/versions/{version}]",
                     "/v2/models/{name}[/versions/{version}]/infer"):  # fmt: skip
        assert auth.http_refusal(guard, headers, template, alias) is None, template
    closed = (
        "/v1/models/{name}[/versions/{version}]",
        "/models/{name}",
        "/models/{name}/drift.png",
    )
    for template in (*closed, "/v1/models/{name}/labels/{label}:predict"):
        refusal = auth.http_refusal(guard, headers, template, alias)
        assert refusal is not None and refusal.status == 403, template
    assert guard.check(headers, "autoencoder_encode", v2_name=True).id == "ae"  # gRPC's


def test_jwt_with_a_pem_key_refuses_algorithm_tricks(tmp_path: Path) -> None:
    """A PEM public key (EC P-256) verifies ES256 tokens only: a token signed with HS256
    using the public key's bytes as the secret (algorithm confusion), an unsigned one
    (``alg: none``) and one without ``exp`` are refused; ``admin`` must be exactly true."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from service.errors import RequestError

    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "key.pem").write_bytes(pem)
    guard = Guard(
        load_config(
            {
                "SERVING_JWT_KEYS_FILE": str(tmp_path / "key.pem"),
                "SERVING_JWT_ISSUER": ISSUER,
                "SERVING_JWT_AUDIENCE": AUDIENCE,
            }
        )
    )
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60, "models": ["digits"]}

    def status(tok: str, admin: bool = False) -> int:
        try:
            guard.check({"authorization": f"Bearer {tok}"}, None if admin else "digits", admin)
        except RequestError as error:
            return error.status
        return 200

    assert status(jwt.encode(claims, private, algorithm="ES256")) == 200
    header = {"alg": "HS256", "typ": "JWT"}

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac_module.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert status(f"{signing_input}.{b64(mac)}") == 401  # HS256 keyed with the public key
    unsigned = f"{b64(json.dumps({'alg': 'none'}).encode())}.{b64(json.dumps(claims).encode())}."
    assert status(unsigned) == 401
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    assert status(jwt.encode(no_exp, private, algorithm="ES256")) == 401
    assert status(jwt.encode({**claims, "admin": "yes"}, private, algorithm="ES256"), True) == 403
    assert status(jwt.encode({**claims, "admin": True}, private, algorithm="ES256"), True) == 200


def test_a_typo_or_a_missing_keys_file_stops_bentoml_serve(small_repository, tmp_path) -> None:
    """The whole server, not just the settings: ``bentoml serve`` exits with the one line,
    and does not serve open when the keys file it was given cannot be read."""
    for variable, expected in (
        ("SERVING_API_KEY_FILE", "did you mean SERVING_API_KEYS_FILE?"),
        ("SERVING_API_KEYS_FILE", "No such file"),
    ):
        log = tmp_path / f"{variable}.log"
        env = {"MODEL_REPOSITORY": str(small_repository), variable: str(tmp_path / "none.yaml")}
        with Server(env=env, log=log) as server:
            assert server.process is not None
            # It exits by itself; on a loaded machine (load 22 on 2 cores) the imports alone
            # took over 120 s.
            code = server.process.wait(timeout=600)
        text = log.read_text()
        assert code != 0, text[-2000:]
        assert expected in text, text[-2000:]


# -- keys, JWTs, routes (HTTPS) ------------------------------------------------------------------


def test_keys_scope_models(client: httpx.Client) -> None:
    response = client.post("/v2/models/digits/infer", json=V2_BODY)
    body = _error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer realm=")
    assert "key" in body["error"]
    wrong = client.post("/v2/models/digits/infer", json=V2_BODY, headers={"x-api-key": "guess"})
    _error(wrong, 401, "unauthorized")
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    bearer = {"authorization": f"Bearer {KEYS['shop'][0]}"}
    assert client.post("/v2/models/digits/infer", json=V2_BODY, headers=bearer).status_code == 200
    assert client.post("/v1/models/digits:predict", json={"instances": PIXELS.tolist()},
                       headers=_key("shop")).status_code == 200  # fmt: skip
    other = client.get("/v2/models/bank", headers=_key("shop"))
    assert "bank" in _error(other, 403, "forbidden")["error"]
    # A model's V2 aliases (<model>_<signature>) are that model: the same key, the same rule.
    for model, status in (("digits", 200), ("bank", 403)):
        aliases = client.get(f"/models/{model}", headers=_key("ops")).json()["v2_names"]
        for alias in aliases:
            assert client.get(f"/v2/models/{alias}", headers=_key("shop")).status_code == status
    _error(client.get("/v2/models/no-such-model", headers=_key("shop")), 403, "forbidden")
    assert client.get("/v2/models/bank", headers=_key("ops")).status_code == 200
    # A route without a model takes any known key.
    assert client.get("/v2", headers=_key("shop")).status_code == 200
    _error(client.get("/models"), 401, "unauthorized")
    # The listing shows a key the models it may call, not the others' names, versions and
    # drift (it listed bank to the digits-only key).
    for key_id, expected in (("shop", ["digits"]), ("ops", ["bank", "digits"])):
        listed = client.get("/models", headers=_key(key_id))
        assert [m["name"] for m in listed.json()["models"]] == expected, key_id


def test_the_native_routes_tell_no_one_which_models_exist(client: httpx.Client) -> None:
    """``/{model}/{signature}`` exists for served models only: without a key, GET on a
    served model's answered 405 (before the key check) where any other name got 401, and a
    key scoped to digits got 403 for bank but 404 for a name no model has."""
    for path in ("/bank/predict", "/no-such-model/predict"):
        _error(client.get(path), 401, "unauthorized")
        _error(client.post(path, json={}, headers=_key("shop")), 403, "forbidden")
    _error(client.get("/digits/predict", headers=_key("shop")), 405, "method_not_allowed")
    _error(client.post("/digits/no-such-signature", headers=_key("shop")), 404, "not_found")
    _error(client.get("/static_content/no-such-file"), 401, "unauthorized")


def test_jwt_claims_are_checked(client: httpx.Client, signing_key) -> None:
    def call(tok: str, model: str = "digits") -> httpx.Response:
        headers = {"authorization": f"Bearer {tok}"}
        return client.get(f"/v2/models/{model}", headers=headers)

    assert call(token(signing_key, models=["digits"])).status_code == 200
    assert call(token(signing_key, models=["*"]), "bank").status_code == 200
    _error(call(token(signing_key, models=["digits"]), "bank"), 403, "forbidden")
    expired = call(token(signing_key, models=["*"], exp=int(time.time()) - 120))
    assert "expired" in _error(expired, 401, "unauthorized")["error"]
    audience = call(token(signing_key, models=["*"], aud="another-service"))
    assert "audience" in _error(audience, 401, "unauthorized")["error"].lower()
    issuer = call(token(signing_key, models=["*"], iss="https://elsewhere.test"))
    assert "issuer" in _error(issuer, 401, "unauthorized")["error"].lower()
    early = call(token(signing_key, models=["*"], nbf=int(time.time()) + 600))
    _error(early, 401, "unauthorized")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _error(call(token(stranger, models=["*"])), 401, "unauthorized")
    # The repository API takes a token with admin: true, not one without.
    index = "/v2/repository/index"
    admin = {"authorization": f"Bearer {token(signing_key, admin=True)}"}
    assert client.post(index, headers=admin).status_code == 200
    plain = {"authorization": f"Bearer {token(signing_key, models=['*'])}"}
    _error(client.post(index, headers=plain), 403, "forbidden")


def test_probes_stay_open_and_the_page_docs_and_cards_are_closed(client: httpx.Client) -> None:
    for path in ("/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"):
        assert client.get(path).status_code == 200, path
    for path in ("/", "/docs.json", "/models/digits/versions/1/card"):
        _error(client.get(path), 401, "unauthorized")
    assert client.get("/models/digits/versions/1/card", headers=_key("shop")).status_code == 200
    _error(client.get("/models/bank/versions/1/card", headers=_key("shop")), 403, "forbidden")
    assert client.get("/docs.json", headers=_key("shop")).status_code == 200
    # BentoML's own paths other than the probes need a key too.
    _error(client.get("/docs"), 401, "unauthorized")


def test_the_admin_token_is_one_more_admin_key(client: httpx.Client) -> None:
    index = "/v2/repository/index"
    assert client.post(index, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    assert client.post(index, headers=_key("ops")).status_code == 200
    _error(client.post(index, headers=_key("shop")), 403, "forbidden")
    _error(client.post(index), 401, "unauthorized")
    # An admin key is not a model key unless its models say so.
    token_only = {"x-api-key": ADMIN_TOKEN}
    _error(client.post("/v2/models/digits/infer", json=V2_BODY, headers=token_only), 403,
           "forbidden")  # fmt: skip


def test_curl_over_https(secured, pki) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    url = f"{secured.url}/v2/models/digits/infer"
    base = [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(pki["ca"])]
    data = ["-H", "content-type: application/json", "-d", json.dumps(V2_BODY)]
    found = subprocess.run([*base, *data, "-H", f"x-api-key: {KEYS['shop'][0]}", url],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert found.stdout == "200", found.stderr
    found = subprocess.run([*base, *data, url], capture_output=True, text=True, timeout=60)
    assert found.stdout == "401", found.stderr
    # Without the CA, curl refuses the certificate (exit 60): the server is not anyone's.
    unverified = subprocess.run([curl, "-sS", url], capture_output=True, text=True, timeout=60)
    assert unverified.returncode == 60, unverified.stderr


def test_tritonclient_http_and_grpc_over_tls_with_keys(secured, pki) -> None:
    import gevent.ssl

    over_http = thttp.InferenceServerClient(
        f"127.0.0.1:{secured.port}",
        ssl=True,
        ssl_options={"ca_certs": str(pki["ca"])},
        ssl_context_factory=gevent.ssl.create_default_context,
    )
    over_grpc = tgrpc.InferenceServerClient(
        f"127.0.0.1:{secured.grpc_port}", ssl=True, root_certificates=str(pki["ca"])
    )
    try:
        # Each client's own form of the catalogue's statuses: tritonclient's HTTP client
        # reports the HTTP status, its gRPC client the gRPC status code.
        unauthorized, forbidden = CATALOGUE["unauthorized"], CATALOGUE["forbidden"]
        statuses = {
            thttp: (str(unauthorized.status), str(forbidden.status)),
            tgrpc: (f"StatusCode.{unauthorized.grpc}", f"StatusCode.{forbidden.grpc}"),
        }
        for module, client in ((thttp, over_http), (tgrpc, over_grpc)):
            image = module.InferInput("image", [1, 28, 28], "FP32")
            image.set_data_from_numpy(PIXELS)
            result = client.infer("digits", [image], headers=_key("shop"))
            assert result.as_numpy("probabilities").shape[0] == 1
            with pytest.raises(InferenceServerException) as refused:
                client.infer("digits", [image])
            assert refused.value.status() == statuses[module][0], refused.value
            with pytest.raises(InferenceServerException) as refused:
                client.get_model_metadata("bank", headers=_key("shop"))
            assert refused.value.status() == statuses[module][1], refused.value
        # gRPC probes stay open; the repository API takes the admin token in metadata.
        assert over_grpc.is_server_live()
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        assert over_grpc.get_model_repository_index(headers=admin) is not None
        with pytest.raises(InferenceServerException) as refused:
            over_grpc.get_model_repository_index(headers=_key("shop"))
        assert refused.value.status() == "StatusCode.PERMISSION_DENIED"
    finally:
        over_http.close()
        over_grpc.close()
    # A plain (unencrypted) gRPC channel gets nowhere.
    plain = tgrpc.InferenceServerClient(f"127.0.0.1:{secured.grpc_port}")
    try:
        with pytest.raises(InferenceServerException):
            plain.is_server_live(client_timeout=10)
    finally:
        plain.close()


def test_an_undecodable_grpc_message_is_refused_as_without_keys(secured, pki) -> None:
    """With keys on, a method naming a model (its interceptor reads the model's field) got
    bytes that are no message: UNKNOWN "Unexpected <class 'AttributeError'>" and a
    traceback, where the same bytes without keys are INVALID_ARGUMENT. The credential is
    checked first, as for any call; then the bytes are refused."""
    from tests.test_hostile import _raw_call

    with grpc.secure_channel(
        f"127.0.0.1:{secured.grpc_port}", grpc.ssl_channel_credentials(pki["ca"].read_bytes())
    ) as channel:
        for method in ("ModelInfer", "ModelMetadata", "ModelReady", "ModelConfig"):
            found = {}
            for who, metadata in (("shop", list(_key("shop").items())), ("nobody", [])):
                error = _raw_call(channel, method, b"\xff\xff\xff\xff", metadata)
                assert isinstance(error, grpc.RpcError), (method, who)
                found[who] = (error.code(), error.details())
            assert found["shop"][0] == grpc.StatusCode.INVALID_ARGUMENT, (method, found)
            assert "not a valid" in found["shop"][1], (method, found)
            assert found["nobody"][0] == grpc.StatusCode.UNAUTHENTICATED, (method, found)
    assert "Traceback" not in secured.log_path.read_text(errors="replace")


def test_quota_runs_out_and_comes_back(client: httpx.Client, secured, pki) -> None:
    """The "tiny" key: 0.2 requests a second, burst 2. Its bucket empties within a few
    requests; the 429 says when to come back, and after that wait the key works again."""
    path, headers = "/v2/models/digits", _key("tiny")
    _error(client.get(path), 401, "unauthorized")  # counted as missing, by no key id
    statuses = []
    for _ in range(10):
        response = client.get(path, headers=headers)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {200}, statuses
    _error(response, 429, "quota_exceeded")
    wait = int(response.headers["retry-after"])
    assert 1 <= wait <= 5, wait
    # The key is over quota, not the service: other keys are served meanwhile.
    assert client.get(path, headers=_key("shop")).status_code == 200
    # gRPC draws from the same bucket.
    with grpc.secure_channel(
        f"127.0.0.1:{secured.grpc_port}",
        grpc.ssl_channel_credentials(pki["ca"].read_bytes()),
    ) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelMetadata(
                service_pb2.ModelMetadataRequest(name="digits"),
                metadata=[("x-api-key", KEYS["tiny"][0])],
                timeout=30,
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    time.sleep(wait + 0.5)
    for _ in range(3):  # a busy machine may take a moment more: the bucket only refills
        again = client.get(path, headers=headers)
        if again.status_code == 200:
            break
        time.sleep(int(again.headers.get("retry-after", "1")))
    assert again.status_code == 200, again.text
    time.sleep(1.2)  # counts reach /metrics every half second
    assert metric(client, "serving_auth_refusals_total", key="tiny", reason="quota") >= 2
    assert metric(client, "serving_auth_requests_total", key="tiny") >= 3
    assert metric(client, "serving_auth_refusals_total", key="", reason="missing") >= 1
    exposed = client.get("/metrics").text
    for key, *_ in KEYS.values():
        assert key not in exposed  # ids only, never keys
    assert "serving_quota_used_ratio" in exposed


def test_key_rotation_under_load_fails_no_valid_request(secured, pki) -> None:
    """Clients call with the old key while the file gains a new one; they move to the new
    key once it works; the old one is then removed, and a broken file is written. No
    request from a valid client fails, the removed key is refused, and the broken file
    leaves the last good keys in place."""
    keys_file: Path = secured.keys_file
    old, new = "rotate-old-0123456789", "rotate-new-0123456789"
    replace(keys_file, keys_yaml({"rot-old": (old, ["digits"], False, None)}))
    context = _context(pki)

    def works(key: str) -> bool:
        with httpx.Client(base_url=secured.url, verify=context, timeout=30) as probe:
            return probe.get("/v2/models/digits", headers={"x-api-key": key}).status_code == 200

    deadline = time.monotonic() + 30
    while not works(old):
        assert time.monotonic() < deadline, "the old key was never accepted"
        time.sleep(0.2)

    current = {"key": old}
    failures: list[str] = []
    counts = [0]
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=secured.url, verify=context, timeout=30) as session:
            while not stop.is_set():
                key = current["key"]
                response = session.post(
                    "/v2/models/digits/infer", json=V2_BODY, headers={"x-api-key": key}
                )
                counts[0] += 1
                if response.status_code != 200:
                    failures.append(f"{response.status_code} with {key[:10]}: {response.text}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        both = {
            "rot-old": (old, ["digits"], False, None),
            "rot-new": (new, ["digits"], False, None),
        }
        replace(keys_file, keys_yaml(both))
        deadline = time.monotonic() + 30
        while not works(new):
            assert time.monotonic() < deadline, "the new key was never accepted"
            time.sleep(0.2)
        current["key"] = new  # the clients move to the new key...
        time.sleep(0.5)  # ...and requests already sent with the old one finish
        replace(keys_file, keys_yaml({"rot-new": (new, ["digits"], False, None)}))
        deadline = time.monotonic() + 30
        while works(old):
            assert time.monotonic() < deadline, "the old key was never removed"
            time.sleep(0.2)
        replace(keys_file, "keys: [{id: broken")  # a broken version: the last good one stays
        time.sleep(2.5)
        assert works(new)
        assert not works(old)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert counts[0] > 20, counts
    assert not failures, failures[:5]
    with httpx.Client(base_url=secured.url, verify=context) as client:
        time.sleep(1.2)
        assert metric(client, "serving_auth_reloads_total", result="error") >= 1
        assert metric(client, "serving_auth_reloads_total", result="ok") >= 3
    replace(keys_file, keys_yaml())  # back to the module's keys


def test_any_broken_key_file_keeps_the_last_good_keys_and_is_counted_once(
    client: httpx.Client, secured, signing_key
) -> None:
    """Versions of the key files that parse as bytes but not as keys: each is one reload
    error (logged once, no traceback), and the last good keys stay. Before, a keys file
    with a non-UTF-8 byte, a JWKS entry that is no object or lacks a member, and an
    infinite rate escaped as UnicodeDecodeError, AttributeError, KeyError or OverflowError:
    a traceback every second, never counted."""
    keys_file: Path = secured.keys_file
    jwks_file: Path = secured.jwks_file
    good_jwks = jwks_file.read_text()
    errors = metric(client, "serving_auth_reloads_total", result="error")
    sha = hashlib.sha256(b"x").hexdigest()
    broken = [
        (keys_file, keys_yaml().encode() + b"# caf\xe9\n"),
        (keys_file, f"keys: [{{id: inf, sha256: {sha}, rate: {{per_second: .inf}}}}]".encode()),
        (jwks_file, b'{"keys": [1]}'),
        (jwks_file, b'{"keys": [{"kty": "oct"}]}'),
        (jwks_file, b'{"keys": [{"kty": "RSA", "alg": "none"}]}'),
    ]
    bearer = {"authorization": f"Bearer {token(signing_key, models=['digits'])}"}
    try:
        for number, (path, data) in enumerate(broken, 1):
            temporary = path.with_suffix(".new")
            temporary.write_bytes(data)
            os.replace(temporary, path)
            deadline = time.monotonic() + 20
            while metric(client, "serving_auth_reloads_total", result="error") < errors + number:
                assert time.monotonic() < deadline, f"{data[-40:]!r} was not counted"
                time.sleep(0.3)
            assert client.get("/v2/models/digits", headers=_key("shop")).status_code == 200
            assert client.get("/v2/models/digits", headers=bearer).status_code == 200
        time.sleep(1.5)  # each broken version is reported once, not every second
        counted = metric(client, "serving_auth_reloads_total", result="error") - errors
        assert counted == len(broken), counted
    finally:
        replace(keys_file, keys_yaml())
        replace(jwks_file, good_jwks)


# -- mTLS ---------------------------------------------------------------------------------------


def test_mtls_needs_a_client_certificate_from_the_ca(mtls, pki) -> None:
    with httpx.Client(verify=_context(pki, "client"), timeout=30) as client:
        assert client.post(f"{mtls.url}/v2/models/digits/infer", json=V2_BODY).status_code == 200
    for context in (_context(pki), _context(pki, "stranger")):  # no certificate; another CA's
        with (
            httpx.Client(verify=context, timeout=30) as client,
            pytest.raises(httpx.TransportError),
        ):
            client.get(f"{mtls.url}/livez")
    with httpx.Client(timeout=30) as client, pytest.raises(httpx.TransportError):
        client.get(f"http://127.0.0.1:{mtls.port}/livez")  # plain HTTP on the TLS port
    # gRPC: the same CA and the same rule.
    target = f"127.0.0.1:{mtls.grpc_port}"
    ca = pki["ca"].read_bytes()
    good = tgrpc.InferenceServerClient(target, ssl=True, root_certificates=str(pki["ca"]),
                                       private_key=str(pki["client.key"]),
                                       certificate_chain=str(pki["client"]))  # fmt: skip
    try:
        image = tgrpc.InferInput("image", [1, 28, 28], "FP32")
        image.set_data_from_numpy(PIXELS)
        assert good.infer("digits", [image]).as_numpy("probabilities").shape[0] == 1
    finally:
        good.close()
    key, chain = pki["stranger.key"].read_bytes(), pki["stranger"].read_bytes()
    for credentials in (
        grpc.ssl_channel_credentials(ca),
        grpc.ssl_channel_credentials(ca, private_key=key, certificate_chain=chain),
    ):
        with grpc.secure_channel(target, credentials) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-x", "-q"]))
