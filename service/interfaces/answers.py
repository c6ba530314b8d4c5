"""The rich answers: ``digit``, ``top_labels``, ``decision``, ``code`` and ``image``.

Each reads the signature's one output (its name from the manifest) and writes the native JSON
(or PNG) its clients get; ``decision`` also adds a ``label`` tensor for the protocols, and the
classifiers say which class each item got (the per-class metric, the classification
extension). Labels and thresholds come from the version's manifest.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from modelspec import Signature, digits
from service.backends import Outputs
from service.errors import RequestError
from service.http import Reply, json_reply
from service.inputs.numbers import ascii_int
from service.interfaces.base import (
    BYTES,
    Answer,
    Incoming,
    Tensor,
    VersionFacts,
    accepts_json,
    envelope,
    query_option,
)
from service.monitoring.names import IN_DISTRIBUTION, OOD_SCORE

DEFAULT_TOP_K = 3
_FLOATS = {"type": "array", "items": {"type": "number"}}
_MATRIX = {"type": "array", "items": _FLOATS}


def _list_of(**properties: Any) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "object", "properties": properties}}


def _envelope_schema(**properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"model": {"type": "string"}, "version": {"type": "integer"}, **properties},
    }


def only_output(outputs: Outputs, version: VersionFacts, signature: str) -> np.ndarray:
    return outputs[version.signatures[signature].outputs[0].name]


def with_flags(predictions: list[dict[str, Any]], outputs: Outputs) -> list[dict[str, Any]]:
    """Each prediction with ``in_distribution`` and ``ood_score`` when the model has an
    out-of-distribution detector (service.monitoring.ood); the score is null when the
    detector could not run."""
    if OOD_SCORE not in outputs:
        return predictions
    scores = [None if s != s else s for s in outputs[OOD_SCORE].tolist()]  # NaN -> null
    for prediction, inside, score in zip(
        predictions, outputs[IN_DISTRIBUTION].tolist(), scores, strict=True
    ):
        prediction.update(in_distribution=inside, ood_score=score)
    return predictions


class _Classifier(Answer):
    """A probability per label, one row per item."""

    needs_labels = True

    def check(self, signature: Signature, manifest: dict[str, Any]) -> None:
        super().check(signature, manifest)
        labels, width = manifest["labels"], signature.outputs[0].shape[-1]
        if width != len(labels):
            raise ValueError(f"{len(labels)} labels for {width} output classes")

    def protocol_outputs(
        self, signature: Signature, manifest: dict[str, Any]
    ) -> tuple[Tensor, ...]:
        labels = tuple(manifest.get("labels", ()))
        return tuple(Tensor.of(t, classes=labels) for t in signature.outputs)

    def classes(self, outputs: Outputs, version: VersionFacts) -> np.ndarray:
        # The model's one output comes first; a detector's OOD flags may follow it.
        probabilities = next(iter(outputs.values()))
        return probabilities.argmax(axis=1)


class DigitAnswer(_Classifier):
    name = "digit"
    summary = "each item's digit and its 10 probabilities"

    def native(
        self, outputs: Outputs, incoming: Incoming, version: VersionFacts, signature: str
    ) -> Reply:
        probabilities = only_output(outputs, version, signature)
        best = probabilities.argmax(axis=1)
        predictions = [
            {"digit": int(d), "probabilities": p} for d, p in zip(best, probabilities, strict=True)
        ]
        return json_reply(envelope(version, predictions=with_flags(predictions, outputs)))

    def native_response(self, version: VersionFacts, signature: str) -> dict[str, Any]:
        return _envelope_schema(
            predictions=_list_of(digit={"type": "integer"}, probabilities=_FLOATS)
        )


def top_k_option(query: dict[str, str], class_count: int) -> int:
    value = query.get("top_k", str(min(DEFAULT_TOP_K, class_count)))
    k = ascii_int(value)
    if k is None or not 1 <= k <= class_count:
        raise RequestError(
            "invalid_parameter",
            f"top_k={value[:40]!r}",
            field="top_k",
            expected=f"an integer from 1 to {class_count}",
        )
    return k


class TopLabels(_Classifier):
    name = "top_labels"
    summary = "each item's label and the top-k labels with probabilities (?top_k=, default 3)"
    query_options = (query_option("top_k", {"type": "integer", "minimum": 1}, "labels per item"),)

    def check_native(self, incoming: Incoming, version: VersionFacts) -> None:
        super().check_native(incoming, version)
        top_k_option(incoming.query, len(version.labels))

    def native(
        self, outputs: Outputs, incoming: Incoming, version: VersionFacts, signature: str
    ) -> Reply:
        labels = version.labels
        probabilities = only_output(outputs, version, signature)
        k = top_k_option(incoming.query, len(labels))
        order = np.argsort(-probabilities, axis=1)[:, :k]
        predictions = [
            {
                "label": labels[int(ranked[0])],
                "top": [{"label": labels[int(i)], "probability": float(row[i])} for i in ranked],
            }
            for ranked, row in zip(order, probabilities, strict=True)
        ]
        return json_reply(envelope(version, predictions=with_flags(predictions, outputs)))

    def native_response(self, version: VersionFacts, signature: str) -> dict[str, Any]:
        label = {"type": "string", "enum": list(version.labels)}
        return _envelope_schema(
            predictions=_list_of(
                label=label, top=_list_of(label=label, probability={"type": "number"})
            )
        )


class Decision(Answer):
    """A probability of the positive class, and the label at the manifest's threshold."""

    name = "decision"
    summary = "each item's probability and the decision at the model's threshold"
    LABEL = "label"
    needs_labels = True

    def check(self, signature: Signature, manifest: dict[str, Any]) -> None:
        super().check(signature, manifest)
        threshold = manifest.get("decision", {}).get("threshold")
        probability = isinstance(threshold, int | float) and not isinstance(threshold, bool)
        if len(manifest["labels"]) != 2 or not (probability and 0 <= threshold <= 1):
            raise ValueError("a decision needs two labels and a threshold in [0, 1]")

    def protocol_outputs(
        self, signature: Signature, manifest: dict[str, Any]
    ) -> tuple[Tensor, ...]:
        (probability,) = signature.outputs
        return (Tensor.of(probability), Tensor(self.LABEL, BYTES, (-1,)))

    def classes(self, outputs: Outputs, version: VersionFacts) -> np.ndarray:
        probability = next(iter(outputs.values()))  # OOD flags, if any, follow it
        return (probability[:, 0] >= version.threshold).astype(np.int64)

    def present(self, outputs: Outputs, version: VersionFacts) -> dict[str, np.ndarray]:
        labels = np.asarray(version.labels, dtype=object)
        return {**outputs, self.LABEL: labels[self.classes(outputs, version)]}

    def native(
        self, outputs: Outputs, incoming: Incoming, version: VersionFacts, signature: str
    ) -> Reply:
        threshold = version.threshold
        labels = version.labels
        predictions = []
        for p in only_output(outputs, version, signature)[:, 0].tolist():
            subscribe = p >= threshold
            predictions.append(
                {"probability": p, "subscribe": subscribe, "label": labels[subscribe]}
            )
        predictions = with_flags(predictions, outputs)
        return json_reply(envelope(version, threshold=threshold, predictions=predictions))

    def native_response(self, version: VersionFacts, signature: str) -> dict[str, Any]:
        return _envelope_schema(
            threshold={"type": "number"},
            predictions=_list_of(
                probability={"type": "number"},
                subscribe={"type": "boolean"},
                label={"type": "string", "enum": list(version.labels)},
            ),
        )


class Code(Answer):
    name = "code"
    summary = "each item's code"

    def native(
        self, outputs: Outputs, incoming: Incoming, version: VersionFacts, signature: str
    ) -> Reply:
        return json_reply(envelope(version, codes=only_output(outputs, version, signature)))

    def native_response(self, version: VersionFacts, signature: str) -> dict[str, Any]:
        (code,) = version.signatures[signature].outputs
        return _envelope_schema(codes={**_MATRIX, "description": f"(N, {code.shape[-1]})"})


def wants_png(incoming: Incoming) -> bool:
    fmt = incoming.query.get("format")
    if fmt is not None:
        if fmt not in ("tensor", "png"):
            raise RequestError(
                "invalid_parameter",
                f"format={fmt[:40]!r}",
                field="format",
                expected="tensor or png",
            )
        return fmt == "png"
    accepts_json(incoming, ("image/png",))
    accept = incoming.accept.lower()
    return "image/png" in accept and "json" not in accept


def to_png(pixels: np.ndarray) -> bytes:
    """784 values in [0, 1] -> a 28x28 greyscale PNG."""
    side = digits.IMAGE_SIZE
    grey = np.clip(np.round(pixels.reshape(side, side) * 255), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(grey.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


class ImageAnswer(Answer):
    """28x28 images in [0, 1]: a tensor (N, 784) by default; PNG on ``format=png`` or
    ``Accept: image/png`` (one PNG body for one item, base64 PNGs in JSON for several)."""

    name = "image"
    summary = "each item as a 28x28 image: floats, or PNG (?format=png or Accept: image/png)"
    query_options = (
        query_option(
            "format",
            {"type": "string", "enum": ["tensor", "png"]},
            "tensor (JSON, default) or png; 'Accept: image/png' also asks for PNG",
        ),
    )

    def check_native(self, incoming: Incoming, version: VersionFacts) -> None:
        wants_png(incoming)

    def native(
        self, outputs: Outputs, incoming: Incoming, version: VersionFacts, signature: str
    ) -> Reply:
        images = only_output(outputs, version, signature)
        if not wants_png(incoming):
            return json_reply(envelope(version, reconstructions=images))
        if len(images) == 1:
            return Reply(to_png(images[0]), media_type="image/png")
        encoded = [base64.b64encode(to_png(r)).decode("ascii") for r in images]
        return json_reply(envelope(version, images=encoded))

    def native_response(self, version: VersionFacts, signature: str) -> dict[str, Any]:
        return _envelope_schema(
            reconstructions={**_MATRIX, "description": "(N, 784) in [0, 1]"},
            images={"type": "array", "items": {"type": "string"}, "description": "base64 PNGs"},
        )
