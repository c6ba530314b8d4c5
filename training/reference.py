"""``reference.json`` for a version: the training inputs and test-split answers summarised by
``modelspec.reference`` (the service compares live traffic with it: drift)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from modelspec.reference import REFERENCE_FILE, build
from modelspec.tensors import Signature
from training.errors import TrainingError
from training.export import Runner, run_batched

log = logging.getLogger(__name__)
# Enough items for stable deciles; the summary stays a few kB whatever the data size.
MAX_ITEMS = 20_000


def predicted_classes(
    signature: Signature, outputs: dict[str, np.ndarray], threshold: float | None
) -> np.ndarray | None:
    """The class each item got, as the service's answer counts it; None when the signature
    does not classify (codes, images, plain tensors)."""
    (value,) = outputs.values() if len(outputs) == 1 else (None,)
    if value is None:
        return None
    if signature.answer in ("digit", "top_labels"):
        return np.asarray(value).argmax(axis=1)
    if signature.answer == "decision" and threshold is not None:
        return (np.asarray(value)[:, 0] >= threshold).astype(np.int64)
    return None


def for_model(
    signature: Signature,
    train_inputs: np.ndarray,
    test_inputs: np.ndarray | None,
    run: Runner | None,
    manifest: dict[str, Any],
    source: str,
    sizes: np.ndarray | None = None,
) -> dict[str, Any]:
    """The reference of ``signature``: its inputs from ``train_inputs`` (and ``sizes``, the
    original image sizes, item for item) and, when ``run`` and test inputs are given and the
    signature classifies, its answers on them."""
    rng = np.random.default_rng(0)
    if len(train_inputs) > MAX_ITEMS:
        kept = np.sort(rng.choice(len(train_inputs), MAX_ITEMS, False))
        train_inputs = train_inputs[kept]
        sizes = None if sizes is None else np.asarray(sizes)[kept]
    classes = None
    if run is not None and test_inputs is not None and len(test_inputs):
        outputs = run_batched(run, signature.name, np.asarray(test_inputs, np.float32), 256)
        threshold = manifest.get("decision", {}).get("threshold")
        classes = predicted_classes(signature, outputs, threshold)
    return build(
        np.asarray(train_inputs),
        signature=signature.name,
        input_kind=signature.input_kind,
        preprocessing=manifest.get("preprocessing"),
        classes=classes,
        labels=manifest.get("labels", []),
        source=source,
        sizes=sizes,
    )


def write(reference: dict[str, Any], directory: Path) -> str:
    (directory / REFERENCE_FILE).write_text(json.dumps(reference, indent=1) + "\n")
    return REFERENCE_FILE


def from_file(
    path: Path, signature: Signature, run: Runner | None, manifest: dict[str, Any]
) -> dict[str, Any]:
    """``export --reference-inputs FILE.npy``: a user's sample of the model's training inputs
    (shaped as the signature's first input, batch first); the model's answers on the same
    inputs stand for the output distribution."""
    inputs = read_inputs(path, signature)
    log.info("reference statistics from %d items of %s", len(inputs), path)
    return for_model(signature, inputs, inputs, run, manifest, f"{path.name} ({len(inputs)} items)")


def read_inputs(path: Path, signature: Signature) -> np.ndarray:
    """The ``--reference-inputs`` file, checked against the signature's first input. The
    export checks it before converting anything too: a file refused only at the end had
    cost the whole export (10 s for a 4-feature model)."""
    try:
        inputs = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise TrainingError(
            f"--reference-inputs {path}: not a readable .npy file ({error})"
        ) from None
    expected = signature.inputs[0].shape[1:]
    if inputs.ndim != len(expected) + 1 or any(
        d is not None and d != s for d, s in zip(expected, inputs.shape[1:], strict=True)
    ):
        raise TrainingError(
            f"--reference-inputs {path}: shape {list(inputs.shape)} does not fit input "
            f"{signature.inputs[0].name!r} {['N', *(d if d else 'any' for d in expected)]}"
        )
    if len(inputs) < 10 or inputs.dtype.kind not in "fiub":
        raise TrainingError(f"--reference-inputs {path}: needs at least 10 numeric items")
    return inputs
