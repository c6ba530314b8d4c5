"""service.interfaces: how each input kind reads a request and each answer writes one, on
versions built from synthetic manifests. Expected values are written here (numpy, PIL)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from service.config import Limits
from service.descriptor import Version
from service.errors import CATALOGUE, RequestError
from service.interfaces import ANSWERS, INPUT_KINDS
from service.interfaces.answers import top_k_option
from service.interfaces.base import Incoming
from tests.unit.synthetic import WIDTH, manifest, signature, tensor

LIMITS = Limits()
LABELS = [f"class {i}" for i in range(10)]


def _incoming(
    body: bytes, content_type: str = "application/json", query=None, accept=""
) -> Incoming:
    return Incoming(body, content_type, query or {}, accept, LIMITS)


def _version(tmp_path: Path, **fields) -> Version:
    described = manifest("m", **fields)
    return Version("m", 1, tmp_path, described)


def _digits(tmp_path: Path) -> Version:
    digit = signature(
        inputs=[tensor("image", [-1, 28, 28], range=[0.0, 1.0])],
        outputs=[tensor("p", [-1, 10])],
        input_kind="mnist_image",
        answer="digit",
    )
    return _version(tmp_path, signatures={"predict": digit}, labels=LABELS)


def _refused(coroutine_or_call) -> RequestError:
    with pytest.raises(RequestError) as raised:
        result = coroutine_or_call()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    return raised.value


# -- tensor input ----------------------------------------------------------------------------


def test_tensors_come_bare_or_named(tmp_path: Path) -> None:
    version, kind = _version(tmp_path), INPUT_KINDS["tensor"]
    rows = [[1, 2, 3, 4], [5, 6, 7, 8]]
    for body in ({"inputs": rows}, {"inputs": {"x": rows}}):
        feed = asyncio.run(kind.from_native(_incoming(orjson.dumps(body)), version, "predict"))
        assert feed["x"].dtype == np.float32 and feed["x"].tolist() == rows


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"inputs": {"z": [[1, 2, 3, 4]]}}, "unknown_field"),
        ({"inputs": {}}, "missing_field"),
        ({"inputs": [[1, 2, 3]]}, "invalid_shape"),
        ({"inputs": [["a", 2, 3, 4]]}, "invalid_dtype"),
        ({"inputs": []}, "empty_batch"),
        ({"inputs": [[0.0] * WIDTH] * 65}, "too_many_items"),
        ({"other": 1}, "missing_field"),
    ],
)
def test_tensor_faults_have_their_codes(tmp_path: Path, body: dict, code: str) -> None:
    version, kind = _version(tmp_path), INPUT_KINDS["tensor"]
    incoming = _incoming(orjson.dumps(body))
    assert _refused(lambda: kind.from_native(incoming, version, "predict")).code == code


def test_a_range_is_enforced_naming_the_item(tmp_path: Path) -> None:
    ranged = signature(inputs=[tensor("x", [-1, WIDTH], range=[0.0, 1.0])])
    version = _version(tmp_path, signatures={"predict": ranged})
    body = orjson.dumps({"inputs": [[0.5] * WIDTH, [0.5, 2.0, 0.5, 0.5]]})
    incoming = _incoming(body)
    error = _refused(lambda: INPUT_KINDS["tensor"].from_native(incoming, version, "predict"))
    assert (error.code, error.item) == ("out_of_range", 1)
    nan = _incoming(b'{"inputs": [[0.5, 0.5, 0.5, NaN]]}')
    assert _refused(lambda: INPUT_KINDS["tensor"].from_native(nan, version, "predict")).code == (
        "invalid_json"  # NaN is no JSON literal
    )


# -- image input -----------------------------------------------------------------------------


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_a_digit_file_becomes_28x28_in_0_1(tmp_path: Path) -> None:
    version, kind = _digits(tmp_path), INPUT_KINDS["mnist_image"]
    square = np.zeros((28, 28), np.uint8)
    square[8:20, 12:16] = 255  # a white stroke on black, already MNIST-like
    incoming = _incoming(_png(square), "image/png")
    feed = asyncio.run(kind.from_native(incoming, version, "predict"))
    image = feed["image"]
    assert image.shape == (1, 28, 28) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1 and image.max() > 0.9
    flat = _incoming(orjson.dumps({"inputs": [[0.0] * 784]}))  # numbers, flat
    assert asyncio.run(kind.from_native(flat, version, "predict"))["image"].shape == (1, 28, 28)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_batch"),
        (b"GIF89a....", "not_an_image"),
        ("truncated", "corrupt_image"),
        ("small", "image_too_small"),
    ],
)
def test_image_faults_have_their_codes(tmp_path: Path, data, code: str) -> None:
    version, kind = _digits(tmp_path), INPUT_KINDS["mnist_image"]
    if data == "small":
        data = _png(np.zeros((5, 30), np.uint8))
    elif data == "truncated":
        data = _png(np.random.default_rng(0).integers(0, 255, (28, 28), np.uint8))[:200]
    incoming = _incoming(data, "image/png")
    error = _refused(lambda: kind.from_native(incoming, version, "predict"))
    assert (error.code, error.status) == (code, CATALOGUE[code].status)  # empty_batch: 422


def test_an_unknown_invert_option_is_refused_before_any_work(tmp_path: Path) -> None:
    kind = INPUT_KINDS["mnist_image"]
    error = _refused(lambda: kind.check_native(_incoming(b"", query={"invert": "yes"})))
    assert (error.code, error.field) == ("invalid_parameter", "invert")


# -- answers ---------------------------------------------------------------------------------


def test_a_digit_answer_is_the_argmax_and_its_probabilities(tmp_path: Path) -> None:
    version = _digits(tmp_path)
    probabilities = np.full((2, 10), 0.05, np.float32)
    probabilities[0, 7] = probabilities[1, 2] = 0.55
    reply = ANSWERS["digit"].native({"p": probabilities}, _incoming(b""), version, "predict")
    body = orjson.loads(reply.body)
    assert [p["digit"] for p in body["predictions"]] == [7, 2]
    np.testing.assert_allclose(body["predictions"][0]["probabilities"], probabilities[0])
    assert ANSWERS["digit"].classes({"p": probabilities}, version).tolist() == [7, 2]


@pytest.mark.parametrize("value", ["0", "11", "-1", "three", "٣", "9" * 40])
def test_top_k_outside_1_to_the_class_count_is_invalid_parameter(value: str) -> None:
    with pytest.raises(RequestError) as raised:
        top_k_option({"top_k": value}, 10)
    assert (raised.value.code, raised.value.field) == ("invalid_parameter", "top_k")
    assert top_k_option({"top_k": "10"}, 10) == 10 and top_k_option({}, 2) == 2


def test_an_accept_no_answer_can_produce_is_not_acceptable(tmp_path: Path) -> None:
    version = _digits(tmp_path)
    error = _refused(
        lambda: ANSWERS["digit"].check_native(_incoming(b"", accept="text/csv"), version)
    )
    assert (error.code, error.status) == ("not_acceptable", 406)
    ANSWERS["digit"].check_native(_incoming(b"", accept="application/json, */*"), version)


def test_a_new_input_kind_brings_its_own_rules(tmp_path: Path, monkeypatch) -> None:
    """An input kind is its name in modelspec.interfaces and its class here: the descriptor
    applies its checks and OpenAPI lists its options without knowing it by name."""
    import modelspec.interfaces
    from service.descriptor import ManifestError
    from service.interfaces.base import query_option
    from service.interfaces.tensors import TensorInput

    class Audio(TensorInput):
        name = "audio"
        one_input = True
        query_options = (query_option("rate", {"type": "integer"}, "samples a second"),)

        def check(self, signature) -> None:
            super().check(signature)
            if signature.inputs[0].shape[-1] != 16000:
                raise ValueError("audio needs 16000 samples an item")

    monkeypatch.setitem(modelspec.interfaces.INPUT_KINDS, "audio", "one second of sound")
    monkeypatch.setitem(INPUT_KINDS, "audio", Audio())
    short = signature(inputs=[tensor("wave", [-1, 100])], input_kind="audio")
    with pytest.raises(ManifestError, match="p: audio needs 16000 samples an item"):
        _version(tmp_path, signatures={"p": short})
    two = signature(inputs=[tensor("a", [-1, 16000]), tensor("b", [-1, 16000])], input_kind="audio")
    with pytest.raises(ManifestError, match="p: a audio signature has one input"):
        _version(tmp_path, signatures={"p": two})
    fine = signature(inputs=[tensor("wave", [-1, 16000])], input_kind="audio")
    view = _version(tmp_path, signatures={"p": fine}).view("p")
    assert view.rich and [o["name"] for o in view.kind.query_options] == ["rate"]


def test_every_input_kind_and_answer_is_declared_alike_everywhere() -> None:
    """A kind's name is declared in ``modelspec/interfaces.py``; the manifest schema's enums,
    its drift features and the service's classes must name the same ones (adding a kind
    touches each; this says which one was forgotten)."""
    import json

    from modelspec import interfaces as spec
    from service import interfaces as served

    root = Path(__file__).resolve().parents[3]
    schema = json.loads((root / "modelspec" / "manifest.schema.json").read_text())
    declared = _enums(schema, "interface")
    assert declared["input"] == list(spec.INPUT_KINDS), "manifest.schema.json's input enum"
    assert declared["answer"] == list(spec.ANSWERS), "manifest.schema.json's answer enum"
    assert list(spec.DRIFT_FEATURES) == list(spec.INPUT_KINDS), "DRIFT_FEATURES"
    assert set(served.INPUT_KINDS) == set(spec.INPUT_KINDS), "service/interfaces' classes"
    assert set(served.ANSWERS) == set(spec.ANSWERS), "service/interfaces' answers"


def _enums(schema: object, key: str) -> dict[str, list[str]]:
    """The enums under the first ``key`` object's properties, wherever it is nested."""
    if isinstance(schema, dict):
        found = schema.get("properties", {}).get(key)
        if isinstance(found, dict) and "properties" in found:
            return {name: p["enum"] for name, p in found["properties"].items() if "enum" in p}
        for value in schema.values():
            if enums := _enums(value, key):
                return enums
    if isinstance(schema, list):
        for value in schema:
            if enums := _enums(value, key):
                return enums
    return {}
