"""Every setting of the service, read once, in one place: ``Settings``.

Precedence: environment variables (``SERVING_*``, and ``MODEL_REPOSITORY``) over the YAML
file ``SERVING_CONFIG`` names over the defaults here. Unknown keys, in the file or in a
``SERVING_*`` variable, are refused with an error naming them, as are values out of range:
a typo must not silently become a default. ``README.md`` ("Configuration") lists them all.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from modelspec import storage
from service.inputs.numbers import ascii_int

PREFIX = "SERVING_"


class ConfigError(ValueError):
    """Settings that cannot be served with; the message names each bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchingConfig(_Section):
    """How many items one inference may take, and how long a first item may wait for company."""

    enabled: bool = True
    max_batch_size: int = Field(64, ge=1)
    max_wait_ms: float = Field(2.0, ge=0)
    # Run batches in a worker thread, off the event loop: worth it for models slower than a
    # millisecond or so. None decides from the warm-up: every batch when one item takes
    # > 1 ms, else batches big enough to take > 1 ms inline (service.batching).
    offload: bool | None = None
    # Items waiting beyond this are refused at once with 503 + Retry-After (load shedding):
    # a fast "come back later" instead of a timeout.
    max_queued_items: int = Field(4096, ge=1)


class VersionPolicy(_Section):
    """Which published versions are served, as TF Serving's policies: the latest N (1 by
    default), specific versions, or all."""

    latest: int | None = Field(None, ge=1)
    specific: tuple[int, ...] | None = None
    all: bool = False

    @model_validator(mode="after")
    def _one(self) -> VersionPolicy:
        chosen = [self.latest is not None, self.specific is not None, self.all]
        if sum(chosen) > 1:
            raise ValueError("give one of latest, specific or all")
        if self.specific is not None and (not self.specific or min(self.specific) < 1):
            raise ValueError("specific needs at least one version, each >= 1")
        return self

    def choose(self, present: list[int]) -> set[int]:
        """The versions to serve among those published."""
        if self.all:
            return set(present)
        if self.specific is not None:
            return set(present) & set(self.specific)
        return set(sorted(present)[-(self.latest or 1) :])

    def describe(self) -> dict[str, Any]:
        if self.all:
            return {"all": {}}
        if self.specific is not None:
            return {"specific": {"versions": list(self.specific)}}
        return {"latest": {"num_versions": self.latest or 1}}


class OodConfig(_Section):
    """An out-of-distribution detector for a model's inputs (``service.monitoring.ood``):
    another served model scores each input; above ``threshold`` it is flagged. Each field not
    given comes from the model's manifest (``ood``: digits names the autoencoder), and the
    threshold from the detector's manifest (``detector.threshold``)."""

    enabled: bool = True
    detector: str | None = None  # the detector model's name
    signature: str | None = None  # its signature (default: its default signature)
    # reconstruction_mse: mean squared difference between the input and the signature's one
    # output; or the name of an output holding one score per item.
    score: str | None = None
    threshold: float | None = None


# A version label (TF Serving's version_labels): a name that is not a number, so that
# ``/versions/{v}`` and ``?version=`` tell a label from a version by its first character.
LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


class ShadowConfig(_Section):
    """A share of live requests also run on another version, its answers compared, never
    returned (``service.rollout``)."""

    target: str  # a label or a version number
    sample: float = Field(ge=0, le=1)

    @field_validator("target", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _keys_as_text(value: Any) -> Any:
    """YAML reads ``{1: 80}`` with an int key: a version number, written as text here."""
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v
                for k, v in value.items()}  # fmt: skip
    return value


def check_routing(
    labels: dict[str, int], traffic: dict[str, float], shadow: ShadowConfig | None
) -> None:
    """Labels, weights and shadow that refer to each other coherently (ValueError if not):
    label names are not numbers, a weight's or the shadow's target is a label or a version."""
    for label, number in labels.items():
        if not LABEL.fullmatch(label):
            raise ValueError(
                f"label {label[:70]!r}: 1-64 letters, digits, '_', '.' or '-', starting with a "
                "letter (a number is a version)"
            )
        if number < 1:
            raise ValueError(f"label {label!r}: version {number} is not a version (>= 1)")

    def target(text: str, where: str) -> None:
        # ascii_int: digits only, at most 18 of them (int() of thousands raised its own
        # "Exceeds the limit (4300 digits)" message)
        if text not in labels and not (ascii_int(text) or 0) >= 1:
            raise ValueError(
                f"{where} {text[:70]!r} is neither a label of {sorted(labels)} nor a version"
            )

    for key, weight in traffic.items():
        target(key, "traffic")
        if not weight >= 0:
            raise ValueError(f"traffic {key!r}: weight {weight} is below 0")
    # An infinite weight (YAML's .inf), or finite ones whose sum is not (1e308 twice), made
    # every share NaN or 0: the traffic all went to one version while /models said "valid".
    total = sum(traffic.values())
    if traffic and not total < math.inf:
        raise ValueError(
            f"traffic: the weights add up to {total}; each and their sum must be finite"
        )
    if traffic and not total > 0:
        raise ValueError("traffic: the weights add up to 0")
    if shadow is not None:
        target(shadow.target, "shadow target")


class ModelFileConfig(_Section):
    """``<repository>/<model>/config.yaml``: the model's roll-out settings, followed at every
    poll by every replica (``service.rollout``). Each key it sets replaces the same key of
    ``serving.yaml``'s ``models.<name>``."""

    version_policy: VersionPolicy | None = None
    labels: dict[str, int] | None = None
    traffic: dict[str, float] | None = None
    shadow: ShadowConfig | None = None

    # Labels, traffic and shadow are checked together once merged with serving.yaml's
    # (config.yaml may weigh labels serving.yaml defines): service.rollout.merge.
    _text_keys = field_validator("labels", "traffic", mode="before")(_keys_as_text)


class ModelConfig(_Section):
    """Per-model settings; the name is the key under ``models:``."""

    name: str = ""
    batching: BatchingConfig = BatchingConfig()
    ood: OodConfig | None = None
    version_policy: VersionPolicy = VersionPolicy()
    version: int | None = Field(None, ge=1)  # older form of version_policy: {specific: [v]}
    # Roll-out settings, as in the repository's config.yaml (which wins, key by key).
    labels: dict[str, int] = {}
    traffic: dict[str, float] = {}
    shadow: ShadowConfig | None = None

    _text_keys = field_validator("labels", "traffic", mode="before")(_keys_as_text)

    @model_validator(mode="after")
    def _pin(self) -> ModelConfig:
        if self.version is not None:
            policy = VersionPolicy(specific=(self.version,))
            object.__setattr__(self, "version_policy", policy)
        check_routing(self.labels, self.traffic, self.shadow)
        return self


class Limits(_Section):
    """Bounds on what one request may carry and how long it may take to arrive: the
    service's first line of defence (README, "Threat model"). Each is also read from
    ``SERVING_<NAME>`` (``SERVING_BODY_TIMEOUT_S=5``)."""

    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_items_per_request: int = Field(64, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)  # one image, read from its header
    # All images of one request together: 24 PNGs of 6300x6300 (each within the per-image
    # limit, 1 MB in all) took 4 s of decoding; 50 M pixels is ~0.3 s on one core.
    max_request_pixels: int = Field(50_000_000, ge=1)
    max_header_bytes: int = Field(64 * 1024, ge=1024)  # request line and headers (431)
    max_headers: int = Field(100, ge=8)
    header_timeout_s: float = Field(10.0, gt=0)  # from a connection's or request's first byte
    body_timeout_s: float = Field(30.0, gt=0)  # the whole body, once the headers are in (408)
    # An idle keep-alive connection is closed after this long. uvicorn's 5 s raced busy
    # clients reusing a pooled connection just as it closed (a ReadError in ~1 of 10,000
    # requests under overload); load balancers keep idle connections 60 s, and the backend
    # should outlast them so that they, not we, close first.
    keepalive_timeout_s: float = Field(75.0, gt=0)
    # Open connections per worker (503 beyond). Each holds at most max_header_bytes while
    # its headers arrive, so 4096 bound that memory to 256 MiB in the worst case.
    max_connections: int = Field(4096, ge=1)


class Settings(_Section):
    """The service's settings (one object, built once per worker by ``settings()``)."""

    # Also MODEL_REPOSITORY: a folder, or s3://bucket/prefix, gs://bucket/prefix or
    # az://container/prefix (kept as that string; credentials from the cloud's variables).
    repository: Path | str = Path("models")
    # A remote repository's local copy: verified versions only, the served ones kept (a
    # replica that starts while the store is unreachable serves from it). Default: a
    # folder per repository under the temporary directory.
    cache_dir: Path | None = None
    cache_max_bytes: int = Field(4 * 1024**3, ge=1)  # refuse a version that would pass it
    config: Path | None = None  # the SERVING_CONFIG file these came from, if any
    backend: Literal["onnx", "saved_model"] = "onnx"
    provider: Literal["auto", "cuda", "tensorrt", "cpu"] = "auto"
    tf32: bool = False
    batching: bool = True  # batching for every model (per-model settings can refine it)
    # Serve every model found in the repository; false: only those under ``models``.
    discover: bool = True
    models: dict[str, ModelConfig] = {}
    poll_interval: float = Field(10.0, ge=0)  # seconds between repository scans; 0: never
    admin_token: SecretStr | None = None  # Bearer token of the model repository API
    state_dir: Path | None = None  # shared by the workers (admin unloads); default in /tmp
    limits: Limits = Limits()
    log_json: bool = False
    access_log: bool = False  # one line per model request; off by default (hot path)
    workers: int | Literal["auto"] = 1  # "auto": one per usable core
    max_concurrency: int = Field(512, ge=1)  # requests in progress per worker (503 beyond)
    request_timeout_s: float = Field(60.0, gt=0)  # one inference request, end to end (504)
    inference_threads: int | None = Field(None, ge=1)  # None: from the usable CPUs
    decode_threads: int | None = Field(None, ge=1)  # image decoding; None: the usable CPUs
    grpc_port: int = Field(8001, ge=0, le=65535)  # Open Inference Protocol over gRPC; 0: off
    # Drift (service.monitoring.drift): the last drift_window items of each model version are
    # compared with its reference.json, counted off the request path every drift_interval_s.
    drift: bool = True  # false: no drift checks (the request path skips even the append)
    drift_window: int = Field(1000, ge=10)
    drift_interval_s: float = Field(2.0, gt=0)
    # Sampled payload logs (service.monitoring.payloads): off while the sample is 0.
    payload_log_sample: float = Field(0.0, ge=0, le=1)
    payload_log_file: Path | None = None  # JSON lines, rotated
    payload_log_url: str | None = None  # CloudEvents over HTTP, as KServe's logger
    payload_log_inputs: Literal["full", "hash", "none"] = "full"
    payload_log_max_bytes: int = Field(100 * 1024 * 1024, ge=1024)  # per file, then rotated
    payload_log_backups: int = Field(5, ge=1)  # rotated files kept
    payload_log_queue: int = Field(10_000, ge=1)  # records waiting per sink; more are dropped

    @field_validator("repository", mode="before")
    @classmethod
    def _location(cls, value: Any) -> Any:
        """A bucket URI stays a string (a Path would fold ``s3://`` into ``s3:/``); an
        unknown scheme is refused here, so the service never starts on it."""
        if not isinstance(value, str):
            return value
        parsed = storage.parse(value)  # RepositoryError is a ValueError: a settings error
        return parsed.url if isinstance(parsed, storage.Remote) else parsed

    @property
    def remote(self) -> storage.Remote | None:
        """The repository's bucket and prefix, when it is on object storage."""
        if isinstance(self.repository, str):
            found = storage.parse(self.repository)
            return found if isinstance(found, storage.Remote) else None
        return None

    def check_repository(self) -> None:
        """Raise ConfigError when the service cannot start on this repository: a local
        folder that does not exist (a typo would otherwise serve 404s while ready)."""
        if self.remote is None and not Path(self.repository).is_dir():
            raise ConfigError(
                f"model repository {self.repository}: no such folder (MODEL_REPOSITORY is a "
                "folder, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix)"
            )

    # Who may call what (service.auth; README, "Authentication and TLS"). No keys file and
    # no JWT keys: every route open, as before.
    api_keys_file: Path | None = None  # YAML: keys, each {id, sha256, models, admin, rate}
    jwt_keys_file: Path | None = None  # JWKS JSON or a PEM public key; no network fetch
    jwt_issuer: str | None = None  # required with jwt_keys_file
    jwt_audience: str | None = None  # required with jwt_keys_file
    public_health: bool = True  # /livez, /readyz, /metrics, /v2/health/*: open to probes
    public_docs: bool = False  # the page, /docs.json and model cards: open even with keys on
    tls_cert_file: Path | None = None  # PEM certificate chain: HTTPS and gRPC over TLS
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None  # set: every client needs a certificate it signed

    @model_validator(mode="after")
    def _security(self) -> Settings:
        # Half a security setting fails the start: serving in the clear, or with tokens of
        # any issuer, because one line was forgotten, is worse than not starting.
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        if self.jwt_keys_file is not None and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("jwt_keys_file needs jwt_issuer and jwt_audience")
        return self

    @property
    def auth_enabled(self) -> bool:
        return self.api_keys_file is not None or self.jwt_keys_file is not None

    @model_validator(mode="after")
    def _name_models(self) -> Settings:
        named = {n: m.model_copy(update={"name": n}) for n, m in self.models.items()}
        object.__setattr__(self, "models", named)
        return self

    def model(self, name: str) -> ModelConfig:
        """The settings of ``name``: its own under ``models``, or the defaults."""
        found = self.models.get(name) or ModelConfig(name=name)
        if not self.batching:
            batching = found.batching.model_copy(update={"enabled": False})
            found = found.model_copy(update={"batching": batching})
        return found

    def worker_count(self, usable_cpus: int) -> int:
        return usable_cpus if self.workers == "auto" else self.workers


# Settings a plain environment variable may set: SERVING_<NAME> (and MODEL_REPOSITORY);
# nested ones (models) come from the file only.
_SCALARS = [n for n in Settings.model_fields if n not in ("models", "limits", "config")]


def _from_environment(environ: dict[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {
        n: environ[PREFIX + n.upper()] for n in _SCALARS if PREFIX + n.upper() in environ
    }
    if "MODEL_REPOSITORY" in environ:
        found["repository"] = environ["MODEL_REPOSITORY"]
    limits = {
        n: environ[PREFIX + n.upper()] for n in Limits.model_fields if PREFIX + n.upper() in environ
    }
    if limits:
        found["limits"] = limits
    return found


def _known_variables() -> set[str]:
    return {PREFIX + n.upper() for n in [*_SCALARS, *Limits.model_fields]} | {"SERVING_CONFIG"}


def unknown_variables(environ: dict[str, str]) -> list[str]:
    """SERVING_* variables no setting reads: typos, worth a warning (not an error: Kubernetes
    injects <SERVICE>_SERVICE_HOST-style variables of its own). Those close to a setting
    stop the start (``likely_setting``)."""
    known = _known_variables()
    return sorted(k for k in environ if k.startswith(PREFIX) and k not in known)


# What Kubernetes injects for a Service named "serving": SERVING_SERVICE_HOST, SERVING_PORT,
# SERVING_PORT_3000_TCP_ADDR... never a typo of ours.
_KUBERNETES = re.compile(r"SERVING_(SERVICE_(HOST|PORT)(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?)")


def _words(name: str) -> set[str]:
    return {w.removesuffix("S") for w in name.removeprefix(PREFIX).split("_") if w}


def likely_setting(variable: str) -> str | None:
    """The setting an unknown SERVING_* variable probably meant: one a few letters away
    (SERVING_API_KEY_FILE, SERVING_TLS_CERT_FIEL), or with the same words in another form
    (SERVING_KEYS_FILE_API, SERVING_TLS_CERT); None for anything else."""
    if _KUBERNETES.fullmatch(variable):
        return None
    known = sorted(_known_variables())
    close = difflib.get_close_matches(variable, known, n=1, cutoff=0.85)
    if close:
        return close[0]
    words = _words(variable)
    for name in known:
        theirs = _words(name)
        if len(words & theirs) >= 2 and (words <= theirs or theirs <= words):
            return name
    return None


def _from_file(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"SERVING_CONFIG {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"SERVING_CONFIG {path}: expected a mapping at the top")
    return data


def load_config(environ: dict[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default: this process's environment), over the file
    SERVING_CONFIG names, over the defaults. Raises ConfigError naming every bad key."""
    env = dict(os.environ if environ is None else environ)
    for variable in unknown_variables(env):
        if meant := likely_setting(variable):
            # A typo of a security setting (SERVING_API_KEY_FILE) would leave every model
            # open: an unknown variable this close to a setting stops the start.
            raise ConfigError(f"{variable} is not a setting; did you mean {meant}?")
    data: dict[str, Any] = {}
    if path := env.get("SERVING_CONFIG"):
        data = _from_file(path)
        data.setdefault("config", path)
    overrides = _from_environment(env)
    limits = {**data.get("limits", {}), **overrides.pop("limits", {})}
    merged = {**data, **overrides, **({"limits": limits} if limits else {})}
    try:
        return Settings.model_validate(merged)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in error.errors()
        )
        where = f" (SERVING_CONFIG {path})" if path else ""
        raise ConfigError(f"bad settings{where}: {problems}") from None


@cache
def settings() -> Settings:
    """This process's settings, read on first use."""
    return load_config()
