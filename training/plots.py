"""The PNGs of the model card: a person would rather look at these than read numbers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as skm


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def training_curves(
    history: dict[str, list[float]], path: Path, marks: dict[str, float] | None = None
) -> str:
    """One panel per metric, training beside validation; ``marks`` are phase starts by epoch."""
    names = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="validation")
        for label, epoch in (marks or {}).items():
            ax.axvline(epoch, color="grey", ls=":", lw=1)
            ax.annotate(
                label,
                (epoch, 1),
                xycoords=("data", "axes fraction"),
                fontsize=8,
                xytext=(3, -12),
                textcoords="offset points",
                color="grey",
            )
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def confusion_matrix(matrix: list[list[int]], labels: tuple[str, ...], path: Path) -> str:
    data = np.asarray(matrix)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = data.max() / 2
    for (i, j), value in np.ndenumerate(data):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > threshold else "black",
            fontsize=8,
        )
    ax.set_title("Confusion matrix (test)")
    return _save(fig, path)


def roc_and_pr(y_true: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> str:
    """ROC and precision-recall curves, one line per model variant."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, score in scores.items():
        fpr, tpr, _ = skm.roc_curve(y_true, score)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {skm.roc_auc_score(y_true, score):.3f})")
        precision, recall, _ = skm.precision_recall_curve(y_true, score)
        ap = skm.average_precision_score(y_true, score)
        pr_ax.plot(recall, precision, label=f"{name} (AP {ap:.3f})")
    roc_ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    pr_ax.axhline(float(np.mean(y_true)), color="k", ls="--", lw=0.8, label="base rate")
    for ax, title, xl, yl in (
        (roc_ax, "ROC (test)", "false positive rate", "true positive rate"),
        (pr_ax, "Precision-recall (test)", "recall", "precision"),
    ):
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def reconstructions(originals: np.ndarray, rebuilt: np.ndarray, path: Path) -> str:
    """Test digits (top row) above their reconstructions (bottom row)."""
    count = len(originals)
    fig, axes = plt.subplots(2, count, figsize=(1.2 * count, 2.8))
    for i in range(count):
        for row, images in enumerate((originals, rebuilt)):
            axes[row, i].imshow(images[i].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
            axes[row, i].axis("off")
    axes[0, 0].set_title("original", fontsize=8, loc="left")
    axes[1, 0].set_title("reconstruction", fontsize=8, loc="left")
    return _save(fig, path)
