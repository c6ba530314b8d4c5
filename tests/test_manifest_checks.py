"""What the service refuses to load from a model repository, checked on the real manifests
of the quick-profile models with one field changed at a time: a manifest may come from a
user's export or a hand edit, and a wrong one must fail at load with its reason, never at
the first request (or in a page that shows it)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from modelspec import repository
from service.descriptor import ManifestError, Version


def _manifest(root: Path, name: str) -> dict[str, Any]:
    version = repository.latest_version(root, name)
    return json.loads((root / name / str(version) / repository.MANIFEST).read_text())


def _version(manifest: dict[str, Any]) -> Version:
    return Version(manifest["name"], 1, Path("."), manifest)


def _first_input(manifest: dict[str, Any]) -> dict[str, Any]:
    return next(iter(manifest["signatures"].values()))["inputs"][0]


def _changed(root: Path, name: str, change) -> dict[str, Any]:
    manifest = copy.deepcopy(_manifest(root, name))
    change(manifest)
    return manifest


def _rename_signature(manifest: dict[str, Any], new: str) -> None:
    signatures = manifest["signatures"]
    first = next(iter(signatures))
    signatures[new] = signatures.pop(first)


CASES = {
    "html in a signature name": (
        "digits",
        lambda m: _rename_signature(m, "<img src=x onerror=alert(1)>"),
        "signature name",
    ),
    "a signature name with a slash": ("digits", lambda m: _rename_signature(m, "a/b"), "signature"),
    "eleven labels for ten classes": (
        "digits",
        lambda m: m.update(labels=[*m["labels"], "ten"]),
        "11 labels for 10 output classes",
    ),
    "a label that is a number": ("digits", lambda m: m["labels"].__setitem__(0, 0), "labels"),
    "labels given twice": ("digits", lambda m: m["labels"].__setitem__(1, "0"), "distinct"),
    "a title that is a list": ("digits", lambda m: m.update(title=["x"]), "title"),
    "an unknown dtype": ("digits", lambda m: _first_input(m).update(dtype="complex64"), "dtype"),
    "a range upside down": ("digits", lambda m: _first_input(m).update(range=[1, 0]), "range"),
    "a range to infinity": (
        "digits",
        lambda m: _first_input(m).update(range=[0, float("inf")]),
        "range",
    ),
    "a negative dimension": ("digits", lambda m: _first_input(m).update(shape=[-1, -5]), "shape"),
    "a decision threshold of 2": (
        "bank",
        lambda m: m["decision"].update(threshold=2),
        "threshold in [0, 1]",
    ),
    "a decision with three labels": (
        "bank",
        lambda m: m.update(labels=[*m["labels"], "maybe"]),
        "two labels",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_wrong_manifest_is_refused_with_its_reason(quick_repository: Path, case: str) -> None:
    name, change, reason = CASES[case]
    _version(_manifest(quick_repository, name))  # the real one loads
    with pytest.raises(ManifestError) as refused:
        _version(_changed(quick_repository, name, change))
    assert reason in str(refused.value)


def test_only_canonical_version_folders_are_versions(tmp_path: Path) -> None:
    """ "007" beside "7" would be two folders for one version, and a 20-digit number no
    longer fits the int64 clients read versions into: neither is a version."""
    for folder in ("1", "7", "007", "0", "99999999999999999999", "123456789012345678", "x1"):
        (tmp_path / "m" / folder).mkdir(parents=True)
        (tmp_path / "m" / folder / repository.MANIFEST).write_text("{}")
    (tmp_path / "m" / "3").mkdir()  # no manifest yet: still being written
    assert repository.versions(tmp_path, "m") == [1, 7, 123456789012345678]
