"""service.protocols.v2_codec: V2 tensors on the wire, read and written against a synthetic
signature; expected values are written out here (struct, numpy), not taken from the codec."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from service.config import Limits
from service.descriptor import Version
from service.errors import RequestError
from service.protocols import v2_codec as codec
from tests.unit.synthetic import CLASSES, WIDTH, manifest

LIMITS = Limits()


def _refused(call, *args) -> RequestError:
    with pytest.raises(RequestError) as raised:
        call(*args)
    return raised.value


def _read(entries: list, binary: bytes, view) -> dict:
    """An HTTP V2 document's inputs, read as the service reads them (``V2Request``)."""
    return codec.read_columns(
        codec.from_document({"inputs": entries}, binary, LIMITS), view, LIMITS
    )


def _asked(document: dict, view) -> tuple:
    header = json.dumps({"inputs": [], **document}).encode()
    return codec.requested_outputs(codec.read_request(header, None, LIMITS), view)


def _x(values=(1.0, 2.0, 3.0, 4.0)) -> dict:
    return {"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": list(values)}


def _n(value: int = 7) -> dict:
    return {"name": "n", "shape": [1, 1], "datatype": "INT32", "data": [value]}


def test_json_data_becomes_arrays_of_the_declared_type(view) -> None:
    columns = _read([_x(), _n()], b"", view)
    assert columns["x"].dtype == np.float32 and columns["x"].tolist() == [[1, 2, 3, 4]]
    assert columns["n"].dtype == np.int32 and columns["n"].tolist() == [[7]]


def test_binary_data_is_read_in_input_order(view) -> None:
    x = struct.pack("<4f", 1, 2, 3, 4)
    n = struct.pack("<i", -3)
    entries = [
        {
            "name": "x",
            "shape": [1, WIDTH],
            "datatype": "FP32",
            "parameters": {"binary_data_size": 16},
        },
        {"name": "n", "shape": [1, 1], "datatype": "INT32", "parameters": {"binary_data_size": 4}},
    ]
    header = json.dumps({"inputs": entries}).encode()
    request = codec.read_request(header + x + n, str(len(header)), LIMITS)
    columns = codec.read_columns(request, view, LIMITS)
    assert columns["x"].tolist() == [[1, 2, 3, 4]] and columns["n"].tolist() == [[-3]]


@pytest.mark.parametrize(
    ("entries", "binary", "code", "status"),
    [
        ([_x(), _x(), _n()], b"", "duplicate_input", 422),
        ([_x()], b"", "missing_input", 422),
        ([_x(), _n(), {**_n(), "name": "z"}], b"", "unknown_input", 422),
        ([{**_x(), "datatype": "FP64"}, _n()], b"", "invalid_dtype", 422),
        ([{**_x(), "shape": [1, 2, 2]}, _n()], b"", "invalid_shape", 422),
        ([{**_x(), "shape": [1, WIDTH + 1]}, _n()], b"", "invalid_shape", 422),
        ([{**_x(), "shape": [65, WIDTH]}, _n()], b"", "too_many_items", 413),
        ([{**_x(), "shape": [1, -1]}, _n()], b"", "invalid_request", 400),
        ([{**_x(), "data": [1.0, 2.0]}, _n()], b"", "invalid_request", 400),
        ([{**_x(), "data": [True, 1, 2, 3]}, _n()], b"", "invalid_request", 400),
        ([_x(), _n(2**31)], b"", "invalid_request", 400),
        ([_x(), _n()], b"\x00", "invalid_request", 400),  # binary data left over
        (
            [
                {
                    "name": "x",
                    "shape": [1, WIDTH],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 99},
                },
                _n(),
            ],
            b"\x00" * 16,
            "invalid_request",
            400,
        ),
        ([{"shape": [1, WIDTH]}], b"", "invalid_request", 400),
        # a datatype no dictionary can look up (a 500, "unhashable type", once)
        ([{**_x(), "datatype": {}}, _n()], b"", "invalid_request", 400),
        ([{**_x(), "datatype": ["FP32"]}, _n()], b"", "invalid_request", 400),
    ],
)
def test_each_fault_is_refused_with_its_code(view, entries, binary, code, status) -> None:
    error = _refused(_read, entries, binary, view)
    assert (error.code, error.status) == (code, status), error.text()


@pytest.mark.parametrize("length", ["-1", "abc", "999999", "١٢"])
def test_a_header_length_that_does_not_fit_the_body_is_refused(length: str) -> None:
    error = _refused(codec.split_body, b'{"inputs": []}', length)
    assert (error.code, error.field) == ("invalid_request", codec.HEADER_LENGTH)


def test_bytes_elements_are_length_prefixed() -> None:
    raw = struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
    assert codec.from_raw(raw, "s", [2], "BYTES") == [b"ab", b""]
    assert _refused(codec.from_raw, raw[:-1], "s", [2], "BYTES").code == "invalid_request"
    assert _refused(codec.from_raw, raw, "s", [3], "BYTES").code == "invalid_request"
    value = np.array(["ab", "é"], dtype=object)
    assert codec.to_raw(value, "BYTES") == raw[:6] + struct.pack("<I", 2) + "é".encode()


@pytest.mark.parametrize(
    ("datatype", "values", "pack"),
    [("FP32", [1.5, -2.0], "<2f"), ("INT64", [-1, 2**40], "<2q"), ("UINT8", [0, 255], "<2B")],
)
def test_numbers_are_little_endian_both_ways(datatype: str, values: list, pack: str) -> None:
    raw = struct.pack(pack, *values)
    array = codec.from_raw(raw, "v", [2], datatype)
    assert array.tolist() == values
    assert codec.to_raw(np.asarray(values, dtype=codec.NUMERIC_TYPES[datatype]), datatype) == raw


def test_outputs_are_asked_for_by_name_in_json_or_binary(view) -> None:
    everything = _asked({}, view)
    assert [(o.tensor.name, o.binary) for o in everything] == [("y", False)]
    binary = _asked({"parameters": {"binary_data_output": True}}, view)
    assert binary[0].binary
    assert _refused(_asked, {"outputs": [{"name": "z"}]}, view).code == ("unknown_output")
    asked = {"outputs": [{"name": "y", "parameters": {"classification": 2}}]}
    assert _refused(_asked, asked, view).code == "invalid_request"  # no labels


def test_an_output_asked_for_twice_is_refused(view) -> None:
    """As Triton refuses it ("output already exists in request"): each copy was answered,
    so 50,000 copies of one output in a 1.6 MB request made a 359 MB answer, and held the
    event loop (other clients' requests waited up to 0.9 s)."""
    refused = _refused(_asked, {"outputs": [{"name": "y"}, {"name": "y"}]}, view)
    assert refused.code == "invalid_request" and refused.status == 400
    assert refused.field == "outputs" and "'y'" in refused.message


def test_class_strings_are_tritons_score_index_label() -> None:
    probabilities = np.array([[0.1, 0.7, 0.2]], np.float32)
    found = codec.class_strings(probabilities, ["a", "b", "c"], 2)
    assert found.tolist() == [["0.700000:1:b", "0.200000:2:c"]]


def test_an_answer_in_json_and_in_binary(tmp_path: Path) -> None:
    version = Version("m", 1, tmp_path, manifest("m"))
    view = version.view("predict")
    y = np.array([[1.0, 2.0, 3.0]], np.float32)
    as_json = codec.InferRequest("id-1", (codec.RequestedOutput(view.outputs[0], False),), "m")
    reply = codec.encode_answer({"y": y}, as_json, version, view)
    assert json.loads(reply.body) == {
        "model_name": "m",
        "model_version": "1",
        "id": "id-1",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1, CLASSES], "data": [1.0, 2.0, 3.0]}
        ],
    }
    as_binary = codec.InferRequest(None, (codec.RequestedOutput(view.outputs[0], True),), "m")
    reply = codec.encode_answer({"y": y}, as_binary, version, view)
    size = int(reply.headers["Inference-Header-Content-Length"])
    header = json.loads(reply.body[:size])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 12}
    assert reply.body[size:] == struct.pack("<3f", 1, 2, 3)


class _Counted:
    """gRPC's typed contents as the reader sees them: a sized sequence (protobuf's repeated
    field); walking it is the cost the count check must come before."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        raise AssertionError("the values were copied before their count was checked")


def test_typed_contents_of_the_wrong_count_are_refused_before_any_copy(view) -> None:
    """A 20 MB gRPC message of 4.9 million fp32_contents for a [1, 4] input was turned into a
    list of Python floats before its count was compared with the shape: ~1 s of the event
    loop per message (the same message's raw_input_contents, refused by their length, cost
    ~0.15 s), and small requests' p90 rose from 4 ms to 475 ms under two such clients."""
    entry = codec.TensorInput("x", [1, WIDTH], "FP32", values=_Counted(4_900_000))
    request = codec.V2Request([entry, codec.TensorInput("n", [1, 1], "INT32", values=[3])])
    refused = _refused(codec.read_columns, request, view, LIMITS)
    assert refused.code == "invalid_request" and "4900000 values" in refused.message
