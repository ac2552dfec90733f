"""Continual-learning metrics from the accuracy matrix a[i, j] (after task i, on task j)."""

from __future__ import annotations

import numpy as np


def diagonal_mean(matrix: np.ndarray) -> float:
    """Mean of a[i, i]: whether the model learned each task right after training it."""
    return float(np.mean(np.diag(matrix)))


def final_average_accuracy(matrix: np.ndarray) -> float:
    """mean_j a[T, j]."""
    return float(np.mean(matrix[-1]))


def average_forgetting(matrix: np.ndarray) -> float:
    """mean over j < T of max_{i<T} a[i, j] − a[T, j] (Chaudhry et al. 2018); 0 for one task."""
    tasks = matrix.shape[0]
    if tasks < 2:
        return 0.0
    drops = [np.max(matrix[:-1, j][j:]) - matrix[-1, j] for j in range(tasks - 1)]
    return float(np.mean(drops))


def backward_transfer(matrix: np.ndarray) -> float:
    """mean over j < T of a[T, j] − a[j, j] (Lopez-Paz & Ranzato 2017); 0 for one task."""
    tasks = matrix.shape[0]
    if tasks < 2:
        return 0.0
    return float(np.mean([matrix[-1, j] - matrix[j, j] for j in range(tasks - 1)]))
