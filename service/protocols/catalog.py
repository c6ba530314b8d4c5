"""What the standard protocols see of each model: named, typed tensors.

One table, shared by the V2 and TF Serving front ends, maps each protocol model to one of our
signatures, and its named input tensors to the very batch the native endpoint builds (same
contracts, same image preparation, same bank encoder), so the protocols cannot drift from
the native API. Encoded images travel as BYTES; the bank record as one tensor per column.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import Path as PathParameter
from starlette.requests import Request
from starlette.responses import Response

from modelspec import autoencoder, bank, flowers
from service.config import Limits
from service.endpoints import (
    AE_PIXELS,
    CODES,
    FLOWER_PIXELS,
    PIXELS_01,
    argmax_classes,
    digit_pixels,
    flower_pixels,
    threshold_classes,
)
from service.errors import NotFound, RequestError
from service.http import RawRequest, Reply
from service.inference import Call, Classify, Runtime, error_reply, handle, require_version
from service.inputs.body import Upload
from service.inputs.numbers import ascii_int
from service.inputs.records import encode_records
from service.inputs.tensors import TensorContract, parse_tensor
from service.registry import ServedModel

FP32, INT64, BYTES = "FP32", "INT64", "BYTES"

# A decoded input tensor: a numeric array (batch first) or a list of byte strings / values.
Column = np.ndarray | list[Any]
Columns = dict[str, Column]


@dataclass(frozen=True)
class Tensor:
    """A named tensor as protocols describe it; ``-1`` is the batch dimension.

    ``images``: BYTES values of this input are encoded PNG/JPEG files (accepted in place
    of the FP32 pixels). ``classes``: a probability per label, so the classification
    extension applies.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    images: bool = False
    classes: bool = False

    def shape_for(self, served: ServedModel) -> list[int]:
        """The shape with the class count of the loaded model filled in."""
        if self.classes and served.labels:
            return [-1, len(served.labels)]
        return list(self.shape)


@dataclass(frozen=True)
class ProtocolModel:
    """One model as V2 and TF Serving clients see it, and how to run it."""

    name: str
    model: str
    signature: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    batch: Callable[[Columns, ServedModel, Limits], Awaitable[np.ndarray]]
    present: Callable[[np.ndarray, ServedModel], dict[str, np.ndarray]]
    classify: Classify | None = None

    def output(self, name: str) -> Tensor:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise RequestError(
            "unknown_output",
            f"model {self.name!r} has no output {name!r}",
            field="outputs",
            expected=str([t.name for t in self.outputs]),
        )

    def check_inputs(self, names: Sequence[str]) -> None:
        expected = [t.name for t in self.inputs]
        unknown = sorted(set(names) - set(expected))
        if unknown:
            raise RequestError(
                "unknown_input",
                f"model {self.name!r} has no input {unknown[0]!r}",
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


# -- inputs -> batch --------------------------------------------------------------------


def _is_bytes_list(column: Column, name: str) -> bool:
    """True for a list of byte strings (encoded files); a list mixing them with anything
    else is refused rather than guessed at."""
    if not isinstance(column, list):
        return False
    count = sum(isinstance(v, bytes) for v in column)
    if 0 < count < len(column):
        raise RequestError(
            "invalid_dtype",
            "input mixes encoded images with other values",
            field=name,
            expected="all items encoded images, or all items numbers",
        )
    return count > 0


def _numbers(
    name: str,
    contract: TensorContract,
    from_images: Callable[[list[Upload], Limits], Awaitable[np.ndarray]] | None = None,
) -> Callable[[Columns, ServedModel, Limits], Awaitable[np.ndarray]]:
    """A numeric input checked against the native contract; pixel inputs also take images."""

    async def batch(columns: Columns, served: ServedModel, limits: Limits) -> np.ndarray:
        column = columns[name]
        bounded = contract.bounded(served.input_range(name))
        if _is_bytes_list(column, name):
            if from_images is None:
                raise RequestError(
                    "invalid_dtype", "bytes given", field=name, expected=bounded.describe()
                )
            return await from_images([Upload(name, data) for data in column], limits)
        # Booleans were searched for by the protocol's reader, which has the raw body.
        limit = limits.max_items_per_request
        return parse_tensor(column, bounded, limit, field=name, check_booleans=False)

    return batch


async def _flat_digit_pixels(uploads: list[Upload], limits: Limits) -> np.ndarray:
    return (await digit_pixels(uploads, limits)).reshape(-1, autoencoder.PIXELS)


def _scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _column_values(name: str, column: Any) -> list[Any]:
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


async def _bank_records(columns: Columns, model: ServedModel, limits: Limits) -> np.ndarray:
    """One tensor per bank column -> records -> the model's own encoder (strict policy)."""
    values = {name: _column_values(name, column) for name, column in columns.items()}
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
    return encode_records(records, model.bank_encoder, limits.max_items_per_request)


# -- outputs ------------------------------------------------------------------------------


def _named(name: str) -> Callable[[np.ndarray, ServedModel], dict[str, np.ndarray]]:
    return lambda outputs, _: {name: outputs}


def _bank_outputs(probability: np.ndarray, model: ServedModel) -> dict[str, np.ndarray]:
    labels = np.asarray(model.labels, dtype=object)
    return {
        "probability": probability,
        "label": labels[threshold_classes(probability, model)],
    }


def _bank_inputs() -> tuple[Tensor, ...]:
    return tuple(
        Tensor(column, INT64 if column in bank.NUMERIC else BYTES, (-1, 1))
        for column in bank.COLUMNS
    )


def _image(name: str, *shape: int) -> Tensor:
    return Tensor(name, FP32, (-1, *shape), images=True)


MODELS: dict[str, ProtocolModel] = {
    m.name: m
    for m in (
        ProtocolModel(
            "digits",
            "digits",
            "predict",
            (_image("image", 28, 28),),
            (Tensor("probabilities", FP32, (-1, 10), classes=True),),
            _numbers("image", PIXELS_01, digit_pixels),
            _named("probabilities"),
            argmax_classes,
        ),
        ProtocolModel(
            "flowers",
            "flowers",
            "predict",
            (_image("image", flowers.IMAGE_SIZE, flowers.IMAGE_SIZE, 3),),
            (Tensor("probabilities", FP32, (-1, -1), classes=True),),
            _numbers("image", FLOWER_PIXELS, flower_pixels),
            _named("probabilities"),
            argmax_classes,
        ),
        ProtocolModel(
            "bank",
            "bank",
            "predict",
            _bank_inputs(),
            (Tensor("probability", FP32, (-1, 1)), Tensor("label", BYTES, (-1,))),
            _bank_records,
            _bank_outputs,
            threshold_classes,
        ),
        ProtocolModel(
            "autoencoder_encode",
            "autoencoder",
            "encode",
            (_image("pixels", autoencoder.PIXELS),),
            (Tensor("code", FP32, (-1, autoencoder.CODE_SIZE)),),
            _numbers("pixels", AE_PIXELS, _flat_digit_pixels),
            _named("code"),
        ),
        ProtocolModel(
            "autoencoder_reconstruct",
            "autoencoder",
            "reconstruct",
            (_image("pixels", autoencoder.PIXELS),),
            (Tensor("reconstruction", FP32, (-1, autoencoder.PIXELS)),),
            _numbers("pixels", AE_PIXELS, _flat_digit_pixels),
            _named("reconstruction"),
        ),
        ProtocolModel(
            "autoencoder_decode",
            "autoencoder",
            "decode",
            (Tensor("code", FP32, (-1, autoencoder.CODE_SIZE)),),
            (Tensor("reconstruction", FP32, (-1, autoencoder.PIXELS)),),
            _numbers("code", CODES),
            _named("reconstruction"),
        ),
    )
}


def lookup(name: str) -> ProtocolModel:
    model = MODELS.get(name)
    if model is None:
        raise NotFound("unknown_model", f"no model named {name!r}", expected=str(list(MODELS)))
    return model


def served_model(runtime: Runtime, name: str, version: str | None) -> ServedModel:
    """The served model behind a protocol URL, whatever its state: a 404 for a model this
    service does not serve or a version it does not hold."""
    served = runtime.registry.find(name)
    require_version(served, version_number(version))
    return served


def version_number(text: str | None) -> int | None:
    """A version from a URL, or None; anything but digits is an unknown version (404)."""
    if text is None or text == "":
        return None
    number = ascii_int(text)
    if number is None:
        raise NotFound("unknown_version", f"no version {text[:40]!r}", field="version")
    return number


def class_strings(probabilities: np.ndarray, labels: Sequence[str], k: int) -> np.ndarray:
    """Triton's classification extension: the top k as ``"score:index:label"`` per row."""
    order = np.argsort(-probabilities, axis=1)[:, :k]
    return np.array(
        [
            [f"{row[i]:f}:{int(i)}:{labels[int(i)]}" for i in ranked]
            for ranked, row in zip(order, probabilities, strict=True)
        ],
        dtype=object,
    )


def protocol_errors(error: RequestError) -> Reply:
    """V2 and TF Serving clients know 400 and 404 (with ``{"error": ...}``); 413 and 503 keep
    their status (and Retry-After), as both protocols' own servers do."""
    reply = error_reply(error)
    if reply.status in (406, 415, 422):
        reply.status = 400
    return reply


CallBuilder = Callable[[str, str | None], Call]


async def run_call(
    request: RawRequest, build: CallBuilder, name: str, version: str | None, runtime: Runtime
) -> Reply:
    """Build the protocol's ``Call`` for this model name and version, then handle it."""
    try:
        call = build(name, version)
    except RequestError as error:
        return protocol_errors(error)
    return await handle(request, call, runtime)


async def routed(request: Request, build: CallBuilder, name: str, version: str | None) -> Response:
    """The same, behind FastAPI, for requests that do not take the fast path."""
    raw = RawRequest.from_scope(request.scope, request.receive)
    reply = await run_call(raw, build, name, version, request.app.state.runtime)
    return reply.to_response()


def name_parameter(names: Sequence[str]) -> Any:
    """A ``{name}`` path parameter documented with the names that exist, so API fuzzers reach
    the models; any other name still gets the protocol's 404, not a framework error."""
    return Annotated[str, PathParameter(json_schema_extra={"enum": list(names)})]


Version = Annotated[str, PathParameter(json_schema_extra={"pattern": "^[0-9]+$"})]
