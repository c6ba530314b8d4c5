"""The model repository API (Triton's V2 extension): index, load, unload.

Every call needs ``Authorization: Bearer <SERVING_ADMIN_TOKEN>``. With no token configured
the API is closed (403): loading and unloading models is an operator's act, never open by
default. A wrong or missing token gets 401 with ``WWW-Authenticate: Bearer``. Tokens are
compared in constant time.

The API's unloads and routing are written to two small files all workers of the server read
(``SharedState``), so with several workers each drops (or takes back) a model within a second.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from service import auth
from service.config import Settings
from service.errors import RequestError
from service.http import ClientGone, RawRequest, Reply, json_reply, read_body
from service.inference import Runtime, error_reply
from service.inputs.body import parse_json


def authorise(headers: dict[str, str], config: Settings) -> None:
    """Raises 403 when the API is off, 401 without the configured bearer token. With API
    keys or JWTs on (``service.auth``), any admin key or token passes, the admin token
    being one more admin key."""
    guard = auth.current
    if guard is not None and guard.enabled:
        guard.check(headers, admin=True)
        return
    token = config.admin_token
    if token is None:
        raise RequestError(
            "admin_disabled",
            "the model repository API is off: no SERVING_ADMIN_TOKEN is configured",
            status=403,
        )
    given = headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), expected):
        raise RequestError(
            "unauthorized",
            "a valid 'Authorization: Bearer <token>' header is needed",
            field="authorization",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="model-repository"'},
        )


async def _options(request: RawRequest, runtime: Runtime) -> dict:
    """The optional JSON body (``{"ready": true}`` for the index, ``{"parameters": ...}``)."""
    body = await read_body(request, runtime.config.limits)
    if not body.strip():
        return {}
    document = parse_json(body)
    if not isinstance(document, dict):
        raise RequestError("invalid_request", "the body must be a JSON object", status=400)
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
        raise RequestError(
            "invalid_request", "'parameters' must be an object", field="parameters", status=400
        )
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
            status=400,
        )


async def index(request: RawRequest, runtime: Runtime) -> Reply:
    try:
        authorise(request.headers, runtime.config)
        options = await _options(request, runtime)
    except RequestError as error:
        return error_reply(error)
    except ClientGone:
        return Reply(b"", status=499)  # the client left mid-body: nobody to answer
    ready_only = options.get("ready") is True
    return json_reply(await runtime.registry.index(ready_only))  # a JSON array, as Triton's


async def load(request: RawRequest, runtime: Runtime, name: str) -> Reply:
    try:
        authorise(request.headers, runtime.config)
        check_parameters((await _options(request, runtime)).get("parameters"), "load")
        await runtime.registry.load(name)
    except RequestError as error:
        return error_reply(error)
    except ClientGone:
        return Reply(b"", status=499)  # the client left mid-body: nobody to answer
    return json_reply({})


async def unload(request: RawRequest, runtime: Runtime, name: str) -> Reply:
    try:
        authorise(request.headers, runtime.config)
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
        authorise(request.headers, runtime.config)
        options = await _options(request, runtime)
        unknown = sorted(k[:60] for k in options if k not in ROUTING_KEYS)
        if unknown or not options:
            raise RequestError(
                "invalid_routing",
                f"unknown fields {unknown}" if unknown else "nothing to set",
                field="body",
                expected='{"labels": {label: version}, "traffic": {label or version: weight}}',
                status=400,
            )
        changes = {}
        for key in ROUTING_KEYS:
            if key in options:
                value = options[key]
                if value is not None and not isinstance(value, dict):
                    raise RequestError(
                        "invalid_routing", f"{key!r} must be an object or null", field=key,
                        status=400,
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
        raise RequestError("invalid_routing", problem[:500], status=400) from None
    return {k: (getattr(parsed, k) if changes[k] is not None else None) for k in changes}


# -- the state every worker reads -----------------------------------------------------------

STATE_FILE = "unloaded.json"  # the models unloaded through the API
ROUTING_FILE = "routing.json"  # the repository API's labels and traffic, for every worker
LOCK_FILE = "state.lock"  # held by a worker while it rewrites either file


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a state file is rewritten: its mtime alone may not (the kernel's
    clock ticks every few milliseconds, and two calls can land in one tick), the new file's
    inode does (it replaces the old while that still exists)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_ino, info.st_size


class SharedState:
    """The repository API's unloads (``unloaded.json``) and labels and traffic
    (``routing.json``) in the folder this server's workers share; the registry reads them
    when they change (``Registry.poll_forever`` looks every second)."""

    def __init__(self, config: Settings) -> None:
        self.config = config
        self._seen: dict[str, tuple[int, int, int] | None] = {}  # file name -> its last _stamp

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

    def _changed(self, name: str) -> Any:
        """The JSON in the state file ``name`` when it changed since last read, else None
        (none yet, unchanged, or unreadable)."""
        path = self.state_dir() / name
        stamp = _stamp(path)
        if stamp is None or self._seen.get(name) == stamp:
            return None
        self._seen[name] = stamp
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def set_unloaded(self, name: str, unloaded: bool) -> None:
        """Mark model ``name`` unloaded (or loaded again) for every worker."""

        def change(found: Any) -> list[str]:
            names = {n for n in found if isinstance(n, str)} if isinstance(found, list) else set()
            (names.add if unloaded else names.discard)(name)
            return sorted(names)

        self._update(STATE_FILE, change)

    def set_routing(self, name: str, override: dict[str, Any]) -> None:
        """The API's labels and traffic of model ``name``, for every worker."""

        def change(found: Any) -> dict[str, Any]:
            return {**(found if isinstance(found, dict) else {}), name: override}

        self._update(ROUTING_FILE, change)

    def _update(self, name: str, change: Any) -> None:
        """Rewrite the state file ``name`` as ``change`` makes it from what the file holds
        now, under the state folder's lock: each worker used to write its own whole view, so
        a call answered by one worker undid another's made less than a poll (a second)
        before, which it had not read yet (two unloads at once: one model came back)."""
        directory = self.state_dir()
        path = directory / name
        with open(directory / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            before = _stamp(path)
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError):
                found = None
            # A temporary file of this writer's own: two workers shared one name.
            handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
            with os.fdopen(handle, "w") as out:
                json.dump(change(found), out)
            os.replace(temporary, path)
            # What another worker wrote since this one last read is still to be read (and
            # applied by the next look), unless there was nothing new.
            if self._seen.get(name) == before:
                self._seen[name] = _stamp(path)

    def changed(self) -> bool:
        """Whether either file changed since this worker last read or wrote it."""
        directory = self.state_dir()
        for name in (STATE_FILE, ROUTING_FILE):
            stamp = _stamp(directory / name)
            if stamp is not None and stamp != self._seen.get(name):
                return True
        return False
