"""Metrics shared by training-time evaluation and the ``evaluate`` command."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, labels: tuple[str, ...]
) -> dict[str, Any]:
    predicted = probabilities.argmax(axis=1)
    classes = list(range(len(labels)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, predicted, labels=classes, zero_division=0
    )
    return {
        "accuracy": float(np.mean(predicted == y_true)),
        "macro_f1": float(np.mean(f1)),
        "test_examples": len(y_true),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, predicted, labels=classes).tolist(),
    }


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The decision threshold with the best F1 (chosen on validation data, never test)."""
    precision, recall, thresholds = skm.precision_recall_curve(y_true, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    decided = (scores >= threshold).astype(int)
    return {
        "roc_auc": float(skm.roc_auc_score(y_true, scores)),
        "pr_auc": float(skm.average_precision_score(y_true, scores)),
        "threshold": threshold,
        "precision": float(skm.precision_score(y_true, decided, zero_division=0)),
        "recall": float(skm.recall_score(y_true, decided, zero_division=0)),
        "f1": float(skm.f1_score(y_true, decided, zero_division=0)),
        "accuracy": float(np.mean(decided == y_true)),
        "positive_rate": float(np.mean(y_true)),
        "test_examples": len(y_true),
        "confusion_matrix": skm.confusion_matrix(y_true, decided, labels=[0, 1]).tolist(),
    }


def reconstruction_metrics(x: np.ndarray, x_hat: np.ndarray) -> dict[str, Any]:
    """Per-pixel binary cross-entropy (the training loss) and mean squared error."""
    clipped = np.clip(x_hat.astype(np.float64), 1e-7, 1 - 1e-7)
    bce = -(x * np.log(clipped) + (1 - x) * np.log(1 - clipped))
    return {
        "test_bce": float(bce.mean()),
        "test_mse": float(np.mean((x - x_hat) ** 2)),
        "test_examples": len(x),
    }
