"""TensorFlow SavedModel backend, chosen by configuration.

TensorFlow is imported here only, lazily: it costs ~1 GB per process and is not fork-safe,
so a service on the default ONNX backend never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.backends import Feed, Outputs


class SavedModelBackend:
    name = "saved_model"

    def __init__(self, directory: Path, signature: str, threads: int) -> None:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already set by the first model this process loaded
            pass
        self._tf = tf
        self._loaded: Any = tf.saved_model.load(str(directory))
        self._function = self._loaded.signatures[signature]
        gpus = tf.config.list_logical_devices("GPU")
        self.provider = "tensorflow-gpu" if gpus else "tensorflow-cpu"

    def run(self, feed: Feed) -> Outputs:
        outputs = self._function(**{k: self._tf.constant(v) for k, v in feed.items()})
        return {k: v.numpy() for k, v in outputs.items()}
