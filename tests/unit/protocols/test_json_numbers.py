"""service.inputs.json_numbers, as the V2 reader (``v2_codec.float_data_read``) and the
native image route (``json_numbers.tensor``, then ``parse_tensor``) use it: the simdjson
read gives orjson's document (number lists as arrays) or nothing, never a different
document; and each reader gives every body the same columns or the same refusal with it
and without it (pysimdjson absent)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pytest

from service.config import Limits
from service.descriptor import Version
from service.errors import RequestError
from service.inputs import json_numbers
from service.interfaces import INPUT_KINDS
from service.interfaces.base import Incoming
from service.protocols import v2_codec as codec
from tests.unit.synthetic import WIDTH, manifest, signature, tensor

LIMITS = Limits()
N = '{"name": "n", "shape": [1, 1], "datatype": "INT32", "data": [7]}'  # the mixed view's


def _body(
    data: str, datatype: str = "FP32", shape: str = "[1, 4]", extra: str = "", n: bool = False
) -> bytes:
    """A V2 body with input ``x`` (and the INT32 input ``n``: the mixed view's signature)."""
    x = f'{{"name": "x", "shape": {shape}, "datatype": "{datatype}", "data": {data}{extra}}}'
    return f'{{"inputs": [{x}{", " + N if n else ""}]}}'.encode()


@pytest.fixture
def views(tmp_path, view) -> dict:
    """``predict`` taking ``x`` alone, in each float datatype; "mixed": ``x`` and ``n``."""
    made = {"mixed": view}
    for datatype in ("FP32", "FP64", "FP16"):
        inputs = [tensor("x", [-1, WIDTH], f"float{datatype[2:]}")]
        described = manifest("m", signatures={"predict": signature(inputs=inputs)})
        made[datatype] = Version("m", 1, tmp_path, described).view("predict")
    return made


def _view_for(body: bytes, views: dict):
    if b'"name": "n"' in body:
        return views["mixed"]
    for datatype in ("FP64", "FP16"):
        if f'"datatype": "{datatype}"'.encode() in body:
            return views[datatype]
    return views["FP32"]


# Bodies the fast read takes: every input float, its data flat numbers.
TAKEN = {
    "flat floats": _body("[0.5, -1.0, 2.25, 1e-3]"),
    "integers in FP32 data": _body("[1, 2, 3, -4]"),
    "numbers too big for FP32 (refused later as not finite)": _body("[1e39, 0, 0, 0]"),
    "FP64": _body("[0.1, 0.2, 0.3, 0.4]", "FP64"),
    "FP16": _body("[0.1, 70000, 0.3, 0.4]", "FP16"),
    "subnormal to zero": _body("[2.5e-400, 0, 0, 0]"),
    "too few values (refused later)": _body("[1, 2, 3]"),
    "empty data": _body("[]", shape="[0, 4]"),
    "a [ in a string": b'{"id": "a[1]", ' + _body("[1, 2, 3, 4]")[1:],
    "parameters and outputs": _body("[1, 2, 3, 4]")[:-1]
    + b', "outputs": [{"name": "y", "parameters": {"binary_data": false}}], '
    b'"parameters": {"binary_data_output": true}, "id": "r1"}',
    "whitespace around": b"\n " + _body("[ 1 , 2 , 3 , 4 ]") + b" \n",
    "two float inputs": b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", '
    b'"data": [1, 2, 3, 4]}, {"name": "y", "shape": [1, 1], "datatype": "FP64", "data": [5]}]}',
}
# Bodies it leaves to orjson (None), which reads them (or words the error) as it always did.
LEFT = {
    "an INT32 input beside the float one": _body("[1, 2, 3, 4]", n=True),
    "INT32 data alone": _body("[1, 2, 3, 4]", "INT32"),
    "a float datatype spelled with an escape": _body("[1, 2, 3, 4]", "\\u0046P32"),
    "BYTES data": _body('["a", "b", "c", "d"]', "BYTES"),
    "no datatype": b'{"inputs": [{"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4]}]}',
    "no data": b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32"}]}',
    "binary data parameters, no data": b'{"inputs": [{"name": "x", "shape": [1, 4], '
    b'"datatype": "FP32", "parameters": {"binary_data_size": 16}}]}',
    "nested data": _body("[[1, 2, 3, 4]]"),
    "ragged data": _body("[[1], [2, 3], 4]"),
    "ragged with as many items as the outer list": _body("[1, [2], 3, 4]"),
    "a boolean among the numbers": _body("[1.0, true, 0, 0]"),
    "null among the numbers": _body("[1.0, null, 0, 0]"),
    "a string among the numbers": _body('[1.0, "2", 0, 0]'),
    "a duplicate key at the top": _body("[1, 2, 3, 4]")[:-1] + b', "inputs": []}',
    "a duplicate key in an input": _body("[1, 2, 3, 4]", extra=', "data": [[5, 6, 7, 8]]'),
    "an escaped [ in a string": b'{"id": "a\\u005b", ' + _body("[1, 2, 3, 4]")[1:],
    # orjson writes the escape as "[", so the brackets counted even with a list hidden in data
    "an escaped [ making up for a list in data": b'{"id": "\\u005b", '
    + _body("[[1], 2, 3, 4]")[1:],
    "an escaped [ in a key making up for a list in data": _body(
        "[1, [2], 3, 4]", extra=', "parameters": {"\\u005B": 1}'
    ),
    # pysimdjson looks keys up by their C string: KeyError (a 500) where orjson read the body
    "a NUL in an unknown key": _body("[1, 2, 3, 4]")[:-1] + b', "\\u0000": 1}',
    "a NUL in a key of an input": _body("[1, 2, 3, 4]", extra=', "a\\u0000": 1'),
    # walked in Python, 200,000 small inputs took twice orjson's time
    "more inputs than the fast read walks": b'{"inputs": ['
    + b", ".join([b'{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}'] * 65)
    + b"]}",
    "a number past 64 bits": _body("[18446744073709551616, 0, 0, 0]"),
    "a negative number past 64 bits": _body("[-9223372036854775809, 0, 0, 0]"),
    "a number past double": _body("[1e400, 0, 0, 0]"),
    "NaN": _body("[NaN, 0, 0, 0]"),
    "leading zero": _body("[01, 0, 0, 0]"),
    "trailing garbage": _body("[1, 2, 3, 4]") + b" x",
    "byte order mark": b"\xef\xbb\xbf" + _body("[1, 2, 3, 4]"),
    "lone surrogate": b'{"id": "\\ud800", ' + _body("[1, 2, 3, 4]")[1:],
    "not an object": b"[1, 2]",
    "inputs not a list": b'{"inputs": {"x": 1}}',
    "an input not an object": b'{"inputs": [1, [2]]}',
    "data an object": _body('{"a": 1}'),
    "deep nesting": b'{"inputs": [], "id": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    "nesting simdjson reads, deeper than orjson writes": _body("[1, 2, 3, 4]")[:-1]
    + b', "id": '
    + b"[" * 300
    + b"]" * 300
    + b"}",
    "empty": b"",
    "a NUL after the document": _body("[1, 2, 3, 4]") + b"\x00",
    "a control character in a string": b'{"id": "a\x01", ' + _body("[1, 2, 3, 4]")[1:],
    "invalid UTF-8 in a string": b'{"id": "a\xff", ' + _body("[1, 2, 3, 4]")[1:],
    "a non-breaking space between tokens": _body("[1,\xc2\xa02, 3, 4]"),
}


def _plain(value):
    """The document with its arrays as lists, to compare with orjson's."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("body", list(TAKEN.values()), ids=list(TAKEN))
def test_a_flat_float_body_is_read_into_arrays_as_orjson_reads_it(body: bytes) -> None:
    fast = codec.float_data_read(body)
    assert fast is not None
    for entry in fast["inputs"]:
        assert isinstance(entry["data"], np.ndarray) and entry["data"].dtype == np.float64
    assert _plain(fast) == orjson.loads(body)


@pytest.mark.parametrize("body", list(LEFT.values()), ids=list(LEFT))
def test_a_body_it_cannot_be_sure_of_is_left_to_orjson(body: bytes) -> None:
    assert codec.float_data_read(body) is None


def _columns(body: bytes, view) -> dict | tuple:
    """The columns the V2 reader makes of ``body``, or the refusal's code and message."""
    try:
        return codec.read_columns(codec.read_request(body, None, LIMITS), view, LIMITS)
    except RequestError as error:
        return error.code, str(error)


@pytest.mark.parametrize("body", [*TAKEN.values(), *LEFT.values()], ids=[*TAKEN, *LEFT])
def test_the_reader_reads_every_body_alike_with_and_without_simdjson(
    body: bytes, views, monkeypatch
) -> None:
    view = _view_for(body, views)
    fast = _columns(body, view)
    monkeypatch.setattr(json_numbers, "simdjson", None)
    slow = _columns(body, view)
    if isinstance(slow, tuple):
        assert fast == slow
        return
    assert isinstance(fast, dict) and fast.keys() == slow.keys()
    for name, column in slow.items():
        assert fast[name].dtype == column.dtype
        np.testing.assert_array_equal(fast[name], column)


@pytest.mark.parametrize(
    "name", [n for n in TAKEN if n not in ("two float inputs", "too few values (refused later)")]
)
def test_each_float_datatype_is_compared_as_columns_not_only_refusals(name: str, views) -> None:
    """The view of the body's datatype takes it: the comparison above reaches the data."""
    body = TAKEN[name]
    assert isinstance(_columns(body, _view_for(body, views)), dict), name


def test_an_fp32_answer_from_the_array_equals_the_one_from_the_list() -> None:
    """float64 -> float32 rounds as orjson's Python floats -> float32 do, to the bit."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal(4000) * 10.0 ** rng.integers(-40, 40, 4000)
    text = orjson.dumps(values.tolist()).decode()
    body = _body(text, shape="[1000, 4]")
    fast = codec.float_data_read(body)["inputs"][0]["data"]
    with np.errstate(over="ignore"):  # as the reader does: too large is inf, refused later
        slow = np.array(orjson.loads(body)["inputs"][0]["data"], dtype=np.float32)
        assert fast.astype(np.float32).tobytes() == slow.tobytes()


# Native bodies (``{"inputs": tensor}``) json_numbers.tensor reads, and those it leaves.
NATIVE_TAKEN = {
    "one flat item": b'{"inputs": [0.5, 1, -2.25, 3e2]}',
    "rows": b'{"inputs": [[0.5, 1], [-2.25, 3e2], [0, 0]]}',
    "one row": b'{"inputs": [[0.5, 1, 2, 3]]}',
    "whitespace": b' {"inputs" : [ [ 1 , 2 ] , [ 3 , 4 ] ] } ',
    "three levels": b'{"inputs": [[[1, 2], [3, 4]], [[5, 6], [7, 8]], [[0, 0], [0, 0]]]}',
    "four levels": b'{"inputs": [[[[1], [2]], [[3], [4]]]]}',
}
NATIVE_LEFT = {
    "ragged at the third level": b'{"inputs": [[[1, 2], [3, 4]], [[5, 6], [7]]]}',
    "ragged with as many numbers": b'{"inputs": [[[1, 2], [3, 4]], [[5, 6, 7], [8]]]}',
    "a number among lists at the second level": b'{"inputs": [[[1, 2], 3]]}',
    "ragged rows": b'{"inputs": [[1, 2], [3, 4, 5], [6]]}',
    "a row nesting deeper": b'{"inputs": [[1, 2], [3, [4]]]}',
    "a number then a list": b'{"inputs": [1, [2]]}',
    "a list then a number": b'{"inputs": [[1, 2], 3, 4]}',
    "a boolean": b'{"inputs": [[1, true]]}',
    "empty": b'{"inputs": []}',
    "empty rows": b'{"inputs": [[], []]}',
    "another key": b'{"inputs": [1, 2], "top_k": 1}',
    "a repeated key": b'{"inputs": [1, 2], "inputs": [[3]]}',
    "not a list": b'{"inputs": 5}',
    "records": b'{"inputs": [{"a": 1}]}',
    "a [ in a key": b'{"inputs": [1, 2], "[": 1}',
    "byte order mark": b'\xef\xbb\xbf{"inputs": [1, 2]}',
    "invalid JSON": b'{"inputs": [1, 2]',
    # orjson's int64 array rounds 2**60 + 2**36 + 1 to float32 once (up); through float64 it
    # rounded twice (down)
    "an integer past 2**53": b'{"inputs": [[1152921573326323713, 0], [0, 0]]}',
    "a negative integer past 2**53": b'{"inputs": [-1152921573326323713, 0]}',
    # more dimensions than NumPy takes: reshape raised ValueError (a 500), orjson's path
    # answers that the tensor is ragged
    "nested 65 levels": b'{"inputs": ' + b"[" * 65 + b"0.5" + b"]" * 65 + b"}",
}


@pytest.mark.parametrize("body", list(NATIVE_TAKEN.values()), ids=list(NATIVE_TAKEN))
def test_a_native_list_of_numbers_or_rows_is_read_into_an_array(body: bytes) -> None:
    found = json_numbers.tensor(body, "inputs")
    assert found is not None and found.keys() == {"inputs"}
    expected = np.asarray(orjson.loads(body)["inputs"], dtype=np.float64)
    assert found["inputs"].shape == expected.shape
    np.testing.assert_array_equal(found["inputs"], expected)


@pytest.mark.parametrize("body", list(NATIVE_LEFT.values()), ids=list(NATIVE_LEFT))
def test_a_native_body_it_cannot_be_sure_of_is_left_to_orjson(body: bytes) -> None:
    assert json_numbers.tensor(body, "inputs") is None


def _digits(shape: tuple[int, ...], seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).random(shape).astype(np.float32)
    return orjson.dumps({"inputs": pixels.tolist()})


# Native bodies for an MNIST image signature: taken, refused, and left, in both paths.
NATIVE_DIGITS = {
    "one flat digit": _digits((784,)),
    "one digit, 28 x 28": _digits((28, 28)),
    "a batch of one, 28 x 28": _digits((1, 28, 28)),
    "two flat digits": _digits((2, 784)),
    "three digits, 28 x 28, with a channel": _digits((3, 28, 28, 1)),
    "integers 0 and 1": orjson.dumps({"inputs": np.eye(28, dtype=int).tolist()}),
    "out of range": orjson.dumps({"inputs": (np.ones((28, 28)) * 2).tolist()}),
    "the wrong width": _digits((2, 783)),
    "ragged rows of a digit": orjson.dumps({"inputs": [[0.5] * 28] * 27 + [[0.5] * 29]}),
    "a boolean in a digit": _digits((28, 28)).replace(b"[0.", b"[true,0.", 1),
    "an integer past 2**53 in a digit": orjson.dumps(
        {"inputs": [[1152921573326323713] + [0] * 27] + [[0] * 28] * 27}
    ),
    "named inputs": orjson.dumps({"inputs": {"pixels": [[0.5] * 784]}}),
}


@pytest.fixture
def digit_version(tmp_path) -> Version:
    """A model whose ``predict`` takes MNIST images (784 numbers in [0, 1])."""
    inputs = [tensor("pixels", [-1, 784], range=[0.0, 1.0])]
    predict = signature(inputs=inputs, input_kind="mnist_image")
    return Version("m", 1, tmp_path, manifest("m", signatures={"predict": predict}))


def _native(body: bytes, version: Version) -> Any:
    """What the native image route makes of ``body``: the feed, or the refusal."""
    incoming = Incoming(body, "application/json", {}, "", LIMITS)
    try:
        return asyncio.run(INPUT_KINDS["mnist_image"].from_native(incoming, version, "predict"))
    except RequestError as error:
        return error.code, str(error)


def _same_feed(fast: Any, slow: Any, body: bytes) -> None:
    if isinstance(slow, tuple) or isinstance(fast, tuple):
        assert fast == slow, body[:200]
        return
    assert fast.keys() == slow.keys()
    for name, column in slow.items():
        assert fast[name].dtype == column.dtype and fast[name].tobytes() == column.tobytes()


@pytest.mark.parametrize("body", list(NATIVE_DIGITS.values()), ids=list(NATIVE_DIGITS))
def test_the_native_image_route_reads_every_body_alike_with_and_without_simdjson(
    body: bytes, digit_version, monkeypatch
) -> None:
    fast = _native(body, digit_version)
    monkeypatch.setattr(json_numbers, "simdjson", None)
    _same_feed(fast, _native(body, digit_version), body)


def test_the_native_image_route_takes_the_fast_read_for_plain_digits() -> None:
    taken = [name for name, body in NATIVE_DIGITS.items() if json_numbers.tensor(body, "inputs")]
    assert taken == [
        "one flat digit",
        "one digit, 28 x 28",
        "a batch of one, 28 x 28",
        "two flat digits",
        "three digits, 28 x 28, with a channel",
        "integers 0 and 1",
        "out of range",
        "the wrong width",
    ]


def test_a_body_over_the_fast_read_size_is_left_to_orjson() -> None:
    """Long numbers are simdjson's slow path: the size bounds how long one body holds the
    GIL (FAST_READ_BYTES). A body of exactly that size is read; one byte more is not."""
    limit = json_numbers.FAST_READ_BYTES
    long = "0." + "1" * 97
    numbers = ", ".join([long] * (limit // 110))
    base = _body("[" + numbers + "]", shape="[1, 1]")
    padded = base[:-1] + b" " * (limit - len(base)) + b"}"  # whitespace: the same document
    assert len(padded) == limit
    assert codec.float_data_read(padded) is not None
    assert codec.float_data_read(padded + b" ") is None
    native = ('{"inputs": [' + numbers + "]}").encode()
    native = native[:-1] + b" " * (limit - len(native)) + b"}"
    assert json_numbers.tensor(native, "inputs") is not None
    assert json_numbers.tensor(native + b" ", "inputs") is None


def test_without_pysimdjson_nothing_is_read_fast(monkeypatch) -> None:
    monkeypatch.setattr(json_numbers, "simdjson", None)
    assert json_numbers.tensor(NATIVE_TAKEN["rows"], "inputs") is None
    assert codec.float_data_read(TAKEN["flat floats"]) is None


def test_mutated_bodies_read_alike_with_and_without_simdjson(
    views, digit_version, monkeypatch
) -> None:
    """600 bodies a byte or token away from valid ones (seeded): the fast read never gives
    another answer or another refusal than orjson's path, on the V2 reader and the native
    image route."""
    rng = np.random.default_rng(7)
    seeds = [*TAKEN.values(), *NATIVE_TAKEN.values(), *list(NATIVE_DIGITS.values())[:3]]
    tokens = [b"[", b"]", b",", b"true", b"null", b'"', b"1e999", b"{", b"}", b"-", b".", b"0"]
    bodies = []
    for _ in range(600):
        body = bytearray(seeds[rng.integers(len(seeds))])
        for _ in range(rng.integers(1, 3)):
            at = int(rng.integers(len(body) + 1))
            if rng.random() < 0.5 and at < len(body):
                del body[at]
            else:
                body[at:at] = tokens[rng.integers(len(tokens))]
        bodies.append(bytes(body))
    fast = [
        (
            _columns(b, _view_for(b, views)),
            _native(b, digit_version),
            json_numbers.tensor(b, "inputs"),
        )
        for b in bodies
    ]
    monkeypatch.setattr(json_numbers, "simdjson", None)
    taken = 0
    for body, (columns, feed, native) in zip(bodies, fast, strict=True):
        _same_feed(feed, _native(body, digit_version), body)
        slow = _columns(body, _view_for(body, views))
        if isinstance(slow, tuple) or isinstance(columns, tuple):
            assert columns == slow, body
        else:
            assert columns.keys() == slow.keys(), body
            for name, column in slow.items():
                assert columns[name].dtype == column.dtype, body
                np.testing.assert_array_equal(columns[name], column, err_msg=repr(body))
        if native is not None:
            taken += 1
            expected = np.asarray(orjson.loads(body)["inputs"], dtype=np.float64)
            assert native["inputs"].shape == expected.shape, body
            np.testing.assert_array_equal(native["inputs"], expected, err_msg=repr(body))
    # Both readers did take some of the mutants (seed 7)
    assert taken >= 10
    monkeypatch.undo()
    assert sum(codec.float_data_read(b) is not None for b in bodies) >= 40
