"""Bank-marketing contract: raw ``bank-full.csv`` records in, subscription probability out.

The encoder turns a record (strings for categoricals, numbers for numerics) into the float
vector the network takes. Its numeric statistics are fitted on the training split only and
travel with the model in the manifest; the category lists are the dataset's documented ones,
so an unseen value is an error, never a silent zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelspec.tensors import Signature, TensorSpec

NAME = "bank"
TARGET = "y"
POSITIVE_LABEL = "yes"
LABELS: tuple[str, ...] = ("no", "yes")

CATEGORIES: dict[str, tuple[str, ...]] = {
    "job": (
        "admin.",
        "blue-collar",
        "entrepreneur",
        "housemaid",
        "management",
        "retired",
        "self-employed",
        "services",
        "student",
        "technician",
        "unemployed",
        "unknown",
    ),
    "marital": ("divorced", "married", "single"),
    "education": ("primary", "secondary", "tertiary", "unknown"),
    "default": ("no", "yes"),
    "housing": ("no", "yes"),
    "loan": ("no", "yes"),
    "contact": ("cellular", "telephone", "unknown"),
    "month": ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    "poutcome": ("failure", "other", "success", "unknown"),
}
NUMERIC: tuple[str, ...] = ("age", "balance", "day", "duration", "campaign", "pdays", "previous")
# Heavy-tailed counts and amounts: a signed log1p before standardising keeps outliers
# (balances of 100k euros, 60-minute calls) from dominating the network's input.
LOG_SCALED: frozenset[str] = frozenset({"balance", "duration", "campaign", "pdays", "previous"})
# The column order of bank-full.csv, without the target.
COLUMNS: tuple[str, ...] = (
    "age",
    "job",
    "marital",
    "education",
    "default",
    "balance",
    "housing",
    "loan",
    "contact",
    "day",
    "month",
    "duration",
    "campaign",
    "pdays",
    "previous",
    "poutcome",
)
# One valid record, for documentation and examples (the shape every request record takes).
EXAMPLE_RECORD: dict[str, str | int] = {
    "age": 41, "job": "technician", "marital": "married", "education": "secondary",
    "default": "no", "balance": 1200, "housing": "yes", "loan": "no", "contact": "cellular",
    "day": 15, "month": "may", "duration": 300, "campaign": 2, "pdays": -1, "previous": 0,
    "poutcome": "unknown",
}  # fmt: skip
# Only known once the call has ended (the dataset's own notes): a realistic pre-call model
# must do without it.
POST_CALL_COLUMNS: tuple[str, ...] = ("duration",)


class RecordError(ValueError):
    """A record that does not fit the schema; names the field and what was expected.
    ``code``: missing_field, invalid_value or out_of_range."""

    def __init__(
        self, field_name: str, problem: str, expected: str, code: str = "invalid_value"
    ) -> None:
        super().__init__(f"field '{field_name}': {problem} (expected {expected})")
        self.field = field_name
        self.problem = problem
        self.expected = expected
        self.code = code


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _signed_expm1(x: float) -> float:
    return math.copysign(math.expm1(abs(x)), x)


def _check_limits(values: np.ndarray, column: str, bounds: tuple[float, float]) -> None:
    low, high = bounds
    outside = (values < low) | (values > high)
    if outside.any():
        value = values[int(np.argmax(outside))]
        raise RecordError(
            column, f"got {value:g}", f"a number from {low:g} to {high:g}", "out_of_range"
        )


@dataclass
class BankEncoder:
    """Record -> float vector: one-hot categoricals, standardised (log-scaled) numerics.

    ``limits`` bound each numeric column to the training data's span widened by that span on
    each side (in log space for heavy-tailed columns, never below 0 for a column that was
    never negative): far outside it the network's answer means nothing, and around 1e300 it
    is NaN. Manifests written before limits existed have none; then only finiteness is
    checked.
    """

    columns: tuple[str, ...] = COLUMNS
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c in NUMERIC)

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c in CATEGORIES)

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric_columns)
        for column in self.categorical_columns:
            names += [f"{column}={value}" for value in CATEGORIES[column]]
        return names

    @property
    def width(self) -> int:
        return len(self.feature_names)

    def fit(self, records: Sequence[Mapping[str, Any]]) -> BankEncoder:
        """Learn numeric mean, spread and limits from the training split only."""
        self.limits = {}
        numbers = self._numeric_matrix(records)
        self.mean = dict(zip(self.numeric_columns, numbers.mean(axis=0).tolist(), strict=True))
        spread = numbers.std(axis=0)
        spread[spread == 0] = 1.0
        self.std = dict(zip(self.numeric_columns, spread.tolist(), strict=True))
        for j, column in enumerate(self.numeric_columns):
            low, high = float(numbers[:, j].min()), float(numbers[:, j].max())
            span = max(high - low, 1.0)  # a column constant in training still gets room
            low, high = low - span, high + span
            if column in LOG_SCALED:
                low, high = float(_signed_expm1(low)), float(_signed_expm1(high))
            if numbers[:, j].min() >= 0:  # the signed log keeps the sign
                low = max(low, 0.0)
            self.limits[column] = (round(low, 2), round(high, 2))
        return self

    def transform(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode records; raises RecordError naming the first bad field."""
        numbers = self._numeric_matrix(records)
        mean = np.array([self.mean[c] for c in self.numeric_columns], dtype=np.float64)
        std = np.array([self.std[c] for c in self.numeric_columns], dtype=np.float64)
        parts = [(numbers - mean) / std]
        for column in self.categorical_columns:
            parts.append(self._one_hot(records, column))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _numeric_matrix(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        matrix = np.empty((len(records), len(self.numeric_columns)), dtype=np.float64)
        for j, column in enumerate(self.numeric_columns):
            matrix[:, j] = [parse_number(r, column) for r in records]
            if column in self.limits:
                _check_limits(matrix[:, j], column, self.limits[column])
            if column in LOG_SCALED:
                matrix[:, j] = _signed_log1p(matrix[:, j])
        return matrix

    @staticmethod
    def _one_hot(records: Sequence[Mapping[str, Any]], column: str) -> np.ndarray:
        values = CATEGORIES[column]
        index = {v: i for i, v in enumerate(values)}
        out = np.zeros((len(records), len(values)), dtype=np.float32)
        for row, record in enumerate(records):
            value = _field(record, column)
            if not isinstance(value, str) or value not in index:
                raise RecordError(column, f"unknown value {value!r}", f"one of {list(values)}")
            out[row, index[value]] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "categories": {c: list(CATEGORIES[c]) for c in self.categorical_columns},
            "log_scaled": sorted(LOG_SCALED & set(self.columns)),
            "mean": self.mean,
            "std": self.std,
            "limits": {c: list(bounds) for c, bounds in self.limits.items()},
            "feature_names": self.feature_names,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BankEncoder:
        limits = {c: (float(lo), float(hi)) for c, (lo, hi) in data.get("limits", {}).items()}
        return cls(
            columns=tuple(data["columns"]),
            mean=dict(data["mean"]),
            std=dict(data["std"]),
            limits=limits,
        )


def _field(record: Mapping[str, Any], column: str) -> Any:
    if column not in record:
        raise RecordError(column, "missing", "a value for every schema column", "missing_field")
    return record[column]


def parse_number(record: Mapping[str, Any], column: str) -> float:
    """A finite number from an int, a float or a numeric string."""
    value = _field(record, column)
    if isinstance(value, bool):
        raise RecordError(column, f"got boolean {value!r}", "a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordError(column, f"got {value!r}", "a number") from None
    if not math.isfinite(number):
        raise RecordError(column, f"got {value!r}", "a finite number")
    return number


def without(columns: Iterable[str], dropped: Iterable[str]) -> tuple[str, ...]:
    dropped = set(dropped)
    return tuple(c for c in columns if c not in dropped)


def signatures(feature_count: int) -> tuple[Signature, ...]:
    return (
        Signature(
            name="predict",
            inputs=(TensorSpec("features", (None, feature_count)),),
            outputs=(TensorSpec("probability", (None, 1)),),
            onnx_file="model.onnx",
            input_kind="bank_record",
            answer="decision",
        ),
    )
