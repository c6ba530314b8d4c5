"""Inference backends: something that runs one model signature on a batch of arrays."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    """Runs one signature; ``run`` takes and returns arrays whose first axis is the batch."""

    name: str
    provider: str

    def run(self, inputs: np.ndarray) -> np.ndarray: ...
