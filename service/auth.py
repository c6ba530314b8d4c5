"""Who may call what: API keys scoped to models, JWTs, and a quota per key.

With neither ``api_keys_file`` nor ``jwt_keys_file`` set, nothing here runs and every route
is open, as before. With either set, every request carries ``Authorization: Bearer <key or
token>`` or ``x-api-key: <key>`` (gRPC: the same names in its metadata), checked once per
request by the transport's entry point (``service.app`` after its route match, the gRPC
interceptor below) against the model the route names:

- no credential, or one the service does not know: 401 ``unauthorized`` with
  ``WWW-Authenticate`` (gRPC UNAUTHENTICATED);
- a known caller and a model it may not call, or the repository API without ``admin``: 403
  ``forbidden`` (gRPC PERMISSION_DENIED);
- a key past its quota (a token bucket, per worker process): 429 ``quota_exceeded`` with
  ``Retry-After`` (gRPC RESOURCE_EXHAUSTED).

Keys are never stored: the keys file holds each key's sha256, and a presented key is found by
its own sha256 (one dictionary lookup, then ``hmac.compare_digest`` of the two digests): the
cost is the hash of a short string, about half a microsecond, so nothing needs caching. A
JWT's signature check costs ~50 us (RS256), so each verified token is kept until it expires
(a bounded cache, emptied when the JWT keys change). Both files are re-read when they change
(checked every second, off the event loop); a broken new file keeps the last good one, logs
an error and counts ``serving_auth_reloads_total{result="error"}``. Metrics name keys by id,
never by key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.config import ConfigError, Settings
from service.errors import Forbidden, RequestError, TooManyRequests, Unauthorized

logger = logging.getLogger(__name__)

REALM = 'Bearer realm="keras-model-serving"'
JWT_LEEWAY_S = 30  # clock skew allowed on exp, nbf and iat
JWT_CACHE_SIZE = 10_000  # verified tokens kept (each a few hundred bytes)
WATCH_INTERVAL_S = 1.0

# -- the keys file --------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rate(_Strict):
    per_second: float = Field(gt=0, allow_inf_nan=False)  # inf: math.ceil raised
    burst: int | None = Field(None, ge=1)  # default: one second's worth, at least 1


class KeySpec(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    models: tuple[str, ...] = ()
    admin: bool = False
    rate: Rate | None = None


class KeysFile(_Strict):
    keys: tuple[KeySpec, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> KeysFile:
        for attribute in ("id", "sha256"):
            values = [getattr(k, attribute).lower() for k in self.keys]
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                shown = twice if attribute == "id" else [f"{v[:8]}..." for v in twice]
                raise ValueError(f"each key's {attribute} must be unique: {shown}")
        return self


@dataclass(frozen=True)
class Caller:
    """Who a credential says the caller is. ``models`` None: every model."""

    id: str  # shown in logs; for a JWT, "jwt:<sub>"
    models: frozenset[str] | None
    admin: bool = False
    rate: Rate | None = None
    label: str = ""  # the metrics label: the key's id, or "jwt" (subjects are unbounded)
    digest: bytes = b""

    def may_call(self, model: str) -> bool:
        return self.models is None or model in self.models


def _models(values: Any, where: str) -> frozenset[str] | None:
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}: models must be a list of model names, or ['*']")
    return None if "*" in values else frozenset(values)


def parse_keys(text: str | bytes, source: str) -> dict[bytes, Caller]:
    """The callers of a keys file, by the sha256 digest of their key."""
    try:
        document = yaml.safe_load(text)  # bytes: YAML's own decoding, its error if not UTF-8
        parsed = KeysFile.model_validate(document if document is not None else {})
    except (yaml.YAMLError, ValidationError) as error:
        detail = error.errors() if isinstance(error, ValidationError) else None
        if detail:
            problem = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in detail
            )
        else:
            problem = str(error).splitlines()[0]
        raise ConfigError(f"api_keys_file {source}: {problem}") from None
    callers = {}
    for key in parsed.keys:
        digest = bytes.fromhex(key.sha256)
        models = _models(list(key.models), f"api_keys_file {source}: key {key.id}")
        callers[digest] = Caller(key.id, models, key.admin, key.rate, key.id, digest)
    return callers


# -- JWT ------------------------------------------------------------------------------------


# The algorithms a PEM key may verify, by key type: never "none", never HMAC with a public
# key (the classic algorithm-confusion attack); PyJWT refuses that too.
def _pem_algorithms(key: Any) -> list[str]:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        found = {256: "ES256", 384: "ES384", 521: "ES512"}.get(key.curve.key_size)
        return [found] if found else []
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ["EdDSA"]
    return []


@dataclass
class JwtKeys:
    """Verification keys: by ``kid`` from a JWKS, or one PEM key (any ``kid``)."""

    by_kid: dict[str | None, tuple[Any, list[str]]]

    def pick(self, kid: str | None) -> tuple[Any, list[str]]:
        found = self.by_kid.get(kid)
        if found is None and len(self.by_kid) == 1:
            only_kid, found = next(iter(self.by_kid.items()))
            if kid is not None and only_kid is not None:
                found = None  # both name a key, and not the same one
        if found is None:
            raise _invalid("the token's signing key is not known", "invalid_token")
        return found


def parse_jwt_keys(data: bytes, source: str) -> JwtKeys:
    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from cryptography.x509 import load_pem_x509_certificate

    try:
        if data.lstrip().startswith(b"{"):
            document = json.loads(data)
            keys = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(keys, list) or not keys:
                raise ValueError("a JWKS needs a non-empty 'keys' list")
            found: dict[str | None, tuple[Any, list[str]]] = {}
            for entry in keys:
                if not isinstance(entry, dict):
                    raise ValueError("each entry of 'keys' must be a JSON object (a JWK)")
                jwk = jwt.PyJWK.from_dict(entry)
                found[jwk.key_id] = (jwk, [jwk.algorithm_name])
            return JwtKeys(found)
        if b"BEGIN CERTIFICATE" in data:
            key = load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
        algorithms = _pem_algorithms(key)
        if not algorithms:
            raise ValueError(f"unsupported key type {type(key).__name__}")
        return JwtKeys({None: (key, algorithms)})
    # PyJWK's refusals of a malformed JWK are not all its own errors: a missing member is a
    # KeyError ('k' of "oct"), alg "none" a NotImplementedError.
    except (ValueError, TypeError, KeyError, NotImplementedError, jwt.PyJWTError) as error:
        raise ConfigError(f"jwt_keys_file {source}: {type(error).__name__}: {error}") from None


class JwtVerifier:
    def __init__(self, keys: JwtKeys, issuer: str, audience: str) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self._cache: dict[str, tuple[Caller, float]] = {}

    def replace_keys(self, keys: JwtKeys) -> None:
        self.keys = keys
        self._cache = {}  # a key taken out revokes the tokens it signed at once

    def verify(self, token: str) -> Caller:
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None and now < cached[1] + JWT_LEEWAY_S:
            return cached[0]
        import jwt

        try:
            header = jwt.get_unverified_header(token)
            key, algorithms = self.keys.pick(header.get("kid"))
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=JWT_LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
            subject = str(claims.get("sub", "?"))[:64]
            models = _models(claims.get("models", []), "token")
        except jwt.ExpiredSignatureError:
            raise _invalid("the token has expired", "expired") from None
        except (jwt.InvalidTokenError, ValueError) as error:
            raise _invalid(f"the token was refused: {str(error)[:200]}", "invalid_token") from None
        caller = Caller(f"jwt:{subject}", models, claims.get("admin") is True, None, "jwt")
        if len(self._cache) >= JWT_CACHE_SIZE:
            self._cache = {t: c for t, c in self._cache.items() if now < c[1] + JWT_LEEWAY_S}
            if len(self._cache) >= JWT_CACHE_SIZE // 2:
                self._cache = {}
        self._cache[token] = (caller, float(claims["exp"]))
        return caller


def _invalid(message: str, reason: str) -> Unauthorized:
    error = Unauthorized(
        "unauthorized",
        message,
        field="authorization",
        headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
    )
    error.reason = reason  # type: ignore[attr-defined]
    return error


# -- quotas ---------------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens a second, up to ``burst``; each request takes one."""

    __slots__ = ("burst", "rate", "stamp", "tokens", "used")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.used = 0

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one will be there."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.used += 1
            return 0.0
        return (1 - self.tokens) / self.rate


# -- files that change ----------------------------------------------------------------------


@dataclass
class WatchedFile:
    """A file re-read when its size, mtime or inode change (Kubernetes swaps a Secret's
    files by renaming a symlink, so a reader never sees half a file)."""

    path: Path
    parse: Callable[[bytes, str], Any]
    stamp: tuple[int, int, int] | None = None
    value: Any = None

    def _stat(self) -> tuple[int, int, int]:
        found = os.stat(self.path)
        return (found.st_mtime_ns, found.st_size, found.st_ino)

    def load(self) -> Any:
        try:
            stamp = self._stat()
            data = self.path.read_bytes()
        except OSError as error:
            raise ConfigError(f"{self.path}: {error.strerror}") from None
        self.value = self.parse(data, str(self.path))
        self.stamp = stamp
        return self.value

    def changed(self) -> bool:
        try:
            return self._stat() != self.stamp
        except OSError:
            return self.stamp is not None  # gone: report it (load raises) once per change


# -- the guard ------------------------------------------------------------------------------


@dataclass
class Guard:
    """One worker's view of who may call what, and its counts."""

    settings: Settings
    callers: dict[bytes, Caller] = field(default_factory=dict)
    jwt: JwtVerifier | None = None
    files: list[tuple[str, WatchedFile]] = field(default_factory=list)
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _requests: dict[str, int] = field(default_factory=dict)
    _refusals: dict[tuple[str, str], int] = field(default_factory=dict)
    _reloads: dict[tuple[str, str], int] = field(default_factory=dict)
    _metrics: Any = None

    def __post_init__(self) -> None:
        # A name a request gives -> the model it is (V2 names ``<model>_<signature>`` are
        # aliases of their model); the service sets this to the registry's index.
        self.resolve: Callable[[str], str] = str
        config = self.settings
        self.enabled = config.auth_enabled
        if config.api_keys_file is not None:
            keys = WatchedFile(config.api_keys_file, parse_keys)
            self.files.append(("api_keys_file", keys))
            self._use_keys(keys.load())
        if config.jwt_keys_file is not None:
            assert config.jwt_issuer and config.jwt_audience  # Settings checks this
            keys = WatchedFile(config.jwt_keys_file, parse_jwt_keys)
            self.files.append(("jwt_keys_file", keys))
            self.jwt = JwtVerifier(keys.load(), config.jwt_issuer, config.jwt_audience)

    def _use_keys(self, callers: dict[bytes, Caller]) -> None:
        token = self.settings.admin_token
        if token is not None:  # the repository API's token: one more admin key
            digest = hashlib.sha256(token.get_secret_value().encode()).digest()
            admin = Caller("admin-token", frozenset(), True, None, "admin-token", digest)
            callers.setdefault(digest, admin)
        self.callers = callers
        live = {c.id: c.rate for c in callers.values() if c.rate is not None}
        for key_id in list(self.buckets):
            if key_id not in live:
                del self.buckets[key_id]
        for key_id, rate in live.items():
            burst = rate.burst or max(1, math.ceil(rate.per_second))
            bucket = self.buckets.get(key_id)
            if bucket is None or (bucket.rate, bucket.burst) != (rate.per_second, burst):
                self.buckets[key_id] = TokenBucket(rate.per_second, burst)

    # -- reloading ------------------------------------------------------------------------

    def _read_changed(self) -> list[tuple[str, WatchedFile, Any]]:
        """Each changed file, read and parsed (or the ConfigError saying why not)."""
        found: list[tuple[str, WatchedFile, Any]] = []
        for setting, watched in self.files:
            if watched.changed():
                try:
                    found.append((setting, watched, watched.load()))
                except ConfigError as error:
                    found.append((setting, watched, error))
        return found

    def _apply(self, found: list[tuple[str, WatchedFile, Any]]) -> None:
        for setting, watched, value in found:
            if isinstance(value, ConfigError):
                watched.stamp = _stamp_or_none(watched)  # each broken version reported once
                logger.error("%s not reloaded, the last good one stays in use: %s", setting, value)
                self._count(self._reloads, (setting, "error"))
                continue
            if setting == "api_keys_file":
                self._use_keys(value)
            elif self.jwt is not None:
                self.jwt.replace_keys(value)
            logger.info("%s reloaded", setting)
            self._count(self._reloads, (setting, "ok"))

    def reload_changed(self) -> None:
        """Re-read each file that changed; a broken one keeps the last good keys."""
        self._apply(self._read_changed())

    async def watch_forever(self, every_s: float = WATCH_INTERVAL_S) -> None:
        """Check the files every second: stat, read and parse run in a thread, off the
        event loop; the new keys are swapped in on the loop."""
        if not self.files:
            return
        while True:
            await asyncio.sleep(every_s)
            try:
                found = await asyncio.to_thread(self._read_changed)
                if found:
                    self._apply(found)
            except Exception:  # never let the watcher die: the old keys would stay forever
                logger.exception("checking the key files failed")

    # -- checking -------------------------------------------------------------------------

    def identify(self, headers: Mapping[str, str]) -> Caller:
        """The caller a request's credential names; 401 without a known one."""
        presented = _credential(headers)
        if not presented:
            raise _refused(
                Unauthorized(
                    "unauthorized",
                    "this service needs a key: 'Authorization: Bearer <key>' or 'x-api-key'",
                    field="authorization",
                    headers={"WWW-Authenticate": REALM},
                ),
                "missing",
            )
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        # The lookup is by the digest of the presented key, so its timing tells nothing
        # about any stored key; compare_digest confirms the match in constant time.
        caller = self.callers.get(digest)
        if caller is not None and hmac.compare_digest(caller.digest, digest):
            return caller
        if self.jwt is not None and presented.count(".") == 2:
            return self.jwt.verify(presented)
        raise _invalid("the key or token is not known", "unknown")

    def check(
        self,
        headers: Mapping[str, str],
        model: str | None = None,
        admin: bool = False,
        v2_name: bool = False,
    ) -> Caller:
        """The caller, when it may make this request; raises 401, 403 or 429 otherwise.
        ``model``: the model the route names; ``admin``: the repository API; ``v2_name``:
        the route reads ``model`` as a V2 name (``<model>_<signature>`` is that model), as
        V2 routes do. Other routes look names up exactly, so the guard must too: it let an
        alias through where the route then answered 404 with every model's name."""
        try:
            caller = self.identify(headers)
        except RequestError as error:
            self._count(self._refusals, ("", getattr(error, "reason", "unknown")))
            raise
        label = caller.label
        if admin and not caller.admin:
            self._count(self._refusals, (label, "admin"))
            raise Forbidden(
                "forbidden",
                f"{caller.id} may not use the model repository API",
                field="authorization",
            )
        if model is not None and not caller.may_call(self.resolve(model) if v2_name else model):
            self._count(self._refusals, (label, "model"))
            raise Forbidden(
                "forbidden", f"{caller.id} may not call model {model[:100]!r}", field="model"
            )
        bucket = self.buckets.get(caller.id) if caller.rate is not None else None
        if bucket is not None and (wait := bucket.take()):
            self._count(self._refusals, (label, "quota"))
            raise TooManyRequests(
                "quota_exceeded",
                f"{caller.id} is over its quota of {bucket.rate:g} requests a second "
                f"(burst {bucket.burst})",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        self._requests[label] = self._requests.get(label, 0) + 1
        return caller

    # -- metrics --------------------------------------------------------------------------

    @staticmethod
    def _count(counts: dict[Any, int], key: Any) -> None:
        counts[key] = counts.get(key, 0) + 1

    def start_metrics(self) -> None:
        """prometheus_client's metrics, made in the worker (see ``service.metrics``)."""
        from prometheus_client import Counter, Gauge

        self._metrics = (
            Counter(
                "auth_requests",
                "Requests let through, by key id ('jwt' for tokens)",
                ["key"],
                namespace="serving",
            ),
            Counter(
                "auth_refusals",
                "Requests refused by who called: missing, unknown, expired or invalid_token "
                "(401, key ''), model or admin (403), quota (429), by key id",
                ["key", "reason"],
                namespace="serving",
            ),
            Gauge(
                "quota_used_ratio",
                "Share of each key's burst in use now (1: the next request waits), per worker",
                ["key"],
                namespace="serving",
                multiprocess_mode="max",
            ),
            Counter(
                "auth_reloads",
                "Key files re-read after a change: ok, or error (the last good one stays)",
                ["file", "result"],
                namespace="serving",
            ),
        )

    def flush(self) -> None:
        if self._metrics is None:
            return
        requests, refusals, used, reloads = self._metrics
        counts, self._requests = self._requests, {}
        for label, count in counts.items():
            requests.labels(label).inc(count)
        refused, self._refusals = self._refusals, {}
        for (label, reason), count in refused.items():
            refusals.labels(label, reason).inc(count)
        done, self._reloads = self._reloads, {}
        for (setting, result), count in done.items():
            reloads.labels(setting, result).inc(count)
        now = time.monotonic()
        for key_id, bucket in self.buckets.items():
            tokens = min(bucket.burst, bucket.tokens + (now - bucket.stamp) * bucket.rate)
            used.labels(key_id).set(1 - tokens / bucket.burst)


def _stamp_or_none(watched: WatchedFile) -> tuple[int, int, int] | None:
    try:
        return watched._stat()
    except OSError:
        return None


def _refused(error: RequestError, reason: str) -> RequestError:
    error.reason = reason  # type: ignore[attr-defined]
    return error


def _credential(headers: Mapping[str, str]) -> str:
    """The Bearer credential, else ``x-api-key`` (an ``Authorization`` of another scheme,
    meant for a proxy in front, does not hide the key)."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key", "").strip()


# -- which routes need what -----------------------------------------------------------------

HEALTH_PATHS = frozenset({"/livez", "/readyz", "/metrics", "/healthz"})
OPEN, HEALTH, DOCS, MODEL, ANY, ADMIN = "open", "health", "docs", "model", "any", "admin"


def route_kind(template: str) -> str:
    """What a route of the table needs: ADMIN (the handler checks, ``service.admin``),
    HEALTH (open unless ``public_health`` is off), DOCS (open when ``public_docs``, else as
    MODEL or ANY), MODEL (a key for the model the path names), ANY (any known caller)."""
    if template.startswith("/v2/repository"):
        return ADMIN
    if template.startswith("/v2/health/"):
        return HEALTH
    if template in ("/", "/docs.json") or "/card" in template or "/files/" in template:
        return DOCS
    return MODEL if "{name}" in template else ANY


_KINDS: dict[str, str] = {}


def http_refusal(
    guard: Guard, headers: Mapping[str, str], template: str | None, parameters: Mapping[str, str]
) -> RequestError | None:
    """The refusal for an HTTP request (``template``: its route, None for BentoML's own
    paths), or None to let it through."""
    if template is None:
        kind = HEALTH if parameters.get("path") in HEALTH_PATHS else ANY
    else:
        kind = _KINDS.get(template)
        if kind is None:
            kind = _KINDS[template] = route_kind(template)
    config = guard.settings
    if kind == ADMIN or (kind == HEALTH and config.public_health):
        return None
    if kind == DOCS:
        if config.public_docs:
            return None
        kind = MODEL if "name" in parameters else ANY
    try:
        v2_name = template is not None and template.startswith("/v2/models/")
        guard.check(headers, parameters.get("name") if kind == MODEL else None, v2_name=v2_name)
    except RequestError as error:
        return error
    return None


# -- gRPC -----------------------------------------------------------------------------------

# The model each gRPC method names, by the request field holding it; None: no model.
GRPC_MODEL_FIELD = {
    "ModelInfer": "model_name",
    "ModelReady": "name",
    "ModelMetadata": "name",
    "ModelConfig": "name",
}
GRPC_HEALTH = frozenset({"ServerLive", "ServerReady"})


def grpc_credentials(config: Settings) -> Any:
    """The gRPC port's TLS credentials from the same files as HTTPS, or None (plain)."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    try:
        pair = (config.tls_key_file.read_bytes(), config.tls_cert_file.read_bytes())
        ca = config.tls_client_ca_file.read_bytes() if config.tls_client_ca_file else None
    except OSError as error:
        raise ConfigError(f"TLS files: {error}") from None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=bool(ca))


class GrpcGuard(grpc.aio.ServerInterceptor):
    """A grpc.aio server interceptor: the same check as HTTP, per call, before the servicer.
    The repository methods check in the servicer (``service.admin.authorise``)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.codes = {
            401: grpc.StatusCode.UNAUTHENTICATED,
            403: grpc.StatusCode.PERMISSION_DENIED,
            429: grpc.StatusCode.RESOURCE_EXHAUSTED,
        }

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        method = details.method.rsplit("/", 1)[-1]
        if handler is None or handler.unary_unary is None or method.startswith("Repository"):
            return handler
        if method in GRPC_HEALTH and self.guard.settings.public_health:
            return handler
        inner, field_name = handler.unary_unary, GRPC_MODEL_FIELD.get(method)
        guard, codes = self.guard, self.codes

        async def checked(request: Any, context: Any) -> Any:
            headers = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
            # An undecodable message (``grpc.Undecodable``) names no model: the caller is
            # checked all the same, then the servicer refuses the bytes (INVALID_ARGUMENT).
            model = getattr(request, field_name, None) if field_name else None
            try:
                guard.check(headers, model, v2_name=True)  # every gRPC name is a V2 name
            except RequestError as error:
                if "Retry-After" in error.headers:
                    context.set_trailing_metadata((("retry-after", error.headers["Retry-After"]),))
                await context.abort(codes.get(error.status, grpc.StatusCode.UNKNOWN), error.message)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
