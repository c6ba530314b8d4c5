"""Bank records: raw ``bank-full.csv`` columns as JSON, encoded by the model's own encoder.

Policy (documented in README): every column is required, unknown fields are refused (a typo
must not silently become a default), categorical values must be ones the dataset defines,
numbers may be JSON numbers or numeric strings (as in the CSV) and must be finite.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelspec.bank import BankEncoder, RecordError
from service.errors import PayloadTooLarge, RequestError

FIELD = "records"


def unwrap_records(document: Any) -> list[Any]:
    """One record object, a list of records, or ``{"records": [...]}``."""
    if isinstance(document, list):
        records = document
    elif isinstance(document, dict) and set(document) == {FIELD}:
        records = document[FIELD]
        if not isinstance(records, list):
            raise RequestError("invalid_type", "'records' must be a list", field=FIELD)
    elif isinstance(document, dict):
        records = [document]
    else:
        raise RequestError(
            "invalid_type",
            "body must be a record object, a list of records or {'records': [...]}",
            field=FIELD,
        )
    return records


def encode_records(records: list[Any], encoder: BankEncoder, max_items: int) -> np.ndarray:
    if not records:
        raise RequestError("empty_batch", "no records", field=FIELD, expected="at least one")
    if len(records) > max_items:
        raise PayloadTooLarge(
            "too_many_items",
            f"{len(records)} records in one request",
            field=FIELD,
            expected=f"at most {max_items} records",
        )
    rows = [_encode_one(record, item, encoder) for item, record in enumerate(records)]
    return np.concatenate(rows)


def _encode_one(record: Any, item: int, encoder: BankEncoder) -> np.ndarray:
    if not isinstance(record, dict):
        raise RequestError("invalid_type", "a record must be a JSON object", item=item)
    extra = sorted(set(record) - set(encoder.columns))
    if extra:
        raise RequestError(
            "unknown_field",
            f"unknown field {extra[0]!r}",
            field=extra[0],
            item=item,
            expected=f"only the columns {list(encoder.columns)}",
        )
    try:
        return encoder.transform([record])
    except RecordError as error:
        raise RequestError(
            error.code, str(error), field=error.field, item=item, expected=error.expected
        ) from None
