"""V2 inference on the wire: requests (JSON ``data`` or the binary tensor data extension) into
named input columns, model outputs into V2 answers (JSON, or binary after the header), and
the HTTP adapter (``V2Infer``, routed as ``infer``) whose ``decode`` and ``encode`` are those
two. gRPC's adapter (``grpc.GrpcInfer``) builds the same ``V2Request`` and uses the same
reader and writer; the metadata endpoints are ``protocols.v2``'s."""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from service.backends import Feed, Outputs
from service.config import Limits
from service.descriptor import SignatureView, Version
from service.errors import BadRequest, RequestError
from service.http import RawRequest, Reply, json_reply
from service.inference import Call, Decoded, Runtime
from service.inputs import json_numbers as jn
from service.inputs.body import parse_json
from service.inputs.numbers import ascii_int
from service.inputs.tensors import holds_boolean, might_hold_booleans
from service.interfaces.base import BYTES, NUMPY_TYPES, Columns, Tensor
from service.protocols import v2_names
from service.protocols.common import protocol_errors, serve
from service.registry.lookup import version_number

HEADER_LENGTH = "inference-header-content-length"
BOOL = "BOOL"
NUMERIC_TYPES = NUMPY_TYPES
FLOAT_TYPES = ("FP16", "FP32", "FP64")  # the only V2 datatypes that begin with "FP"
# Inputs float_data_read walks in Python (6 us each past orjson's): a body of 200,000 small
# inputs (14 MB) took 1.9 s against orjson's 0.87 s. More than any signature takes are
# refused anyway, after orjson has read them.
FAST_READ_INPUTS = 64
MAX_RANK = 16  # more dimensions than any model takes (numpy's own limit is 64)


# -- requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestedOutput:
    tensor: Tensor
    binary: bool
    classification: int = 0


@dataclass(frozen=True)
class InferRequest:
    """What the answer needs to know about the request."""

    id: str | None
    outputs: tuple[RequestedOutput, ...]
    model_name: str  # the V2 name it was asked by


def _bad(message: str, field: str = "inputs", expected: str | None = None) -> BadRequest:
    return BadRequest("invalid_request", message, field=field, expected=expected)


@dataclass(slots=True)
class TensorInput:
    """One input of a V2 request, whichever wire it came by: its header (checked as it is
    read, ``check_header``) and its data in one of the protocol's three forms: ``raw`` bytes
    (HTTP's binary tensor data, gRPC's ``raw_input_contents``), nested JSON ``data`` (HTTP),
    or a flat sequence of typed ``values`` (gRPC's ``contents``). ``problem``: what the wire
    got wrong about this input's data, raised in its turn, after every header is checked."""

    name: str
    shape: list[int]
    datatype: str
    data: Any = None
    values: Any = None
    raw: bytes | None = None
    problem: RequestError | None = None


@dataclass(slots=True)
class V2Request:
    """A V2 infer request as HTTP and gRPC both give it (MLServer's ``InferenceRequest``):
    its inputs, its id, and its ``parameters`` and ``outputs`` as sent (checked when read)."""

    inputs: list[TensorInput]
    id: str | None = None
    parameters: Any = field(default_factory=dict)
    outputs: Any = None
    leftover: RequestError | None = None  # binary data past the last input (HTTP)


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary tensor data after it (binary tensor data extension)."""
    if header_length is None:
        fast = float_data_read(body)
        document, binary = fast if fast is not None else parse_json(body), b""
    else:
        size = ascii_int(header_length)
        if size is None or size > len(body):
            raise _bad(
                f"Inference-Header-Content-Length {header_length[:40]!r} does not fit the body",
                field=HEADER_LENGTH,
                expected=f"a whole number of bytes, at most the body's {len(body)}",
            )
        document, binary = parse_json(body[:size]), body[size:]
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise _bad("body must be a JSON object with an 'inputs' list")
    return document, binary


def float_data_read(body: bytes) -> dict[str, Any] | None:
    """The document ``orjson.loads`` gives, except that each input's ``data`` is a float64
    array, read by simdjson (``inputs.json_numbers``: 14 us on make bench's digit, against
    29 us for orjson, ``np.array`` and the boolean search). Only for a body whose every
    input is FP16, FP32 or FP64 with flat numbers as its data, the common case of a V2
    client; any other body is None as soon as that shows, and orjson reads it whole (a bank
    request of 16 integer and string columns would have taken 39 us here against orjson's
    4). None too whenever the read cannot be sure of giving exactly orjson's document: the
    caller's orjson then words every error (invalid JSON, a repeated key, data that nests
    lists, booleans, strings or numbers past 64 bits among the numbers)."""
    if b'"FP' not in body:
        return None  # no float datatype spelled plainly: a bank request is orjson's at once
    root = jn.parse(body)
    if not jn.is_object(root):
        return None
    names = jn.keys(root)
    if names is None or "inputs" not in names:
        return None
    entries = root["inputs"]
    if not jn.is_array(entries) or len(entries) > FAST_READ_INPUTS:
        return None
    inputs = []
    for entry in entries:
        found = _float_data_input(entry)
        if found is None:
            return None
        inputs.append(found)
    document = {name: jn.python(root[name]) for name in names if name != "inputs"}
    document["inputs"] = inputs
    return document if jn.same_brackets(body, document) else None


def _float_data_input(entry: Any) -> dict[str, Any] | None:
    """An input object whose data is flat float numbers, with that data as an array."""
    if not jn.is_object(entry):
        return None
    names = jn.keys(entry)
    if names is None or "data" not in names or entry.get("datatype") not in FLOAT_TYPES:
        return None
    data = entry["data"]
    if not jn.is_array(data) or (len(data) and jn.is_array(data[0])):
        return None  # V2 data is flat; nested data is orjson's (it may be ragged)
    numbers = jn.numbers(data)
    if numbers is None or numbers.size != len(data):  # not numbers, or a list further in
        return None
    found = {name: jn.python(entry[name]) for name in names if name != "data"}
    found["data"] = numbers
    return found


def read_request(body: bytes, header_length: str | None, limits: Limits) -> V2Request:
    """An HTTP V2 body (JSON, or JSON then binary tensor data) as a ``V2Request``."""
    document, binary = split_body(body, header_length)
    request = from_document(document, binary, limits)
    rid = document.get("id")
    request.id = rid if isinstance(rid, str) else None
    request.parameters = document.get("parameters", {})
    request.outputs = document.get("outputs")
    return request


def from_document(document: dict[str, Any], binary: bytes, limits: Limits) -> V2Request:
    """The inputs of a V2 JSON document; binary data is taken in input order. Every header
    is checked here, before any data is read: a 20 MB body of BYTES elements for an input
    that takes numbers, or for no input at all, is refused without unpacking it (unpacking it
    held the event loop for seconds)."""
    entries = document["inputs"]
    inputs = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _bad("each input must be an object with a 'name'")
        if not isinstance(entry.get("parameters", {}), dict):
            raise _bad(f"parameters of {entry['name']!r} must be an object", field=entry["name"])
        name, shape, datatype = check_header(
            entry["name"], entry.get("shape"), entry.get("datatype"), limits
        )
        inputs.append(TensorInput(name, shape, datatype))
    request = V2Request(inputs)
    offset = 0
    for entry, tensor in zip(entries, inputs, strict=True):
        size = entry.get("parameters", {}).get("binary_data_size")
        if size is not None:
            if (
                not isinstance(size, int)
                or isinstance(size, bool)
                or size < 0
                or offset + size > len(binary)
            ):
                tensor.problem = _bad(
                    f"binary_data_size of {tensor.name!r} runs past the body", field=tensor.name
                )
                return request  # raised in its turn; nothing after it is read
            tensor.raw = binary[offset : offset + size]
            offset += size
        elif "data" in entry:
            tensor.data = entry["data"]
        else:
            tensor.problem = _bad(
                f"input {tensor.name!r} has neither 'data' nor binary_data_size",
                field=tensor.name,
            )
            return request
    if offset != len(binary):
        request.leftover = _bad("binary data left over after the last input", field=HEADER_LENGTH)
    return request


def read_columns(
    request: V2Request, view: SignatureView, limits: Limits, check_booleans: bool = True
) -> Columns:
    """Every input tensor of a V2 request (HTTP or gRPC), checked against the signature and
    decoded, in input order. ``check_booleans=False`` skips the search for JSON booleans
    when the body holds none."""
    images = {t.name for t in view.inputs if t.images}
    inputs = request.inputs
    check_inputs([t.name for t in inputs], view)
    check_datatypes([(t.name, t.datatype) for t in inputs], view)
    check_declared([(t.name, t.shape, t.datatype) for t in inputs], view)
    columns: Columns = {}
    for tensor in inputs:
        name, shape, datatype = tensor.name, tensor.shape, tensor.datatype
        if tensor.problem is not None:
            raise tensor.problem
        if tensor.raw is not None:
            columns[name] = from_raw(tensor.raw, name, shape, datatype)
        elif tensor.values is not None:
            columns[name] = _from_values(tensor.values, name, shape, datatype)
        else:
            data = tensor.data
            if check_booleans and datatype not in (BOOL, BYTES) and holds_boolean(data):
                raise _bad(
                    f"input {name!r}: booleans in {datatype} data",
                    field=name,
                    expected=f"{datatype} numbers",
                )
            columns[name] = _from_json(data, name, shape, datatype, name in images)
    if request.leftover is not None:
        raise request.leftover
    return columns


async def read_feed(
    request: V2Request, version: Version, signature: str, limits: Limits, check_booleans: bool
) -> tuple[Feed, tuple[RequestedOutput, ...]]:
    """A V2 request (HTTP or gRPC) as the signature's validated feed, and the outputs it
    asks for, as MLServer's ``dataplane.infer`` serves REST and gRPC alike."""
    view = version.view(signature)
    columns = read_columns(request, view, limits, check_booleans)
    wanted = requested_outputs(request, view)
    return await view.kind.from_columns(columns, version, signature, limits), wanted


def check_inputs(names: list[str], view: SignatureView) -> None:
    """Exactly the signature's inputs, each once."""
    expected = [t.name for t in view.inputs]
    unknown = sorted(set(names) - set(expected))
    if unknown:
        raise RequestError(
            "unknown_input",
            f"signature {view.name!r} has no input {unknown[0]!r}",
            field=unknown[0],
            expected=str(expected),
        )
    missing = [name for name in expected if name not in names]
    if missing:
        raise RequestError(
            "missing_input",
            f"input {missing[0]!r} is missing",
            field=missing[0],
            expected=str(expected),
        )
    if len(set(names)) != len(names):
        raise RequestError("duplicate_input", "an input is given twice", field="inputs")


def check_datatypes(declared: list[tuple[str, str]], view: SignatureView) -> None:
    """Each input in its own datatype, as Triton requires (HTTP and gRPC alike): FP64 or
    INT32 data for an FP32 input is refused, not converted. BYTES files for an image input
    and the alternatives a tensor lists (``Tensor.accepts``) are its own too."""
    tensors = {t.name: t for t in view.inputs}
    for name, datatype in declared:
        tensor = tensors.get(name)
        if tensor is None or datatype == tensor.datatype or datatype in tensor.accepts:
            continue
        if datatype == BYTES and tensor.images:
            continue
        expected = tensor.datatype + (" (or BYTES image files)" if tensor.images else "")
        raise RequestError(
            "invalid_dtype",
            f"input {name!r} has datatype {str(datatype)[:20]!r}, not {tensor.datatype}",
            field=name,
            expected=expected,
        )


def check_header(name: str, shape: Any, datatype: Any, limits: Limits) -> tuple[str, list, str]:
    """An input's declared shape and datatype, checked before any data is read (HTTP and
    gRPC alike): non-negative dimensions, a V2 datatype, within the item limit."""
    valid_shape = (
        isinstance(shape, list)
        and len(shape) >= 1
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    )
    if not valid_shape:
        raise _bad(f"input {name!r} needs a 'shape' of non-negative integers", field=name)
    # A string first: a JSON object or list is no key to look up (a 500, "unhashable type")
    if not isinstance(datatype, str) or (datatype != BYTES and datatype not in NUMERIC_TYPES):
        raise _bad(
            f"input {name!r} has datatype {str(datatype)[:40]!r}",
            field=name,
            expected=f"one of {[BYTES, *NUMERIC_TYPES]}",
        )
    if len(shape) > MAX_RANK:
        raise _bad(
            f"input {name!r} has {len(shape)} dimensions",
            field=name,
            expected=f"at most {MAX_RANK} dimensions",
        )
    # Every dimension counts, zeros included: [1, 0, 2**62] holds no value, yet numpy cannot
    # even describe that array ("array is too big", once a 500). The product of the dimensions
    # with each 0 taken as 1 bounds them all, and it is no more than the body could carry.
    if shape[0] > limits.max_items_per_request or prod(max(d, 1) for d in shape) > (
        limits.max_body_bytes
    ):
        raise RequestError(
            "too_many_items",
            f"input {name!r} has shape {shape[:MAX_RANK]}",
            field=name,
            expected=f"at most {limits.max_items_per_request} items, "
            f"dimensions whose product is at most {limits.max_body_bytes}",
        )
    return name, shape, datatype


def check_declared(headers: list[tuple[str, list[int], str]], view: SignatureView) -> None:
    """Each input's shape against the signature's declared one: no more dimensions, and
    (when every dimension past the batch is fixed) no more values per item. Alternatives the
    input kinds accept (a flat 784 for 28x28, BYTES image files) stay within both."""
    for name, shape, _ in headers:
        declared = view.input(name).shape
        if len(shape) > len(declared):
            raise RequestError(
                "invalid_shape",
                f"input {name!r} has shape {shape}",
                field=name,
                expected=f"at most {len(declared)} dimensions, as {list(declared)}",
            )
        fixed = all(d >= 0 for d in declared[1:])
        per_item = prod(declared[1:])
        if fixed and len(shape) > 1 and prod(shape[1:]) > per_item:
            raise RequestError(
                "invalid_shape",
                f"input {name!r} has shape {shape}",
                field=name,
                expected=f"{per_item} values per item, as {list(declared)}",
            )


def from_raw(raw: bytes, name: str, shape: list[int], datatype: str) -> Any:
    """One input from its raw bytes (little-endian numbers, or length-prefixed BYTES)."""
    if datatype == BYTES:
        values = _unpack_bytes(raw, name, prod(shape))
        _check_count(values, name, shape)
        return values
    dtype = np.dtype(NUMERIC_TYPES[datatype]).newbyteorder("<")
    if len(raw) != prod(shape) * dtype.itemsize:
        raise _bad(f"input {name!r}: {len(raw)} bytes for shape {shape} of {datatype}", field=name)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _from_values(values: Any, name: str, shape: list[int], datatype: str) -> Any:
    """One input from a flat sequence of its datatype's values (gRPC's typed contents)."""
    # Counted before any copy: listing 4.9 million floats of a message held the event loop
    # for ~1 s, only to refuse them.
    if len(values) != prod(shape):  # exact: numpy's product wraps past int64
        raise RequestError(
            "invalid_request",
            f"input {name!r}: {len(values)} values for shape {shape}",
            field=name,
        )
    values = list(values)
    target = NUMERIC_TYPES.get(datatype)
    if target is None:  # BYTES
        return values
    if target.kind == "f":
        return np.asarray(values, dtype=target).reshape(shape)
    # 8- and 16-bit types travel in 32-bit fields: checked against their range
    return whole(values, name, datatype, target).reshape(shape)


def _unpack_bytes(raw: bytes, name: str, count: int) -> list[bytes]:
    """BYTES elements in binary form: each a 4-byte little-endian length, then the bytes;
    reading stops one past the ``count`` the shape declares (refused by the caller)."""
    values, offset = [], 0
    while offset < len(raw) and len(values) <= count:
        if offset + 4 > len(raw):
            raise _bad(f"input {name!r}: truncated BYTES element", field=name)
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise _bad(f"input {name!r}: truncated BYTES element", field=name)
        values.append(raw[offset : offset + length])
        offset += length
    return values


def _from_json(data: Any, name: str, shape: list[int], datatype: str, images: bool) -> Any:
    if datatype == BYTES:
        values = [_text_element(v, name, images) for v in _flatten(data)]
        _check_count(values, name, shape)
        return values
    target = NUMERIC_TYPES[datatype]
    if target.kind == "f":
        # Straight to the target type: one conversion (booleans were searched for already;
        # strings and ragged lists raise).
        try:
            with np.errstate(over="ignore"):  # overflow becomes inf, refused downstream
                array = np.array(data, dtype=target)
        except (ValueError, TypeError, OverflowError):
            raise _bad(
                f"input {name!r}: data is not a (nested) list of {datatype} values",
                field=name,
                expected=f"{datatype} data",
            ) from None
    else:
        array = whole(data, name, datatype, target)
    if array.size != prod(shape):
        raise _bad(f"input {name!r}: {array.size} values for shape {shape}", field=name)
    return array.reshape(shape)


def whole(data: Any, name: str, datatype: str, target: np.dtype) -> np.ndarray:
    """Integer or boolean data: of that kind, within the type's range."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        array = np.asarray([])  # ragged: refused below as not of the type
    accepted = "b" if target.kind == "b" else "iu"
    if array.dtype.kind not in accepted:
        raise _bad(
            f"input {name!r}: data is not a (nested) list of {datatype} values",
            field=name,
            expected=f"{datatype} data" + (" (true/false)" if target.kind == "b" else ""),
        )
    if target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise _bad(
                f"input {name!r}: a value does not fit {datatype}",
                field=name,
                expected=f"integers from {info.min} to {info.max}",
            )
    return array.astype(target)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    return [value for item in data for value in _flatten(item)]


def _text_element(value: Any, name: str, images: bool) -> bytes:
    """BYTES in JSON are strings: base64 for image files, UTF-8 text otherwise."""
    if not isinstance(value, str):
        raise _bad(f"input {name!r}: BYTES data must be strings", field=name)
    if not images:
        return value.encode("utf-8")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(
            f"input {name!r}: not base64", field=name, expected="base64-encoded PNG or JPEG"
        ) from None


def _check_count(values: list[bytes], name: str, shape: list[int]) -> None:
    if len(values) != prod(shape):
        raise _bad(f"input {name!r}: {len(values)} elements for shape {shape}", field=name)


def requested_outputs(request: V2Request, view: SignatureView) -> tuple[RequestedOutput, ...]:
    """The outputs asked for (all by default), each in JSON or binary form."""
    parameters = request.parameters
    if not isinstance(parameters, dict):
        raise _bad("'parameters' must be an object", field="parameters")
    default_binary = parameters.get("binary_data_output") is True
    asked = request.outputs
    if asked is None:
        return tuple(RequestedOutput(t, default_binary) for t in view.outputs)
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise _bad("'outputs' must be a list of objects", field="outputs")
    chosen: list[RequestedOutput] = []
    for entry in asked:
        name = str(entry.get("name"))
        tensor = view.output(name)
        # Refused as Triton refuses it: each copy was answered, so 50,000 copies in a 1.6 MB
        # request made a 359 MB answer and held the event loop for ~1 s.
        if any(o.tensor is tensor for o in chosen):
            raise _bad(f"output {name[:60]!r} is asked for twice", field="outputs")
        options = _parameters(entry, "outputs")
        binary = options.get("binary_data", default_binary) is True
        chosen.append(
            RequestedOutput(
                tensor, binary, classification(options.get("classification", 0), tensor)
            )
        )
    return tuple(chosen)


def _parameters(document: dict[str, Any], field: str) -> dict[str, Any]:
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise _bad("'parameters' must be an object", field=field)
    return parameters


def classification(k: Any, tensor: Tensor) -> int:
    """The ``classification`` parameter of an output: a class count, on a classifier."""
    if k == 0 and not isinstance(k, bool):
        return 0
    if not tensor.classes or not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise _bad(
            f"classification={k!r} on output {tensor.name!r}",
            field="outputs",
            expected="a positive class count, on a probabilities output",
        )
    return k


# -- answers ------------------------------------------------------------------------------


def class_strings(probabilities: np.ndarray, labels: list[str], k: int) -> np.ndarray:
    """Triton's classification extension: the top k as ``"score:index:label"`` per row."""
    order = np.argsort(-probabilities, axis=1)[:, :k]
    return np.array(
        [
            [f"{row[i]:f}:{int(i)}:{labels[int(i)]}" for i in ranked]
            for ranked, row in zip(order, probabilities, strict=True)
        ],
        dtype=object,
    )


def answer_tensors(
    outputs: Outputs, wanted: tuple[RequestedOutput, ...], version: Version, view: SignatureView
) -> list[tuple[RequestedOutput, np.ndarray, str]]:
    """Each requested output's value and datatype (top-k strings when classification is
    asked for): what the HTTP and gRPC answers both write."""
    named = view.answer.present(outputs, version)
    found = []
    for output in wanted:
        value, datatype = named[output.tensor.name], output.tensor.datatype
        if output.classification:
            k = min(output.classification, value.shape[1])
            value, datatype = class_strings(value, list(output.tensor.classes), k), BYTES
        found.append((output, value, datatype))
    return found


def encode_answer(
    outputs: Outputs, request: InferRequest, version: Version, view: SignatureView
) -> Reply:
    entries, blobs = [], []
    for wanted, value, datatype in answer_tensors(outputs, request.outputs, version, view):
        entry: dict[str, Any] = {
            "name": wanted.tensor.name,
            "datatype": datatype,
            "shape": list(value.shape),
        }
        if wanted.binary:
            blob = to_raw(value, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _to_json(value, datatype)
        entries.append(entry)
    header: dict[str, Any] = {
        "model_name": request.model_name,
        "model_version": str(version.number),
        "outputs": entries,
    }
    if request.id is not None:
        header["id"] = request.id
    reply = json_reply(header)
    if blobs:
        reply.headers["Inference-Header-Content-Length"] = str(len(reply.body))
        reply.body += b"".join(blobs)
        reply.media_type = "application/octet-stream"
    return reply


def to_raw(value: np.ndarray, datatype: str) -> bytes:
    """An output as raw bytes: little-endian numbers, or length-prefixed BYTES elements."""
    if datatype == BYTES:
        encoded = [str(v).encode("utf-8") for v in value.ravel()]
        return b"".join(struct.pack("<I", len(e)) + e for e in encoded)
    return np.ascontiguousarray(value, dtype=NUMERIC_TYPES[datatype].newbyteorder("<")).tobytes()


def _to_json(value: np.ndarray, datatype: str) -> Any:
    if datatype == BYTES:
        return [str(v) for v in value.ravel()]
    if datatype == "FP16":  # JSON numbers; orjson writes float32 arrays, not float16
        return np.ascontiguousarray(value.ravel(), dtype=np.float32)
    return np.ascontiguousarray(value.ravel(), dtype=NUMERIC_TYPES[datatype])


# -- the HTTP adapter ------------------------------------------------------------------


class V2Infer:
    """A V2 infer request over HTTP, on the signature's shared batcher."""

    def __init__(self, runtime: Runtime, name: str, version: str | None) -> None:
        model, self.signature = v2_names.target(runtime, name)
        self.name = name
        label = f"/v2/models/{name}/infer"
        number = version_number(version)
        self.call = Call(model, number, self.signature, label, protocol_errors, "v2")

    async def decode(
        self, request: RawRequest, body: bytes, served: Version, limits: Limits
    ) -> Decoded:
        read = read_request(body, request.headers.get(HEADER_LENGTH), limits)
        # Data read into NumPy (float_data_read) holds no boolean: simdjson refuses them.
        listed = any(not isinstance(t.data, np.ndarray) for t in read.inputs)
        check = listed and might_hold_booleans(body)
        feed, wanted = await read_feed(read, served, self.signature, limits, check)
        return Decoded(self.signature, feed, InferRequest(read.id, wanted, self.name))

    def encode(self, outputs: Any, decoded: Decoded, served: Version) -> Reply:
        return encode_answer(outputs, decoded.context, served, served.views[decoded.signature])


async def infer(
    request: RawRequest, runtime: Runtime, name: str, version: str | None = None
) -> Reply:
    try:
        adapter = runtime.call(("v2", name, version), lambda: V2Infer(runtime, name, version))
    except RequestError as error:
        return protocol_errors(error)
    return await serve(request, runtime, adapter)
