"""JSON tensors: ``{"inputs": nested lists}`` -> a float32 batch, shape and range checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import PayloadTooLarge, RequestError

FIELD = "inputs"


@dataclass(frozen=True)
class TensorContract:
    """The sample shapes a model takes (the first one is canonical) and the allowed values."""

    shapes: tuple[tuple[int, ...], ...]
    low: float | None = None
    high: float | None = None

    def bounded(self, bounds: tuple[float, float] | None) -> TensorContract:
        """This contract with the range a model's manifest declares, when it declares one."""
        if bounds is None:
            return self
        return TensorContract(self.shapes, bounds[0], bounds[1])

    def describe(self) -> str:
        shapes = " or ".join("(N, " + ", ".join(map(str, s)) + ")" for s in self.shapes)
        if self.low is None or self.high is None:
            return f"{shapes} finite numbers"
        return f"{shapes} numbers in [{self.low:g}, {self.high:g}]"


def unwrap(document: Any, allowed: Sequence[str] = (FIELD,)) -> Any:
    """The tensor value from ``{"inputs": ...}``, rejecting unknown keys (they are typos)."""
    if not isinstance(document, dict) or FIELD not in document:
        raise RequestError(
            "missing_field", f"body must be a JSON object with '{FIELD}'", field=FIELD
        )
    unknown = sorted(set(document) - set(allowed))
    if unknown:
        raise RequestError(
            "unknown_field", f"unknown fields {unknown}", field=unknown[0], expected=str(allowed)
        )
    return document[FIELD]


def might_hold_booleans(body: bytes) -> bool:
    """False when a JSON body cannot hold a boolean anywhere (the common case, found at
    memory speed), so the element-by-element search below runs only when it might matter."""
    return b"true" in body or b"false" in body


def holds_boolean(value: Any) -> bool:
    """True when nested lists hold a JSON boolean: NumPy would quietly read it as 1 or 0."""
    if isinstance(value, list):
        return any(holds_boolean(v) for v in value)
    return isinstance(value, bool)


def parse_tensor(
    value: Any,
    contract: TensorContract,
    max_items: int,
    field: str = FIELD,
    check_booleans: bool = True,
) -> np.ndarray:
    """Nested lists (or an array) -> (N, *canonical shape) float32; one sample without a
    batch axis is N=1. ``field`` names the tensor in errors; ``check_booleans=False`` skips
    the search for booleans when the body is known to hold none."""
    if check_booleans and holds_boolean(value):
        raise _tensor_error("invalid_dtype", "tensor holds boolean values", contract, field)
    array = _as_numeric_array(value, contract, field)
    if array.shape == (0,):
        raise _empty(contract, field)
    if array.shape in contract.shapes:
        array = array[np.newaxis]
    elif array.ndim == 0 or array.shape[1:] not in contract.shapes:
        raise _tensor_error(
            "invalid_shape", f"tensor has shape {list(array.shape)}", contract, field
        )
    count = array.shape[0]
    if count == 0:
        raise _empty(contract, field)
    if count > max_items:
        raise PayloadTooLarge(
            "too_many_items",
            f"{count} items in one request",
            field=field,
            expected=f"at most {max_items} items",
        )
    with np.errstate(over="ignore"):  # too large for float32 becomes inf, refused below
        batch = array.astype(np.float32).reshape((count, *contract.shapes[0]))
    _check_values(batch, contract, field)
    return batch


def _tensor_error(
    code: str, message: str, contract: TensorContract, field: str, item: int | None = None
) -> RequestError:
    return RequestError(code, message, field=field, item=item, expected=contract.describe())


def _empty(contract: TensorContract, field: str) -> RequestError:
    return _tensor_error(
        "empty_batch", "tensor holds no items (at least one needed)", contract, field
    )


def _as_numeric_array(value: Any, contract: TensorContract, field: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise _tensor_error(
            "invalid_shape", "tensor is ragged (rows of different lengths)", contract, field
        ) from None
    if array.dtype.kind not in "iuf":
        raise _tensor_error(
            "invalid_dtype", f"tensor holds {_kind_name(array)} values", contract, field
        )
    return array


def _kind_name(array: np.ndarray) -> str:
    return {"b": "boolean", "U": "string", "S": "bytes"}.get(array.dtype.kind, "non-numeric")


def _check_values(batch: np.ndarray, contract: TensorContract, field: str) -> None:
    """Whole-batch min/max first (NaN fails every comparison); per-item only on failure."""
    low = -np.inf if contract.low is None else contract.low
    high = np.inf if contract.high is None else contract.high
    if batch.min() >= low and batch.max() <= high and np.isfinite(batch.sum(dtype=np.float64)):
        return
    flat = batch.reshape(len(batch), -1)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        raise _tensor_error(
            "not_finite",
            "tensor holds NaN or infinity (or a number too large for float32)",
            contract,
            field,
            item=int(np.argmin(finite)),
        )
    inside = ((flat >= low) & (flat <= high)).all(axis=1)
    raise _tensor_error(
        "out_of_range",
        "tensor holds values outside the model's input range",
        contract,
        field,
        item=int(np.argmin(inside)),
    )
