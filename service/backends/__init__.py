"""Inference backends: something that runs one model signature on a batch of named arrays."""

from __future__ import annotations

from typing import Protocol

import numpy as np

Feed = dict[str, np.ndarray]  # input name -> array, the batch first
Outputs = dict[str, np.ndarray]  # output name -> array, the batch first


class Backend(Protocol):
    """Runs one signature: every input by name in, every output by name out."""

    name: str
    provider: str

    def run(self, feed: Feed) -> Outputs: ...
