"""Keras -> SavedModel -> ONNX, and the parity check that all three give the same numbers.

tf2onnx's ``from_keras`` does not work with Keras 3, so the ONNX graph is converted from the
SavedModel, one signature at a time, by tf2onnx's own command line.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelspec import Signature
from training.errors import TrainingError

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4
PARITY_MIN_INPUTS = 1000
BATCH_DIM = "batch"

# A signature's Keras implementation: one input array in, {output name: array} out.
KerasFn = Callable[[Any], dict[str, Any]]


class ParityError(TrainingError):
    """An exported graph disagrees with the Keras model beyond the tolerance."""


def write_saved_model(
    model: Any, endpoints: Mapping[str, KerasFn], signatures: tuple[Signature, ...], out: Path
) -> None:
    """One SavedModel holding every signature; the first is also ``serving_default``."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    for signature in signatures:
        (spec,) = signature.inputs
        archive.add_endpoint(
            signature.name,
            endpoints[signature.name],
            input_signature=[tf.TensorSpec(spec.shape, tf.float32, name=spec.name)],
        )
    archive.write_out(str(out), verbose=False)


def convert_to_onnx(saved_model: Path, signature: Signature, out: Path, opset: int) -> None:
    """Convert one SavedModel signature with tf2onnx, then name the batch dimension."""
    command = [
        sys.executable,
        "-m",
        "tf2onnx.convert",
        "--saved-model",
        str(saved_model),
        "--signature_def",
        signature.name,
        "--opset",
        str(opset),
        "--output",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise TrainingError(f"tf2onnx failed for signature '{signature.name}':\n{tail}")
    _name_batch_dimension(out, signature)


def _name_batch_dimension(path: Path, signature: Signature) -> None:
    """tf2onnx calls the free dimension 'unk__N'; give it one readable name everywhere."""
    import onnx

    model = onnx.load(str(path))
    expected = {t.name for t in signature.inputs + signature.outputs}
    found = {v.name for v in list(model.graph.input) + list(model.graph.output)}
    if found != expected:
        raise TrainingError(f"{path.name}: tensors {sorted(found)}, expected {sorted(expected)}")
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@dataclass
class Runtimes:
    """The three ways to run a signature, each mapping a float32 batch to its outputs."""

    keras: Callable[[str, np.ndarray], dict[str, np.ndarray]]
    saved_model: Callable[[str, np.ndarray], dict[str, np.ndarray]]
    onnx: Callable[[str, np.ndarray], dict[str, np.ndarray]]


def keras_runner(endpoints: Mapping[str, KerasFn]) -> Callable[[str, np.ndarray], dict]:
    def run(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in endpoints[name](x).items()}

    return run


def saved_model_runner(directory: Path, signatures: tuple[Signature, ...]) -> Callable:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(directory))
    input_names = {s.name: s.inputs[0].name for s in signatures}

    def run(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        outputs = loaded.signatures[name](**{input_names[name]: tf.constant(x)})
        return {k: v.numpy() for k, v in outputs.items()}

    return run


def onnx_runner(directory: Path, signatures: tuple[Signature, ...]) -> Callable:
    import onnxruntime as ort

    sessions = {
        s.name: ort.InferenceSession(
            str(directory / s.onnx_file), providers=["CPUExecutionProvider"]
        )
        for s in signatures
    }

    def run(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
        session = sessions[name]
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, {session.get_inputs()[0].name: x})
        return dict(zip(names, values, strict=True))

    return run


def run_batched(
    run: Callable[[str, np.ndarray], dict[str, np.ndarray]],
    name: str,
    x: np.ndarray,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    parts = [run(name, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def check_parity(
    runtimes: Runtimes,
    inputs: Mapping[str, np.ndarray],
    source: str,
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, Any]:
    """Largest absolute difference of SavedModel and ONNX outputs from Keras, per signature.

    Raises ParityError when any exceeds ``tolerance``; the report says which.
    """
    report: dict[str, Any] = {"tolerance": tolerance, "input_source": source, "signatures": {}}
    failures = []
    for name, x in inputs.items():
        reference = run_batched(runtimes.keras, name, x)
        diffs = {}
        for backend, run in (("saved_model", runtimes.saved_model), ("onnx", runtimes.onnx)):
            got = run_batched(run, name, x)
            diffs[backend] = max(
                float(np.max(np.abs(got[k].astype(np.float64) - reference[k]))) for k in reference
            )
            if not diffs[backend] <= tolerance:
                failures.append(f"{name}/{backend}: max |diff| {diffs[backend]:.3g}")
        report["signatures"][name] = {"inputs": len(x), "max_abs_diff": diffs}
    report["passed"] = not failures
    if failures:
        raise ParityError(
            f"exported outputs differ from Keras by more than {tolerance}: " + "; ".join(failures)
        )
    return report
