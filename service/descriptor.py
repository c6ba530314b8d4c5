"""One model version as every part of the service sees it, built once from its manifest.

The manifest's signatures (``modelspec``) and each signature's declared interface give
everything the service needs: the graph's inputs and outputs, the tensors V2 and TF Serving
show, the native routes and how they read and answer, the V2 model names, the OpenAPI
schemas and what ``/models`` lists. Nothing about a model is declared anywhere else.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelspec.tensors import Signature, signatures_from_manifest
from service.config import OodConfig
from service.errors import NotFound, RequestError
from service.inputs.tensors import TensorContract
from service.interfaces import ANSWERS, INPUT_KINDS, TENSOR_ANSWER, TENSOR_INPUT
from service.interfaces.base import Answer, InputKind, Tensor
from service.monitoring.names import IN_DISTRIBUTION, OOD_SCORE

TF_DEFAULT = "serving_default"
MAX_CARD_FILE_BYTES = 16 << 20  # a card or plot; the training CLI writes tens of KB


@dataclass(frozen=True)
class SignatureView:
    """One signature: the graph's tensors, and how requests reach it."""

    name: str
    signature: Signature
    kind: InputKind
    answer: Answer
    inputs: tuple[Tensor, ...]  # as V2 and TF Serving show them
    outputs: tuple[Tensor, ...]
    # Its batch job adds the paired OOD detector's ``ood_score`` and ``in_distribution``
    # (service.monitoring.ood): the default signature of a version with a pairing.
    flagged: bool = False

    @property
    def rich(self) -> bool:
        """It has a native route of its own, beyond plain tensors."""
        return self.kind is not TENSOR_INPUT or self.answer is not TENSOR_ANSWER

    def input(self, name: str) -> Tensor:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    def output(self, name: str) -> Tensor:
        """The output a client asked for by name (V2 ``outputs``, over HTTP or gRPC)."""
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise RequestError(
            "unknown_output",
            f"signature {self.name!r} has no output {name[:60]!r}",
            field="outputs",
            expected=str([t.name for t in self.outputs]),
        )


class ManifestError(ValueError):
    """A manifest the service cannot serve from (a missing field, an unknown interface)."""


def ood_pairing(manifest: dict[str, Any], config: OodConfig | None) -> dict[str, Any] | None:
    """The manifest's ``ood`` pairing with the settings' fields over it; None when neither
    names a detector or the settings turn it off."""
    if config is not None and not config.enabled:
        return None
    paired = manifest.get("ood")
    pairing = dict(paired) if isinstance(paired, dict) else {}
    if config is not None:
        given = config.model_dump(exclude={"enabled"}, exclude_none=True)
        pairing.update(given)
    if not isinstance(pairing.get("detector"), str) or not pairing["detector"]:
        return None
    threshold = pairing.get("threshold")
    if threshold is not None and not (isinstance(threshold, int | float) and threshold >= 0):
        raise ManifestError("ood threshold must be a number >= 0")
    return pairing


def _check_descriptive(manifest: dict[str, Any]) -> None:
    """The manifest's words the service shows (labels, title) are what they claim to be."""
    labels = manifest.get("labels", [])
    if not isinstance(labels, list) or not all(
        isinstance(label, str) and 0 < len(label) <= 200 for label in labels
    ):
        raise ManifestError("manifest labels must be a list of 1-200 character strings")
    if len(set(labels)) != len(labels):
        raise ManifestError("manifest labels must be distinct")
    title = manifest.get("title")
    if title is not None and not isinstance(title, str):
        raise ManifestError("manifest title must be a string")


class Version:
    """A model version's description: manifest, signatures, interfaces and names."""

    def __init__(
        self,
        name: str,
        number: int,
        directory: Path,
        manifest: dict[str, Any],
        ood: OodConfig | None = None,
    ) -> None:
        self.name = name
        self.number = number
        self.directory = directory
        self.manifest = manifest
        try:
            signatures = signatures_from_manifest(manifest)
        except (KeyError, TypeError, ValueError) as error:
            raise ManifestError(f"manifest signatures: {error}") from None
        if not signatures:
            raise ManifestError("the manifest lists no signature")
        _check_descriptive(manifest)
        self.signatures: dict[str, Signature] = {s.name: s for s in signatures}
        self.default_signature = signatures[0].name
        # The out-of-distribution detector of the default signature's inputs, when the
        # manifest pairs one or the settings name one (service.monitoring.ood).
        self.ood = ood_pairing(manifest, ood)
        self.views = {s.name: self._view(s) for s in signatures}
        self._contracts = {
            s.name: {t.name: Tensor.of(t).contract() for t in s.inputs} for s in signatures
        }
        self._memo: dict[Any, Any] = {}

    def _view(self, signature: Signature) -> SignatureView:
        kind, answer = INPUT_KINDS[signature.input_kind], ANSWERS[signature.answer]
        try:  # each interface's own rules (service.interfaces)
            kind.check(signature)
            answer.check(signature, self.manifest)
        except ValueError as error:
            raise ManifestError(f"{signature.name}: {error}") from None
        try:
            inputs = kind.protocol_inputs(signature, self.manifest)
            outputs = answer.protocol_outputs(signature, self.manifest)
        except KeyError as error:
            raise ManifestError(f"{signature.name}: manifest lacks {error}") from None
        flagged = self.ood is not None and signature.name == self.default_signature
        if flagged:
            outputs = (
                *outputs,
                Tensor(OOD_SCORE, "FP32", (-1,)),
                Tensor(IN_DISTRIBUTION, "BOOL", (-1,)),
            )
        return SignatureView(signature.name, signature, kind, answer, inputs, outputs, flagged)

    # -- what the interfaces read ----------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels", []))

    @property
    def threshold(self) -> float:
        return float(self.manifest["decision"]["threshold"])

    @property
    def origin(self) -> str:
        """``trained`` by this project's recipes, or ``user``-supplied."""
        return self.manifest.get("origin", "trained")

    @property
    def profile(self) -> str | None:
        """The training profile: ``quick`` (small subsets, 1-2 epochs: for tests and trials,
        not for real predictions) or ``full``; None for a user-supplied model."""
        training = self.manifest.get("training")
        return training.get("profile") if isinstance(training, dict) else None

    def contracts(self, signature: str) -> dict[str, TensorContract]:
        """Each graph input of ``signature`` as a contract (dtype, shape, range)."""
        return self._contracts[signature]

    def memo(self, key: Any, build: Callable[[], Any]) -> Any:
        """What an interface derives from this version once (a contract...), kept here."""
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = build()
        return found

    def view(self, signature: str) -> SignatureView:
        view = self.views.get(signature)
        if view is None:
            raise NotFound(
                "unknown_signature",
                f"version {self.number} of {self.name!r} has no signature {signature!r}",
                field="signature",
                expected=str(list(self.views)),
            )
        return view

    def card_file(self, name: str) -> bytes:
        """The model card or one of its plots, by its name in the manifest's file list: a
        name from a URL is only ever a key here, never a path. Blocking (run it in a thread):
        the bytes served are a regular file's whose sha256 is the manifest's, read once per
        version and kept (cards and plots are tens of KB)."""
        expected = self.manifest.get("files", {}).get(name)
        if not isinstance(expected, str) or not name.endswith((".md", ".png")):
            raise NotFound("not_found", f"no file {name[:60]!r} in this version", field="file")
        return self.memo(("card file", name), lambda: self._read_verified(name, expected))

    def _read_verified(self, name: str, expected: str) -> bytes:
        def refused(problem: str) -> RequestError:
            return RequestError(
                "file_integrity",
                f"{name} of {self.name!r} version {self.number} {problem}",
                field="file",
                expected="the file the version was published with; publish the version again",
            )

        path = self.directory / name
        # Neither a symbolic link nor anything but a regular file: a FIFO would block the
        # reading thread forever, a device would never end. O_NONBLOCK: opening a FIFO swapped
        # in after the check returns at once instead of waiting for a writer.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            descriptor = os.open(path, flags)
        except FileNotFoundError:
            raise NotFound("not_found", "the file left the repository", field="file") from None
        except OSError:  # ELOOP: a symbolic link
            raise refused("is not a regular file") from None
        with os.fdopen(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CARD_FILE_BYTES:
                raise refused("is not a regular file of at most 16 MiB")
            data = handle.read(MAX_CARD_FILE_BYTES + 1)
        if hashlib.sha256(data).hexdigest() != expected:
            raise refused("does not match its manifest (sha256)")
        return data

    # -- names the protocols use -----------------------------------------------------------

    def tf_signature(self, name: str) -> str:
        """TF Serving's ``signature_name``: ``serving_default`` is the default signature."""
        return self.default_signature if name == TF_DEFAULT else name

    def describe(self) -> dict[str, Any]:
        """What ``/models`` shows of this version: enough to call it correctly."""
        manifest = self.manifest
        return {
            "version": self.number,
            "origin": self.origin,
            "profile": self.profile,
            "title": manifest.get("title"),
            "created_at": manifest.get("created_at"),
            "signatures": {
                name: {
                    **manifest["signatures"][name],
                    "interface": {"input": view.kind.name, "answer": view.answer.name},
                    "native_route": f"/{self.name}/{name}" if view.rich else None,
                    "v2_inputs": [_tensor(t) for t in view.inputs],
                    "v2_outputs": [_tensor(t) for t in view.outputs],
                }
                for name, view in self.views.items()
            },
            "default_signature": self.default_signature,
            "labels": manifest.get("labels"),
            "preprocessing": manifest.get("preprocessing"),
            "decision": manifest.get("decision"),
            "metrics": manifest.get("metrics"),
            "latency": manifest.get("latency"),
            "model_card": f"/models/{self.name}/versions/{self.number}/card",
            "ood": self.ood,
        }


def _tensor(tensor: Tensor) -> dict[str, Any]:
    described: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
    }
    if tensor.range is not None:
        described["range"] = list(tensor.range)
    if tensor.images:
        described["also"] = "BYTES: PNG/JPEG files"
    return described
