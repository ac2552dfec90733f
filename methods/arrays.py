"""Array helpers the coreset selectors share: float64 views, row blocks of bounded size, nearest centres.

Temporaries are cut into blocks of about ``BLOCK_ELEMENTS`` float64 values
(32 MiB), so that no helper holds an n x n matrix of a large pool.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

BLOCK_ELEMENTS = 1 << 22


def as_float64(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float64)


def row_blocks(rows: int, cols: int) -> Iterator[slice]:
    """Consecutive row slices of at most BLOCK_ELEMENTS / cols rows (at least one)."""
    step = max(1, BLOCK_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (cosine 0 with everything)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else np.zeros_like(vector)


def distances(a: np.ndarray, b: np.ndarray, a_sq: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)] by the Gram expansion (callers centre the data first)."""
    squared = a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    np.maximum(squared, 0.0, out=squared)
    return np.sqrt(squared, out=squared)


def nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point: distance to and position of its nearest centre (first centre on ties), chunked."""
    shift = points.mean(axis=0) if len(points) else 0.0
    points, centres = points - shift, centres - shift
    points_sq, centres_sq = np.einsum("ij,ij->i", points, points), np.einsum("ij,ij->i", centres, centres)
    distance = np.empty(len(points))
    position = np.empty(len(points), dtype=np.int64)
    for block in row_blocks(len(points), len(centres)):
        block_distances = distances(points[block], centres, points_sq[block], centres_sq)
        position[block] = np.argmin(block_distances, axis=1)
        distance[block] = block_distances[np.arange(len(position[block])), position[block]]
    return distance, position
