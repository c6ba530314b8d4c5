"""How a signature's requests are read and its answers written: declared per signature in the
manifest, so the service treats a model by what it takes and gives, never by its name.

Every signature is served as plain named tensors (V2, TF Serving, ``/models/{name}/predict``).
A richer *input kind* adds what its clients send instead of tensors, and a richer *answer*
adds the native form of its outputs:

- input kinds: ``tensor`` (only tensors), ``mnist_image`` (also PNG/JPEG files of one digit,
  prepared the MNIST way), ``rgb_photo`` (also photos, prepared by ``modelspec.flowers``),
  ``bank_record`` (raw ``bank-full.csv`` records, encoded by the manifest's encoder);
- answers: ``tensor`` (named outputs), ``digit`` (the class and its probabilities),
  ``top_labels`` (labels with the top-k probabilities), ``decision`` (probability and the
  yes/no label at the manifest's threshold), ``code`` (the code of each item), ``image``
  (28x28 reconstructions as tensors or PNG).

A signature whose input kind is not ``tensor`` also gets a native route ``/{model}/{signature}``.
"""

from __future__ import annotations

INPUT_KINDS: dict[str, str] = {
    "tensor": "named tensors of the signature's dtypes and shapes",
    "mnist_image": "one digit per item: PNG/JPEG files of any size, or floats in [0, 1]",
    "rgb_photo": "photos: PNG/JPEG files, or RGB values in [0, 255] at the model's size",
    "bank_record": "raw bank-full.csv records (16 columns)",
}
ANSWERS: dict[str, str] = {
    "tensor": "the named outputs",
    "digit": "each item's digit and its probabilities",
    "top_labels": "each item's label and the top-k labels with probabilities",
    "decision": "each item's probability and the decision at the model's threshold",
    "code": "each item's code",
    "image": "each item as a 28x28 image: floats, or PNG",
}
TENSOR = "tensor"
# How drift reads each input kind's items (``modelspec.reference``'s extractors): as pictures
# (brightness, contrast, ink), as the record fields behind the encoding, or (None) by size:
# a column per value up to ``COLUMN_LIMIT`` values an item, summarised as a picture above.
DRIFT_FEATURES: dict[str, str | None] = {
    "tensor": None,
    "mnist_image": "image",
    "rgb_photo": "image",
    "bank_record": "bank_record",
}

# Manifests written before interfaces were recorded: the four seed models' own.
LEGACY: dict[tuple[str, str], tuple[str, str]] = {
    ("digits", "predict"): ("mnist_image", "digit"),
    ("flowers", "predict"): ("rgb_photo", "top_labels"),
    ("bank", "predict"): ("bank_record", "decision"),
    ("autoencoder", "encode"): ("mnist_image", "code"),
    ("autoencoder", "reconstruct"): ("mnist_image", "image"),
    ("autoencoder", "decode"): ("tensor", "image"),
}


def check(input_kind: str, answer: str) -> None:
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input kind {input_kind!r}: expected one of {list(INPUT_KINDS)}")
    if answer not in ANSWERS:
        raise ValueError(f"answer {answer!r}: expected one of {list(ANSWERS)}")
