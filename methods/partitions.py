"""Partitioned two-round selection (GreeDi; Mirzasoleiman et al. 2013): cells, where they run, the merge.

Round 1 selects within each cell of a partition, independently (as Ray tasks
when a Ray session runs, so a grid on ``--executor ray`` spreads a large
selection over the cluster); round 2 chooses the final k among the union of
the cells' candidates. The cells are k-means cells of the rows (Lloyd's
algorithm from a k-means++ start, scipy's ``kmeans2``, fitted on at most
``FIT_SAMPLE`` rows drawn from the generator), so that each cell covers one
region: a greedy whose objective is local (facility location, k-center) then
loses little by seeing one cell at a time.

Where the cells run is a selector parameter, ``parallel``:

- ``"auto"`` (default): Ray tasks when there is more than one cell and this
  process is attached to a Ray session (``ray.is_initialized()``: every cell of
  ``run --executor ray`` is), in this process otherwise;
- ``"local"``: always in this process;
- ``"ray"``: always Ray tasks; an error without a Ray session.

The selection is the same wherever the cells run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.cluster.vq import kmeans2

from benchmark.errors import UserError
from methods.arrays import as_float64, nearest

PARALLEL: tuple[str, ...] = ("auto", "local", "ray")
FIT_SAMPLE = 20_000  # rows the k-means fit sees; every row is then assigned to its nearest centroid


def check_partition_params(partitions: int, oversample: float, parallel: str) -> None:
    """The shared parameters of every partitioned selector, checked at construction."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    if not (math.isfinite(oversample) and oversample >= 1.0):
        raise ValueError(f"oversample must be finite and at least 1, got {oversample}")
    if parallel not in PARALLEL:
        raise ValueError(f"parallel must be one of {', '.join(PARALLEL)}, got {parallel!r}")


def kmeans_cells(points: np.ndarray, cells: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Positions of each k-means cell of ``points`` (ascending), at most ``cells`` of them, none empty."""
    n = len(points)
    cells = min(cells, n)
    if cells <= 1:
        return [np.arange(n)]
    data = as_float64(points)
    fit = data if n <= FIT_SAMPLE else data[np.sort(rng.choice(n, size=FIT_SAMPLE, replace=False))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty cluster is dropped below
        centroids, _ = kmeans2(fit, cells, iter=10, minit="++", rng=rng)
    _, cell_of = nearest(data, centroids)
    order = np.argsort(cell_of, kind="stable")
    bounds = np.cumsum(np.bincount(cell_of, minlength=len(centroids)))[:-1]
    return [part for part in np.split(order, bounds) if len(part)]


def cell_budgets(cells: Sequence[np.ndarray], budget: int, oversample: float) -> list[int]:
    """Round-1 picks per cell: ceil(oversample x budget x the cell's fraction of the set), at most the cell.

    They add up to at least the budget. With one cell, exactly the budget (one
    cell is the whole set: round 1 is the selection).
    """
    if len(cells) == 1:
        return [min(budget, len(cells[0]))]
    total = sum(len(cell) for cell in cells)
    return [min(len(cell), math.ceil(oversample * budget * len(cell) / total)) for cell in cells]


def merge_by_value(
    values: Sequence[np.ndarray], k: int, indices: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of the cells' recorded values: (cell, position in its round-1 order) of each, best first.

    Ties go to the lower ``indices`` (each candidate's index in the set), the
    greedy's own rule. Each cell's values never increase along its order
    (greedy gains, farthest-first distances; equal ones in ascending index),
    so this takes a prefix of every cell, and is the greedy on the union of the
    cells' own objectives.
    """
    cell = np.concatenate([np.full(len(v), c, dtype=np.int64) for c, v in enumerate(values)])
    position = np.concatenate([np.arange(len(v), dtype=np.int64) for v in values])
    top = np.lexsort((np.concatenate(list(indices)), -np.concatenate(list(values))))[:k]
    return cell[top], position[top]


def _ray_session() -> Any | None:
    try:
        import ray
    except ImportError:
        return None
    return ray if ray.is_initialized() else None


def run_cells(
    work: Callable[..., Any], arguments: Sequence[tuple[Any, ...]], parallel: str, partitioned: bool
) -> list[Any]:
    """``[work(*a) for a in arguments]``: as Ray tasks (one CPU each) or here (module docstring)."""
    if parallel == "local":
        return [work(*a) for a in arguments]
    ray = _ray_session()
    if parallel == "ray" and ray is None:
        raise UserError(
            "parallel = 'ray' needs a running Ray session (run the grid with --executor ray, "
            "or call ray.init() first)"
        )
    if ray is None or (parallel == "auto" and not (partitioned and len(arguments) > 1)):
        return [work(*a) for a in arguments]
    task = ray.remote(num_cpus=1)(work)
    return ray.get([task.remote(*a) for a in arguments])
