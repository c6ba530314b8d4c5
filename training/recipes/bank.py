"""Bank-marketing MLP on the raw UCI table: will this client subscribe a term deposit?

Seed architecture (Dense128-BN-Dropout0.4-Dense64-BN-Dropout0.3-Dense32-Dropout0.2-Dense1),
Adam 1e-3, class weights for the 11.7% positive rate, early stopping on validation ROC-AUC.
A second variant without ``duration`` (known only after the call) is trained beside it, so
the card shows what a model usable *before* the call can really do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelspec import bank as spec
from modelspec.repository import sha256_file
from training import plots
from training.datasets.bank import load_bank
from training.datasets.splits import stratified_split, stratified_subset
from training.export import KerasFn, keras_runner, run_batched
from training.metrics import best_f1_threshold, binary_metrics
from training.recipes.base import Dataset, Predict, Profile, Recipe, Split, Trained
from training.recipes.common import history_dict

BATCH_SIZE = 256
QUICK_ROWS = 8000
FRACTIONS = (0.70, 0.15, 0.15)


def build_model(width: int) -> Any:
    import keras
    from keras import layers

    inputs = keras.Input((width,), name="features")
    x = layers.Dense(128, activation="relu")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Dropout(0.4)(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(32, activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="probability")(x)
    return keras.Model(inputs, outputs, name=spec.NAME)


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Balanced weights: each class contributes equally to the loss."""
    counts = np.bincount(y, minlength=2)
    return {c: float(len(y) / (2 * counts[c])) for c in (0, 1)}


def fit_variant(
    encoder: spec.BankEncoder, records: dict[str, list], data: Dataset, profile: Profile
) -> tuple[Any, dict[str, list[float]], float]:
    """Fit one MLP on ``encoder``'s columns; returns model, history, validation threshold."""
    import keras

    x_train = encoder.transform(records["train"])
    x_val = encoder.transform(records["validation"])
    model = build_model(encoder.width)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.AUC(curve="PR", name="pr_auc")],
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_auc", mode="max", patience=8, restore_best_weights=True
    )
    history = model.fit(
        x_train,
        data.train.y,
        validation_data=(x_val, data.validation.y),
        epochs=profile.epochs_or(full=60, quick=2),
        batch_size=BATCH_SIZE,
        class_weight=class_weights(data.train.y),
        callbacks=[stop],
        verbose=2,
    )
    val_scores = np.asarray(model.predict(x_val, verbose=0)).ravel()
    return model, history_dict(history), best_f1_threshold(data.validation.y, val_scores)


class BankRecipe(Recipe):
    name = spec.NAME
    title = "Bank marketing: term-deposit subscription (MLP)"
    intended_use = (
        "Scores how likely a bank client is to subscribe a term deposit, from the 16 raw "
        "columns of the UCI Bank Marketing table (Portugal, 2008-2010). The served model uses "
        "`duration`, the length of the last call, which is only known after the call: use it "
        "to analyse finished calls, and read the pre-call variant's figures below before using "
        "the score to decide whom to call."
    )

    def load(self, data_dir: Path, profile: Profile) -> Dataset:
        table = load_bank(data_dir)
        quick_rows = QUICK_ROWS if profile.quick else len(table.labels)
        rows = stratified_subset(table.labels, quick_rows, profile.seed)
        parts = [rows[p] for p in stratified_split(table.labels[rows], FRACTIONS, profile.seed)]
        records = {
            name: [table.records[i] for i in part]
            for name, part in zip(("train", "validation", "test"), parts, strict=True)
        }
        encoder = spec.BankEncoder().fit(records["train"])  # training split only
        splits = [
            Split(encoder.transform(records[n]), table.labels[p])
            for n, p in zip(("train", "validation", "test"), parts, strict=True)
        ]
        return Dataset(
            *splits,
            labels=spec.LABELS,
            description={
                "source": "UCI Bank Marketing, bank-full.csv",
                "file": table.path.name,
                "sha256": sha256_file(table.path),
                "rows": len(table.labels),
                "positive_rate": float(table.labels.mean()),
                "train": len(parts[0]),
                "validation": len(parts[1]),
                "test": len(parts[2]),
            },
            test_split={
                "file": table.path.name,
                "rows": "0-based data rows (header excluded)",
                "indices": parts[2].tolist(),
            },
            fitted={"encoder": encoder, "records": records},
        )

    def train(self, data: Dataset, profile: Profile) -> Trained:
        encoder: spec.BankEncoder = data.fitted["encoder"]
        records = data.fitted["records"]
        model, history, threshold = fit_variant(encoder, records, data, profile)
        decision = {"threshold": threshold, "chosen_by": "best F1 on the validation split"}
        metrics = self.evaluate(
            keras_runner(self.endpoints(model)), data.test, {"decision": decision}
        )

        pre_call = spec.BankEncoder(spec.without(spec.COLUMNS, spec.POST_CALL_COLUMNS))
        pre_call.fit(records["train"])
        variant, _, variant_threshold = fit_variant(pre_call, records, data, profile)
        variant_scores = np.asarray(
            variant.predict(pre_call.transform(records["test"]), verbose=0)
        ).ravel()
        metrics["without_duration"] = binary_metrics(data.test.y, variant_scores, variant_threshold)
        scores = run_batched(keras_runner(self.endpoints(model)), "predict", data.test.x)[
            "probability"
        ].ravel()
        return Trained(
            model=model,
            history=history,
            metrics=metrics,
            preprocessing={
                "encoder": encoder.to_dict(),
                "input": "one JSON record per client with the 16 raw columns",
                "encoding": "modelspec.bank.BankEncoder: one-hot over the documented categories "
                "(an unknown value is an error), signed log1p for heavy-tailed numerics, then "
                "standardisation with the training split's mean and spread (stored here)",
                "decision": f"subscribe if probability >= {threshold:.4f} (best F1 on validation)",
            },
            outputs={"scores": scores, "scores_without_duration": variant_scores},
            card_sections=[("With and without `duration`", _comparison_table(metrics))],
            training_config={
                "epochs_run": len(history["loss"]),
                "batch_size": BATCH_SIZE,
                "optimizer": "Adam 1e-3",
                "class_weight": class_weights(data.train.y),
                "early_stopping": "val ROC-AUC, patience 8, best epoch restored",
            },
            manifest_extra={"decision": decision},
        )

    def endpoints(self, model: Any) -> dict[str, KerasFn]:
        return {"predict": lambda x: {"probability": model(x, training=False)}}

    def signatures_for(self, model: Any) -> tuple:
        return spec.signatures(int(model.input_shape[-1]))

    def load_test(self, data_dir: Path, manifest: dict[str, Any]) -> Split:
        table = load_bank(data_dir)
        indices = manifest["test_split"]["indices"]
        encoder = spec.BankEncoder.from_dict(manifest["preprocessing"]["encoder"])
        return Split(encoder.transform([table.records[i] for i in indices]), table.labels[indices])

    def evaluate(self, predict: Predict, test: Split, manifest: dict[str, Any]) -> dict[str, Any]:
        scores = run_batched(predict, "predict", test.x)["probability"].ravel()
        return binary_metrics(test.y, scores, manifest["decision"]["threshold"])

    def synthetic_input(self, model: Any, manifest: dict[str, Any], count: int) -> np.ndarray:
        """Standardised numerics ~ N(0, 1) and one random category per column."""
        encoder = spec.BankEncoder.from_dict(manifest["preprocessing"]["encoder"])
        rng = np.random.default_rng(0)
        parts = [rng.standard_normal((count, len(encoder.numeric_columns)))]
        for column in encoder.categorical_columns:
            size = len(spec.CATEGORIES[column])
            parts.append(np.eye(size)[rng.integers(0, size, count)])
        return np.concatenate(parts, axis=1).astype(np.float32)

    def figures(self, trained: Trained, data: Dataset, out: Path) -> list[tuple[str, str]]:
        scores = {
            "with duration (served)": trained.outputs["scores"],
            "without duration": trained.outputs["scores_without_duration"],
        }
        return [
            (
                "ROC and precision-recall curves on the test set",
                plots.roc_and_pr(data.test.y, scores, out / "roc_pr.png"),
            ),
            (
                "Confusion matrix at the stored threshold",
                plots.confusion_matrix(
                    trained.metrics["confusion_matrix"], data.labels, out / "confusion_matrix.png"
                ),
            ),
        ]


def _comparison_table(metrics: dict[str, Any]) -> str:
    other = metrics["without_duration"]
    names = ("roc_auc", "pr_auc", "threshold", "precision", "recall", "f1", "accuracy")
    rows = [f"| {n} | {metrics[n]:.4f} | {other[n]:.4f} |" for n in names]
    return "\n".join(
        [
            "`duration` is only known once the call has ended. The served model uses it; the "
            "variant without it is what a model can do before picking up the phone.",
            "",
            "| test metric | with duration (served) | without duration |",
            "|---|---|---|",
            *rows,
        ]
    )
