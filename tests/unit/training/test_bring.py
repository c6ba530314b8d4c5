"""training.bring's pieces for a user's model, without a model trained or exported: names,
the signature read off an ONNX graph made here, and the parity inputs from .npy files."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from modelspec import Signature, TensorSpec
from tests.unit.synthetic import CLASSES, WIDTH, affine_onnx
from training.bring import checked_name, generated_inputs, onnx_signature, parity_inputs
from training.errors import TrainingError
from training.export import PARITY_MIN_INPUTS

SIGNATURE = Signature(
    "predict",
    (TensorSpec("x", (None, WIDTH)), TensorSpec("n", (None, 2), "int64")),
    (TensorSpec("y", (None, CLASSES)),),
    "model.onnx",
)


@pytest.mark.parametrize("name", ["iris", "my-model_2", "a.b", "9lives"])
def test_valid_names_pass(name: str) -> None:
    assert checked_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "../x", "a/b", "a b", "-lead", "models", "v2", "x" * 65, "a\nb"]
)
def test_names_that_cannot_be_a_url_segment_are_refused(name: str) -> None:
    with pytest.raises(TrainingError, match="choose another with --name"):
        checked_name(name)


def test_the_signature_is_read_off_the_graph(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(affine_onnx("features", "scores"))
    signature, external = onnx_signature(path)
    assert external == []
    assert [(t.name, t.shape, t.dtype) for t in signature.inputs] == [
        ("features", (None, WIDTH), "float32")
    ]
    assert [(t.name, t.shape) for t in signature.outputs] == [("scores", (None, CLASSES))]


def test_a_file_that_is_no_graph_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not a graph")
    with pytest.raises(TrainingError, match=r"not (an|a valid) ONNX model"):
        onnx_signature(path)


def test_generated_inputs_follow_dtype_shape_and_range() -> None:
    ranged = Signature("p", (TensorSpec("x", (None, 3), range=(2.0, 3.0)),), SIGNATURE.outputs, "m")
    feed = generated_inputs(ranged, 50)
    assert feed["x"].shape == (50, 3) and feed["x"].dtype == np.float32
    assert feed["x"].min() >= 2.0 and feed["x"].max() <= 3.0
    mixed = generated_inputs(SIGNATURE, 10)
    assert mixed["n"].dtype == np.int64 and set(np.unique(mixed["n"])) <= {0, 1, 2, 3}


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def test_the_users_inputs_come_first_then_generated_ones(tmp_path: Path) -> None:
    x = np.arange(5 * WIDTH, dtype=np.float64).reshape(5, WIDTH)
    n = np.ones((5, 2), np.int32)
    given = {"x": _npy(tmp_path / "x.npy", x), "n": _npy(tmp_path / "n.npy", n)}
    feed, source = parity_inputs(SIGNATURE, given)
    assert feed["x"].shape == (PARITY_MIN_INPUTS, WIDTH) and feed["x"].dtype == np.float32
    np.testing.assert_array_equal(feed["x"][:5], x.astype(np.float32))
    assert feed["n"].dtype == np.int64
    assert source == f"5 inputs from x.npy, n.npy, then {PARITY_MIN_INPUTS - 5} generated"


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda t: {"x": _npy(t / "x.npy", np.zeros((2, WIDTH)))}, "needs exactly the inputs"),
        (lambda t: {"": _npy(t / "x.npy", np.zeros((2, WIDTH)))}, "name each input"),
        (
            lambda t: {
                "x": _npy(t / "x.npy", np.zeros((2, WIDTH + 1))),
                "n": _npy(t / "n.npy", np.zeros((2, 2))),
            },
            "does not fit input 'x'",
        ),
        (
            lambda t: {
                "x": _npy(t / "x.npy", np.zeros((2, WIDTH))),
                "n": _npy(t / "n.npy", np.zeros((3, 2))),
            },
            "different numbers of rows",
        ),
        (
            lambda t: {
                "x": _npy(t / "x.npy", np.array([["a"] * WIDTH])),
                "n": _npy(t / "n.npy", np.zeros((1, 2))),
            },
            "not numbers for input 'x'",
        ),
        (
            lambda t: {"x": (t / "x.npy"), "n": _npy(t / "n.npy", np.zeros((1, 2)))},
            "no NumPy header",
        ),
        (
            lambda t: {
                "x": _npz(t / "x.npz", a=np.zeros((1, WIDTH)), b=np.zeros(1)),
                "n": _npy(t / "n.npy", np.zeros((1, 2))),
            },
            "several arrays",
        ),
    ],
)
def test_parity_inputs_that_do_not_fit_are_refused_naming_why(
    tmp_path: Path, make, problem: str
) -> None:
    (tmp_path / "x.npy").write_bytes(b"plain text, no header")  # replaced where a test saves one
    given = make(tmp_path)
    with pytest.raises(TrainingError, match=problem):
        parity_inputs(SIGNATURE, given)


def test_a_zip_that_is_no_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    given = {"x": path, "n": _npy(tmp_path / "n.npy", np.zeros((1, 2)))}
    with pytest.raises(TrainingError, match=r"x\.npz"):
        parity_inputs(SIGNATURE, given)


def _graph(nodes: list, weights: dict | None = None, inputs: dict | None = None) -> bytes:
    from tests.unit.synthetic import onnx_model

    return onnx_model(nodes, inputs or {"x": ["batch", WIDTH]}, {"y": ["batch", WIDTH]}, weights)


def _unservable_graphs() -> dict[str, tuple[bytes, str]]:
    """Graphs the parity check passes (both runtimes agree) but the service cannot serve."""
    from onnx import helper

    node = helper.make_node
    return {
        # Each row minus the batch's mean: a request's answer would depend on whichever
        # other clients' requests the service batched it with.
        "mixes_rows": (
            _graph(
                [
                    node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
                    node("Sub", ["x", "m"], ["y"]),
                ]
            ),
            "depends on the other rows",
        ),
        # One row whatever the batch, declared [batch, 4]: a batched request got 0 rows.
        "one_row": (
            _graph(
                [node("ReduceSum", ["x", "a"], ["y"], keepdims=1)], {"a": np.array([0], np.int64)}
            ),
            "1 row for 2 input rows",
        ),
        # x / |x|: NaN on the zeros the service warms every model up with.
        "nan_on_zeros": (
            _graph(
                [
                    node("ReduceL2", ["x"], ["n"], axes=[1], keepdims=1),
                    node("Div", ["x", "n"], ["y"]),
                ]
            ),
            "not finite",
        ),
    }


@pytest.mark.parametrize("case", sorted(_unservable_graphs()))
def test_a_graph_the_service_would_refuse_is_not_published(tmp_path: Path, case: str) -> None:
    """Each of these used to be published, then refused by the service at warm-up ('gave
    unusable output') or served with answers that depend on other clients' requests."""
    from training.bring import export_user_model

    data, reason = _unservable_graphs()[case]
    path = tmp_path / f"{case}.onnx"
    path.write_bytes(data)
    out = tmp_path / "models"
    with pytest.raises(TrainingError, match=reason):
        export_user_model(path, out, None, 17, {})
    assert not out.exists() or list(out.iterdir()) == []


def test_nan_where_both_runtimes_give_nan_is_agreement(tmp_path: Path) -> None:
    """sqrt(x) is NaN for the negative half of the generated N(0, 1) inputs, in ONNX Runtime
    and the reference alike: the export used to fail, "differ by more than the tolerance:
    max |diff| nan". NaN in one runtime only, an infinity of the other sign, or a finite
    value for an infinity (which a relative tolerance used to allow) still fails."""
    from onnx import helper

    from training.bring import export_user_model
    from training.export import ParityError, check_parity

    path = tmp_path / "root.onnx"
    path.write_bytes(_graph([helper.make_node("Sqrt", ["x"], ["y"])]))
    published = export_user_model(path, tmp_path / "models", None, 17, {})
    assert published == tmp_path / "models" / "root" / "1"

    expected = np.array([[np.nan, np.inf, -np.inf, 1.0]], np.float32)
    feed = {"predict": np.zeros((1, 4), np.float32)}
    wrong = [[1.0, np.inf, -np.inf, 1.0], [np.nan, -np.inf, -np.inf, 1.0]]
    wrong.append([np.nan, 3e38, -np.inf, 1.0])
    for got in wrong:

        def runners(answer: list) -> dict:
            return {
                "a": lambda name, x: {"y": expected},
                "b": lambda name, x: {"y": np.array(answer, np.float32)},
            }

        with pytest.raises(ParityError, match="max"):
            check_parity(runners(got), feed, "test", relative=1e-5)
    assert check_parity(runners(expected.tolist()), feed, "test", relative=1e-5)["passed"]


def test_generated_parity_inputs_fit_a_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 generated inputs of a declared [batch, 3, 512, 512] took 3 GB as float32 and
    twice that again as the float64 they were drawn in; a declared [batch, 100000, 100000]
    asked NumPy for 75 TiB. Fewer inputs when 1,000 do not fit the budget, none past it: a
    clear refusal before anything is allocated. Export peak RSS measured for a ReduceMean
    graph of [batch, 3, side, side]: 256: 2.41 GB before, 1.64 GB after (1,000 inputs);
    512: 341 inputs, 2.2 GB after."""
    import training.bring as bring

    monkeypatch.setattr(bring, "PARITY_BUDGET", 1 << 20)
    image = Signature("p", (TensorSpec("x", (None, 64, 64)),), SIGNATURE.outputs, "m")
    feed, source = parity_inputs(image, {})
    assert feed["x"].shape == (64, 64, 64) and feed["x"].dtype == np.float32  # 16 KiB each
    assert source == "64 generated inputs (dtype, shape; 1,000 would take 16 MiB)"

    huge = Signature("p", (TensorSpec("x", (None, 100_000, 100_000)),), SIGNATURE.outputs, "m")
    with pytest.raises(TrainingError, match=r"one input .* takes 37\.3 GiB"):
        parity_inputs(huge, {})


@pytest.mark.parametrize("name", ["in put", "größe", "-x"])
def test_a_keras_input_name_tensorflow_cannot_take_is_refused_naming_it(name: str) -> None:
    """TensorFlow renames such a signature input ('in put' -> 'in_put') and then refuses its
    own SavedModel: the export failed after loading TensorFlow and writing the SavedModel,
    "Got non-flat/non-unique argument names ... more than one argument ... was named 'in
    put'", cut to 300 characters, without saying which name to change or how."""
    import keras

    from training.bring import keras_signature

    inputs = keras.Input((4,), name=name)
    model = keras.Model(inputs, keras.layers.Dense(2, name="scores")(inputs))
    with pytest.raises(TrainingError, match="rename the Keras input") as refused:
        keras_signature(model)
    assert repr(name) in str(refused.value)
    fine = keras.Input((4,), name="seq.len_1-b")  # what TensorFlow takes passes
    assert keras_signature(keras.Model(fine, keras.layers.Dense(2)(fine)))[0].inputs[0].name == (
        "seq.len_1-b"
    )


def test_a_saved_models_own_predict_signature_keeps_serving_default_apart(tmp_path: Path) -> None:
    """``serving_default`` is published as ``predict``; a SavedModel with a distinct
    signature of its own called ``predict`` had two signatures of one name, and the manifest
    kept only the second: the default endpoint silently vanished (its model.onnx published,
    hashed, and named by no signature) and the model's V2 name served the other function."""
    import tensorflow as tf

    from training.bring import saved_model_signatures

    class Two(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def scores(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.reduce_sum(x, axis=1, keepdims=True)}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def double(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": 2.0 * x}

    module = Two()
    signatures = {"serving_default": module.scores, "predict": module.double}
    tf.saved_model.save(module, str(tmp_path / "two"), signatures=signatures)
    found = saved_model_signatures(tmp_path / "two")
    described = [(s.name, s.saved_model_signature, s.onnx_file, s.outputs[0].shape) for s in found]
    assert described == [
        ("serving_default", "serving_default", "model.onnx", (None, 1)),
        ("predict", "predict", "predict.onnx", (None, 4)),
    ]


def test_serving_default_is_dropped_only_as_an_alias_and_its_target_stays_first(
    tmp_path: Path,
) -> None:
    """serving_default was taken for an alias of any signature with the same tensor specs:
    a different function of the same shapes was dropped (the model served the other one by
    default), and a real alias's target lost its place to whichever name sorted first."""
    import tensorflow as tf

    from training.bring import saved_model_signatures

    spec = [tf.TensorSpec([None, 4], tf.float32, name="x")]

    class Three(tf.Module):
        @tf.function(input_signature=spec)
        def add(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": x + 1.0}

        @tf.function(input_signature=spec)
        def double(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": 2.0 * x}

    module = Three()
    tf.saved_model.save(
        module, str(tmp_path / "two"), {"serving_default": module.add, "double": module.double}
    )
    found = saved_model_signatures(tmp_path / "two")
    assert [(s.name, s.saved_model_signature) for s in found] == [
        ("predict", "serving_default"),
        ("double", "double"),
    ]
    aliased = {"serving_default": module.double, "alpha": module.add, "zeta": module.double}
    tf.saved_model.save(module, str(tmp_path / "alias"), aliased)
    found = saved_model_signatures(tmp_path / "alias")
    assert [(s.name, s.onnx_file) for s in found] == [
        ("zeta", "model.onnx"),
        ("alpha", "alpha.onnx"),
    ]


@pytest.mark.parametrize("name", ["pr ob", "ü"])
def test_a_keras_layer_name_tensorflow_cannot_trace_is_refused_naming_it(name: str) -> None:
    """Keras runs such a model eagerly, but TensorFlow's tracing (the SavedModel) refuses the
    layer's name scope: the export failed after loading TensorFlow with "Exception
    encountered when calling Functional.call()", which says neither the layer nor the rule.
    A nested model's layers count too."""
    import keras

    from training.bring import refuse_untraceable_names

    inputs = keras.Input((4,), name="x")
    inner = keras.Sequential([keras.layers.Dense(2, name=name)], name="inner")
    model = keras.Model(inputs, inner(keras.layers.Dense(3, name="ok")(inputs)))
    with pytest.raises(TrainingError, match="rename the layer") as refused:
        refuse_untraceable_names(model)
    assert repr(name) in str(refused.value)
    refuse_untraceable_names(keras.Model(inputs, keras.layers.Dense(2, name="a.b-c_1")(inputs)))
