"""The error catalogue (``service.errors.CATALOGUE``): every code a raise site names is
declared, every declared code is raised somewhere, the README's table is the catalogue, and
gRPC and OpenAPI take their statuses from it. No server, no model: milliseconds."""

from __future__ import annotations

import ast
from pathlib import Path

import grpc
import pytest

from service import errors, openapi
from service.errors import CATALOGUE, RequestError
from service.protocols.grpc import status_of

ROOT = Path(__file__).resolve().parents[2]
# What a client of each protocol sees for an HTTP status (README, gRPC section).
GRPC_OF_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    406: "INVALID_ARGUMENT",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    431: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# Calls whose first argument is an error code: the error classes, and the helpers that
# build them (the connection layer's refusals, the tensor reader's errors).
RAISERS = {
    name
    for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, RequestError)
} | {"_tensor_error", "_refuse", "_refuse_in_turn"}


def _named_codes() -> dict[str, list[str]]:
    """Every literal code passed to a raiser in service/, with where."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "service").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            first = node.args[0]
            if name in RAISERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found.setdefault(first.value, []).append(where)
    return found


def test_every_code_a_raise_site_names_is_declared() -> None:
    named = _named_codes()
    assert len(named) > 40, f"the scan found only {sorted(named)}: did the raisers change?"
    undeclared = {code: where for code, where in named.items() if code not in CATALOGUE}
    assert not undeclared, f"declare these in service.errors.CATALOGUE: {undeclared}"


def test_every_declared_code_is_used() -> None:
    """A code nobody raises is documentation of nothing. Codes also travel as plain strings
    (``modelspec.bank.RecordError``'s ``invalid_value``), so every string literal counts."""
    literals: set[str] = set()
    for folder in ("service", "modelspec"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "errors.py" and path.parent.name == "service":
                continue  # the catalogue itself
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    literals.add(node.value)
    unused = [code for code in CATALOGUE if code not in literals]
    assert not unused, f"declared but never raised: {unused}"


def test_an_undeclared_code_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="not declared"):
        RequestError("no_such_code", "a typo in a raise site")


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_each_code_has_its_statuses(code: str) -> None:
    declared = CATALOGUE[code]
    error = RequestError(code, "x")
    assert error.status == declared.status
    assert status_of(error) is grpc.StatusCode[declared.grpc]
    assert declared.grpc == GRPC_OF_HTTP[declared.status], (
        f"{code}: HTTP {declared.status} is {GRPC_OF_HTTP[declared.status]} over gRPC, "
        f"not {declared.grpc}"
    )
    assert declared.meaning and "\n" not in declared.meaning and "|" not in declared.meaning


def test_no_raise_site_states_a_status_of_its_own() -> None:
    """The catalogue is the only place a code's status is declared: no call of an error
    class (or a helper building one) in service/ passes ``status=``, read from the syntax
    tree. A protocol that answers another status says so in ``errors.PROTOCOL_STATUS``."""
    stated = []
    for path in sorted((ROOT / "service").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in RAISERS and any(k.arg == "status" for k in node.keywords):
                stated.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not stated, f"statuses stated beside the catalogue's: {stated}"
    with pytest.raises(TypeError):
        RequestError("invalid_shape", "x", status=400)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("code", "protocol", "status"),
    [
        ("invalid_shape", "v2", 400),  # 422 folded: V2 clients know 400 and 404
        ("not_acceptable", "tfserving", 400),
        ("not_an_image", "v2", 400),
        ("unknown_signature", "tfserving", 400),  # TF Serving's own server: INVALID_ARGUMENT
        ("unknown_signature", "v2", 404),
        ("unknown_model", "tfserving", 404),
        ("body_too_large", "v2", 413),
        ("request_timeout", "tfserving", 504),
        ("internal", "v2", 500),
    ],
)
def test_a_protocol_answers_its_own_status_by_a_named_rule(code, protocol, status) -> None:
    assert errors.protocol_status(code, protocol) == status
    error = RequestError(code, "x")
    assert (error.status, error.grpc) == (CATALOGUE[code].status, CATALOGUE[code].grpc)


def test_the_readme_table_is_the_catalogue() -> None:
    readme = (ROOT / "README.md").read_text()
    table = errors.readme_table()
    assert table in readme, (
        "README.md's error table (section Bad input) differs from service.errors.CATALOGUE: "
        "replace it with the output of `python -m service.errors`"
    )
    assert readme.count("| status | code | gRPC | meaning |") == 1


def test_openapi_lists_each_status_with_its_codes() -> None:
    responses = openapi.TENSOR_PREDICT["responses"]
    for status in (400, 404, 413, 422, 503, 504):
        described = responses[str(status)]["description"]
        expected = [c for c, d in CATALOGUE.items() if d.status == status]
        missing = [c for c in expected if f"`{c}`" not in described]
        assert not missing, f"{status}: {missing} not in {described!r}"
    # V2 and TF Serving answer 400 for the 422 codes: their 400 lists them
    v2_400 = openapi.V2_INFER["responses"]["400"]["description"]
    assert "`invalid_shape`" in v2_400 and "`invalid_json`" in v2_400
    # TF Serving answers an unknown signature 400, native and V2 404 (errors.PROTOCOL_STATUS)
    tf = openapi.TF_PREDICT["responses"]
    assert "`unknown_signature`" in tf["400"]["description"]
    assert "`unknown_signature`" not in tf["404"]["description"]
    assert "`unknown_signature`" not in v2_400
    assert "`unknown_signature`" in responses["404"]["description"]
    assert "`empty_batch`" in responses["422"]["description"]


@pytest.mark.parametrize(
    ("path", "status", "code", "fault"),
    [
        ("/digits/predict", 422, "invalid_shape", None),
        ("/v2/models/digits/infer", 400, "invalid_shape", None),  # V2 folds 422 to 400
        ("/v1/models/digits:predict", 400, "unknown_signature", None),
        ("/v1/models/nope:predict", 404, "unknown_model", None),
        ("/v2/models/digits/infer", 400, "bad_framing", None),  # the connection layer's
        ("/digits/predict", 400, "invalid_shape", "status 400"),
        ("/v2/models/digits/infer", 404, "invalid_shape", "status 404"),
        ("/digits/predict", 404, "unknown_signature", None),
        ("/digits/predict", 400, "unknown_signature", "status 400"),
        ("/digits/predict", 422, "made_up", "not in the error catalogue"),
        ("/digits/predict", 422, None, "not in the error catalogue"),
    ],
)
def test_the_hostile_corpus_checks_each_refusals_code_and_status(path, status, code, fault):
    """reliability/scenarios/hostile.py: a 4xx JSON body is not enough; its code must be
    catalogued and its status the catalogue's (as the path's protocol answers it)."""
    from reliability.scenarios.hostile import refusal_fault

    found = refusal_fault(path, status, code)
    assert (found is None) if fault is None else (fault in (found or "")), found
