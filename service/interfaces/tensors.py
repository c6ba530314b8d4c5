"""The ``tensor`` input kind and answer: named tensors in the graph's own dtypes and shapes.

Every signature of every model is served this way (V2, TF Serving and
``POST /models/{name}/predict``); for a model a user brings, it is the only way.
"""

from __future__ import annotations

from typing import Any

from service.backends import Feed, Outputs
from service.config import Limits
from service.errors import RequestError
from service.http import Reply, json_reply
from service.inputs.body import parse_json
from service.inputs.tensors import FIELD, parse_tensor, unwrap
from service.interfaces.base import (
    Answer,
    Columns,
    Incoming,
    InputKind,
    VersionFacts,
    envelope,
)


def same_batch(feed: Feed) -> Feed:
    """Every input of one request must hold the same number of items."""
    counts = {len(v) for v in feed.values()}
    if len(counts) > 1:
        raise RequestError(
            "invalid_shape",
            f"inputs hold different numbers of items: {sorted(counts)}",
            field=FIELD,
            expected="the same batch size N for every input",
        )
    return feed


def parse_columns(
    columns: Columns,
    version: VersionFacts,
    signature: str,
    limits: Limits,
    check_booleans: bool,
    bare: bool = False,
) -> Feed:
    """Each graph input from its column, checked against the input's contract. ``bare``: the
    one input came as ``{"inputs": tensor}``, so errors name the field the client wrote."""
    contracts = version.contracts(signature)
    for name, column in columns.items():
        if isinstance(column, list) and column and isinstance(column[0], bytes):
            raise RequestError(
                "invalid_dtype",
                f"input {name!r} holds bytes",
                field=name,
                expected=contracts[name].describe(),
            )
    feed = {
        name: parse_tensor(
            columns[name],
            contract,
            limits.max_items_per_request,
            field=FIELD if bare else name,
            check_booleans=check_booleans,
        )
        for name, contract in contracts.items()
    }
    return same_batch(feed)


def named_inputs(value: Any, version: VersionFacts, signature: str) -> Columns:
    """``{"inputs": {name: tensor}}``, or ``{"inputs": tensor}`` for a one-input signature."""
    names = list(version.contracts(signature))
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        missing = [n for n in names if n not in value]
        if unknown or missing:
            at_fault = (unknown or missing)[0]
            raise RequestError(
                "unknown_field" if unknown else "missing_field",
                f"input {at_fault!r} is {'not an input' if unknown else 'missing'}",
                field=at_fault,
                expected=f"the inputs {names}",
            )
        return value
    if len(names) != 1:
        raise RequestError(
            "missing_field",
            "this signature has several inputs: name each one",
            field=FIELD,
            expected='{"inputs": {' + ", ".join(f'"{n}": ...' for n in names) + "}}",
        )
    return {names[0]: value}


class TensorInput(InputKind):
    name = "tensor"
    summary = "named tensors"

    async def from_columns(
        self, columns: Columns, version: VersionFacts, signature: str, limits: Limits
    ) -> Feed:
        # Booleans were searched for by the protocol's reader, which has the raw body.
        return parse_columns(columns, version, signature, limits, check_booleans=False)

    async def from_native(self, incoming: Incoming, version: VersionFacts, signature: str) -> Feed:
        value = unwrap(parse_json(incoming.body, incoming.content_type), allowed=(FIELD,))
        columns = named_inputs(value, version, signature)
        limits, check = incoming.limits, incoming.check_booleans
        bare = not isinstance(value, dict)
        return parse_columns(columns, version, signature, limits, check, bare)

    def native_request(self, version: VersionFacts, signature: str) -> dict[str, Any]:
        contracts = version.contracts(signature)
        described = {
            name: {"type": "array", "description": c.describe()} for name, c in contracts.items()
        }
        if len(contracts) == 1:
            (only,) = described.values()
            inputs: dict[str, Any] = {"oneOf": [only, _object(described)]}
        else:
            inputs = _object(described)
        schema = {
            "type": "object",
            "required": [FIELD],
            "additionalProperties": False,
            "properties": {FIELD: inputs},
        }
        return {"application/json": {"schema": schema}}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties),
        "additionalProperties": False,
        "properties": properties,
    }


class TensorAnswer(Answer):
    name = "tensor"
    summary = "the named outputs"
    one_output = False

    def native(
        self, outputs: Outputs, incoming: Incoming, version: VersionFacts, signature: str
    ) -> Reply:
        return json_reply(envelope(version, signature=signature, outputs=outputs))

    def native_response(self, version: VersionFacts, signature: str) -> dict[str, Any]:
        names = [t.name for t in version.signatures[signature].outputs]
        return {
            "type": "object",
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "integer"},
                "signature": {"type": "string"},
                "outputs": _object({n: {"type": "array"} for n in names}),
            },
        }
