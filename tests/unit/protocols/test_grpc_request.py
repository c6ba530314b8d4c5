"""service.protocols.grpc's request side: a ModelInferRequest (tritonclient's own protobuf
classes, as a client builds them) read into the ``V2Request`` HTTP makes, then by the one
V2 reader; expected arrays are written out here (numpy, struct), not taken from the codec."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from service.config import Limits
from service.descriptor import Version
from service.errors import RequestError
from service.protocols import v2_codec as codec
from service.protocols.grpc import v2_request
from tests.unit.synthetic import WIDTH, manifest, signature, tensor

LIMITS = Limits()


def _message(*inputs: pb.ModelInferRequest.InferInputTensor, **fields) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="m", inputs=list(inputs), **fields)


def _x(**contents) -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP32", shape=[2, WIDTH], **contents
    )


def _n(**contents) -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(
        name="n", datatype="INT32", shape=[2, 1], **contents
    )


X = [0.5, -1.0, 2.25, 3.0, 4.0, 5.5, -6.0, 7.0]


def test_typed_contents_and_raw_contents_read_alike(view) -> None:
    typed = _message(
        _x(contents=pb.InferTensorContents(fp32_contents=X)),
        _n(contents=pb.InferTensorContents(int_contents=[3, -4])),
    )
    raw = _message(
        _x(), _n(), raw_input_contents=[struct.pack("<8f", *X), struct.pack("<2i", 3, -4)]
    )
    for message in (typed, raw):
        columns = codec.read_columns(v2_request(message, LIMITS), view, LIMITS)
        np.testing.assert_array_equal(columns["x"], np.array(X, np.float32).reshape(2, WIDTH))
        assert columns["x"].dtype == np.float32
        np.testing.assert_array_equal(columns["n"], np.array([[3], [-4]], np.int32))


def test_the_outputs_asked_for_and_their_classification(view) -> None:
    asked = pb.ModelInferRequest.InferRequestedOutputTensor(
        name="y", parameters={"classification": pb.InferParameter(int64_param=2)}
    )
    message = _message(_x(contents=pb.InferTensorContents(fp32_contents=X)), outputs=[asked])
    request = v2_request(message, LIMITS)
    assert request.outputs == [{"name": "y", "parameters": {"classification": 2}}]
    assert request.parameters == {"binary_data_output": True}  # gRPC answers in raw contents


@pytest.mark.parametrize(
    ("message", "field"),
    [
        # one raw_input_contents for two inputs
        (_message(_x(), _n(), raw_input_contents=[struct.pack("<8f", *X)]), "raw_input_contents"),
        # both forms for one input
        (
            _message(
                _x(contents=pb.InferTensorContents(fp32_contents=X)),
                _n(),
                raw_input_contents=[struct.pack("<8f", *X), struct.pack("<2i", 3, -4)],
            ),
            "x",
        ),
    ],
)
def test_wire_faults_are_invalid_request_naming_the_field(view, message, field) -> None:
    with pytest.raises(RequestError) as raised:
        codec.read_columns(v2_request(message, LIMITS), view, LIMITS)
    assert (raised.value.code, raised.value.field) == ("invalid_request", field)


def test_more_typed_values_than_the_shape_holds_are_refused(view) -> None:
    message = _message(
        _x(contents=pb.InferTensorContents(fp32_contents=[*X, 1.0])),
        _n(contents=pb.InferTensorContents(int_contents=[3, -4])),
    )
    with pytest.raises(RequestError) as raised:
        codec.read_columns(v2_request(message, LIMITS), view, LIMITS)
    assert raised.value.field == "x" and "9 values" in raised.value.message, raised.value


def test_fp16_has_no_typed_contents_field_and_must_come_raw(tmp_path: Path) -> None:
    described = manifest(
        "h", signatures={"predict": signature(inputs=[tensor("x", [-1, WIDTH], "float16")])}
    )
    view = Version("h", 1, tmp_path, described).view("predict")
    typed = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP16", shape=[2, WIDTH])
    with pytest.raises(RequestError) as raised:
        codec.read_columns(v2_request(_message(typed), LIMITS), view, LIMITS)
    assert (raised.value.code, raised.value.expected) == ("invalid_request", "raw_input_contents")
    raw = _message(typed, raw_input_contents=[np.array(X, "<f2").tobytes()])
    columns = codec.read_columns(v2_request(raw, LIMITS), view, LIMITS)
    np.testing.assert_array_equal(columns["x"], np.array(X, np.float16).reshape(2, WIDTH))
