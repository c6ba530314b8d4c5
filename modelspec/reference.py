"""Reference statistics of a model's training inputs and test-split answers
(``reference.json`` in each version folder), and the population stability index (PSI) the
service compares live traffic with them by.

One definition for both sides: training summarises the training split's *model inputs* with
``features_of`` and the service summarises live model inputs (the feed the request path has
already computed) with the same function, so a difference is drift, never a second
implementation. What is summarised:

- ``bank_record`` inputs: the raw record fields the service sees, recovered from the
  encoded vector (numerics un-standardised, categoricals from their one-hot block): a
  histogram per numeric field with fixed bin edges (the training split's deciles) and a
  frequency per category;
- image-like inputs (MNIST digits, photos, any tensor of more than ``COLUMN_LIMIT`` values per
  item): per item mean intensity, contrast (standard deviation) and ink fraction (share of
  values above the middle of the training range), each as a decile histogram. Inputs reach
  the model resized, so the original size is not in them: for photos (``rgb_photo``) the
  recipe hands ``build`` the training photos' decoded sizes and the service the uploads'
  (``SIZE_FEATURES``: width and height in pixels, decile histograms). A photo's size changes
  what the model sees (a tiny one is upscaled into a blur, a huge one loses detail to the
  downscale). MNIST digits have none: every training item is 28x28, so any other upload size
  would read as a major shift although ``digits.prepare_image`` normalises size away;
- other tensors (a user's tabular model): a decile histogram per column;
- ``prediction``: the predicted-class frequencies on the test split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from modelspec.interfaces import DRIFT_FEATURES

REFERENCE_FILE = "reference.json"
FORMAT = 1
COLUMN_LIMIT = 32  # more values per item than this: summarised as an image
PREDICTION = "prediction"
# PSI below 0.1: no real change; 0.1-0.25: moderate; above 0.25: a major shift (the usual
# reading, e.g. Siddiqi, "Credit Risk Scorecards", 2006). The alert rule uses ALERT.
ALERT = 0.25
# Empty bins would make PSI infinite; proportions are floored at this.
EPSILON = 1e-4
QUANTILES = np.linspace(0.1, 0.9, 9)
IMAGE_FEATURES = ("mean_intensity", "contrast", "ink_fraction")
# The decoded (upright, before any resize) size of uploaded images; only in references built
# with ``sizes`` (older reference.json files have none, and then no size checks).
SIZE_FEATURES = ("width", "height")


# -- building the reference (training side) ------------------------------------------------


def numeric_edges(values: np.ndarray) -> list[float]:
    """Fixed bin edges: the deciles, made distinct. For whole-number data (ages, days) the
    edges sit halfway between integers, so a value never lands on an edge through float
    rounding on one side and not the other."""
    values = np.asarray(values, dtype=np.float64)
    quantiles = np.quantile(values, QUANTILES)
    if np.allclose(values, np.round(values), atol=1e-3):
        return (np.unique(np.round(quantiles)) + 0.5).tolist()
    return [float(v) for v in np.unique(quantiles.astype(np.float32))]


def numeric_bins(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index of each value: 0 below the first edge ... len(edges) from the last one."""
    return np.searchsorted(np.asarray(edges), np.asarray(values, np.float64), side="right")


def numeric_feature(values: np.ndarray) -> dict[str, Any]:
    edges = numeric_edges(values)
    counts = np.bincount(numeric_bins(values, edges), minlength=len(edges) + 1)
    return {"kind": "numeric", "edges": edges, "counts": counts.tolist()}


def categorical_feature(indices: np.ndarray, categories: Sequence[str]) -> dict[str, Any]:
    counts = np.bincount(np.asarray(indices, np.int64), minlength=len(categories))
    return {"kind": "categorical", "categories": list(categories), "counts": counts.tolist()}


def extractor_kind(input_kind: str, item_size: int) -> str:
    """The features drift keeps of a signature's items: what its input kind declares
    (``modelspec.interfaces.DRIFT_FEATURES``), else by the item's size."""
    declared = DRIFT_FEATURES.get(input_kind)
    if declared is not None:
        return declared
    return "image" if item_size > COLUMN_LIMIT else "columns"


def build(
    inputs: np.ndarray,
    *,
    signature: str,
    input_kind: str,
    preprocessing: dict[str, Any] | None = None,
    classes: np.ndarray | None = None,
    labels: Sequence[str] = (),
    source: str,
    prediction_source: str = "the test split",
    sizes: np.ndarray | None = None,
) -> dict[str, Any]:
    """The reference of one signature's input (training split model inputs) and, when the
    model classifies, of its predicted classes on the test split; ``sizes``, (N, 2) widths and
    heights of the original images (before the resize), adds the ``SIZE_FEATURES``."""
    inputs = np.asarray(inputs)
    item_size = int(np.prod(inputs.shape[1:]))
    kind = extractor_kind(input_kind, item_size)
    extractor: dict[str, Any] = {"kind": kind}
    if kind == "image":
        flat = inputs.reshape(len(inputs), -1)
        low, high = float(flat.min()), float(flat.max())
        extractor["ink_threshold"] = (low + high) / 2
    raw = raw_features(inputs, extractor, preprocessing)
    if sizes is not None:
        raw.update(size_features(sizes))
    features: dict[str, Any] = {}
    for name, (values, categories) in raw.items():
        features[name] = (
            numeric_feature(values)
            if categories is None
            else categorical_feature(values, categories)
        )
    reference: dict[str, Any] = {
        "format": FORMAT,
        "signature": signature,
        "extractor": extractor,
        "source": source,
        "items": len(inputs),
        "features": features,
    }
    if classes is not None:
        names = list(labels) or [str(i) for i in range(int(np.max(classes)) + 1)]
        reference[PREDICTION] = {
            **categorical_feature(classes, names),
            "source": prediction_source,
            "items": len(classes),
        }
    return reference


# -- the same features, live (service side) ------------------------------------------------

Raw = dict[str, tuple[np.ndarray, Sequence[str] | None]]


def raw_features(x: np.ndarray, extractor: dict[str, Any], preprocessing: dict | None) -> Raw:
    """Per feature: the values (numeric) or category indices, and the categories (None for a
    numeric feature), for a batch of model inputs ``x``."""
    kind = extractor["kind"]
    if kind == "bank_record":
        return _bank_fields(x, (preprocessing or {})["encoder"])
    flat = np.asarray(x, np.float32).reshape(len(x), -1)
    if kind == "image":
        ink = flat > extractor["ink_threshold"]
        return {
            "mean_intensity": (flat.mean(axis=1), None),
            "contrast": (flat.std(axis=1), None),
            "ink_fraction": (ink.mean(axis=1), None),
        }
    return {f"x{j}": (flat[:, j], None) for j in range(flat.shape[1])}


def size_features(sizes: Any) -> Raw:
    """Width and height per image from (N, 2) sizes (a list of (width, height) is fine)."""
    sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
    return {"width": (sizes[:, 0], None), "height": (sizes[:, 1], None)}


def _bank_fields(x: np.ndarray, encoder: dict[str, Any]) -> Raw:
    """The record fields behind encoded bank vectors (the encoder's inverse)."""
    x = np.asarray(x, np.float64)
    categories: dict[str, list[str]] = encoder["categories"]
    numeric = [c for c in encoder["columns"] if c not in categories]
    log_scaled = set(encoder.get("log_scaled", ()))
    found: Raw = {}
    for j, column in enumerate(numeric):
        value = x[:, j] * encoder["std"][column] + encoder["mean"][column]
        if column in log_scaled:
            value = np.sign(value) * np.expm1(np.abs(value))
        found[column] = (value, None)
    start = len(numeric)
    for column in [c for c in encoder["columns"] if c in categories]:
        values = categories[column]
        block = x[:, start : start + len(values)]
        found[column] = (block.argmax(axis=1), values)
        start += len(values)
    return found


def binner(reference: dict[str, Any], preprocessing: dict | None) -> Callable:
    """``bins(x, sizes) -> {feature: bin index per item}`` against ``reference``, for a batch
    of live model inputs ``x`` and/or the original sizes of uploaded images (either None)."""
    extractor, features = reference["extractor"], reference["features"]

    def bins(x: np.ndarray | None, sizes: Any = None) -> dict[str, np.ndarray]:
        out = {}
        raw = {} if x is None else raw_features(x, extractor, preprocessing)
        if sizes is not None:
            raw.update(size_features(sizes))
        for name, (values, categories) in raw.items():
            spec = features.get(name)
            if spec is None:
                continue
            if categories is None:
                out[name] = numeric_bins(values, spec["edges"])
            else:
                out[name] = np.asarray(values, np.int64)
        return out

    return bins


def bin_count(spec: dict[str, Any]) -> int:
    return len(spec["counts"])


def psi(expected_counts: Sequence[float], actual_counts: Sequence[float]) -> float:
    """Population stability index: sum over bins of (a - e) * ln(a / e), proportions floored
    at ``EPSILON``."""
    expected = np.maximum(np.asarray(expected_counts, np.float64), 0)
    actual = np.maximum(np.asarray(actual_counts, np.float64), 0)
    e = np.maximum(expected / max(expected.sum(), 1), EPSILON)
    a = np.maximum(actual / max(actual.sum(), 1), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))
