"""Bad input to the command line: a clear message, a non-zero exit, and nothing published."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli, train_quick
from tests.user_models import (
    WIDTH,
    lying_zip,
    point_external_data,
    tiny_onnx,
    tiny_saved_model,
    zip_bomb,
    zip_with,
)

# Any download attempt fails at once, whether or not this machine has a network.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


def _published(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) if out.exists() else []


def test_a_missing_data_dir_is_named(tmp_path: Path) -> None:
    out = tmp_path / "models"
    result = run_cli("train", "digits", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out))
    assert result.returncode == 1
    assert "nowhere does not exist (--data-dir)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_an_unknown_model_name_lists_the_choices(tmp_path: Path) -> None:
    result = run_cli("train", "cats", "--data-dir", str(tmp_path), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "invalid choice: 'cats'" in result.stderr and "digits" in result.stderr


def test_a_dataset_that_cannot_be_downloaded_names_the_file(tmp_path: Path) -> None:
    out = tmp_path / "models"
    result = train_quick("digits", tmp_path, out, env=OFFLINE)
    assert result.returncode == 1
    assert f"{tmp_path / 'mnist.npz'} is missing and could not be downloaded" in result.stderr
    assert "storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz" in result.stderr
    assert _published(out) == []
    assert [p.name for p in tmp_path.iterdir() if p.name != "models"] == []


def test_a_corrupt_csv_row_stops_training_without_output(data_dir: Path, tmp_path: Path) -> None:
    bank_dir = tmp_path / "data" / "bank-marketing"
    bank_dir.mkdir(parents=True)
    lines = (data_dir / "bank-marketing" / "bank-full.csv").read_text().splitlines()
    lines[100] = lines[100].replace(";", ";;", 1)
    (bank_dir / "bank-full.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "models"
    result = train_quick("bank", tmp_path / "data", out)
    assert result.returncode == 1
    assert "bank-full.csv:101: 18 fields, expected 17" in result.stderr
    assert _published(out) == []


def test_a_failed_export_into_a_served_repository_changes_nothing(tmp_path: Path) -> None:
    """The run fails in the parity check, after staging: the repository is as it was."""
    out = tmp_path / "models"
    tiny_onnx(out / "kept" / "1" / "model.onnx")
    (out / "kept" / "1" / "manifest.json").write_text("{}")
    before = _published(out)
    # A fixed reshape: valid ONNX, but ONNX Runtime cannot run it on a batch of 64.
    model = _reshaping_onnx(tmp_path / "reshape.onnx")
    result = export(model, out)
    refused(result, model, "could not run the model")
    assert _published(out) == before


def _reshaping_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    shape = numpy_helper.from_array(np.array([1, 8], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "fixed", [x], [y], [shape]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_export_refuses_a_file_that_is_not_a_keras_model(tmp_path: Path) -> None:
    bogus = tmp_path / "model.keras"
    bogus.write_bytes(b"PK\x03\x04 not a zip")
    result = run_cli("export", "--model", str(bogus), "--out", str(tmp_path / "models"))
    assert result.returncode == 1
    refused(result, bogus, "not a readable .keras archive (a zip file)")
    assert not (tmp_path / "models").exists()


@pytest.mark.long  # 24 s of the gate beside the quick training; the user export's SIGTERM test
# below runs the same staging and signal handling in the gate
def test_sigterm_during_export_cleans_up_and_publishes_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models"
    command = [
        sys.executable,
        "-m",
        "training",
        "train",
        "digits",
        "--quick",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not list(out.glob(".staging-digits-*")) and process.poll() is None:
        assert time.monotonic() < deadline, "no staging folder appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "nothing was published" in stderr
    assert _published(out) == []  # no empty digits/ folder either: /readyz would say 503


def test_sigterm_during_a_user_export_leaves_nothing(tmp_path: Path) -> None:
    """SIGTERM while tf2onnx converts a SavedModel: exit 130, no folder of any kind left."""
    saved = tiny_saved_model(tmp_path / "affine")
    out = tmp_path / "models"
    command = [sys.executable, "-m", "training", "export", "--model", str(saved)]
    process = subprocess.Popen(
        [*command, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list(out.glob(".staging-*/version/saved_model")) and process.poll() is None:
        assert time.monotonic() < deadline, "no staging folder appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "nothing was published" in stderr
    assert _published(out) == []


def test_without_imagenet_weights_flowers_start_from_random_init_and_say_so(tmp_path: Path) -> None:
    """Offline, the ImageNet download fails and MobileNetV2 starts from random weights, with a
    sentence saying so; that sentence is the manifest's ``training.base_weights``, which the
    model card lists (tests/test_quick_training.py checks both for the weights-file case).
    Building the base alone: a whole quick flowers run from random init took 275 s of the
    gate on a busy machine for the same evidence."""
    script = (
        "from training.recipes.flowers import build_base\n"
        "base, provenance = build_base('imagenet', 96)\n"
        "print(provenance)\n"
        "print(base.count_params())\n"
    )
    env = {**os.environ, **OFFLINE, "KERAS_HOME": str(tmp_path)}  # no cached download
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    provenance, params = result.stdout.strip().splitlines()[-2:]
    assert provenance.startswith("RANDOM INITIALISATION: the ImageNet weights could not be")
    assert int(params) > 2_000_000  # the whole MobileNetV2 base, not a stand-in
    assert "using random init" in result.stderr


def test_a_weights_file_that_does_not_fit_mobilenet_is_a_clear_error(
    data_dir: Path, tmp_path: Path
) -> None:
    bogus = tmp_path / "weights.weights.h5"
    bogus.write_bytes(b"\x89HDF\r\n\x1a\n but truncated")
    out = tmp_path / "models"
    result = train_quick("flowers", data_dir, out, "--weights", str(bogus))
    assert result.returncode == 1
    assert "is not a MobileNetV2 (alpha 1.0, no top) weights file" in result.stderr
    assert "Traceback" not in result.stderr
    assert _published(out) == []


# -- `training export` on hostile input: one line, exit 1, nothing in the repository --------


def refused(result: subprocess.CompletedProcess[str], model: Path, *words: str) -> str:
    """The one `error:` line of a refusal, checked to name the model file and ``words``."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert str(model) in errors[0], errors[0]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def export(model: Path, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return run_cli("export", "--model", str(model), "--out", str(out), *options)


def _keras_zip(tmp: Path, members: dict[str, bytes], name: str = "model.keras") -> Path:
    return zip_with(tmp / name, members)


def _truncated_zip(tmp: Path) -> Path:
    whole = zip_with(tmp / "whole.keras", {"config.json": b'{"config": {}}' * 100})
    cut = tmp / "model.keras"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return cut


def _file(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def _no_batch_onnx(tmp: Path) -> Path:
    return tiny_onnx(tmp / "fixed.onnx", batch=False)


def _string_input_onnx(tmp: Path) -> Path:
    from onnx import TensorProto, helper

    text = helper.make_tensor_value_info("x", TensorProto.STRING, ["batch", WIDTH])
    return tiny_onnx(tmp / "text.onnx", input_type=text)


def _sequence_input_onnx(tmp: Path) -> Path:
    from onnx import TensorProto, helper

    sequence = helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])
    return tiny_onnx(tmp / "sequence.onnx", input_type=sequence)


def _external(tmp: Path, location: str, prepare=None) -> Path:
    """A graph in tmp/model/ with its data in tmp/model/weights.bin, then pointed at
    ``location`` (after ``prepare`` moved things around)."""
    graph = tiny_onnx(tmp / "model" / "net.onnx", external="weights.bin")
    if prepare:
        prepare(tmp / "model")
    point_external_data(graph, location)
    return graph


def _outside(folder: Path) -> Path:
    """The same weights, outside the model's folder."""
    (folder.parent / "secret").mkdir(exist_ok=True)
    target = folder.parent / "secret" / "weights.bin"
    target.write_bytes((folder / "weights.bin").read_bytes())
    return target


def _link_file(folder: Path) -> None:
    target = _outside(folder)
    (folder / "weights.bin").unlink()
    (folder / "weights.bin").symlink_to(target)


def _link_folder(folder: Path) -> None:
    (folder / "data").symlink_to(_outside(folder).parent, target_is_directory=True)


def _fifo(folder: Path) -> None:
    os.mkfifo(folder / "pipe.bin")


def _truncate(folder: Path) -> None:
    data = (folder / "weights.bin").read_bytes()
    (folder / "weights.bin").write_bytes(data[:100])


def _as_manifest(folder: Path) -> None:
    (folder / "weights.bin").rename(folder / "manifest.json")


def _external_entry(tmp: Path, key: str, value: str) -> Path:
    import onnx

    graph = tiny_onnx(tmp / "model" / "net.onnx", external="weights.bin")
    model = onnx.load(str(graph), load_external_data=False)
    entry = model.graph.initializer[0].external_data.add()
    entry.key, entry.value = key, value
    onnx.save(model, str(graph))
    return graph


def _graph_file(tmp: Path, name: str, nodes: list, shape: list) -> Path:
    from tests.unit.synthetic import onnx_model

    (tmp / name).write_bytes(onnx_model(nodes, {"x": shape}, {"y": shape}))
    return tmp / name


def _mixes_rows(tmp: Path) -> Path:
    """Each row minus its batch's mean: both runtimes agree, the service cannot serve it."""
    from onnx import helper

    mean = helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1)
    return _graph_file(
        tmp, "mix.onnx", [mean, helper.make_node("Sub", ["x", "m"], ["y"])], ["batch", 4]
    )


def _huge_input(tmp: Path) -> Path:
    from onnx import helper

    return _graph_file(
        tmp, "huge.onnx", [helper.make_node("Relu", ["x"], ["y"])], ["batch", 100_000, 100_000]
    )


def _unloadable(tmp: Path, name: str, opset: int, ir: int, node: Any) -> Path:
    """A checked graph the pinned ONNX Runtime cannot load."""
    import onnx
    from onnx import TensorProto, helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in "xy")
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("evil.ops", 1)]
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets)
    model.ir_version = ir
    onnx.save(model, str(tmp / name))
    return tmp / name


def _future_opset(tmp: Path) -> Path:
    from onnx import helper

    return _unloadable(tmp, "future.onnx", 30, 13, helper.make_node("Relu", ["x"], ["y"]))


def _unknown_op(tmp: Path) -> Path:
    from onnx import helper

    node = helper.make_node("Frob", ["x"], ["y"], domain="evil.ops")
    return _unloadable(tmp, "custom.onnx", 17, 8, node)


def _constant_onnx(tmp: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    value = numpy_helper.from_array(np.zeros((1, 2), np.float32), "value")
    node = helper.make_node("Constant", [], ["y"], value=value)
    model = helper.make_model(
        helper.make_graph([node], "constant", [], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.save(model, str(tmp / "constant.onnx"))
    return tmp / "constant.onnx"


# (id, builder -> model path, extra options, words the error line holds)
HOSTILE = [
    ("keras-not-zip", lambda t: _file(t, "m.keras", b"not a zip at all"), [], "not a readable"),
    ("keras-empty", lambda t: _file(t, "m.keras", b""), [], "not a readable .keras archive"),
    ("keras-pk-header-only", lambda t: _file(t, "m.keras", b"PK\x03\x04 no"), [], "zip"),
    ("keras-truncated-zip", _truncated_zip, [], "not a readable .keras archive"),
    ("keras-no-config", lambda t: _keras_zip(t, {"other.txt": b"x"}), [], "without config.json"),
    ("keras-config-not-json", lambda t: _keras_zip(t, {"config.json": b"{nope"}), [], "not JSON"),
    ("keras-config-not-utf8", lambda t: _keras_zip(t, {"config.json": b"\xff\xfe"}), [], "JSON"),
    ("keras-config-list", lambda t: _keras_zip(t, {"config.json": b"[]"}), [], "not a Keras"),
    ("keras-config-int", lambda t: _keras_zip(t, {"config.json": b'{"config": 5}'}), [], "Keras"),
    ("keras-config-deep", lambda t: _keras_zip(t, {"config.json": b"[" * 100_000}), [], "JSON"),
    (
        "keras-config-bomb",
        lambda t: zip_bomb(t / "bomb.keras", "config.json", 64 << 20),
        [],
        "zip bomb",
    ),
    (
        "keras-config-too-large",
        lambda t: zip_with(t / "big.keras", {"config.json": b" " * (17 << 20)}, stored=True),
        [],
        "config.json inflates to",
    ),
    (
        "keras-config-lying-header",
        lambda t: lying_zip(t / "liar.keras", "config.json", 32 << 20, 100),
        [],
        "not a readable .keras archive",
    ),
    (
        "keras-weights-bomb",
        lambda t: zip_bomb(t / "w.keras", "model.weights.h5", 64 << 20, {"config.json": b"{}"}),
        [],
        "model.weights.h5",
    ),
    (
        "keras-unknown-layer",
        lambda t: _keras_zip(t, {"config.json": b'{"class_name": "NoSuchLayer", "config": {}}'}),
        [],
        "not a loadable Keras model",
    ),
    ("h5-not-hdf5", lambda t: _file(t, "m.h5", b"just text"), [], "not an HDF5 file"),
    ("h5-empty", lambda t: _file(t, "m.h5", b""), [], "not an HDF5 file"),
    ("unknown-suffix", lambda t: _file(t, "m.pt", b"x"), [], "not a Keras model file"),
    ("folder-not-saved-model", lambda t: (t / "folder").mkdir() or t / "folder", [], "no saved"),
    ("onnx-not-protobuf", lambda t: _file(t, "m.onnx", b"\xff" * 64), [], "not an ONNX model"),
    ("onnx-empty", lambda t: _file(t, "m.onnx", b""), [], "not a valid ONNX model"),
    ("onnx-text", lambda t: _file(t, "m.onnx", b"hello\nworld\n"), [], "ONNX model"),
    ("onnx-no-batch-dimension", _no_batch_onnx, [], "its first dimension must be free"),
    ("onnx-string-input", _string_input_onnx, [], "ONNX element type 8"),
    ("onnx-sequence-input", _sequence_input_onnx, [], "is not a tensor"),
    ("onnx-unknown-op", lambda t: tiny_onnx(t / "op.onnx", op="NoSuchOp"), [], "not a valid"),
    ("onnx-data-parent", lambda t: _external(t, "../secret.bin"), [], "must be a file inside"),
    ("onnx-data-absolute", lambda t: _external(t, "/etc/hostname"), [], "must be a file inside"),
    ("onnx-data-missing", lambda t: _external(t, "gone.bin"), [], "does not exist"),
    ("onnx-data-empty-name", lambda t: _external(t, ""), [], "must be a file inside"),
    ("onnx-data-link", lambda t: _external(t, "weights.bin", _link_file), [], "symbolic link"),
    (
        "onnx-data-linked-folder",
        lambda t: _external(t, "data/weights.bin", _link_folder),
        [],
        "symbolic link",
    ),
    ("onnx-data-fifo", lambda t: _external(t, "pipe.bin", _fifo), [], "a FIFO"),
    ("onnx-data-folder", lambda t: _external(t, "."), [], "must be a file inside"),
    ("onnx-data-short", lambda t: _external(t, "weights.bin", _truncate), [], "shorter than"),
    ("onnx-data-manifest", lambda t: _external(t, "manifest.json", _as_manifest), [], "taken"),
    ("onnx-data-bad-offset", lambda t: _external_entry(t, "offset", "x"), [], "bad external"),
    ("onnx-data-negative", lambda t: _external_entry(t, "length", "-4"), [], "bad external"),
    ("onnx-data-long", lambda t: _external_entry(t, "length", str(1 << 40)), [], "shorter"),
    ("onnx-no-inputs", _constant_onnx, [], "the graph has no inputs"),
    ("onnx-mixes-rows", _mixes_rows, [], "depends on the other rows"),
    ("onnx-future-opset", _future_opset, [], "cannot load it (Current official support"),
    ("onnx-unknown-op", _unknown_op, [], "cannot load it (Fatal error: evil.ops:Frob"),
    ("onnx-huge-input", _huge_input, [], "takes 37.3 GiB, more than the parity check's"),
    ("name-empty", lambda t: tiny_onnx(t / "a.onnx"), ["--name", ""], "model name ''"),
    ("name-path", lambda t: tiny_onnx(t / "a.onnx"), ["--name", "../x"], "model name '../x'"),
    ("name-reserved", lambda t: tiny_onnx(t / "a.onnx"), ["--name", "models"], "service's own"),
    ("name-from-file", lambda t: tiny_onnx(t / "my model.onnx"), [], "choose another with --name"),
    ("name-newline", lambda t: tiny_onnx(t / "a.onnx"), ["--name", "a\nb"], "model name 'a\\nb'"),
    ("parity-not-npy", lambda t: tiny_onnx(t / "a.onnx"), ["--parity-inputs", "NPY"], "not a .npy"),
    ("parity-npz", lambda t: tiny_onnx(t / "a.onnx"), ["--parity-inputs", "NPZ"], "an .npz"),
    ("parity-strings", lambda t: tiny_onnx(t / "a.onnx"), ["--parity-inputs", "STR"], "<U1"),
    ("parity-shape", lambda t: tiny_onnx(t / "a.onnx"), ["--parity-inputs", "SHAPE"], "shape"),
    ("parity-name", lambda t: tiny_onnx(t / "a.onnx"), ["--parity-inputs", "z=SHAPE"], "['x']"),
]


def _parity_file(tmp: Path, option: str) -> str:
    """NPY, NPZ, STR, SHAPE in an option: a bad inputs file of that kind."""
    name, _, kind = option.rpartition("=")
    path = tmp / f"{kind.lower()}.npy"
    if kind == "NPY":
        path.write_bytes(b"not numpy")
    elif kind == "NPZ":
        np.savez(path.with_suffix(""), a=np.zeros(2), b=np.zeros(2))
        path.with_suffix(".npz").rename(path)
    elif kind == "STR":
        np.save(path, np.full((3, WIDTH), "a"))
    else:
        np.save(path, np.zeros((3, WIDTH + 1), np.float32))
    return f"{name}={path}" if name else str(path)


@pytest.mark.parametrize(
    ("builder", "options", "words"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_export_refuses_hostile_input_in_one_line_and_publishes_nothing(
    tmp_path: Path, builder, options: list[str], words: str
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    model = builder(source)
    if "--parity-inputs" in options:
        options = [options[0], _parity_file(source, options[1])]
    out = tmp_path / "models"
    result = export(model, out, *options)
    refused(result, model, words)
    assert _published(out) == []


def test_parity_inputs_given_twice_for_one_input_are_refused(tmp_path: Path) -> None:
    """The second file used to replace the first without a word."""
    model = tiny_onnx(tmp_path / "a.onnx")
    first, second = tmp_path / "1.npy", tmp_path / "2.npy"
    np.save(first, np.zeros((3, WIDTH), np.float32))
    np.save(second, np.ones((3, WIDTH), np.float32))
    options = ["--parity-inputs", f"x={first}", "--parity-inputs", f"x={second}"]
    refused(export(model, tmp_path / "models", *options), model, "input 'x' twice")
    assert _published(tmp_path / "models") == []


@pytest.mark.parametrize("left", ["folder", "file"])
def test_a_number_held_by_something_else_is_passed_over(tmp_path: Path, left: str) -> None:
    """A version folder without a manifest (a copy cut short) or a file named like a version
    is no version, but its name is taken: the export tried that number forever, rewriting
    its card and hashes at full CPU, until killed."""
    model = tiny_onnx(tmp_path / "m.onnx")
    out = tmp_path / "models"
    (out / "m").mkdir(parents=True)
    if left == "folder":
        (out / "m" / "1").mkdir()
        (out / "m" / "1" / "model.onnx").write_bytes(b"half a copy")
    else:
        (out / "m" / "1").write_text("not a version")
    try:
        result = run_cli("export", "--model", str(model), "--out", str(out), timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the export was still running after 120 s")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(out / "m" / "2")
    assert (out / "m" / "2" / "manifest.json").is_file()


def test_a_refusal_is_one_line_whatever_the_file_is_called(tmp_path: Path) -> None:
    """A newline or an ANSI escape in a file name reaches the terminal as an escape."""
    model = _file(tmp_path, "evil\n\x1b[31mname.keras", b"not a zip")
    result = export(model, tmp_path / "models")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert "\x1b" not in result.stderr and "evil \\x1b[31mname.keras" in errors[0]
    assert _published(tmp_path / "models") == []


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_saved_model(tmp_path_factory.mktemp("saved") / "affine")


def _outside_file(model: Path) -> None:
    secret = model.parent / "secret.txt"
    secret.write_text("outside the model\n")
    (model / "variables" / "notes.txt").symlink_to(secret)


def _outside_folder(model: Path) -> None:
    (model.parent / "home").mkdir()
    (model.parent / "home" / "id_rsa").write_text("outside the model\n")
    (model / "assets").mkdir(exist_ok=True)
    (model / "assets" / "home").symlink_to(model.parent / "home", target_is_directory=True)


def _variables_elsewhere(model: Path) -> None:
    """The real weights moved out and linked back: TensorFlow would load it happily."""
    data = next((model / "variables").glob("variables.data-*"))
    moved = model.parent / data.name
    data.rename(moved)
    data.symlink_to(moved)


def _dangling(model: Path) -> None:
    (model / "gone").symlink_to(model.parent / "nowhere")


def _fifo_inside(model: Path) -> None:
    os.mkfifo(model / "variables" / "pipe")


def _link_to_itself(model: Path) -> None:
    (model / "loop").symlink_to(model, target_is_directory=True)


SAVED_MODEL_LINKS = [
    ("link-to-outside-file", _outside_file, "'variables/notes.txt' is a symbolic link"),
    ("link-to-outside-folder", _outside_folder, "'assets/home' is a symbolic link"),
    ("weights-linked-from-outside", _variables_elsewhere, "is a symbolic link"),
    ("dangling-link", _dangling, "'gone' is a symbolic link"),
    ("link-loop", _link_to_itself, "'loop' is a symbolic link"),
    ("fifo", _fifo_inside, "'variables/pipe' is a FIFO"),
]


@pytest.mark.parametrize(
    ("prepare", "words"), [c[1:] for c in SAVED_MODEL_LINKS], ids=[c[0] for c in SAVED_MODEL_LINKS]
)
def test_export_refuses_a_saved_model_holding_links_or_special_files(
    saved_model: Path, tmp_path: Path, prepare, words: str
) -> None:
    model = tmp_path / "affine"
    shutil.copytree(saved_model, model)
    prepare(model)
    out = tmp_path / "models"
    refused(export(model, out), model, words, "only regular files and folders")
    assert _published(out) == []


def test_export_refuses_a_saved_model_tensorflow_cannot_read(
    saved_model: Path, tmp_path: Path
) -> None:
    model = tmp_path / "affine"
    shutil.copytree(saved_model, model)
    (model / "saved_model.pb").write_bytes(b"\x00garbage" * 10)
    out = tmp_path / "models"
    refused(export(model, out), model, "not a loadable SavedModel")
    assert _published(out) == []


def test_export_refuses_a_repository_inside_the_saved_model(
    saved_model: Path, tmp_path: Path
) -> None:
    """The SavedModel was copied into its own staging folder, which it then held: the copy
    recursed until the path grew too long, and the line was 300 characters of
    '.staging-affine-*/version/saved_model/models/.staging-affine-*/...'."""
    model = tmp_path / "affine"
    shutil.copytree(saved_model, model)
    for out in (model / "models", model):
        line = refused(export(model, out), model, "inside the SavedModel folder")
        assert len(line) < 300, line
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in saved_model.iterdir())


def test_export_refuses_a_repository_that_is_not_a_folder(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "affine.onnx")
    (tmp_path / "file").write_text("x")
    refused(export(model, tmp_path / "file"), model, "is not a folder")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "affine").write_text("in the way")
    refused(export(model, tmp_path / "models"), model, "is not a model folder")
    assert _published(tmp_path / "models") == ["affine"]


def test_empty_paths_are_refused_not_read_as_the_current_folder(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "affine.onnx")
    for arguments, option in (
        (["--model", str(model), "--repository", ""], "--repository"),
        (["--model", "", "--repository", str(tmp_path / "models")], "--model"),
    ):
        result = run_cli("export", *arguments)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 1 and errors == [f"error: {option} is empty: give a path"]
    result = run_cli("export", "--model", str(model), env={"MODEL_REPOSITORY": ""})
    assert result.returncode == 1 and "--repository is empty" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["affine.onnx"]
    assert not (ROOT / "affine").exists()


def test_concurrent_exports_of_a_new_model_take_one_version_each(tmp_path: Path) -> None:
    """Three runs race to create the same new model: each gets its own version, no run
    fails, and no staging folder is left."""
    model = tiny_onnx(tmp_path / "affine.onnx")
    out = tmp_path / "models"
    command = [sys.executable, "-m", "training", "export", "--model", str(model), "--out", str(out)]
    runs = [
        subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    results = [(run.communicate(timeout=300), run.returncode) for run in runs]
    assert [code for _, code in results] == [0, 0, 0], [err[-2000:] for (_, err), _ in results]
    published = sorted(out_text.strip() for (out_text, _), _ in results)
    assert published == [str(out / "affine" / str(v)) for v in (1, 2, 3)]
    assert sorted(p.name for p in out.iterdir()) == ["affine"]
    assert sorted(p.name for p in (out / "affine").iterdir()) == ["1", "2", "3"]
