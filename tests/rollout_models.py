"""Versions for roll-out tests and benchmarks, made from the quick models' real graphs: an
identical copy, a copy with perturbed weights (same signature, other answers), a slow copy
(the same answers after a costly side branch) and a copy that fails on real inputs (finite
on the warm-up's zeros, NaN on any image with ink). Each is published as the CLI publishes:
files first, the manifest (with every file's sha256) last."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from modelspec import repository

# Files the ONNX backend never opens: left out of the copies whose graph changes, as a
# deployment of the ONNX backend leaves them out (the manifest still lists them).
UNUSED = ("model.keras", "saved_model")


def _publish(source: Path, target: Path, graph=None) -> Path:
    """Copy a version folder to ``target`` with ``graph`` (an onnx ModelProto) as its
    model.onnx, the manifest written last."""
    import onnx

    stage = target.with_name(f".stage-{target.name}")
    shutil.copytree(source, stage, ignore=shutil.ignore_patterns(repository.MANIFEST))
    manifest = json.loads((source / repository.MANIFEST).read_text())
    if graph is not None:
        for unused in UNUSED:
            path = stage / unused
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        onnx.save(graph, stage / "model.onnx")
        manifest["files"]["model.onnx"] = repository.sha256_file(stage / "model.onnx")
    (stage / repository.MANIFEST).write_text(json.dumps(manifest))
    stage.rename(target)
    return target


def same(source: Path, target: Path) -> Path:
    return _publish(source, target)


def perturbed(source: Path, target: Path, scale: float, seed: int = 0) -> Path:
    """Every weight matrix plus Gaussian noise of ``scale`` times its own spread."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(source / "model.onnx")
    rng = np.random.default_rng(seed)
    for index, tensor in enumerate(graph.graph.initializer):
        value = numpy_helper.to_array(tensor)
        if value.dtype == np.float32 and value.ndim >= 2:
            noisy = value + rng.normal(0, scale * float(value.std()), value.shape)
            replaced = numpy_helper.from_array(noisy.astype(np.float32), tensor.name)
            graph.graph.initializer[index].CopyFrom(replaced)
    return _publish(source, target, graph)


def _with_side_branch(source: Path, nodes, initializers) -> object:
    """The graph with its one output renamed ``live`` and ``live + side`` as the output, the
    nodes computing ``side`` (shape [N, 1]) from the graph's one input."""
    import onnx

    graph = onnx.load(source / "model.onnx")
    output = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = ["live" if o == output else o for o in node.output]
    graph.graph.node.extend(nodes)
    graph.graph.node.append(onnx.helper.make_node("Add", ["live", "side"], [output]))
    graph.graph.initializer.extend(initializers)
    return graph


def _flat(input_name: str, width: int) -> list:
    from onnx import helper

    return [helper.make_node("Reshape", [input_name, "flat_shape"], ["flat"])], [
        _const("flat_shape", np.array([-1, width], np.int64))
    ]


def _const(name: str, value: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(value, name)


def slow(source: Path, target: Path, width: int = 1024, layers: int = 20) -> Path:
    """The same answers (``side`` is 0 times a bounded value) after ``layers`` dense tanh
    layers of ``width`` per item: ~2 * width^2 * layers multiply-adds per item."""
    import onnx
    from onnx import helper

    graph = onnx.load(source / "model.onnx")
    first = graph.graph.input[0]
    size = int(np.prod([d.dim_value for d in first.type.tensor_type.shape.dim[1:]]))
    nodes, inits = _flat(first.name, size)
    rng = np.random.default_rng(0)
    inits += [
        _const("w_in", (rng.standard_normal((size, width)) / np.sqrt(size)).astype(np.float32)),
        _const("w_mid", (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)),
        _const("zero", np.zeros((1,), np.float32)),
        _const("axis1", np.array([1], np.int64)),
    ]
    nodes += [helper.make_node("MatMul", ["flat", "w_in"], ["h0m"]),
              helper.make_node("Tanh", ["h0m"], ["h0"])]  # fmt: skip
    for layer in range(1, layers + 1):
        nodes += [
            helper.make_node("MatMul", [f"h{layer - 1}", "w_mid"], [f"h{layer}m"]),
            helper.make_node("Tanh", [f"h{layer}m"], [f"h{layer}"]),
        ]
    nodes += [
        helper.make_node("ReduceSum", [f"h{layers}", "axis1"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "zero"], ["side"]),
    ]
    del onnx  # the graph is built from the source's own
    return _publish(source, target, _with_side_branch(source, nodes, inits))


def failing(source: Path, target: Path) -> Path:
    """NaN answers for any input whose values sum above 0 (sqrt of the negated sum); the
    warm-up's zeros give finite ones, so the version loads and serves."""
    import onnx
    from onnx import helper

    graph = onnx.load(source / "model.onnx")
    first = graph.graph.input[0]
    size = int(np.prod([d.dim_value for d in first.type.tensor_type.shape.dim[1:]]))
    nodes, inits = _flat(first.name, size)
    inits += [_const("zero", np.zeros((1,), np.float32)), _const("axis1", np.array([1], np.int64))]
    nodes += [
        helper.make_node("ReduceSum", ["flat", "axis1"], ["total"], keepdims=1),
        helper.make_node("Neg", ["total"], ["negated"]),
        helper.make_node("Sqrt", ["negated"], ["root"]),
        helper.make_node("Mul", ["root", "zero"], ["side"]),
    ]
    return _publish(source, target, _with_side_branch(source, nodes, inits))
