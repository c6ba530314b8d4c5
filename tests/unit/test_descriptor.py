"""service.descriptor: a version as the service sees it, built from a synthetic manifest (no
graph is opened); and the card-file reader against hostile names and swapped files."""

from __future__ import annotations

import hashlib
import inspect
import os
import re
from pathlib import Path

import pytest

from service.descriptor import ManifestError, Version
from service.errors import RequestError
from service.interfaces.base import VersionFacts
from service.protocols import v2_names
from tests.unit.synthetic import CLASSES, WIDTH, manifest, signature, tensor

DIGITS = [str(d) for d in range(CLASSES)]


def _version(tmp_path: Path, **fields) -> Version:
    described = manifest("m", **fields)
    return Version(described["name"], 1, tmp_path, described)


def test_a_tensor_signature_is_served_as_plain_tensors(tmp_path: Path) -> None:
    version = _version(tmp_path)
    view = version.view("predict")
    assert not view.rich  # no native route of its own
    assert [(t.name, t.datatype, t.shape) for t in view.inputs] == [("x", "FP32", (-1, WIDTH))]
    assert [(t.name, t.datatype, t.shape) for t in view.outputs] == [("y", "FP32", (-1, CLASSES))]
    assert v2_names.names(version) == {"m": "predict"}
    assert version.tf_signature("serving_default") == "predict"
    described = version.describe()
    assert described["signatures"]["predict"]["native_route"] is None
    assert described["model_card"] == "/models/m/versions/1/card"


def test_several_signatures_get_a_v2_name_each(tmp_path: Path) -> None:
    signatures = {"predict": signature(), "embed": signature(outputs=[tensor("e", [-1, 2])])}
    version = _version(tmp_path, signatures=signatures)
    assert version.default_signature == "predict"  # the first
    assert v2_names.names(version) == {"m": "predict", "m_predict": "predict", "m_embed": "embed"}


def test_a_classifier_answer_is_rich_and_has_class_strings(tmp_path: Path) -> None:
    digit = signature(
        inputs=[tensor("image", [-1, 28, 28], range=[0.0, 1.0])],
        outputs=[tensor("p", [-1, CLASSES])],
        input_kind="mnist_image",
        answer="digit",
    )
    version = _version(tmp_path, signatures={"predict": digit}, labels=DIGITS)
    view = version.view("predict")
    assert view.rich and view.inputs[0].images and view.inputs[0].range == (0.0, 1.0)
    assert version.describe()["signatures"]["predict"]["native_route"] == "/m/predict"
    contract = version.contracts("predict")["image"]
    assert (contract.low, contract.high) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"signatures": {}}, "no signature"),
        ({"labels": ["a", "a"]}, "distinct"),
        ({"labels": [""]}, "1-200 character"),
        ({"title": 3}, "title"),
        (
            {"signatures": {"p": signature(answer="digit")}, "labels": DIGITS[:2]},
            "2 labels for 3 output classes",
        ),
        ({"signatures": {"p": signature(answer="top_labels")}}, "needs labels"),
        (
            {"signatures": {"p": signature(answer="decision")}, "labels": ["no", "yes"]},
            "threshold in [0, 1]",
        ),
        (
            {"signatures": {"p": signature(input_kind="rgb_photo")}},
            "rgb_photo needs (N, size, size, 3)",
        ),
        (
            {
                "signatures": {
                    "p": signature(
                        input_kind="mnist_image",
                        inputs=[tensor("a", [-1, 2]), tensor("b", [-1, 2])],
                    )
                }
            },
            "has one input",
        ),
        ({"signatures": {"p": signature(input_kind="no_such_kind")}}, "manifest signatures"),
    ],
)
def test_a_manifest_the_service_cannot_serve_is_refused_naming_why(
    tmp_path: Path, fields: dict, problem: str
) -> None:
    with pytest.raises(ManifestError, match=re.escape(problem)):
        _version(tmp_path, **fields)


def test_an_unknown_signature_or_output_is_a_client_error(tmp_path: Path) -> None:
    version = _version(tmp_path)
    with pytest.raises(RequestError) as raised:
        version.view("nope")
    assert (raised.value.code, raised.value.status) == ("unknown_signature", 404)
    with pytest.raises(RequestError) as raised:
        version.view("predict").output("logits")
    assert (raised.value.code, raised.value.status) == ("unknown_output", 422)


# -- card files: a name from a URL is a key of the manifest's file list, never a path -------


def _with_files(tmp_path: Path, files: dict[str, bytes]) -> Version:
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    listed = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    described = manifest("m", files=listed)
    return Version("m", 1, folder, described)


def _refusal(version: Version, name: str) -> tuple[str, int]:
    with pytest.raises(RequestError) as raised:
        version.card_file(name)
    return raised.value.code, raised.value.status


def test_a_listed_card_file_is_served(tmp_path: Path) -> None:
    version = _with_files(tmp_path, {"model_card.md": b"# card\n", "curve.png": b"\x89PNG"})
    assert version.card_file("model_card.md") == b"# card\n"
    assert version.card_file("curve.png") == b"\x89PNG"


@pytest.mark.parametrize(
    "name",
    [
        "../m/1/model_card.md",
        "../../secret.md",
        "/etc/passwd",
        "manifest.json",
        "model.onnx",  # listed, but not a card or a plot
        "model_card.md\x00.png",
        "%2e%2e/model_card.md",
        "MODEL_CARD.md",
        "",
    ],
)
def test_hostile_names_are_not_found(tmp_path: Path, name: str) -> None:
    (tmp_path / "secret.md").write_text("no")
    version = _with_files(tmp_path, {"model_card.md": b"# card\n", "model.onnx": b"graph"})
    assert _refusal(version, name) == ("not_found", 404)


def test_a_card_swapped_after_publishing_is_file_integrity(tmp_path: Path) -> None:
    version = _with_files(tmp_path, {"model_card.md": b"# card\n", "plot.png": b"png"})
    (version.directory / "model_card.md").write_bytes(b"# another card\n")
    assert _refusal(version, "model_card.md") == ("file_integrity", 503)
    (version.directory / "plot.png").unlink()
    os.symlink(tmp_path / "elsewhere.png", version.directory / "plot.png")
    (tmp_path / "elsewhere.png").write_bytes(b"png")  # the same bytes, through a link
    assert _refusal(version, "plot.png") == ("file_integrity", 503)


def test_a_fifo_in_place_of_a_card_is_refused_without_blocking(tmp_path: Path) -> None:
    version = _with_files(tmp_path, {"model_card.md": b"# card\n"})
    (version.directory / "model_card.md").unlink()
    os.mkfifo(version.directory / "model_card.md")
    assert _refusal(version, "model_card.md") == ("file_integrity", 503)


def test_a_card_gone_from_the_repository_is_not_found(tmp_path: Path) -> None:
    version = _with_files(tmp_path, {"model_card.md": b"# card\n"})
    (version.directory / "model_card.md").unlink()
    assert _refusal(version, "model_card.md") == ("not_found", 404)


def test_a_version_provides_every_fact_the_interfaces_read(tmp_path: Path) -> None:
    # The interfaces are written against VersionFacts, never importing the descriptor: a
    # fact the descriptor stops providing must fail here, not on a request.
    version = _version(tmp_path)
    facts = {n for n in dir(VersionFacts) if not n.startswith("_")}
    facts |= set(VersionFacts.__annotations__)
    assert facts >= {"labels", "threshold", "contracts", "memo", "signatures"}
    missing = [name for name in sorted(facts) if not _has_static(version, name)]
    assert not missing, f"descriptor.Version lacks {missing}"


def _has_static(value: object, name: str) -> bool:
    try:
        inspect.getattr_static(value, name)
    except AttributeError:
        return False
    return True
