"""What every model recipe provides, so one pipeline can train, export and evaluate all four."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelspec import Signature
from training.errors import TrainingError
from training.export import PARITY_MIN_INPUTS, KerasFn

# Runs one signature on a float32 batch: (signature name, inputs) -> {output name: array}.
Predict = Callable[[str, np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Profile:
    """How hard to train: the full recipe, or the quick one tests and CI use."""

    quick: bool = False
    epochs: int | None = None  # overrides the recipe's own count
    seed: int = 42
    weights: str = "imagenet"  # flowers only: "imagenet", "none" or a weights file

    def parity_inputs(self, recipe: Recipe) -> int:
        return self.pick(full=PARITY_MIN_INPUTS, quick=recipe.quick_parity_inputs)

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def epochs_or(self, full: int, quick: int) -> int:
        return self.epochs if self.epochs is not None else self.pick(full, quick)


@dataclass
class Split:
    x: Any
    y: np.ndarray


@dataclass
class Dataset:
    train: Split
    validation: Split
    test: Split
    labels: tuple[str, ...]
    description: dict[str, Any]  # source file, hash, counts: goes into the manifest and card
    test_split: dict[str, Any]  # exactly which examples are the test set
    fitted: dict[str, Any] = field(default_factory=dict)  # fitted on train only (encoders)
    # Examples before preparation, for recipes that prepare them more than one way (flowers:
    # the decoded photos of each split, drawn at several sizes and as augmented views).
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trained:
    """A fitted model and everything measured about it."""

    model: Any
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    preprocessing: dict[str, Any]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # test predictions for plots
    notes: list[str] = field(default_factory=list)  # plain facts for the card (weights used...)
    # (heading, body) for the card; a callable body is rendered from the final manifest, for
    # sections that need what export measured (latency, the version number).
    card_sections: list[tuple[str, str | Callable[[dict[str, Any]], str]]] = field(
        default_factory=list
    )
    training_config: dict[str, Any] = field(default_factory=dict)
    manifest_extra: dict[str, Any] = field(default_factory=dict)  # e.g. a decision threshold
    curve_marks: dict[str, float] = field(default_factory=dict)  # phase starts, by epoch


class Recipe(ABC):
    """One model: its data, architecture, training, evaluation and report."""

    name: str
    title: str
    intended_use: str
    # Held-out inputs the parity check runs through Keras, the SavedModel and ONNX Runtime in
    # the quick profile; a recipe whose model is slow checks fewer there (the full profile
    # always checks PARITY_MIN_INPUTS).
    quick_parity_inputs: int = PARITY_MIN_INPUTS

    @abstractmethod
    def load(self, data_dir: Path, profile: Profile) -> Dataset:
        """Read the data and make the seeded, stratified splits."""

    @abstractmethod
    def train(self, data: Dataset, profile: Profile) -> Trained:
        """Build, fit and evaluate on the test split."""

    @abstractmethod
    def endpoints(self, model: Any) -> dict[str, KerasFn]:
        """The Keras implementation of each exported signature."""

    @abstractmethod
    def signatures_for(self, model: Any) -> tuple[Signature, ...]:
        """The exported signatures, with sizes read off the model (class count, features)."""

    def standalone_metadata(self, model: Any) -> dict[str, Any]:
        """Manifest fields for a Keras file exported without the manifest ``train`` wrote."""
        raise TrainingError(
            f"a '{self.name}' model needs the manifest.json that `train` wrote beside it "
            "(its labels and preprocessing are not in the Keras file)"
        )

    @abstractmethod
    def load_test(self, data_dir: Path, manifest: dict[str, Any]) -> Split:
        """Exactly the test examples a manifest records, for re-evaluation."""

    @abstractmethod
    def evaluate(self, predict: Predict, test: Split, manifest: dict[str, Any]) -> dict[str, Any]:
        """Test metrics through ``predict`` (Keras, SavedModel or ONNX): one code path for all."""

    @abstractmethod
    def synthetic_input(self, model: Any, manifest: dict[str, Any], count: int) -> np.ndarray:
        """Inputs from the valid range of the main signature, for exports without the data."""

    def parity_inputs(self, model: Any, held_out: np.ndarray) -> dict[str, np.ndarray]:
        """Inputs of every signature, from held-out inputs of the main one."""
        return {s.name: held_out for s in self.signatures_for(model)}

    def reference_inputs(self, model: Any, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
        """(training, test) inputs of the main signature exactly as the model takes them, for
        the reference statistics (``training.reference``)."""
        return data.train.x, data.test.x

    def reference_sizes(self, data: Dataset) -> np.ndarray | None:
        """(N, 2) original widths and heights of the training images, before the resize, for
        the reference's size features; None when the inputs have no size of their own."""
        return None

    @abstractmethod
    def figures(self, trained: Trained, data: Dataset, out: Path) -> list[tuple[str, str]]:
        """Write the model-specific PNGs; (caption, file name) for the card."""
