"""Tensor and signature descriptions, written into every manifest."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from modelspec import interfaces

# The element types a graph input or output may have (numpy's names; ONNX's and Keras's
# map onto them). Anything else (strings, complex) no protocol here can carry.
DTYPES = frozenset(
    {"bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
     "float16", "float32", "float64"}
)  # fmt: skip
# A signature's name is a URL path segment (``/{model}/{signature}``, V2 ``<model>_<sig>``).
_SIGNATURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor; ``None`` in ``shape`` is a free dimension (the batch). ``range``
    bounds the values an input may take (inclusive); the service refuses others."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        # Manifests may come from anywhere (a user's export, a hand edit): a wrong one is
        # refused at load with the reason, not discovered by the first request.
        if not isinstance(self.name, str) or not 0 < len(self.name) <= 256:
            raise ValueError(f"tensor name {str(self.name)[:60]!r} must be 1-256 characters")
        if self.dtype not in DTYPES:
            raise ValueError(
                f"tensor {self.name!r}: dtype {str(self.dtype)[:30]!r} is not one of "
                f"{sorted(DTYPES)}"
            )
        if any(d is not None and not 0 < d < 2**31 for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: shape {self.shape} has a size out of range")
        if self.range is not None:
            low, high = self.range
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"tensor {self.name!r}: range {self.range} is not [low, high]")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "shape": [-1 if d is None else d for d in self.shape],
            "dtype": self.dtype,
        }
        if self.range is not None:
            data["range"] = [float(self.range[0]), float(self.range[1])]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        shape = tuple(None if d in (-1, None) else int(d) for d in data["shape"])
        bounds = data.get("range")
        return cls(
            name=data["name"],
            shape=shape,
            dtype=data["dtype"],
            range=None if bounds is None else (float(bounds[0]), float(bounds[1])),
        )


@dataclass(frozen=True)
class Signature:
    """One callable endpoint of a model (``predict``, ``encode``...), exported as its own graph.

    ``input_kind`` and ``answer`` say how the service reads its requests and writes its
    answers beyond plain tensors (``modelspec.interfaces``); ``saved_model_signature`` is
    its key in the SavedModel, when that differs from ``name`` (a user's serving_default).
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    onnx_file: str
    input_kind: str = interfaces.TENSOR
    answer: str = interfaces.TENSOR
    saved_model_signature: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SIGNATURE_NAME.fullmatch(self.name):
            raise ValueError(
                f"signature name {str(self.name)[:60]!r} must be 1-64 letters, digits, '.', "
                "'_' or '-', starting with a letter or digit"
            )
        interfaces.check(self.input_kind, self.answer)

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx": self.onnx_file,
            "saved_model_signature": self.saved_model_signature or self.name,
            "interface": {"input": self.input_kind, "answer": self.answer},
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any], model: str = "") -> Signature:
        """``model``: the model's name, for manifests from before interfaces were recorded."""
        default = interfaces.LEGACY.get((model, name), (interfaces.TENSOR, interfaces.TENSOR))
        interface = data.get("interface", {})
        return cls(
            name=name,
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            onnx_file=data["onnx"],
            input_kind=interface.get("input", default[0]),
            answer=interface.get("answer", default[1]),
            saved_model_signature=data.get("saved_model_signature"),
        )


def signatures_from_manifest(manifest: dict[str, Any]) -> tuple[Signature, ...]:
    model = manifest.get("name", "")
    return tuple(Signature.from_dict(n, d, model) for n, d in manifest["signatures"].items())
