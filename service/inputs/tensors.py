"""Tensors from clients -> the arrays a graph takes: dtype, shape, range and finiteness checked.

A ``TensorContract`` is one graph input as requests may give it: the sample shapes accepted
(the first is the graph's; ``None`` is a free dimension), the dtype, and the allowed values.
``parse_tensor`` takes nested JSON lists or an array already decoded from a binary body and
returns ``(N, *shape)`` in the graph's dtype, or raises a ``RequestError`` naming the field,
the item and what was expected. One sample without a batch axis is N=1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from service.errors import PayloadTooLarge, RequestError

FIELD = "inputs"
Shape = tuple[int | None, ...]
FLOAT32 = np.dtype(np.float32)


@dataclass(frozen=True)
class TensorContract:
    """The sample shapes an input takes (the first one is canonical), its dtype and values."""

    shapes: tuple[Shape, ...]
    low: float | None = None
    high: float | None = None
    dtype: np.dtype = FLOAT32

    def bounded(self, bounds: tuple[float, float] | None) -> TensorContract:
        """This contract with the range a model's manifest declares, when it declares one."""
        if bounds is None:
            return self
        return replace(self, low=bounds[0], high=bounds[1])

    @property
    def fixed(self) -> bool:
        """Every sample has the same shape (so samples from many requests can be stacked)."""
        return None not in self.shapes[0]

    def describe(self) -> str:
        shapes = " or ".join(
            "(N, " + ", ".join("*" if d is None else str(d) for d in s) + ")" for s in self.shapes
        )
        kind = _KIND_NAMES.get(self.dtype.kind, str(self.dtype))
        if self.dtype.kind == "b":
            return f"{shapes} booleans"
        if self.low is None or self.high is None:
            return f"{shapes} {'finite ' if self.dtype.kind == 'f' else ''}{kind} ({self.dtype})"
        return f"{shapes} {kind} in [{self.low:g}, {self.high:g}]"

    def matching(self, shape: tuple[int, ...]) -> Shape | None:
        """The accepted sample shape ``shape`` fits, or None."""
        for accepted in self.shapes:
            if len(accepted) == len(shape) and all(
                a is None or a == d for a, d in zip(accepted, shape, strict=True)
            ):
                return accepted
        return None


_KIND_NAMES = {"f": "numbers", "i": "integers", "u": "non-negative integers", "b": "booleans"}


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
    """Nested lists (or an array) -> (N, *canonical shape) in the contract's dtype.
    ``field`` names the tensor in errors; ``check_booleans=False`` skips the search for
    booleans when the body is known to hold none."""
    wants_bool = contract.dtype.kind == "b"
    if check_booleans and not wants_bool and holds_boolean(value):
        raise _tensor_error("invalid_dtype", "tensor holds boolean values", contract, field)
    array = _as_array(value, contract, field)
    if array.shape == (0,):
        raise _empty(contract, field)
    if contract.matching(array.shape) is not None:
        array = array[np.newaxis]
    elif array.ndim == 0 or contract.matching(array.shape[1:]) is None:
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
    canonical = contract.shapes[0]
    if None not in canonical and array.shape[1:] != canonical:
        array = array.reshape((count, *canonical))  # an accepted alternative: (784,) -> (28, 28)
    return _converted(array, contract, field)


def _as_array(value: Any, contract: TensorContract, field: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        if value.dtype == contract.dtype:
            return value  # decoded by a protocol reader in this very type
        array = value
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError, OverflowError):
            raise _tensor_error(
                "invalid_shape", "tensor is ragged (rows of different lengths)", contract, field
            ) from None
    kind = array.dtype.kind
    if contract.dtype.kind == "b":
        if kind != "b":
            raise _tensor_error(
                "invalid_dtype", f"tensor holds {_kind_name(array)} values", contract, field
            )
    elif kind not in "iuf":
        raise _tensor_error(
            "invalid_dtype", f"tensor holds {_kind_name(array)} values", contract, field
        )
    return array


def _kind_name(array: np.ndarray) -> str:
    return {"b": "boolean", "U": "string", "S": "bytes", "O": "mixed", "f": "fractional"}.get(
        array.dtype.kind, "integer"
    )


def _converted(array: np.ndarray, contract: TensorContract, field: str) -> np.ndarray:
    target = contract.dtype
    if target.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):  # too large becomes inf: refused
            batch = array.astype(target, copy=False)
        _check_values(batch, contract, field)
        return batch
    if target.kind == "b":
        return array.astype(target, copy=False)
    return _integers(array, contract, field)


def _integers(array: np.ndarray, contract: TensorContract, field: str) -> np.ndarray:
    """Whole numbers only, within the dtype (and the declared range)."""
    target = contract.dtype
    if array.dtype.kind == "f":
        flat = array.reshape(len(array), -1)
        whole = np.isfinite(flat).all(axis=1) & (np.mod(flat, 1) == 0).all(axis=1)
        if not whole.all():
            raise _tensor_error(
                "invalid_dtype",
                "tensor holds fractional or non-finite values",
                contract,
                field,
                item=int(np.argmin(whole)),
            )
    info = np.iinfo(target)
    low = info.min if contract.low is None else max(info.min, contract.low)
    high = info.max if contract.high is None else min(info.max, contract.high)
    flat = array.reshape(len(array), -1)
    inside = ((flat >= low) & (flat <= high)).all(axis=1)
    if not inside.all():
        bounded = replace(contract, low=float(low), high=float(high))
        raise _tensor_error(
            "out_of_range",
            "tensor holds values outside the input's range",
            bounded,
            field,
            item=int(np.argmin(inside)),
        )
    return array.astype(target, copy=False)


def _tensor_error(
    code: str, message: str, contract: TensorContract, field: str, item: int | None = None
) -> RequestError:
    return RequestError(code, message, field=field, item=item, expected=contract.describe())


def _empty(contract: TensorContract, field: str) -> RequestError:
    return _tensor_error(
        "empty_batch", "tensor holds no items (at least one needed)", contract, field
    )


def _check_values(batch: np.ndarray, contract: TensorContract, field: str) -> None:
    """Whole-batch min/max first (NaN fails every comparison); per-item only on failure."""
    low = -np.inf if contract.low is None else contract.low
    high = np.inf if contract.high is None else contract.high
    if batch.size == 0:
        return
    if contract.low is not None and contract.high is not None:
        if batch.min() >= low and batch.max() <= high:  # NaN fails both; inf the bounds
            return
    elif np.isfinite(batch.sum(dtype=np.float64)) and batch.min() >= low and batch.max() <= high:
        return
    flat = batch.reshape(len(batch), -1)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        raise _tensor_error(
            "not_finite",
            "tensor holds NaN or infinity (or a number too large for its dtype)",
            contract,
            field,
            item=int(np.argmin(finite)),
        )
    inside = ((flat >= low) & (flat <= high)).all(axis=1)
    if inside.all():
        return  # the float64 sum overflowed, every value is still finite and in range
    raise _tensor_error(
        "out_of_range",
        "tensor holds values outside the model's input range",
        contract,
        field,
        item=int(np.argmin(inside)),
    )
