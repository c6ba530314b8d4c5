"""service.protocols.tfserving's codec: TF Serving REST bodies (row and columnar, ``b64``,
named and bare) read against synthetic signatures, and answers written in the format asked;
expected values are written out here."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from service.descriptor import Version
from service.errors import RequestError
from service.protocols import tfserving as tf
from tests.unit.synthetic import WIDTH, manifest, signature, tensor


@pytest.fixture
def one(tmp_path: Path) -> Version:
    """A signature of one input, ``x``."""
    return Version("m", 1, tmp_path, manifest("m"))


@pytest.fixture
def two(tmp_path: Path) -> Version:
    """A signature of two inputs, ``x`` and ``n``."""
    inputs = [tensor("x", [-1, WIDTH]), tensor("n", [-1, 1], "int32")]
    described = manifest("t", signatures={"predict": signature(inputs=inputs)})
    return Version("t", 1, tmp_path, described)


def _read(version: Version, document: dict) -> tuple:
    view, columns, rows = tf.read_request(orjson.dumps(document), version)
    return view.name, columns, rows


def _refused(version: Version, document: dict | bytes) -> RequestError:
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    with pytest.raises(RequestError) as raised:
        tf.read_request(body, version)
    return raised.value


def test_rows_and_columns_of_a_one_input_signature_come_bare(one) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    assert _read(one, {"instances": rows}) == ("predict", {"x": rows}, True)
    assert _read(one, {"inputs": rows}) == ("predict", {"x": rows}, False)
    assert _read(one, {"inputs": {"x": rows}}) == ("predict", {"x": rows}, False)
    named = [{"x": row} for row in rows]
    assert _read(one, {"signature_name": "serving_default", "instances": named})[1] == {"x": rows}


def test_named_rows_become_columns_and_b64_becomes_bytes(one, two) -> None:
    instances = [{"x": [1.0] * WIDTH, "n": [3]}, {"x": [2.0] * WIDTH, "n": [4]}]
    _, columns, rows = _read(two, {"instances": instances})
    assert rows and columns == {"x": [[1.0] * WIDTH, [2.0] * WIDTH], "n": [[3], [4]]}
    picture = {"b64": base64.b64encode(b"\x89PNG...").decode()}
    assert _read(one, {"instances": [picture]})[1] == {"x": [b"\x89PNG..."]}


@pytest.mark.parametrize(
    ("document", "code", "field"),
    [
        ({"instances": [[1.0] * WIDTH], "inputs": [[1.0] * WIDTH]}, "invalid_request", "body"),
        ({"signature_name": "serving_default"}, "invalid_request", "body"),
        ({"instances": [], "extra": 1}, "invalid_request", "extra"),
        ({"instances": []}, "invalid_request", "instances"),
        ({"instances": [[1.0] * WIDTH], "signature_name": 7}, "invalid_request", "signature_name"),
        ({"instances": [[1.0] * WIDTH], "signature_name": "nope"}, "unknown_signature", None),
        ({"instances": [{"x": [1.0] * WIDTH, "y": [1.0]}]}, "unknown_input", "y"),
        ({"instances": [{"x": {"b64": "not base64!"}}]}, "invalid_request", "x"),
        ({"instances": [[True, 1.0, 2.0, 3.0]]}, "invalid_dtype", "x"),
    ],
)
def test_each_fault_is_refused_with_its_code(one, document, code, field) -> None:
    refused = _refused(one, document)
    assert refused.code == code, refused
    if field is not None:
        assert refused.field == field, refused


def test_a_named_row_missing_an_input_names_it_and_its_item(two) -> None:
    instances = [{"x": [1.0] * WIDTH, "n": [1]}, {"x": [2.0] * WIDTH}]
    refused = _refused(two, {"instances": instances})
    assert (refused.code, refused.field, refused.item) == ("missing_input", "n", 1)


def test_bare_values_for_a_signature_of_two_inputs_are_refused(two) -> None:
    refused = _refused(two, {"inputs": [[1.0] * WIDTH]})
    assert refused.code == "invalid_request" and refused.expected == str(["x", "n"])


def test_answers_in_row_and_columnar_format() -> None:
    y = np.array([[0.5, 0.25], [1.0, 2.0]], np.float32)
    labels = np.array(["a", "b"], dtype=object)
    assert json.loads(tf.encode_predictions({"y": y}, rows=True).body) == {
        "predictions": [[0.5, 0.25], [1.0, 2.0]]
    }
    assert json.loads(tf.encode_predictions({"y": y, "label": labels}, rows=True).body) == {
        "predictions": [{"y": [0.5, 0.25], "label": "a"}, {"y": [1.0, 2.0], "label": "b"}]
    }
    assert json.loads(tf.encode_predictions({"y": y, "label": labels}, rows=False).body) == {
        "outputs": {"y": [[0.5, 0.25], [1.0, 2.0]], "label": ["a", "b"]}
    }
    half = tf.encode_predictions({"y": y.astype(np.float16)}, rows=False)
    assert json.loads(half.body) == {"outputs": [[0.5, 0.25], [1.0, 2.0]]}
