"""Digit CNN on MNIST: the seed architecture, trained with light augmentation.

Architecture as specified: Conv2D(16)-MaxPool-Conv2D(32)-MaxPool-Flatten-Dense(64)-Dense(10).
What beats the 98.97% reference is training, not size: small random shifts, rotations and
zooms, and a cosine-decayed learning rate over more epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelspec import digits as spec
from training import plots
from training.export import KerasFn, keras_runner, run_batched
from training.metrics import classification_metrics
from training.recipes.base import Dataset, Predict, Profile, Recipe, Split, Trained
from training.recipes.common import history_dict, mnist_dataset, mnist_test

BATCH_SIZE = 128
# The out-of-distribution detector the service pairs with digits by default: the autoencoder
# trained beside it scores each input by its reconstruction error, against the threshold in
# the autoencoder's own manifest (``detector``). serving.yaml ``models.digits.ood`` overrides.
OOD_PAIRING = {"detector": "autoencoder", "signature": "reconstruct", "score": "reconstruction_mse"}


def build_model() -> Any:
    import keras
    from keras import layers

    inputs = keras.Input((spec.IMAGE_SIZE, spec.IMAGE_SIZE), name="image")
    x = layers.Reshape((spec.IMAGE_SIZE, spec.IMAGE_SIZE, 1))(inputs)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(len(spec.LABELS), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=spec.NAME)


def augmentation(seed: int) -> Any:
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.Reshape((spec.IMAGE_SIZE, spec.IMAGE_SIZE, 1)),
            layers.RandomRotation(0.03, fill_mode="constant", seed=seed),
            layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed + 1),
            layers.RandomZoom(0.08, fill_mode="constant", seed=seed + 2),
            layers.Reshape((spec.IMAGE_SIZE, spec.IMAGE_SIZE)),
        ],
        name="augmentation",
    )


def augmented_dataset(x: np.ndarray, y: np.ndarray, seed: int, batch_size: int) -> Any:
    import tensorflow as tf

    augment = augmentation(seed)
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(lambda a, b: (augment(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


class DigitsRecipe(Recipe):
    name = spec.NAME
    title = "Digit classifier (MNIST CNN)"
    intended_use = (
        "Classifies a single handwritten digit, 28x28 grey, white on black, centred the MNIST "
        "way. Not for printed text, multi-digit strings or photos of digits without that "
        "preprocessing."
    )

    def load(self, data_dir: Path, profile: Profile) -> Dataset:
        return mnist_dataset(data_dir, profile, spec.scale_pixels, spec.LABELS)

    def train(self, data: Dataset, profile: Profile) -> Trained:
        import keras

        epochs = profile.epochs_or(full=30, quick=1)
        model = build_model()
        steps = epochs * int(np.ceil(len(data.train.y) / BATCH_SIZE))
        schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps, alpha=0.02)
        model.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        history = model.fit(
            augmented_dataset(data.train.x, data.train.y, profile.seed, BATCH_SIZE),
            validation_data=(data.validation.x, data.validation.y),
            epochs=epochs,
            verbose=2 if profile.quick else 1,
        )
        manifest = {"labels": list(spec.LABELS)}
        keras_predict = keras_runner(self.endpoints(model))
        return Trained(
            model=model,
            history=history_dict(history),
            metrics=self.evaluate(keras_predict, data.test, manifest),
            preprocessing=spec.PREPROCESSING,
            training_config={
                "epochs": epochs,
                "batch_size": BATCH_SIZE,
                "optimizer": "Adam, cosine decay from 2e-3",
                "augmentation": "rotation 0.03 turn, shift 8%, zoom 8%",
            },
            manifest_extra={"ood": OOD_PAIRING},
        )

    def endpoints(self, model: Any) -> dict[str, KerasFn]:
        return {"predict": lambda x: {"probabilities": model(x, training=False)}}

    def signatures_for(self, model: Any) -> tuple:
        return spec.SIGNATURES

    def standalone_metadata(self, model: Any) -> dict[str, Any]:
        return {"labels": list(spec.LABELS), "preprocessing": spec.PREPROCESSING}

    def load_test(self, data_dir: Path, manifest: dict[str, Any]) -> Split:
        return mnist_test(data_dir, manifest, spec.scale_pixels)

    def evaluate(self, predict: Predict, test: Split, manifest: dict[str, Any]) -> dict[str, Any]:
        probabilities = run_batched(predict, "predict", test.x)["probabilities"]
        return classification_metrics(test.y, probabilities, tuple(manifest["labels"]))

    def synthetic_input(self, model: Any, manifest: dict[str, Any], count: int) -> np.ndarray:
        return np.random.default_rng(0).random(
            (count, spec.IMAGE_SIZE, spec.IMAGE_SIZE), np.float32
        )

    def figures(self, trained: Trained, data: Dataset, out: Path) -> list[tuple[str, str]]:
        return [
            (
                "Confusion matrix on the test set",
                plots.confusion_matrix(
                    trained.metrics["confusion_matrix"], data.labels, out / "confusion_matrix.png"
                ),
            )
        ]
