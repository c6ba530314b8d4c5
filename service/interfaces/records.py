"""The ``bank_record`` input kind: raw ``bank-full.csv`` records, encoded by the manifest's
encoder (``modelspec.bank``) into the graph's feature vector.

Natively a record is a JSON object (one, a list, or ``{"records": [...]}``); in V2 and TF
Serving each column is its own tensor, one value per record: INT64 (any number) for the
numeric columns, BYTES text for the categorical ones. The policy is the encoder's: every
column required, no unknown fields, documented categories only, finite numbers within the
training data's limits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelspec import Signature, bank
from modelspec.bank import BankEncoder
from service.backends import Feed
from service.config import Limits
from service.errors import RequestError
from service.inputs.body import parse_json
from service.inputs.records import encode_records, unwrap_records
from service.interfaces.base import (
    BYTES,
    V2_TYPES,
    Column,
    Columns,
    Incoming,
    InputKind,
    Tensor,
    VersionFacts,
)


def _scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def column_values(name: str, column: Column) -> list[Any]:
    """One value per record from a column of shape (N,) or (N, 1); anything else (a bare
    value, null, an object) is refused naming the column."""
    if isinstance(column, np.ndarray):
        if column.ndim == 2 and column.shape[1] == 1:
            column = column[:, 0]
        if column.ndim != 1:
            raise RequestError(
                "invalid_shape",
                f"input {name!r} has shape {list(column.shape)}",
                field=name,
                expected="(N, 1) or (N,): one value per record",
            )
        return column.tolist()
    if not isinstance(column, list):
        raise RequestError(
            "invalid_shape",
            f"input {name!r} is a single {type(column).__name__}, not a list",
            field=name,
            expected="a list with one value per record",
        )
    values = []
    for item, value in enumerate(column):
        if isinstance(value, list):
            if len(value) != 1:
                raise RequestError(
                    "invalid_shape",
                    f"input {name!r} holds a list of {len(value)} values for one record",
                    field=name,
                    item=item,
                    expected="one value per record: (N,) or (N, 1)",
                )
            value = value[0]
        values.append(_scalar(value))
    return values


def encoder_of(version: VersionFacts) -> BankEncoder:
    """The version's record encoder (its manifest's ``preprocessing.encoder``), built once."""
    return version.memo(
        ("bank encoder",),
        lambda: BankEncoder.from_dict(version.manifest["preprocessing"]["encoder"]),
    )


class BankRecord(InputKind):
    name = "bank_record"
    summary = "raw bank-full.csv records"
    one_input = True

    def protocol_inputs(self, signature: Signature, manifest: dict[str, Any]) -> tuple[Tensor, ...]:
        columns = manifest["preprocessing"]["encoder"]["columns"]
        # Numeric columns take any numeric datatype, or numbers as text (as in the CSV).
        numeric = (*(t for t in V2_TYPES.values() if t not in ("INT64", "BOOL")), BYTES)
        return tuple(
            Tensor(column, "INT64", (-1, 1), accepts=numeric)
            if column in bank.NUMERIC
            else Tensor(column, BYTES, (-1, 1))
            for column in columns
        )

    async def from_columns(
        self, columns: Columns, version: VersionFacts, signature: str, limits: Limits
    ) -> Feed:
        values = {name: column_values(name, column) for name, column in columns.items()}
        counts = {len(v) for v in values.values()}
        if len(counts) != 1:
            raise RequestError(
                "invalid_shape",
                "bank inputs hold different numbers of records",
                field="inputs",
                expected="the same batch size N for every column",
            )
        count = counts.pop()
        records = [{name: v[i] for name, v in values.items()} for i in range(count)]
        return self._feed(records, version, signature, limits)

    async def from_native(self, incoming: Incoming, version: VersionFacts, signature: str) -> Feed:
        records = unwrap_records(parse_json(incoming.body, incoming.content_type))
        return self._feed(records, version, signature, incoming.limits)

    @staticmethod
    def _feed(records: list[Any], version: VersionFacts, signature: str, limits: Limits) -> Feed:
        (name,) = version.contracts(signature)
        features = encode_records(records, encoder_of(version), limits.max_items_per_request)
        return {name: features}

    def native_request(self, version: VersionFacts, signature: str) -> dict[str, Any]:
        record = {
            "type": "object",
            "description": "the raw bank-full.csv columns (all of them, no others)",
            "required": list(encoder_of(version).columns),
            "properties": {
                column: {"oneOf": [{"type": "number"}, {"type": "string"}]}
                if column in bank.NUMERIC
                else {"type": "string", "enum": list(bank.CATEGORIES[column])}
                for column in encoder_of(version).columns
            },
            "additionalProperties": False,
        }
        records = {"type": "array", "items": record}
        wrapped = {
            "type": "object",
            "required": ["records"],
            "properties": {"records": records},
        }
        schema = {"oneOf": [record, records, wrapped], "example": bank.EXAMPLE_RECORD}
        return {"application/json": {"schema": schema}}
