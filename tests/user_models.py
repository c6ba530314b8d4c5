"""Small user models built in the test itself, and hostile variants of them: the inputs of
`training export` for files this project did not train."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

WIDTH, CLASSES = 64, 16


def onnx_weights() -> tuple[np.ndarray, np.ndarray]:
    w = np.linspace(-1, 1, WIDTH * CLASSES, dtype=np.float32).reshape(WIDTH, CLASSES)
    return w, np.linspace(0, 1, CLASSES, dtype=np.float32)


def tiny_onnx(
    path: Path,
    *,
    external: str | None = None,
    batch: bool = True,
    input_type: object = None,
    op: str = "MatMul",
) -> Path:
    """y = x @ w + b, with ``external`` naming the file its weights go to (beside it,
    relative to its folder, as ``onnx.save(..., save_as_external_data=True)`` writes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = onnx_weights()
    first = "batch" if batch else 2
    x = input_type or helper.make_tensor_value_info("x", TensorProto.FLOAT, [first, WIDTH])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [first, CLASSES])
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "affine",
        [x],
        [y],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the pinned ONNX Runtime reads
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        (path.parent / external).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path), save_as_external_data=True, location=external, size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def point_external_data(path: Path, location: str) -> None:
    """Rewrite where the graph says its tensors' data lies (files are left as they are)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(path))


def tiny_saved_model(folder: Path) -> Path:
    """A SavedModel with one signature: y = x @ w, x of shape [batch, 4]."""
    import tensorflow as tf

    class Affine(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def __call__(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.matmul(x, self.w)}

    module = Affine()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.__call__})
    return folder


def zip_with(path: Path, members: dict[str, bytes], stored: bool = False) -> Path:
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def zip_bomb(path: Path, member: str, inflated: int, extra: dict[str, bytes] | None = None) -> Path:
    """A small .keras whose ``member`` inflates to ``inflated`` bytes of JSON-ish spaces."""
    chunk = b" " * (1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
        with archive.open(member, "w", force_zip64=True) as out:
            out.write(b'{"config": {}, "pad": "')
            for _ in range(inflated >> 20):
                out.write(chunk)
            out.write(b'"}')
    return path


def lying_zip(path: Path, member: str, inflated: int, declared: int) -> Path:
    """A zip whose headers declare ``declared`` bytes for ``member`` while its data inflates
    to ``inflated``: a reader that trusts the header alone would be fooled."""
    zip_with(path, {member: b" " * inflated})
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        data[at + offset : at + offset + 4] = struct.pack("<I", declared)
    path.write_bytes(bytes(data))
    return path
