"""Deterministic, stratified splits: the same seed always gives the same examples."""

import numpy as np


def _class_cuts(class_sizes: np.ndarray, fractions: tuple[float, ...]) -> np.ndarray:
    """Per-class cut points (classes x parts-1) whose column sums hit the exact totals.

    Rounding each class on its own can miss the total by one per class (5,001 validation
    images instead of 5,000); largest remainders fix the totals and stay proportional.
    """
    bounds = np.cumsum(fractions)[:-1]
    ideal = np.outer(class_sizes, bounds)
    cuts = np.floor(ideal).astype(int)
    for j, bound in enumerate(bounds):
        missing = round(float(bound) * int(class_sizes.sum())) - int(cuts[:, j].sum())
        order = np.argsort(-(ideal[:, j] - cuts[:, j]), kind="stable")
        cuts[order[:missing], j] += 1
    return cuts


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, ...], seed: int
) -> list[np.ndarray]:
    """Indices for each fraction, every class divided in the same proportions.

    Each part's indices are sorted, so a split is easy to record and compare.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    cuts = _class_cuts(np.array([np.sum(labels == c) for c in classes]), fractions)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for cls, class_cuts in zip(classes, cuts, strict=True):
        members = rng.permutation(np.flatnonzero(labels == cls))
        for part, chunk in zip(parts, np.split(members, class_cuts), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def stratified_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Exactly ``count`` indices keeping class proportions (the quick profile's small data)."""
    if count >= len(labels):
        return np.arange(len(labels))
    (chosen, _rest) = stratified_split(labels, (count / len(labels), 1 - count / len(labels)), seed)
    return chosen
