"""Tensor and signature descriptions, written into every manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor; ``None`` in ``shape`` is a free dimension (the batch). ``range``
    bounds the values an input may take (inclusive); the service refuses others."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    range: tuple[float, float] | None = None

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
    """One callable endpoint of a model (``predict``, ``encode``...), exported as its own graph."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    onnx_file: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx": self.onnx_file,
            "saved_model_signature": self.name,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> Signature:
        return cls(
            name=name,
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            onnx_file=data["onnx"],
        )


def signatures_from_manifest(manifest: dict[str, Any]) -> tuple[Signature, ...]:
    return tuple(Signature.from_dict(n, d) for n, d in manifest["signatures"].items())
