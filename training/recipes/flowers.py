"""Flower classifier by transfer learning: ImageNet MobileNetV2 base, new softmax head.

Phase 1 trains the head on the frozen base; phase 2 fine-tunes the base's convolutions at a
low learning rate. Batch normalisation stays frozen and in inference mode throughout: with few
images its batch statistics are noisy, and the locally recovered int8 weights carry synthetic
moving statistics that batch statistics would destroy (training collapses to 30-45%).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from modelspec import flowers as spec
from modelspec.repository import files_digest
from training import plots
from training.datasets.flowers import decode_images, list_flowers
from training.datasets.splits import stratified_split, stratified_subset
from training.errors import TrainingError
from training.export import KerasFn, keras_runner, run_batched
from training.metrics import classification_metrics
from training.recipes.base import Dataset, Predict, Profile, Recipe, Split, Trained
from training.recipes.common import history_dict

log = logging.getLogger(__name__)

BATCH_SIZE = 32
QUICK_IMAGES = 300
FRACTIONS = (0.70, 0.15, 0.15)
# Fine-tuning reaches down to the first convolution: the int8-recovered weights need their
# features adapted at every depth, and a low learning rate keeps that from overfitting.
FINE_TUNE_FROM = "Conv1"
BASE_NAME = f"mobilenetv2_1.00_{spec.IMAGE_SIZE}"
HEAD_LEARNING_RATE = 1e-3
FINE_TUNE_LEARNING_RATE = 2e-5


def build_base(weights: str) -> tuple[Any, str]:
    """MobileNetV2 without its top, and a plain sentence on where its weights came from."""
    import keras

    shape = (spec.IMAGE_SIZE, spec.IMAGE_SIZE, 3)

    def make(w: str | None) -> Any:
        return keras.applications.MobileNetV2(include_top=False, weights=w, input_shape=shape)

    if weights == "none":
        return make(None), "random initialisation (no ImageNet weights requested)"
    if weights != "imagenet":
        try:
            return make(weights), f"ImageNet weights from the file {Path(weights).name}"
        except Exception as error:  # h5py, shape and format errors all mean the same here
            raise TrainingError(
                f"--weights {weights} is not a MobileNetV2 (alpha 1.0, no top) weights file: "
                f"{error}"
            ) from None
    try:
        return make("imagenet"), "ImageNet weights (Keras download)"
    except Exception as error:  # no network: Keras raises from deep inside its downloader
        log.warning("ImageNet weights could not be downloaded (%s); using random init", error)
        return make(None), (
            "RANDOM INITIALISATION: the ImageNet weights could not be "
            f"downloaded ({type(error).__name__}); accuracy is far below "
            "what transfer learning reaches"
        )


def build_model(class_count: int, weights: str) -> tuple[Any, str]:
    import keras
    from keras import layers

    base, provenance = build_base(weights)
    base.trainable = False
    inputs = keras.Input((spec.IMAGE_SIZE, spec.IMAGE_SIZE, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1, name="mobilenet_scaling")(inputs)
    x = base(x, training=False)  # batch norm in inference mode, even once unfrozen
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(class_count, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=spec.NAME), provenance


def unfreeze_from(model: Any, first: str) -> int:
    """Make the base trainable from layer ``first`` up, batch norm excluded; returns the count."""
    import keras

    base = model.get_layer(BASE_NAME)
    base.trainable = True
    names = [layer.name for layer in base.layers]
    start = names.index(first)
    count = 0
    for i, layer in enumerate(base.layers):
        tune = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = tune
        count += tune
    return count


def augmented_dataset(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    import keras
    import tensorflow as tf
    from keras import layers

    augment = keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.08, seed=seed + 1),
            layers.RandomZoom(0.15, seed=seed + 2),
            layers.RandomContrast(0.15, seed=seed + 3),
        ],
        name="augmentation",
    )
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(BATCH_SIZE)
        .map(
            lambda a, b: (augment(tf.cast(a, tf.float32), training=True), b),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )


def _compile(model: Any, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )


class FlowersRecipe(Recipe):
    name = spec.NAME
    title = "Flower classifier (MobileNetV2 transfer learning)"
    intended_use = (
        "Names the flower in a photo among the trained classes (daisy, dandelion, rose, "
        "sunflower, tulip). Every photo gets one of those labels: it cannot say 'not a "
        "flower', so check the top probability before trusting a label."
    )

    def load(self, data_dir: Path, profile: Profile) -> Dataset:
        listing = list_flowers(data_dir)
        quick_images = QUICK_IMAGES if profile.quick else len(listing.files)
        chosen = stratified_subset(listing.labels, quick_images, profile.seed)
        decoded = decode_images(listing.root, [listing.files[i] for i in chosen])
        index = {f: i for i, f in enumerate(listing.files)}
        labels = listing.labels[[index[f] for f in decoded.files]]
        parts = stratified_split(labels, FRACTIONS, profile.seed)
        splits = [Split(decoded.images[p], labels[p]) for p in parts]
        test_files = [decoded.files[i] for i in parts[2]]
        counts = {name: int(np.sum(labels == i)) for i, name in enumerate(listing.class_names)}
        return Dataset(
            *splits,
            labels=listing.class_names,
            description={
                "source": "flower photos, one folder per class",
                "folder": listing.root.name,
                "images": len(decoded.files),
                "per_class": counts,
                "skipped_unreadable": len(decoded.skipped),
                "skipped_files": decoded.skipped,
                "train": len(parts[0]),
                "validation": len(parts[1]),
                "test": len(parts[2]),
            },
            test_split={
                "folder": listing.root.name,
                "files": test_files,
                "sha256": files_digest(listing.root, test_files),
            },
        )

    def train(self, data: Dataset, profile: Profile) -> Trained:
        import keras

        model, provenance = build_model(len(data.labels), profile.weights)
        train_ds = augmented_dataset(data.train.x, data.train.y, profile.seed)
        validation = (data.validation.x.astype(np.float32), data.validation.y)
        verbose = 2 if profile.quick else 1

        head_epochs = profile.epochs_or(full=8, quick=1)
        _compile(model, HEAD_LEARNING_RATE)
        head = model.fit(train_ds, validation_data=validation, epochs=head_epochs, verbose=verbose)

        tuned_layers = unfreeze_from(model, FINE_TUNE_FROM)
        tune_epochs = profile.epochs_or(full=15, quick=1)
        _compile(model, FINE_TUNE_LEARNING_RATE)
        stop = keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=5, restore_best_weights=True
        )
        tune = model.fit(
            train_ds,
            validation_data=validation,
            epochs=tune_epochs,
            callbacks=[stop],
            verbose=verbose,
        )
        history = {
            k: history_dict(head)[k] + history_dict(tune).get(k, []) for k in history_dict(head)
        }

        manifest = {"labels": list(data.labels)}
        metrics = self.evaluate(keras_runner(self.endpoints(model)), data.test, manifest)
        notes = [f"Base weights: {provenance}."]
        if "ImageNet weights (Keras download)" not in provenance:
            notes.append(
                "The target of >= 92% test accuracy assumes the float ImageNet "
                "weights Keras downloads; other weights are reported as they are."
            )
        return Trained(
            model=model,
            history=history,
            metrics=metrics,
            preprocessing=spec.PREPROCESSING,
            notes=notes,
            curve_marks={"fine-tuning": head_epochs + 0.5},
            training_config={
                "base_weights": provenance,
                "batch_size": BATCH_SIZE,
                "head_epochs": head_epochs,
                "fine_tune_epochs_run": len(history_dict(tune)["loss"]),
                "fine_tune_from": FINE_TUNE_FROM,
                "fine_tuned_layers": tuned_layers,
                "optimizer": f"Adam {HEAD_LEARNING_RATE} (head), {FINE_TUNE_LEARNING_RATE} "
                "(fine-tuning)",
                "augmentation": "flip, rotation 0.08 turn, zoom 15%, contrast 15%",
                "batch_norm": "frozen, inference mode",
            },
        )

    def endpoints(self, model: Any) -> dict[str, KerasFn]:
        return {"predict": lambda x: {"probabilities": model(x, training=False)}}

    def signatures_for(self, model: Any) -> tuple:
        return spec.signatures(int(model.output_shape[-1]))

    def standalone_metadata(self, model: Any) -> dict[str, Any]:
        if int(model.output_shape[-1]) != len(spec.DEFAULT_LABELS):
            raise TrainingError(
                "this flowers model has a class count of its own: export it "
                "with the manifest.json `train` wrote beside it"
            )
        return {"labels": list(spec.DEFAULT_LABELS), "preprocessing": spec.PREPROCESSING}

    def load_test(self, data_dir: Path, manifest: dict[str, Any]) -> Split:
        listing = list_flowers(data_dir)
        files = manifest["test_split"]["files"]
        decoded = decode_images(listing.root, files)
        if decoded.skipped:
            raise TrainingError(f"test images no longer readable: {sorted(decoded.skipped)}")
        by_name = dict(zip(listing.files, listing.labels, strict=True))
        return Split(decoded.images.astype(np.float32), np.array([by_name[f] for f in files]))

    def evaluate(self, predict: Predict, test: Split, manifest: dict[str, Any]) -> dict[str, Any]:
        x = np.asarray(test.x, dtype=np.float32)
        probabilities = run_batched(predict, "predict", x)["probabilities"]
        return classification_metrics(test.y, probabilities, tuple(manifest["labels"]))

    def synthetic_input(self, model: Any, manifest: dict[str, Any], count: int) -> np.ndarray:
        size = (count, spec.IMAGE_SIZE, spec.IMAGE_SIZE, 3)
        return np.random.default_rng(0).integers(0, 256, size).astype(np.float32)

    def figures(self, trained: Trained, data: Dataset, out: Path) -> list[tuple[str, str]]:
        return [
            (
                "Confusion matrix on the test set",
                plots.confusion_matrix(
                    trained.metrics["confusion_matrix"], data.labels, out / "confusion_matrix.png"
                ),
            )
        ]
