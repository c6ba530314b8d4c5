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


def test_a_site_may_answer_another_http_status_but_not_another_grpc_one() -> None:
    error = RequestError("invalid_shape", "x", status=400)  # V2's reader
    assert (error.status, error.grpc) == (400, "INVALID_ARGUMENT")
    assert error.body() == {"error": "x", "code": "invalid_shape"}


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
