"""What each served model takes and gives: the one definition training and serving share.

Nothing here imports TensorFlow or ONNX Runtime, so the service can use it on its hot path.
"""

from modelspec.tensors import Signature, TensorSpec

MODEL_NAMES: tuple[str, ...] = ("digits", "flowers", "bank", "autoencoder")

__all__ = ["MODEL_NAMES", "Signature", "TensorSpec"]
