"""Tensor and signature descriptions, written into every manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelspec import interfaces


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
