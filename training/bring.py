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

import functools
import json
import logging
import math
import os
import re
import shutil
import stat
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelspec import Signature, TensorSpec
from modelspec.repository import (
    KERAS_MODEL,
    MANIFEST,
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
    compare,
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

SIGNATURE = "predict"  # a Keras or ONNX model's one signature; a SavedModel's default, unless taken
RELATIVE_TOLERANCE = 1e-5  # user models may output large values: |diff| <= 1e-4 + 1e-5 |y|
FREE_DIMENSION = 8  # the size generated inputs give a free dimension other than the batch
# 1,000 generated inputs of a 224 x 224 x 3 float32 image take 0.6 GB. Past this budget
# fewer are generated (the count is the parity record's "inputs"), and a signature whose one
# input alone exceeds it (a declared [batch, 100000, 100000]) is refused before allocating.
PARITY_BUDGET = 1 << 30
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


# A Keras config.json describes layers, not weights: a ResNet50's is 0.2 MB. Past this it is
# refused before it is inflated (a 0.5 MB archive once inflated to 512 MiB, twice, and took
# 1.6 GB of memory).
MAX_KERAS_CONFIG = 16 << 20
# Keras stores archive members uncompressed; a member inflating 100 times its stored size
# (past 1 MiB) is a zip bomb, not a model (Keras itself only refuses past 4 GiB).
ZIP_MAX_RATIO, ZIP_RATIO_FLOOR = 100, 1 << 20
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# TensorFlow's op names (tensorflow/python/framework/ops.py): a signature input named
# otherwise is renamed ('in put' -> 'in_put'), and TensorFlow then refuses its own SavedModel.
TF_INPUT_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")
TF_SCOPE_NAME = re.compile(r"[A-Za-z0-9_.\\/>-]*")  # a layer's name scope
# Files the export writes beside the graph: external data may not take their names.
WRITTEN_FILES = frozenset({MANIFEST, MODEL_CARD, KERAS_MODEL, SAVED_MODEL_DIR})


def kind_of(path: Path) -> str:
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise TrainingError(f"{path}: a folder, but not a SavedModel (it has no saved_model.pb)")
    if not path.is_file():
        raise TrainingError(f"{path}: not a regular file (a FIFO, socket or device)")
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix in (".keras", ".h5"):
        return "keras"
    raise TrainingError(
        f"{path}: not a Keras model file (.keras, .h5), a SavedModel directory "
        "(with saved_model.pb) or an ONNX file (.onnx)"
    )


def detail(error: BaseException, limit: int = 300) -> str:
    """A library's error in a few words: its first line, cut short (Keras puts a whole model
    config into some messages)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0].split(" Full object config:")[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def keras_archive_config(path: Path) -> dict[str, Any]:
    """The parsed config.json of a ``.keras`` archive, read once and bounded: the archive is
    checked to be a zip holding a JSON object config.json of at most MAX_KERAS_CONFIG bytes,
    with no member that inflates like a bomb, before anything is inflated. Read once per run
    (the CLI's seed-model check and the export share it); Keras reads it once more to load."""
    status = path.stat()
    return _archive_config(str(path), (status.st_ino, status.st_size, status.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _archive_config(name: str, identity: tuple[int, int, int]) -> dict[str, Any]:
    path = Path(name)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            for info in members:
                if info.file_size > max(ZIP_RATIO_FLOOR, ZIP_MAX_RATIO * info.compress_size):
                    raise TrainingError(
                        f"{path}: archive member {info.filename!r} inflates "
                        f"{info.compress_size:,} bytes to {info.file_size:,} (a zip bomb)"
                    )
            try:
                info = archive.getinfo("config.json")
            except KeyError:
                raise TrainingError(
                    f"{path}: a zip without config.json, not a Keras 3 .keras archive"
                ) from None
            if info.file_size > MAX_KERAS_CONFIG:
                raise TrainingError(
                    f"{path}: config.json inflates to {info.file_size:,} bytes, more than the "
                    f"{MAX_KERAS_CONFIG:,} a Keras model config may take"
                )
            with archive.open(info) as member:
                data = member.read(MAX_KERAS_CONFIG + 1)  # the header may lie about the size
            if len(data) > MAX_KERAS_CONFIG:
                raise TrainingError(f"{path}: config.json inflates past {MAX_KERAS_CONFIG:,} bytes")
    except TrainingError:
        raise
    except Exception as error:  # BadZipFile, zlib.error, EOFError, an unknown compression...
        raise TrainingError(
            f"{path}: not a readable .keras archive (a zip file): {detail(error)}"
        ) from None
    try:
        config = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise TrainingError(f"{path}: config.json is not JSON ({detail(error)})") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise TrainingError(f"{path}: config.json is not a Keras model config (no config object)")
    return config


def check_keras_file(path: Path) -> None:
    """Refuse what Keras would misreport: a non-zip .keras is 'File not found' to Keras."""
    if path.suffix == ".keras":
        keras_archive_config(path)
        return
    with path.open("rb") as handle:
        if handle.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise TrainingError(f"{path}: not an HDF5 file, so not a legacy Keras .h5 model")


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def refuse_special_files(top: Path, what: str = "a SavedModel") -> None:
    """Refuse a tree holding anything but regular files and folders. A symbolic link would
    copy (and hash into the manifest) whatever it points to, outside the model; a FIFO or a
    device would hang or never end the copy."""
    folders = [top]
    while folders:
        folder = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    folders.append(Path(entry.path))
                elif not stat.S_ISREG(mode):
                    relative = Path(entry.path).relative_to(top).as_posix()
                    raise TrainingError(
                        f"{top}: {relative!r} is {_kind(mode)}; {what} may hold only regular "
                        "files and folders"
                    )


def checked_name(name: str) -> str:
    """``name``, or a refusal naming the rule ('' included: an unset variable in --name)."""
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
    for spec in specs_in:
        if not TF_INPUT_NAME.fullmatch(spec.name):
            raise TrainingError(
                f"input {spec.name!r} cannot name a SavedModel input (TensorFlow takes letters, "
                "digits and . _ - / >, starting with a letter, digit or '.'): rename the Keras "
                "input"
            )
    for spec in specs_in + specs_out:
        if not spec.shape or spec.shape[0] is not None:
            raise TrainingError(f"tensor {spec.name!r} has no free batch dimension: {spec.shape}")
    signature = Signature(SIGNATURE, specs_in, specs_out, "model.onnx")
    return signature, [k for k, _ in items], [k for k, _ in outputs]


def refuse_untraceable_names(model: Any) -> None:
    """Refuse a layer name TensorFlow cannot trace as a name scope ('pr ob'): Keras runs such
    a model eagerly, but writing its SavedModel failed late, "Exception encountered when
    calling Functional.call()", naming neither the layer nor the rule. Nested models' layers
    are walked too."""
    layers = [model]
    while layers:
        layer = layers.pop()
        if not TF_SCOPE_NAME.fullmatch(layer.name):
            raise TrainingError(
                f"layer {layer.name!r} cannot be traced by TensorFlow (its names take letters, "
                "digits and _ . -): rename the layer"
            )
        layers.extend(getattr(layer, "layers", None) or [])


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

    try:
        loaded = tf.saved_model.load(str(directory))
    except Exception as error:  # TensorFlow raises many types for a broken SavedModel
        raise TrainingError(f"{directory}: not a loadable SavedModel ({detail(error)})") from None

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

    def same_function(key: str, other: str) -> bool:
        """Whether two signatures answer alike: the same tensors and the same outputs on a
        few generated inputs (an alias; the same shapes alone may be another function)."""
        if tensors(key) != tensors(other):
            return False
        probe = Signature("probe", *tensors(key), "")
        try:
            feed = {k: tf.constant(v) for k, v in generated_inputs(probe, 4).items()}
            one, two = loaded.signatures[key](**feed), loaded.signatures[other](**feed)
            return all(np.array_equal(one[k], two[k], equal_nan=True) for k in one)
        except Exception:  # a signature that cannot run on these is refused later on
            return False

    if "serving_default" in keys:  # often an alias of another signature (Keras exports)
        target = next((k for k in keys[1:] if same_function("serving_default", k)), None)
        if target is not None:  # the alias goes, its target takes its place as the default
            keys.remove("serving_default")
            keys.remove(target)
            keys.insert(0, target)
    found = []
    for i, key in enumerate(keys):
        # serving_default is 'predict', unless a signature of its own has that name: two of
        # one name left the manifest with only the second, the default silently gone.
        own = key == "serving_default" and SIGNATURE not in keys
        name = SIGNATURE if own else key
        if problem := name_problem(name):
            raise TrainingError(f"{directory}: signature {key!r} cannot be served: {problem}")
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


def onnx_signature(path: Path) -> tuple[Signature, list[str]]:
    """The graph's signature and the external data files it reads (relative to its folder).
    The tensors themselves are never read here: the checker follows them from the file."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises many types for a broken file
        raise TrainingError(f"{path}: not an ONNX model ({detail(error)})") from None
    external = external_data_files(path, model)
    try:
        onnx.checker.check_model(str(path))  # by path: external data checked where it lies
    except Exception as error:
        raise TrainingError(f"{path}: not a valid ONNX model ({detail(error)})") from None
    initialisers = {i.name for i in model.graph.initializer}

    def spec(value: Any, role: str) -> TensorSpec:
        if value.type.WhichOneof("value") != "tensor_type":
            raise TrainingError(f"{path}: {role} {value.name!r} is not a tensor")
        kind = value.type.tensor_type
        dtype = ONNX_DTYPES.get(kind.elem_type)
        if dtype is None:
            raise TrainingError(
                f"{path}: {role} {value.name!r} has ONNX element type {kind.elem_type}, "
                f"not one of {sorted(set(ONNX_DTYPES.values()))}"
            )
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim)
        if not shape or shape[0] is not None:
            raise TrainingError(
                f"{path}: {role} {value.name!r} has shape {shape}: its first dimension must "
                "be free (the batch)"
            )
        return TensorSpec(value.name, shape, dtype)

    inputs = tuple(spec(v, "input") for v in model.graph.input if v.name not in initialisers)
    outputs = tuple(spec(v, "output") for v in model.graph.output)
    if not inputs or not outputs:
        raise TrainingError(f"{path}: the graph has no {'inputs' if not inputs else 'outputs'}")
    return Signature(SIGNATURE, inputs, outputs, "model.onnx"), external


def external_data_files(path: Path, model: Any) -> list[str]:
    """Every file the graph's external data names, each checked to be a regular file inside
    the graph's own folder, reached through no symbolic link, and long enough for the bytes
    taken from it. Anything else (``..``, an absolute path, a link) is refused."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    folder = path.parent
    found: dict[str, int] = {}
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        try:
            info = ExternalDataInfo(tensor)
        except ValueError as error:
            raise TrainingError(
                f"{path}: tensor {tensor.name!r} has bad external data ({detail(error)})"
            ) from None
        where = f"{path}: tensor {tensor.name!r} keeps its data in {info.location!r}"
        location = info.location.replace("\\", "/")
        parts = [p for p in location.split("/") if p not in ("", ".")]
        if not parts or location.startswith("/") or ".." in parts or "\0" in location:
            raise TrainingError(f"{where}: external data must be a file inside {folder}")
        current = folder
        for index, part in enumerate(parts):
            current = current / part
            try:
                mode = current.lstat().st_mode
            except OSError:
                raise TrainingError(f"{where}, which does not exist beside the graph") from None
            last = index == len(parts) - 1
            if not (stat.S_ISREG(mode) if last else stat.S_ISDIR(mode)):
                what = "a folder" if stat.S_ISDIR(mode) else _kind(mode)
                raise TrainingError(
                    f"{where}, which is {what}; external data must be a regular file inside "
                    "the graph's folder"
                )
        relative = "/".join(parts)
        if parts[0] in WRITTEN_FILES or current.resolve() == path.resolve():
            raise TrainingError(f"{where}: that name is taken by the published files")
        end = (info.offset or 0) + (info.length or 0)
        if end > current.stat().st_size:
            raise TrainingError(f"{where}, which is shorter than the {end:,} bytes it needs")
        found[relative] = end
    return sorted(found)


# -- parity inputs ------------------------------------------------------------------------


def item_bytes(signature: Signature) -> int:
    """The bytes of one generated input (every tensor of the signature, free dims 8)."""
    return sum(
        math.prod(d or FREE_DIMENSION for d in spec.shape[1:]) * np.dtype(spec.dtype).itemsize
        for spec in signature.inputs
    )


def generated_count(signature: Signature) -> int:
    """How many inputs to generate: 1,000, or as many as PARITY_BUDGET holds."""
    return min(PARITY_MIN_INPUTS, PARITY_BUDGET // max(item_bytes(signature), 1))


def generated_inputs(signature: Signature, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` inputs from each input's dtype and shape: floats N(0, 1) (within a declared
    range when there is one), integers 0-3, booleans at random. Floats are drawn as float32
    (float64 only for float64): a float64 draw cast down took 3 times the final memory."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in signature.inputs:
        shape = (count, *[d or FREE_DIMENSION for d in spec.shape[1:]])
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            drawn = np.float64 if dtype == np.float64 else np.float32
            if spec.range is not None:
                low, high = spec.range
                values = rng.random(shape, dtype=drawn) * drawn(high - low) + drawn(low)
            else:
                values = rng.standard_normal(shape, dtype=drawn)
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
        count = generated_count(signature)
        if count < 1:
            raise TrainingError(
                f"one input of signature {signature.name!r} takes "
                f"{item_bytes(signature) / (1 << 30):.1f} GiB, more than the parity check's "
                f"{PARITY_BUDGET / (1 << 30):.1f} GiB (its shapes: "
                f"{[spec.shape for spec in signature.inputs]})"
            )
        if count == PARITY_MIN_INPUTS:
            return generated_inputs(signature, count), "generated inputs (dtype, shape)"
        would = item_bytes(signature) * PARITY_MIN_INPUTS / (1 << 20)
        source = f"{count} generated inputs (dtype, shape; 1,000 would take {would:,.0f} MiB)"
        return generated_inputs(signature, count), source
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
        with given[spec.name].open("rb") as handle:
            magic = handle.read(6)
        if not magic.startswith((b"\x93NUMPY", b"PK\x03\x04")):  # .npy, or .npz (a zip)
            raise TrainingError(f"{given[spec.name]}: not a .npy array (no NumPy header)")
        try:
            array = np.load(given[spec.name], allow_pickle=False)
        except Exception as error:  # OSError, ValueError, EOFError for a truncated file...
            raise TrainingError(f"{given[spec.name]}: not a .npy array ({detail(error)})") from None
        if not isinstance(array, np.ndarray):  # an .npz archive of several arrays
            raise TrainingError(f"{given[spec.name]}: an .npz of several arrays, not one .npy")
        if array.dtype.kind not in "biuf":
            raise TrainingError(
                f"{given[spec.name]}: {array.dtype} values, not numbers for input "
                f"{spec.name!r} ({spec.dtype})"
            )
        sample = tuple(d for d in spec.shape[1:])
        fits = len(array.shape) == len(spec.shape) and all(
            d is None or d == a for d, a in zip(sample, array.shape[1:], strict=True)
        )
        if not fits:
            raise TrainingError(
                f"{given[spec.name]}: shape {array.shape} does not fit input {spec.name!r} "
                f"{spec.shape}"
            )
        feed[spec.name] = array.astype(spec.dtype)
    count = len(next(iter(feed.values())))
    if any(len(v) != count for v in feed.values()):
        raise TrainingError("the --parity-inputs files hold different numbers of rows")
    source = f"{count} inputs from {', '.join(p.name for p in given.values())}"
    if count < generated_count(signature):
        extra = generated_inputs(signature, generated_count(signature) - count)
        feed = {k: np.concatenate([v, extra[k]]) for k, v in feed.items()}
        source += f", then {generated_count(signature) - count} generated"
    return feed, source


# -- what the service will require --------------------------------------------------------

ROWS_CHECKED = 4  # items run alone and together by check_servable


def check_servable(
    run: Runner, signature: Signature, feed: Mapping[str, np.ndarray], source: Path
) -> None:
    """Refuse a graph both runtimes agree on but the service cannot serve. The service
    warms each signature up on zeros (free dimensions 1) at batch 1 and at full batch and
    refuses output that is not one finite row per input row; and it batches requests from
    different clients together, so no row's answer may depend on another row. Checked here,
    on ONNX Runtime (what is served), the export fails instead of publishing a version the
    service would refuse or serve with answers that change with other clients' requests."""
    name = signature.name
    where = f"{source}: signature {name!r} cannot be served"
    for batch in (1, 2):
        zeros = {
            t.name: np.zeros((batch, *[d or 1 for d in t.shape[1:]]), np.dtype(t.dtype))
            for t in signature.inputs
        }
        try:
            outputs = run(name, zeros)
        except Exception as error:
            raise TrainingError(
                f"{where}: it fails on zeros with free dimensions 1, the input the service "
                f"warms every model up with ({detail(error)})"
            ) from None
        for key, value in outputs.items():
            if len(value) != batch:
                raise TrainingError(_rows(where, key, len(value), batch))
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise TrainingError(
                    f"{where}: output {key!r} is not finite on zeros (free dimensions 1), the "
                    "input the service warms every model up with"
                )
    rows = {k: v[:ROWS_CHECKED] for k, v in feed.items()}
    count = len(next(iter(rows.values())))
    together = run(name, rows)
    for key, value in together.items():
        if len(value) != count:
            raise TrainingError(_rows(where, key, len(value), count))
    for i in range(count):
        alone = run(name, {k: v[i : i + 1] for k, v in rows.items()})
        for key, value in alone.items():
            expected = together[key][i : i + 1]
            if value.dtype.kind in "iub":
                same = np.array_equal(value, expected)
            else:
                same, _ = compare(value, expected, PARITY_TOLERANCE, RELATIVE_TOLERANCE)
            if not same:
                raise TrainingError(
                    f"{where}: output {key!r} for row {i} run alone differs from the same "
                    "row run in a batch, so it depends on the other rows (the service "
                    "batches different clients' requests together)"
                )


def _rows(where: str, output: str, got: int, rows: int) -> str:
    return (
        f"{where}: output {output!r} has {got} row{'' if got == 1 else 's'} for {rows} input "
        "rows (the service needs one per input row)"
    )


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
    if name is not None:
        checked_name(name)  # before any loading: '' (an unset variable) is refused, not replaced
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

    check_keras_file(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file
        raise TrainingError(f"{path}: not a loadable Keras model ({detail(error)})") from None
    name = checked_name(name if name is not None else model.name)
    refuse_untraceable_names(model)
    try:
        signature, input_keys, _ = keras_signature(model)
    except TrainingError:
        raise
    except Exception as error:  # a model Keras loads but cannot describe (no inputs)
        raise TrainingError(
            f"{path}: the model's inputs and outputs cannot be read ({detail(error)})"
        ) from None
    endpoints = {SIGNATURE: keras_endpoint(model, input_keys, signature)}
    _check_reference(reference, signature)
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
    if isinstance(out, Path) and out.resolve().is_relative_to(path.resolve()):
        # The copy into the repository's staging folder would copy that folder too, and
        # recurse until the path grew too long.
        raise TrainingError(f"{path}: the repository {out} is inside the SavedModel folder")
    refuse_special_files(path)  # before TensorFlow reads it: a FIFO would hang the load
    signatures = saved_model_signatures(path)
    _check_reference(reference, signatures[0])
    with staging_area(out, name) as stage:
        # Links copied as links, and the copy checked again: nothing outside the folder gets
        # in even if the folder changed since it was checked.
        shutil.copytree(path, stage / SAVED_MODEL_DIR, symlinks=True)
        refuse_special_files(stage / SAVED_MODEL_DIR)
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
    signature, external = onnx_signature(path)
    _check_reference(reference, signature)
    check_runtime_loads(path)
    with staging_area(out, name) as stage:
        shutil.copyfile(path, stage / signature.onnx_file)
        # External data keeps its place relative to the graph, where ONNX Runtime (given the
        # graph's path) and onnx.load look for it; hash_tree puts each file in the manifest.
        for relative in external:
            (stage / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path.parent / relative, stage / relative, follow_symlinks=False)
        refuse_special_files(stage, "an ONNX model's folder")  # a file swapped for a link since
        runners = {
            "onnx_reference": reference_runner(stage, (signature,)),
            "onnx": onnx_runner(stage, (signature,)),
        }
        return _publish(
            stage, out, name, (signature,), runners, given, path, "ONNX", None, reference
        )


def check_runtime_loads(path: Path) -> None:
    """Refuse a graph the pinned ONNX Runtime cannot load (an opset past what it supports, an
    operator it does not know) in a line that says so. Its error was cut to 300 characters of
    a C++ function signature, naming the staging copy's path (gone by then) rather than the
    reason, which ONNX Runtime puts last ("... support for domain ai.onnx is till opset 28")."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:
        reason = re.sub(r"^/\S+:\d+ .*?\) ", "", str(error).split(" failed:", 1)[-1].strip())
        if len(reason) > 300:
            reason = re.split(r"(?<=\.) ", reason)[-1]
        raise TrainingError(
            f"{path}: ONNX Runtime {ort.__version__} cannot load it ({detail(reason)})"
        ) from None


def _check_reference(reference: Path | None, signature: Signature) -> None:
    """A ``--reference-inputs`` file that does not fit is refused before anything is staged."""
    if reference is not None:
        reference_stats.read_inputs(reference, signature)


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
            signature, given if signature is signatures[0] else {}
        )
    try:
        parity = check_parity(runners, inputs, described, PARITY_TOLERANCE, RELATIVE_TOLERANCE)
    except TrainingError:
        raise
    except Exception as error:  # a runtime that cannot run the model on these inputs
        raise TrainingError(
            f"{source}: the parity check could not run the model on {described} ({detail(error)})"
        ) from None
    for signature in signatures:
        check_servable(runners["onnx"], signature, inputs[signature.name], source)
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
