"""Publish a model the project did not train: any Keras 3 model file, a SavedModel directory,
or an ONNX file (published as it is).

Signatures are read off the model itself: every input and output with its name, dtype and
shape, the batch dimension free. The export is checked like every other: Keras, the
SavedModel and ONNX Runtime (or, for an ONNX file, ONNX Runtime and ONNX's reference
implementation) must agree on at least 1,000 inputs, generated from each input's dtype and
shape or given by the user as ``.npy`` files. The manifest and a short card mark the model
as user-supplied: no training metrics, no test split.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelspec import Signature, TensorSpec
from modelspec.repository import (
    KERAS_MODEL,
    MODEL_CARD,
    SAVED_MODEL_DIR,
    name_problem,
    sha256_file,
)
from training import card
from training import reference as reference_stats
from training.errors import TrainingError
from training.export import (
    PARITY_MIN_INPUTS,
    PARITY_TOLERANCE,
    Runner,
    check_parity,
    convert_to_onnx,
    keras_runner,
    onnx_runner,
    reference_runner,
    saved_model_runner,
    write_saved_model,
)
from training.latency import cpu_latency
from training.publish import library_versions, now_iso, publish, staging_area

log = logging.getLogger(__name__)

SIGNATURE = "predict"  # the one signature of a Keras or ONNX model, and a SavedModel's default
RELATIVE_TOLERANCE = 1e-5  # user models may output large values: |diff| <= 1e-4 + 1e-5 |y|
FREE_DIMENSION = 8  # the size generated inputs give a free dimension other than the batch
ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
}


def kind_of(path: Path) -> str:
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "saved_model"
    if path.is_file() and path.suffix == ".onnx":
        return "onnx"
    if path.is_file() and path.suffix in (".keras", ".h5"):
        return "keras"
    raise TrainingError(
        f"{path}: not a Keras model file (.keras, .h5), a SavedModel directory "
        "(with saved_model.pb) or an ONNX file (.onnx)"
    )


def checked_name(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise TrainingError(f"{problem}; choose another with --name")
    return name


# -- signatures read off each kind of model -----------------------------------------------


def _clean(name: str, index: int, prefix: str) -> str:
    """Keras names inputs it was not given a name for 'keras_tensor_N': call them input_N."""
    if name.startswith("keras_tensor") or not name:
        return f"{prefix}_{index}" if index else prefix
    return name.split(":")[0]


def _structure(model: Any, attribute: str) -> Any:
    """A functional model's ``input``/``output`` (a dict when it was built with dicts); a
    loaded Sequential model has neither, only its ``inputs``/``outputs`` lists."""
    try:
        return getattr(model, attribute)
    except (AttributeError, ValueError):
        return None


def keras_signature(model: Any) -> tuple[Signature, list[str], list[str]]:
    """The model's one signature, and its input and output names as Keras keys them."""
    inputs = _structure(model, "input")
    items = (
        list(inputs.items()) if isinstance(inputs, dict) else [(t.name, t) for t in model.inputs]
    )
    output = _structure(model, "output")
    if isinstance(output, dict):
        outputs = list(output.items())
    else:
        names = getattr(model, "output_names", None) or [model.layers[-1].name]
        outputs = list(zip(names, model.outputs, strict=True))
    specs_in = tuple(
        TensorSpec(_clean(key, i, "input"), tuple(t.shape), str(t.dtype))
        for i, (key, t) in enumerate(items)
    )
    specs_out = tuple(
        TensorSpec(_clean(key, i, "output"), tuple(t.shape), str(t.dtype))
        for i, (key, t) in enumerate(outputs)
    )
    for spec in specs_in + specs_out:
        if not spec.shape or spec.shape[0] is not None:
            raise TrainingError(f"tensor {spec.name!r} has no free batch dimension: {spec.shape}")
    signature = Signature(SIGNATURE, specs_in, specs_out, "model.onnx")
    return signature, [k for k, _ in items], [k for k, _ in outputs]


def keras_endpoint(model: Any, input_keys: list[str], signature: Signature) -> Callable:
    """Positional inputs (the signature's order) -> {output name: tensor}."""
    as_dict = isinstance(_structure(model, "input"), dict)
    out_names = [t.name for t in signature.outputs]

    def endpoint(*args: Any) -> dict[str, Any]:
        if as_dict:
            given: Any = dict(zip(input_keys, args, strict=True))
        else:
            given = list(args) if len(args) > 1 else args[0]
        result = model(given, training=False)
        if isinstance(result, dict):
            values = list(result.values())
        elif isinstance(result, list | tuple):
            values = list(result)
        else:
            values = [result]
        return dict(zip(out_names, values, strict=True))

    return endpoint


def saved_model_signatures(directory: Path) -> tuple[Signature, ...]:
    """Every signature of a SavedModel; ``serving_default`` becomes ``predict``."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(directory))

    def spec(name: str, tensor: Any) -> TensorSpec:
        shape = tuple(tensor.shape.as_list()) if tensor.shape.rank is not None else ()
        return TensorSpec(name, shape, tensor.dtype.name)

    def tensors(key: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        function = loaded.signatures[key]
        _, named_inputs = function.structured_input_signature
        outputs = function.structured_outputs
        return (
            tuple(spec(n, t) for n, t in sorted(named_inputs.items())),
            tuple(spec(n, t) for n, t in sorted(outputs.items())),
        )

    keys = sorted(loaded.signatures, key=lambda k: (k != "serving_default", k))
    if not keys:
        raise TrainingError(f"{directory}: the SavedModel has no signatures")
    others = [tensors(k) for k in keys if k != "serving_default"]
    if "serving_default" in keys and tensors("serving_default") in others:
        keys.remove("serving_default")  # only an alias of another signature (Keras exports)
    found = []
    for i, key in enumerate(keys):
        name = SIGNATURE if key == "serving_default" else key
        checked_name(name)
        inputs, outputs = tensors(key)
        onnx_file = "model.onnx" if i == 0 else f"{name}.onnx"
        found.append(Signature(name, inputs, outputs, onnx_file, saved_model_signature=key))
    for signature in found:
        for tensor in signature.inputs + signature.outputs:
            if not tensor.shape or tensor.shape[0] is not None:
                raise TrainingError(
                    f"{signature.name}/{tensor.name}: no free batch dimension ({tensor.shape})"
                )
    return tuple(found)


def onnx_signature(path: Path) -> Signature:
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:  # onnx raises many types for a broken file
        raise TrainingError(f"{path} is not a valid ONNX model ({error})") from None
    initialisers = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        kind = value.type.tensor_type
        dtype = ONNX_DTYPES.get(kind.elem_type)
        if dtype is None:
            raise TrainingError(f"tensor {value.name!r}: ONNX element type {kind.elem_type}")
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim)
        if not shape or shape[0] is not None:
            raise TrainingError(
                f"tensor {value.name!r} has shape {shape}: its first dimension must be free "
                "(the batch)"
            )
        return TensorSpec(value.name, shape, dtype)

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initialisers)
    return Signature(SIGNATURE, inputs, tuple(spec(v) for v in model.graph.output), "model.onnx")


# -- parity inputs ------------------------------------------------------------------------


def generated_inputs(signature: Signature, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` inputs from each input's dtype and shape: floats N(0, 1) (within a declared
    range when there is one), integers 0-3, booleans at random."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in signature.inputs:
        shape = (count, *[d or FREE_DIMENSION for d in spec.shape[1:]])
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            values = rng.standard_normal(shape)
            if spec.range is not None:
                values = rng.uniform(spec.range[0], spec.range[1], shape)
        elif dtype.kind == "b":
            values = rng.random(shape) < 0.5
        else:
            values = rng.integers(0, 4, shape)
        feed[spec.name] = values.astype(dtype)
    return feed


def parity_inputs(
    signature: Signature, given: Mapping[str, Path]
) -> tuple[dict[str, np.ndarray], str]:
    """The user's inputs (``.npy`` per input name) topped up with generated ones to 1,000."""
    if not given:
        return generated_inputs(signature, PARITY_MIN_INPUTS), "generated inputs (dtype, shape)"
    names = [t.name for t in signature.inputs]
    if len(given) == 1 and "" in given:
        if len(names) != 1:
            raise TrainingError(f"name each input: --parity-inputs NAME=FILE.npy for {names}")
        given = {names[0]: given[""]}
    if set(given) != set(names):
        raise TrainingError(
            f"--parity-inputs needs exactly the inputs {names}, got {sorted(given)}"
        )
    feed = {}
    for spec in signature.inputs:
        try:
            array = np.load(given[spec.name], allow_pickle=False)
        except (OSError, ValueError) as error:
            raise TrainingError(f"{given[spec.name]}: not a .npy array ({error})") from None
        sample = tuple(d for d in spec.shape[1:])
        fits = len(array.shape) == len(spec.shape) and all(
            d is None or d == a for d, a in zip(sample, array.shape[1:], strict=True)
        )
        if not fits:
            raise TrainingError(f"{given[spec.name]}: shape {array.shape}, input {spec.shape}")
        feed[spec.name] = array.astype(spec.dtype)
    count = len(next(iter(feed.values())))
    if any(len(v) != count for v in feed.values()):
        raise TrainingError("the --parity-inputs files hold different numbers of rows")
    source = f"{count} inputs from {', '.join(p.name for p in given.values())}"
    if count < PARITY_MIN_INPUTS:
        extra = generated_inputs(signature, PARITY_MIN_INPUTS - count)
        feed = {k: np.concatenate([v, extra[k]]) for k, v in feed.items()}
        source += f", then {PARITY_MIN_INPUTS - count} generated"
    return feed, source


# -- the export ---------------------------------------------------------------------------


def export_user_model(
    path: Path,
    out: Path,
    name: str | None,
    opset: int,
    given: Mapping[str, Path],
    reference: Path | None = None,
) -> Path:
    """Publish ``path`` as the next version of model ``name`` under ``out``; ``reference``:
    a .npy sample of its training inputs, summarised as reference.json (drift checks)."""
    kind = kind_of(path)
    if kind == "keras":
        return _keras(path, out, name, opset, given, reference)
    if kind == "saved_model":
        return _saved_model(path, out, name or path.resolve().name, opset, given, reference)
    return _onnx(path, out, name or path.stem, given, reference)


def _keras(
    path: Path,
    out: Path,
    name: str | None,
    opset: int,
    given: Mapping[str, Path],
    reference: Path | None = None,
) -> Path:
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file
        raise TrainingError(f"{path} is not a loadable Keras model ({error})") from None
    name = checked_name(name or model.name)
    signature, input_keys, _ = keras_signature(model)
    endpoints = {SIGNATURE: keras_endpoint(model, input_keys, signature)}
    with staging_area(out, name) as stage:
        shutil.copyfile(path, stage / KERAS_MODEL)
        write_saved_model(model, endpoints, (signature,), stage / SAVED_MODEL_DIR)
        convert_to_onnx(stage / SAVED_MODEL_DIR, signature, stage / signature.onnx_file, opset)
        runners = {
            "keras": keras_runner(endpoints, (signature,)),
            "saved_model": saved_model_runner(stage / SAVED_MODEL_DIR, (signature,)),
            "onnx": onnx_runner(stage, (signature,)),
        }
        return _publish(
            stage, out, name, (signature,), runners, given, path, "Keras", opset, reference
        )


def _saved_model(
    path: Path,
    out: Path,
    name: str,
    opset: int,
    given: Mapping[str, Path],
    reference: Path | None = None,
) -> Path:
    name = checked_name(name)
    signatures = saved_model_signatures(path)
    with staging_area(out, name) as stage:
        shutil.copytree(path, stage / SAVED_MODEL_DIR)
        for signature in signatures:
            convert_to_onnx(stage / SAVED_MODEL_DIR, signature, stage / signature.onnx_file, opset)
        runners = {
            "saved_model": saved_model_runner(stage / SAVED_MODEL_DIR, signatures),
            "onnx": onnx_runner(stage, signatures),
        }
        return _publish(
            stage, out, name, signatures, runners, given, path, "SavedModel", opset, reference
        )


def _onnx(
    path: Path, out: Path, name: str, given: Mapping[str, Path], reference: Path | None = None
) -> Path:
    name = checked_name(name)
    signature = onnx_signature(path)
    with staging_area(out, name) as stage:
        shutil.copyfile(path, stage / signature.onnx_file)
        runners = {
            "onnx_reference": reference_runner(stage, (signature,)),
            "onnx": onnx_runner(stage, (signature,)),
        }
        return _publish(
            stage, out, name, (signature,), runners, given, path, "ONNX", None, reference
        )


def _publish(
    stage: Path,
    out: Path,
    name: str,
    signatures: tuple[Signature, ...],
    runners: dict[str, Runner],
    given: Mapping[str, Path],
    source: Path,
    kind: str,
    opset: int | None,
    reference: Path | None = None,
) -> Path:
    inputs, described = {}, ""
    for signature in signatures:
        inputs[signature.name], described = parity_inputs(
            signature, given if signature.name == SIGNATURE else {}
        )
    parity = check_parity(runners, inputs, described, PARITY_TOLERANCE, RELATIVE_TOLERANCE)
    if opset is not None:
        parity["opset"] = opset
    manifest: dict[str, Any] = {
        "name": name,
        "version": None,
        "created_at": now_iso(),
        "title": f"{name} (a user-supplied {kind} model)",
        "origin": "user",
        "source": {
            "format": kind,
            "path": source.name,
            **({"sha256": sha256_file(source)} if source.is_file() else {}),
        },
        "signatures": {s.name: s.to_dict() for s in signatures},
        "labels": [],
        "preprocessing": {},
        "metrics": {},
        "data": {},
        "test_split": {},
        "training": {"profile": "user-supplied"},
        "parity": parity,
        "latency": {s.name: cpu_latency(stage / s.onnx_file, s) for s in signatures},
        "libraries": library_versions(),
        "notes": [
            f"Exported from {source.name} ({kind}) by `python -m training export`: "
            "no training metrics and no test split are known to this project."
        ],
    }

    if reference is not None:  # the model's answers on the sample stand for its outputs'
        main = signatures[0]
        summary = reference_stats.from_file(reference, main, runners["onnx"], manifest)
        reference_stats.write(summary, stage)
        manifest["notes"].append(
            f"Drift reference (reference.json) from {reference.name}: {summary['items']} items."
        )

    def write_card(final: dict[str, Any], directory: Path) -> None:
        (directory / MODEL_CARD).write_text(card.render_user(final))

    target = publish(stage, out, name, manifest, write_card)
    log.info("%s: published %s", name, target)
    return target
