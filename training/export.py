"""Keras -> SavedModel -> ONNX, and the parity check that all three give the same numbers.

tf2onnx's ``from_keras`` does not work with Keras 3, so the ONNX graph is converted from the
SavedModel, one signature at a time, by tf2onnx's own command line.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelspec import Signature
from training.errors import TrainingError

log = logging.getLogger(__name__)
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
    """One SavedModel holding every signature; the first is also ``serving_default``. Each
    endpoint takes the signature's inputs positionally, in the manifest's order."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    for signature in signatures:
        archive.add_endpoint(
            signature.name,
            endpoints[signature.name],
            input_signature=[
                tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name=spec.name)
                for spec in signature.inputs
            ],
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
        signature.saved_model_signature or signature.name,
        "--opset",
        str(opset),
        "--output",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        log.warning("tf2onnx output, last lines: %s", " | ".join(lines[-15:]))
        # The reason is the last line naming an error; the rest is a traceback.
        reason = next((line for line in reversed(lines) if "Error" in line), None)
        raise TrainingError(
            f"tf2onnx failed for signature '{signature.name}' (opset {opset}): "
            f"{reason or (lines[-1] if lines else f'exit code {result.returncode}')}"
        )
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


# A runner takes a signature's inputs (one array for a one-input signature, or a dict by
# name) and returns its outputs by name: Keras, the SavedModel and ONNX Runtime alike.
Feed = np.ndarray | dict[str, np.ndarray]
Runner = Callable[[str, Feed], dict[str, np.ndarray]]


def _named(x: Feed, names: list[str]) -> dict[str, np.ndarray]:
    return x if isinstance(x, dict) else {names[0]: x}


def keras_runner(
    endpoints: Mapping[str, KerasFn], signatures: tuple[Signature, ...] = ()
) -> Runner:
    order = {s.name: [t.name for t in s.inputs] for s in signatures}

    def run(name: str, x: Feed) -> dict[str, np.ndarray]:
        args = [x[n] for n in order[name]] if isinstance(x, dict) else [x]
        return {k: np.asarray(v) for k, v in endpoints[name](*args).items()}

    return run


def saved_model_runner(directory: Path, signatures: tuple[Signature, ...]) -> Runner:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(directory))
    names = {s.name: [t.name for t in s.inputs] for s in signatures}
    keys = {s.name: s.saved_model_signature or s.name for s in signatures}

    def run(name: str, x: Feed) -> dict[str, np.ndarray]:
        feed = _named(x, names[name])
        outputs = loaded.signatures[keys[name]](**{k: tf.constant(v) for k, v in feed.items()})
        return {k: v.numpy() for k, v in outputs.items()}

    return run


def onnx_runner(directory: Path, signatures: tuple[Signature, ...]) -> Runner:
    import onnxruntime as ort

    sessions = {
        s.name: ort.InferenceSession(
            str(directory / s.onnx_file), providers=["CPUExecutionProvider"]
        )
        for s in signatures
    }

    def run(name: str, x: Feed) -> dict[str, np.ndarray]:
        session = sessions[name]
        feed = _named(x, [i.name for i in session.get_inputs()])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed), strict=True))

    return run


def reference_runner(directory: Path, signatures: tuple[Signature, ...]) -> Runner:
    """ONNX's own reference implementation (``onnx.reference``): slow, plain NumPy, and
    written independently of ONNX Runtime, so agreeing with it means something."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    evaluators = {
        s.name: ReferenceEvaluator(onnx.load(str(directory / s.onnx_file))) for s in signatures
    }
    outputs = {s.name: [t.name for t in s.outputs] for s in signatures}
    inputs = {s.name: [t.name for t in s.inputs] for s in signatures}

    def run(name: str, x: Feed) -> dict[str, np.ndarray]:
        values = evaluators[name].run(outputs[name], _named(x, inputs[name]))
        return dict(zip(outputs[name], values, strict=True))

    return run


# A batch holds at most this many bytes of input, whatever ``batch_size`` says. A model's
# activations grow with its input, and TensorFlow keeps the memory of its largest batch:
# Keras ran the 224 px flowers model on 256 photos (154 MB of input) in 23 GB, which killed
# the full training on this 24 GB machine; 32 photos took 3.8 GB, and ran 5x faster.
BATCH_BYTES = 16 << 20


def run_batched(run: Runner, name: str, x: Feed, batch_size: int = 64) -> dict[str, np.ndarray]:
    """``run`` over ``x`` in batches of ``batch_size`` items, fewer where an item is large
    (``BATCH_BYTES``), the outputs joined."""
    arrays = list(x.values()) if isinstance(x, dict) else [x]
    count = len(arrays[0])
    item_bytes = sum(a.nbytes for a in arrays) // max(count, 1)
    batch_size = max(1, min(batch_size, BATCH_BYTES // max(item_bytes, 1)))

    def part(i: int) -> Feed:
        if isinstance(x, dict):
            return {k: v[i : i + batch_size] for k, v in x.items()}
        return x[i : i + batch_size]

    parts = [run(name, part(i)) for i in range(0, count, batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def compare(
    value: np.ndarray, expected: np.ndarray, tolerance: float, relative: float = 0.0
) -> tuple[bool, float]:
    """Whether float outputs agree within ``tolerance + relative * |expected|`` everywhere,
    and their largest difference. NaN, or the same infinity, in both is agreement (sqrt of a
    negative input is NaN in every runtime); NaN in one only, or a finite value for an
    infinity (which a relative tolerance would allow), is not; nor are two shapes
    (broadcasting would compare something else)."""
    if value.shape != expected.shape:
        return False, float("nan")
    value, expected = value.astype(np.float64), expected.astype(np.float64)
    same = (value == expected) | (np.isnan(value) & np.isnan(expected))
    delta = np.where(same, 0.0, np.abs(value - expected))
    allowed = tolerance + relative * np.abs(expected)
    agree = bool(np.all(same | (np.isfinite(expected) & (delta <= allowed))))
    return agree, float(delta.max()) if delta.size else 0.0


def check_parity(
    runners: Mapping[str, Runner],
    inputs: Mapping[str, Feed],
    source: str,
    tolerance: float = PARITY_TOLERANCE,
    relative: float = 0.0,
) -> dict[str, Any]:
    """Largest difference of each runner's outputs from the first runner's (the reference:
    Keras when there is one), per signature. Fails when any output differs by more than
    ``tolerance + relative * |reference|`` anywhere; the report says where.
    """
    (reference_name, reference_run), *others = runners.items()
    report: dict[str, Any] = {
        "tolerance": tolerance,
        "relative_tolerance": relative,
        "reference": reference_name,
        "input_source": source,
        "signatures": {},
    }
    failures = []
    for name, x in inputs.items():
        reference = run_batched(reference_run, name, x)
        diffs = {}
        for backend, run in others:
            got = run_batched(run, name, x)
            worst = 0.0
            for key, expected in reference.items():
                value = got[key]
                if expected.dtype.kind in "iub":  # integers and booleans: equal or not
                    if not np.array_equal(value, expected):
                        failures.append(f"{name}/{backend}/{key}: values differ")
                    continue
                agree, delta = compare(value, expected, tolerance, relative)
                worst = max(worst, delta)
                if not agree:
                    failures.append(f"{name}/{backend}: max |diff| {delta:.3g} ({key})")
            diffs[backend] = worst
        count = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
        report["signatures"][name] = {"inputs": count, "max_abs_diff": diffs}
    report["passed"] = not failures
    if failures:
        raise ParityError(
            f"exported outputs differ from {reference_name} by more than the tolerance: "
            + "; ".join(failures)
        )
    return report
