"""The model repository API (Triton's V2 extension): index, load, unload.

Every call needs ``Authorization: Bearer <SERVING_ADMIN_TOKEN>``. With no token configured
the API is closed (403): loading and unloading models is an operator's act, never open by
default. A wrong or missing token gets 401 with ``WWW-Authenticate: Bearer``. Tokens are
compared in constant time.

The API's unloads and routing are written to two small files all workers of the server read
(``SharedState``), so with several workers each drops (or takes back) a model within a second.
"""

from __future__ import annotations

import hmac
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.config import Settings
from service.errors import RequestError
from service.http import ClientGone, RawRequest, Reply, json_reply, read_body
from service.inference import Runtime, error_reply
from service.inputs.body import parse_json
from service.locks import exclusive


def authorise(headers: dict[str, str], runtime: Runtime) -> None:
    """Raises 403 when the API is off, 401 without the configured bearer token. With API
    keys or JWTs on (``service.auth``, the Runtime's guard), any admin key or token passes,
    the admin token being one more admin key."""
    guard, config = runtime.guard, runtime.config
    if guard is not None and guard.enabled:
        guard.check(headers, admin=True)
        return
    token = config.admin_token
    if token is None:
        raise RequestError(
            "admin_disabled",
            "the model repository API is off: no SERVING_ADMIN_TOKEN is configured",
        )
    given = headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), expected):
        raise RequestError(
            "unauthorized",
            "a valid 'Authorization: Bearer <token>' header is needed",
            field="authorization",
            headers={"WWW-Authenticate": 'Bearer realm="model-repository"'},
        )


async def _options(request: RawRequest, runtime: Runtime) -> dict:
    """The optional JSON body (``{"ready": true}`` for the index, ``{"parameters": ...}``)."""
    body = await read_body(request, runtime.config.limits)
    if not body.strip():
        return {}
    document = parse_json(body)
    if not isinstance(document, dict):
        raise RequestError("invalid_request", "the body must be a JSON object")
    return document


# What each call takes in ``parameters``; Triton's others are refused, never ignored: a load
# that answered 200 while dropping a ``config`` or ``file:`` override told the client
# something untrue. ``unload_dependents`` is harmless here (no ensembles: nothing depends on
# a model), and tritonclient sends it on every unload.
ACCEPTED_PARAMETERS = {"load": frozenset(), "unload": frozenset({"unload_dependents"})}


def check_parameters(parameters: Any, call: str) -> None:
    """Refuse (400) the load or unload parameters this service does not apply."""
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise RequestError("invalid_request", "'parameters' must be an object", field="parameters")
    refused = sorted(k for k in parameters if k not in ACCEPTED_PARAMETERS[call])
    if refused:
        shown = [k[:60] for k in refused[:5]]
        raise RequestError(
            "unsupported_parameter",
            f"{call} does not apply the parameters {shown}: a model's configuration and files "
            "come from its published versions in the repository",
            field="parameters",
            expected="publish a version with `training export`, then load it without parameters"
            if call == "load"
            else f"only {sorted(ACCEPTED_PARAMETERS[call])}",
        )


async def index(request: RawRequest, runtime: Runtime) -> Reply:
    try:
        authorise(request.headers, runtime)
        options = await _options(request, runtime)
    except RequestError as error:
        return error_reply(error)
    except ClientGone:
        return Reply(b"", status=499)  # the client left mid-body: nobody to answer
    ready_only = options.get("ready") is True
    return json_reply(await runtime.registry.index(ready_only))  # a JSON array, as Triton's


async def load(request: RawRequest, runtime: Runtime, name: str) -> Reply:
    try:
        authorise(request.headers, runtime)
        check_parameters((await _options(request, runtime)).get("parameters"), "load")
        await runtime.registry.load(name)
    except RequestError as error:
        return error_reply(error)
    except ClientGone:
        return Reply(b"", status=499)  # the client left mid-body: nobody to answer
    return json_reply({})


async def unload(request: RawRequest, runtime: Runtime, name: str) -> Reply:
    try:
        authorise(request.headers, runtime)
        check_parameters((await _options(request, runtime)).get("parameters"), "unload")
        await runtime.registry.unload(name)
    except RequestError as error:
        return error_reply(error)
    except ClientGone:
        return Reply(b"", status=499)  # the client left mid-body: nobody to answer
    return json_reply({})


ROUTING_KEYS = ("labels", "traffic")


async def routing(request: RawRequest, runtime: Runtime, name: str) -> Reply:
    """Set ``labels`` and/or ``traffic`` of a model on this server (``null`` clears one); the
    answer is the model's routing in force. The repository's config.yaml is the fleet-wide
    way: this call acts on the server that answers it, until that file changes."""
    try:
        authorise(request.headers, runtime)
        options = await _options(request, runtime)
        unknown = sorted(k[:60] for k in options if k not in ROUTING_KEYS)
        if unknown or not options:
            raise RequestError(
                "invalid_routing",
                f"unknown fields {unknown}" if unknown else "nothing to set",
                field="body",
                expected='{"labels": {label: version}, "traffic": {label or version: weight}}',
            )
        changes = {}
        for key in ROUTING_KEYS:
            if key in options:
                value = options[key]
                if value is not None and not isinstance(value, dict):
                    raise RequestError(
                        "invalid_routing", f"{key!r} must be an object or null", field=key,
                    )  # fmt: skip
                changes[key] = value
        changes = _checked_routing(changes)
        model = await runtime.registry.set_routing(name, changes)
    except RequestError as error:
        return error_reply(error)
    except ClientGone:
        return Reply(b"", status=499)  # the client left mid-body: nobody to answer
    return json_reply({"name": model.name, **model.describe_routing()})


def _checked_routing(changes: dict[str, Any]) -> dict[str, Any]:
    """Labels and weights as config.yaml would take them (a 400 naming what is wrong)."""
    from pydantic import ValidationError

    from service.config import ModelFileConfig

    try:
        parsed = ModelFileConfig.model_validate({k: v for k, v in changes.items() if v is not None})
    except ValidationError as error:
        problem = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise RequestError("invalid_routing", problem[:500]) from None
    return {k: (getattr(parsed, k) if changes[k] is not None else None) for k in changes}


# -- the state every worker reads -----------------------------------------------------------

STATE_FILE = "unloaded.json"  # the models unloaded through the API
ROUTING_FILE = "routing.json"  # the repository API's labels and traffic, for every worker
LOADS_FILE = "loads.json"  # the repository API's load calls by model: failed versions retried


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a state file is written again: its mtime alone may not (many
    kernels stamp it from a clock that ticks every few ms, and two workers' calls at once
    write well inside one tick); the new file's inode does (it is created while the one it
    replaces still exists). None when there is no file."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_ino, info.st_size


def _dict(found: Any) -> dict[str, Any]:
    return found if isinstance(found, dict) else {}


class SharedState:
    """The repository API's unloads (``unloaded.json``) and labels and traffic
    (``routing.json``) in the folder this server's workers share; the registry reads them
    when they change (``Registry.poll_forever`` looks every second)."""

    def __init__(self, config: Settings) -> None:
        self.config = config
        self._seen: dict[str, tuple[int, int, int] | None] = {}  # file -> _stamp last read

    def state_dir(self) -> Path:
        """Shared by this server's workers (they have one parent, the arbiter)."""
        chosen = self.config.state_dir or Path(tempfile.gettempdir()) / f"kms-state-{os.getppid()}"
        chosen.mkdir(parents=True, exist_ok=True)
        return chosen

    def unloaded_names(self) -> set[str] | None:
        """The unloaded models' names when the state file changed since last read, else None
        (blocking: called in a thread)."""
        names = self._changed(STATE_FILE)
        return {n for n in names if isinstance(n, str)} if isinstance(names, list) else None

    def routing(self) -> dict[str, Any] | None:
        """The repository API's labels and traffic by model, when changed since last read."""
        found = self._changed(ROUTING_FILE)
        return found if isinstance(found, dict) else None

    def load_counts(self) -> dict[str, Any] | None:
        """The load calls made through the API by model, when changed since last read."""
        found = self._changed(LOADS_FILE)
        return found if isinstance(found, dict) else None

    def _changed(self, name: str) -> Any:
        """The JSON in the state file ``name`` when it changed since last read, else
        None (none yet, unchanged, or unreadable)."""
        path = self.state_dir() / name
        stamp = _stamp(path)
        if stamp is None or self._seen.get(name) == stamp:
            return None
        self._seen[name] = stamp
        return self._read(name)

    def update_unloaded(self, name: str, unloaded: bool) -> None:
        """Mark ``name`` unloaded through the API (or loaded again), for every worker."""

        def change(found: Any) -> list[str]:
            names = {n for n in found if isinstance(n, str)} if isinstance(found, list) else set()
            return sorted(names | {name} if unloaded else names - {name})

        self._update(STATE_FILE, change)

    def update_routing(self, name: str, override: dict[str, Any]) -> None:
        """The API's labels and traffic of ``name``, for every worker."""
        self._update(ROUTING_FILE, lambda found: {**_dict(found), name: override})

    def count_load(self, name: str) -> None:
        """One more load call for ``name``: every worker tries its failed versions again,
        not only the one that took the call."""

        def change(found: Any) -> dict[str, Any]:
            held = _dict(found).get(name)
            return {**_dict(found), name: (held if isinstance(held, int) else 0) + 1}

        self._update(LOADS_FILE, change)

    def _update(self, name: str, change: Callable[[Any], Any]) -> None:
        """The state file ``name`` read, changed and written under a lock the workers share:
        a worker that wrote its whole view of the file undid a call another worker took
        since its last poll (two unloads a few ms apart on two workers kept one, 5 tries
        in 6)."""
        with exclusive(self.state_dir() / ".lock"):  # held for one small read and write
            self._write(name, change(self._read(name)))

    def _read(self, name: str) -> Any:
        try:
            return json.loads((self.state_dir() / name).read_text())
        except (OSError, ValueError):
            return None

    def _write(self, name: str, document: Any) -> None:
        """Write the state file ``name``; it counts as read only when no other worker wrote
        it since this one last read it (else the next poll applies what they changed)."""
        path = self.state_dir() / name
        before = _stamp(path)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document))
        temporary.replace(path)
        if before == self._seen.get(name):
            self._seen[name] = _stamp(path)

    def changed(self) -> bool:
        """Whether any file changed since this worker last read or wrote it."""
        directory = self.state_dir()
        for name in (STATE_FILE, ROUTING_FILE, LOADS_FILE):
            stamp = _stamp(directory / name)
            if stamp is not None and stamp != self._seen.get(name):
                return True
        return False
