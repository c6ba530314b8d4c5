"""The bank encoder shared by training and serving: strict, and stable through the manifest."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from modelspec import bank as spec

RECORD = {
    "age": 41,
    "job": "technician",
    "marital": "married",
    "education": "secondary",
    "default": "no",
    "balance": 1200,
    "housing": "yes",
    "loan": "no",
    "contact": "cellular",
    "day": 14,
    "month": "may",
    "duration": 180,
    "campaign": 2,
    "pdays": -1,
    "previous": 0,
    "poutcome": "unknown",
}


def _records(count: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {**RECORD, "age": int(a), "balance": int(b)}
        for a, b in zip(rng.integers(18, 90, count), rng.integers(-500, 50000, count), strict=True)
    ]


def test_encoding_is_one_hot_plus_standardised_numerics() -> None:
    encoder = spec.BankEncoder().fit(_records(200))
    features = encoder.transform(_records(200))
    assert features.shape == (200, encoder.width) and features.dtype == np.float32
    numeric = features[:, : len(spec.NUMERIC)]
    assert np.allclose(numeric[:, 0].mean(), 0, atol=1e-5)
    assert np.allclose(numeric[:, 0].std(), 1, atol=1e-3)
    one_hot = features[:, len(spec.NUMERIC) :]
    assert np.all(one_hot.sum(axis=1) == len(spec.CATEGORIES))


def test_the_manifest_form_round_trips_to_identical_features() -> None:
    encoder = spec.BankEncoder().fit([RECORD, *_records(50)])
    restored = spec.BankEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert np.array_equal(encoder.transform([RECORD]), restored.transform([RECORD]))
    assert restored.feature_names == encoder.feature_names


def test_dropping_duration_removes_its_feature() -> None:
    encoder = spec.BankEncoder(spec.without(spec.COLUMNS, ["duration"])).fit(_records(20))
    assert "duration" not in encoder.feature_names
    assert encoder.width == spec.BankEncoder().fit(_records(20)).width - 1


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"job": "astronaut"}, "job", "unknown value 'astronaut'"),
        ({"age": "forty"}, "age", "got 'forty'"),
        ({"age": math.nan}, "age", "a finite number"),
        ({"balance": math.inf}, "balance", "a finite number"),
        ({"loan": True}, "loan", "unknown value True"),
        ({"campaign": True}, "campaign", "got boolean"),
    ],
)
def test_bad_values_name_the_field_and_the_expectation(change, field, fragment) -> None:
    encoder = spec.BankEncoder().fit([RECORD, *_records(10)])
    with pytest.raises(spec.RecordError) as raised:
        encoder.transform([{**RECORD, **change}])
    assert raised.value.field == field
    assert fragment in str(raised.value)


def test_numbers_far_outside_the_training_data_are_refused_naming_the_range() -> None:
    """Around 1e300 the network's answer is NaN; far outside the training data it means
    nothing. The limits travel with the manifest; old manifests without them still load."""
    encoder = spec.BankEncoder().fit([RECORD, *_records(50)])
    low, high = encoder.limits["age"]
    assert low == 0 and 89 < high < 250  # ages 18-89 widened by their span, never negative
    for value in (1e300, -1e300, high + 1):
        with pytest.raises(spec.RecordError) as raised:
            encoder.transform([{**RECORD, "age": value}])
        assert raised.value.code == "out_of_range" and raised.value.field == "age"
        assert f"a number from 0 to {high:g}" in raised.value.expected
    assert encoder.transform([{**RECORD, "balance": 10 * 50_000}]).shape[0] == 1  # log room
    restored = spec.BankEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert restored.limits == encoder.limits
    legacy = {k: v for k, v in encoder.to_dict().items() if k != "limits"}
    assert spec.BankEncoder.from_dict(legacy).transform([{**RECORD, "age": 1e6}]).shape[0] == 1


def test_a_missing_field_is_named() -> None:
    encoder = spec.BankEncoder().fit([RECORD, *_records(10)])
    record = dict(RECORD)
    del record["month"]
    with pytest.raises(spec.RecordError, match="field 'month': missing"):
        encoder.transform([record])
