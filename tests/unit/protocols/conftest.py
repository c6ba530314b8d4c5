"""The protocols' fast tests share one synthetic signature."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.descriptor import Version
from tests.unit.synthetic import WIDTH, manifest, signature, tensor


@pytest.fixture
def view(tmp_path: Path):
    """``predict`` of model ``m``: ``x`` (float32, WIDTH an item) and ``n`` (int32, one)."""
    inputs = [tensor("x", [-1, WIDTH]), tensor("n", [-1, 1], "int32")]
    described = manifest("m", signatures={"predict": signature(inputs=inputs)})
    return Version("m", 1, tmp_path, described).view("predict")
