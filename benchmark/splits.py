"""Seeded stratified splits of a task's samples (held-out slices are cut from training data, never test)."""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator, min_held_out: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded stratified train/test split, each sorted.

    Each class gives ``round(size * test_fraction)`` samples to the second part,
    at least ``min_held_out`` where the class has more than that (so a class is
    never held out whole).
    """
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * test_fraction)
        if len(members) > min_held_out:
            cut = max(cut, min_held_out)
        test.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
