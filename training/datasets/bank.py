"""UCI Bank Marketing ``bank-full.csv``: strict parsing, every bad row named by its line."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelspec import bank as spec
from training.datasets.datadir import Source, ensure, extract_zip_member
from training.errors import TrainingError

TARGET_PATH = "bank-marketing/bank-full.csv"
SOURCE = Source(
    url="https://archive.ics.uci.edu/static/public/222/bank+marketing.zip",
    target=TARGET_PATH,
    unpack=lambda archive, staging: extract_zip_member(
        archive, staging, ["bank.zip", "bank-full.csv"], TARGET_PATH
    ),
)


@dataclass(frozen=True)
class BankTable:
    path: Path
    records: list[dict[str, Any]]  # raw columns: str categoricals, float numerics
    labels: np.ndarray  # int8, 1 = subscribed


def load_bank(data_dir: Path) -> BankTable:
    path = ensure(data_dir, SOURCE)
    return read_bank_csv(path)


def read_bank_csv(path: Path) -> BankTable:
    expected_header = [*spec.COLUMNS, spec.TARGET]
    records, labels = [], []
    with path.open(newline="") as handle:
        reader = csv.reader(handle, delimiter=";")
        header = next(reader, None)
        if header != expected_header:
            raise TrainingError(f"{path}: header {header} is not the bank-full.csv header")
        for row in reader:
            line = reader.line_num
            if len(row) != len(expected_header):
                raise TrainingError(
                    f"{path}:{line}: {len(row)} fields, expected {len(expected_header)}"
                )
            raw = dict(zip(expected_header, row, strict=True))
            records.append(_parse_record(raw, path, line))
            labels.append(_parse_target(raw[spec.TARGET], path, line))
    if not records:
        raise TrainingError(f"{path}: no data rows")
    return BankTable(path=path, records=records, labels=np.array(labels, dtype=np.int8))


def _parse_record(raw: dict[str, str], path: Path, line: int) -> dict[str, Any]:
    record: dict[str, Any] = {}
    try:
        for column in spec.COLUMNS:
            if column in spec.NUMERIC:
                record[column] = spec.parse_number(raw, column)
            elif raw[column] in spec.CATEGORIES[column]:
                record[column] = raw[column]
            else:
                raise spec.RecordError(
                    column,
                    f"unknown value {raw[column]!r}",
                    f"one of {list(spec.CATEGORIES[column])}",
                )
    except spec.RecordError as error:
        raise TrainingError(f"{path}:{line}: {error}") from None
    return record


def _parse_target(value: str, path: Path, line: int) -> int:
    if value not in spec.LABELS:
        raise TrainingError(f"{path}:{line}: field 'y': got {value!r} (expected 'yes' or 'no')")
    return int(value == spec.POSITIVE_LABEL)
