"""Coreset selectors from the field: herding, k-center, CRAIG, GradMatch and OCS.

Each class registers as a ``sample_selector`` and follows the contract of
``methods.base``: ``select(pool, budget, rng)`` returns min(budget, n) distinct
int64 pool indices with float32 non-negative weights, deterministic given the
generator's state. Definitions follow docs/methods.md ("Sample selectors").

    from benchmark import registry
    selector = registry.create("sample_selector", "gradmatch", ridge=0.5)
    selection = selector.select(pool, budget=200, rng=np.random.default_rng(0))

Every selector is exact by default. Options for large pools, each stated with
its approximation in its class's docstring: ``partitions`` (herding, k-center,
CRAIG: a two-round selection over k-means cells, GreeDi-style, whose cells run
as Ray tasks under ``--executor ray``; ``methods.partitions``),
``optimizer = "stochastic"`` (CRAIG: stochastic greedy) and ``batch_size``
(GradMatch: OMP over mini-batches, as CORDS's per-batch variant).

The module-level objective functions (``kcenter_radius``,
``facility_location_value``, ``gradmatch_residual``, ``herding_mean_distance``,
``ocs_scores``) are what the tests and ``tools.perf_selectors`` measure.

All arithmetic runs in float64 on numpy/BLAS (facility location's inner loops
are compiled, ``methods.facility_location``); float64 keeps the greedy choices
stable against rounding. Temporaries are cut into row blocks of bounded size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.linalg import LinAlgError, lapack

import methods.partitions as cells
from benchmark import registry
from benchmark.contracts import SamplePool, Selection
from methods.arrays import as_float64, nearest, unit, unit_rows
from methods.base import SelectorBase, per_class_budgets
from methods.facility_location import facility_similarity, lazy_greedy, similarity_offset, stochastic_greedy

__all__ = [
    "Craig",
    "GradMatch",
    "Herding",
    "KCenter",
    "OnlineCoresetSelection",
    "facility_location_value",
    "facility_similarity",
    "gradmatch_omp",
    "gradmatch_residual",
    "herding_mean_distance",
    "kcenter_order",
    "kcenter_radius",
    "ocs_scores",
]


# --------------------------------------------------------------------------- shared helpers


def _budget(budget: int, n: int) -> int:
    return min(max(int(budget), 0), n)


def _require_grads(pool: SamplePool, method: str) -> np.ndarray:
    if pool.grads is None:
        raise ValueError(
            f"sample selector {method!r} needs gradient proxies, but the pool has grads=None "
            "(the runner computes them when the selector declares needs_grads)"
        )
    return as_float64(pool.grads)


def _per_class(
    pool: SamplePool,
    budget: int,
    choose: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
) -> Selection:
    """Run ``choose(members, k_c)`` for each class (sorted labels) and concatenate the selections."""
    labels = np.asarray(pool.labels)
    indices: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for label, class_budget in sorted(per_class_budgets(labels, budget, pool.tie_order).items()):
        if class_budget == 0:
            continue
        members = np.flatnonzero(labels == label)
        positions, class_weights = choose(members, class_budget)
        indices.append(members[positions])
        weights.append(class_weights)
    if not indices:
        return Selection.empty()
    return Selection.of(np.concatenate(indices), np.concatenate(weights))


@dataclass(frozen=True)
class _Group:
    """One set a selector selects from (a class, or the whole pool), split into cells for round 1."""

    members: np.ndarray  # pool indices
    budget: int
    cells: list[np.ndarray]  # positions in ``members``
    candidates: list[int]  # per cell: how many round 1 picks


def _groups(
    sets: list[tuple[np.ndarray, int]],
    points: np.ndarray,
    partitions: int,
    oversample: float,
    rng: np.random.Generator,
) -> list[_Group]:
    """Split each (members, budget) into k-means cells of ``points[members]`` (no draw for one cell)."""
    groups = []
    for members, budget in sets:
        parts = cells.kmeans_cells(points[members], partitions, rng)
        groups.append(_Group(members, budget, parts, cells.cell_budgets(parts, budget, oversample)))
    return groups


def _class_sets(pool: SamplePool, budget: int) -> list[tuple[np.ndarray, int]]:
    """Each class's members and share of the budget (sorted labels; classes without a share left out)."""
    labels = np.asarray(pool.labels)
    return [
        (np.flatnonzero(labels == label), share)
        for label, share in sorted(per_class_budgets(labels, budget, pool.tie_order).items())
        if share > 0
    ]


def _selection(parts: list[tuple[np.ndarray, np.ndarray]]) -> Selection:
    if not parts:
        return Selection.empty()
    return Selection.of(np.concatenate([i for i, _ in parts]), np.concatenate([w for _, w in parts]))


# --------------------------------------------------------------------------- herding


def herding_order(unit_features: np.ndarray, k: int, target: np.ndarray | None = None) -> np.ndarray:
    """The first k herding picks (positions) of L2-normalised features, towards their mean or ``target``."""
    mean = unit_features.mean(axis=0) if target is None else target
    sq_norms = np.einsum("ij,ij->i", unit_features, unit_features)
    running_sum = np.zeros_like(mean)
    available = np.ones(len(unit_features), dtype=bool)
    order = np.empty(k, dtype=np.int64)
    for t in range(1, k + 1):
        # ||mu - (s + h)/t||^2 = ||a||^2 - (2/t)<a, h> + ||h||^2/t^2 with a = mu - s/t; the first term
        # does not depend on h, and scaling by t keeps the argmin: one matrix-vector product per step.
        score = sq_norms / t - 2.0 * (unit_features @ (mean - running_sum / t))
        score[~available] = np.inf
        pick = int(np.argmin(score))
        order[t - 1] = pick
        available[pick] = False
        running_sum += unit_features[pick]
    return order


def herding_mean_distance(features: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> float:
    """Mean over classes of ||class mean - mean of its selected samples||, on L2-normalised features.

    Classes with no selected sample are left out of the mean (NaN if none has one).
    """
    normalised = unit_rows(as_float64(features))
    labels = np.asarray(labels)
    chosen = np.zeros(len(labels), dtype=bool)
    chosen[np.asarray(indices, dtype=np.int64)] = True
    gaps = [
        float(
            np.linalg.norm(
                normalised[labels == c].mean(axis=0) - normalised[(labels == c) & chosen].mean(axis=0)
            )
        )
        for c in np.unique(labels)
        if np.any((labels == c) & chosen)
    ]
    return float(np.mean(gaps)) if gaps else float("nan")


@dataclass(frozen=True, kw_only=True)
class Partitioned(SelectorBase):
    """The options of the partitioned two-round selection (``methods/partitions.py``) that herding,
    k-center and CRAIG share: ``partitions`` cells (1: the exact selector), ``oversample`` of each
    cell's share in round 1, and where the cells run (``parallel``)."""

    partitions: int = 1
    oversample: float = 2.0
    parallel: str = "auto"

    def __post_init__(self) -> None:
        cells.check_partition_params(self.partitions, self.oversample, self.parallel)


@registry.register("sample_selector", "herding")
@dataclass(frozen=True, kw_only=True)
class Herding(Partitioned):
    """Herding (Welling 2009; iCaRL, Rebuffi et al. 2017): per class, match the class mean of unit embeddings.

    Step t adds argmin_i ||mu - (sum_{s in S} h_s + h_i) / t|| over unchosen i,
    mu the mean of the class's normalised embeddings. Weights are 1.

    ``partitions`` > 1 (for large classes): each class is split into that many
    k-means cells (``methods.partitions``); round 1 herds within each cell
    towards the cell's mean, ceil(oversample x the cell's share of the budget)
    picks; round 2 herds over the union of those candidates towards the class
    mean. Approximation: herding restricted to the candidates, which carries no
    bound against the exact herding (measured in ``results/perf``); one cell
    gives exactly the exact herding.
    """

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        normalised = unit_rows(as_float64(pool.features))
        groups = _groups(_class_sets(pool, budget), normalised, self.partitions, self.oversample, rng)
        work = [
            (normalised[group.members[cell]], kappa)
            for group in groups
            for cell, kappa in zip(group.cells, group.candidates, strict=True)
        ]
        picks = iter(cells.run_cells(herding_order, work, self.parallel, self.partitions > 1))
        parts = []
        for group in groups:
            candidates = np.concatenate([cell[next(picks)] for cell in group.cells])
            if len(candidates) > group.budget:
                class_features = normalised[group.members]
                target = class_features.mean(axis=0)
                candidates = candidates[herding_order(class_features[candidates], group.budget, target)]
            parts.append((group.members[candidates], np.ones(group.budget, dtype=np.float32)))
        return _selection(parts)


# --------------------------------------------------------------------------- k-center


def kcenter_farthest_first(features: np.ndarray, k: int, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center from centre ``first``: k distinct positions, and each one's distance when chosen.

    The plain greedy (running minimum updated by one distance pass per step),
    with passes pruned by the triangle inequality: a point whose current
    nearest centre a lies at distance >= 2 m from the new centre c (m its
    current distance) is at least m from c, so its minimum cannot change and is
    not recomputed. Ties go to the lowest index; chosen points are never
    picked again. Distances use the Gram expansion on centred data. The
    distances never increase (the first is inf): the covering radius after
    each step is the next one.
    """
    points = as_float64(features)
    n = len(points)
    k = _budget(k, n)
    order = np.empty(k, dtype=np.int64)
    reach = np.empty(k)
    if k == 0:
        return order, reach
    centred = points - points.mean(axis=0)
    sq_norms = np.einsum("ij,ij->i", centred, centred)
    centres = np.empty((k, points.shape[1]))
    nearest_sq = np.full(n, np.inf)  # squared distance to the nearest centre; -1 once chosen
    assigned = np.zeros(n, dtype=np.int64)  # which centre (by step) is the nearest
    pick = int(first)
    for t in range(k):
        order[t] = pick
        reach[t] = np.sqrt(nearest_sq[pick])
        centre = centred[pick]
        centres[t] = centre
        if t == 0:
            candidates = np.arange(n)
        else:
            between = sq_norms[order[:t]] + sq_norms[pick] - 2.0 * (centres[:t] @ centre)
            # a relative margin keeps the pruning safe against rounding of the expansion
            between -= 1e-9 * (sq_norms[order[:t]] + sq_norms[pick])
            candidates = np.flatnonzero(between[assigned] <= 4.0 * nearest_sq)
        squared = sq_norms[candidates] + sq_norms[pick] - 2.0 * (centred[candidates] @ centre)
        closer = squared < nearest_sq[candidates]
        nearest_sq[candidates[closer]] = np.maximum(squared[closer], 0.0)
        assigned[candidates[closer]] = t
        nearest_sq[pick] = -1.0
        pick = int(np.argmax(nearest_sq))
    return order, reach


def kcenter_order(features: np.ndarray, k: int, first: int) -> np.ndarray:
    """The positions of ``kcenter_farthest_first`` (the greedy k-center order from ``first``)."""
    return kcenter_farthest_first(features, k, first)[0]


def kcenter_radius(features: np.ndarray, indices: np.ndarray) -> float:
    """Covering radius max_i min_{s in indices} ||h_i - h_s|| (0 for an empty pool, inf with no centres)."""
    points = as_float64(features)
    indices = np.asarray(indices, dtype=np.int64)
    if len(points) == 0:
        return 0.0
    if len(indices) == 0:
        return float("inf")
    distance, _ = nearest(points, points[indices])
    return float(distance.max())


@registry.register("sample_selector", "kcenter")
@dataclass(frozen=True, kw_only=True)
class KCenter(Partitioned):
    """Greedy k-center (Sener & Savarese 2018): add the sample farthest from its nearest centre, whole pool.

    The first centre is drawn from the generator; the greedy choice gives a
    covering radius at most twice the optimum. Weights are 1.

    ``partitions`` > 1 (for large pools): the pool is split into that many
    k-means cells (``methods.partitions``); round 1 runs the greedy in each cell
    (first centre from the generator) for ceil(oversample x the cell's share)
    steps, recording each pick's distance; round 2 keeps the k largest of those
    distances over all cells. That is exactly the greedy k-center with each
    sample covered only by centres of its own cell, so: radius <= twice the
    optimum of that cell-restricted problem, and the pool's radius is at most
    the largest recorded distance left out. There is no worst-case factor
    against the unrestricted optimum (cells that split a cluster cost the
    most); one cell gives exactly the exact greedy. A stochastic greedy does not
    apply: a step's cost is the distance update over every sample, not the
    choice among candidates.
    """

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        n = len(pool)
        k = _budget(budget, n)
        if k == 0:
            return Selection.empty()
        points = as_float64(pool.features)
        (group,) = _groups([(np.arange(n), k)], points, self.partitions, self.oversample, rng)
        work = [
            (points[cell], kappa, int(rng.integers(len(cell))))
            for cell, kappa in zip(group.cells, group.candidates, strict=True)
        ]
        rounds = cells.run_cells(kcenter_farthest_first, work, self.parallel, self.partitions > 1)
        indices = [c[order] for c, (order, _) in zip(group.cells, rounds, strict=True)]
        cell, position = cells.merge_by_value([reach for _, reach in rounds], k, indices)
        return Selection.of([group.cells[c][rounds[c][0][p]] for c, p in zip(cell, position, strict=True)])


# --------------------------------------------------------------------------- CRAIG (facility location)


OPTIMIZERS: tuple[str, ...] = ("lazy", "stochastic")


def _craig_weights(grads: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Cluster sizes: how many members have each chosen element as their most similar (nearest) one."""
    _, closest = nearest(grads, grads[chosen])
    closest[chosen] = np.arange(len(chosen))  # a chosen element is its own nearest, even among duplicates
    return np.bincount(closest, minlength=len(chosen)).astype(np.float32)


def _cell_weights(
    grads: np.ndarray, class_cells: list[np.ndarray], cell_of_chosen: np.ndarray, chosen: np.ndarray
) -> np.ndarray:
    """CRAIG's weights when each member is served within its cell: its nearest chosen element there.

    Members of a cell none of whose candidates was kept count for their
    nearest chosen element anywhere. With one cell: ``_craig_weights``.
    """
    if len(class_cells) == 1:
        return _craig_weights(grads, chosen)
    weights = np.zeros(len(chosen), dtype=np.float32)
    orphans = []
    for c, cell in enumerate(class_cells):
        mine = np.flatnonzero(cell_of_chosen == c)
        if len(mine) == 0:
            orphans.append(cell)
            continue
        # a chosen element is a member of its own cell: position of each chosen in the cell
        local = np.searchsorted(cell, chosen[mine])
        weights[mine] += _craig_weights(grads[cell], local)
    if orphans:
        _, closest = nearest(grads[np.concatenate(orphans)], grads[chosen])
        weights += np.bincount(closest, minlength=len(chosen)).astype(np.float32)
    return weights


def _facility_location_cell(
    grads: np.ndarray, k: int, offset: float, dense_max: int, optimizer: str, epsilon: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Round 1 of CRAIG in one cell: k positions in the order chosen, and each one's gain."""
    if optimizer == "stochastic":
        return stochastic_greedy(grads, k, epsilon, np.random.default_rng(seed), dense_max, offset)
    return lazy_greedy(grads, k, dense_max, offset)


def facility_location_value(
    grads: np.ndarray, indices: np.ndarray, labels: np.ndarray | None = None
) -> float:
    """CRAIG's objective F(S) = sum_i max_{j in S} (c - ||g_i - g_j||), c as in the selector.

    Without labels, one set (c from all rows). With labels, the sum over
    classes of each class's F on its own members and its own chosen indices,
    which is what per-class CRAIG maximises.
    """
    grads = as_float64(grads)
    indices = np.asarray(indices, dtype=np.int64)
    if labels is None:
        if len(indices) == 0:
            return 0.0
        offset = similarity_offset(grads - grads.mean(axis=0))
        distance, _ = nearest(grads, grads[indices])
        return float(np.sum(offset - distance))
    labels = np.asarray(labels)
    total = 0.0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        inside = np.flatnonzero(np.isin(members, indices))
        total += facility_location_value(grads[members], inside)
    return total


@registry.register("sample_selector", "craig")
@dataclass(frozen=True, kw_only=True)
class Craig(Partitioned):
    """CRAIG (Mirzasoleiman et al. 2020): per class, lazy-greedy facility location on gradients.

    Similarity s_ij = c - ||g_i - g_j|| with c >= the class's largest distance;
    exactly the naive greedy's choices, (1 - 1/e)-optimal. Weight of j = how
    many class members have j as their nearest chosen element. Classes up to
    ``dense_max`` members use a dense similarity matrix (at most 8 dense_max^2
    bytes: 200 MB at the default; 8192 makes it 512 MiB and classes of up to
    8192 members about twice as fast); larger ones compute rows on demand in
    blocks, with a cache of at most dense_max^2 values, and never hold the
    n x n matrix. Both give the same choices.

    Options for large classes (defaults: exact):

    - ``optimizer = "stochastic"``: stochastic greedy (Mirzasoleiman et al.
      2015, "Lazier than lazy greedy"): each step the best of
      ceil(n/k ln(1/epsilon)) unchosen members drawn from the generator;
      E[F] >= (1 - 1/e - epsilon) F(OPT); rows on demand, never the n x n matrix.
    - ``partitions`` > 1: two rounds over k-means cells of each class
      (``methods.partitions``, GreeDi-style): round 1 runs the greedy in each
      cell for ceil(oversample x the cell's share) picks, on that cell's members
      only (with the class's c), recording each gain; round 2 keeps the k
      largest gains. That is exactly the greedy on F_cells(S) = sum_i max over
      chosen j *of i's cell* of s_ij, a lower bound of F(S), so F(S) >= F_cells(S)
      >= (1 - 1/e) max F_cells; no worst-case factor against max F (measured in
      ``results/perf``). Weights count each member for its nearest chosen element
      in its cell. One cell gives exactly the exact greedy.
    """

    needs_grads = True
    dense_max: int = 5000
    optimizer: str = "lazy"
    epsilon: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dense_max < 0:
            raise ValueError(f"dense_max must be >= 0, got {self.dense_max}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not 0.0 < self.epsilon < 1.0:
            raise ValueError(f"epsilon must be in (0, 1), got {self.epsilon}")

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        grads = _require_grads(pool, "craig")
        groups = _groups(_class_sets(pool, budget), grads, self.partitions, self.oversample, rng)
        stochastic = self.optimizer == "stochastic"
        work = []
        for group in groups:
            class_grads = grads[group.members]
            offset = similarity_offset(class_grads - class_grads.mean(axis=0))
            for cell, kappa in zip(group.cells, group.candidates, strict=True):
                seed = int(rng.integers(2**63)) if stochastic else 0
                options = (self.dense_max, self.optimizer, self.epsilon, seed)
                work.append((class_grads[cell], kappa, offset, *options))
        rounds = iter(cells.run_cells(_facility_location_cell, work, self.parallel, self.partitions > 1))
        parts = []
        for group in groups:
            found = [next(rounds) for _ in group.cells]
            indices = [c[order] for c, (order, _) in zip(group.cells, found, strict=True)]
            cell, position = cells.merge_by_value([gains for _, gains in found], group.budget, indices)
            chosen = np.array(
                [group.cells[c][found[c][0][p]] for c, p in zip(cell, position, strict=True)],
                dtype=np.int64,
            )
            weights = _cell_weights(grads[group.members], group.cells, cell, chosen)
            parts.append((group.members[chosen], weights))
        return _selection(parts)


# --------------------------------------------------------------------------- GradMatch (NN-OMP)


# The LAPACK routines scipy.linalg's solve_triangular, cholesky and cho_solve call, called as they call
# them (same arguments, so the same arithmetic) without their checks: an OMP step makes a few of these
# tiny calls, and the wrappers cost more than the work.
_TRTRS, _POTRF, _POTRS = lapack.get_lapack_funcs(("trtrs", "potrf", "potrs"), (np.zeros((1, 1)),))


def _solve_lower(factor: np.ndarray, column: np.ndarray) -> np.ndarray:
    """scipy.linalg.solve_triangular(factor, column, lower=True)."""
    if factor.flags.f_contiguous:
        solution, info = _TRTRS(factor, column, lower=True, trans=0)
    else:  # trtrs wants Fortran order: solve the transposed system, as scipy does
        solution, info = _TRTRS(factor.T, column, lower=False, trans=1)
    if info > 0:
        raise LinAlgError(f"singular matrix: resolution failed at diagonal {info - 1}")
    return solution


def _cholesky_lower(block: np.ndarray) -> np.ndarray:
    """scipy.linalg.cholesky(block, lower=True)."""
    factor, info = _POTRF(block, lower=True, overwrite_a=False, clean=True)
    if info > 0:
        raise LinAlgError(f"{info}-th leading minor of the array is not positive definite")
    return factor


def _cho_solve_lower(factor: np.ndarray, values: np.ndarray) -> np.ndarray:
    """scipy.linalg.cho_solve((factor, True), values)."""
    solution, _ = _POTRS(factor, values, lower=True, overwrite_b=False)
    return solution


class _GramNNLS:
    """Lawson-Hanson NNLS on the Gram system min_{w>=0} 1/2 w'Mw - q'w, M = A'A + ridge I, q = A'b.

    This is ||b - Aw||^2 + ridge ||w||^2 up to a constant, so it never touches
    the tall (g + k) x k augmented system. Variables arrive one at a time (OMP);
    each solve warm-starts from the previous solution and keeps a Cholesky
    factor of the passive block, extended in O(p^2) when a variable enters and
    refactored only when one leaves.
    """

    def __init__(self, capacity: int, ridge: float) -> None:
        self.ridge = ridge
        self.gram = np.zeros((capacity, capacity))
        self.linear = np.zeros(capacity)
        self.weights = np.zeros(capacity)
        self.size = 0
        self.passive: list[int] = []
        self.factor = np.zeros((0, 0))

    def add(self, cross: np.ndarray, square: float, linear: float) -> None:
        """Append a column a with A'a = ``cross``, a'a = ``square``, a'b = ``linear``."""
        s = self.size
        self.gram[s, :s] = cross
        self.gram[:s, s] = cross
        self.gram[s, s] = square + self.ridge
        self.linear[s] = linear
        self.weights[s] = 0.0
        self.size += 1

    def _enter(self, variable: int) -> bool:
        """Extend the factor by one variable; False if it is (numerically) dependent on the passive set."""
        column = self.gram[self.passive, variable]
        below = _solve_lower(self.factor, column) if self.passive else column[:0]
        pivot = self.gram[variable, variable] - float(below @ below)
        if pivot <= 1e-12 * max(self.gram[variable, variable], 1e-300):
            return False
        p = len(self.passive)
        factor = np.zeros((p + 1, p + 1))
        factor[:p, :p] = self.factor
        factor[p, :p] = below
        factor[p, p] = np.sqrt(pivot)
        self.factor = factor
        self.passive.append(variable)
        return True

    def _refactor(self) -> None:
        block = self.gram[np.ix_(self.passive, self.passive)]
        self.factor = _cholesky_lower(block) if self.passive else np.zeros((0, 0))

    def solve(self) -> np.ndarray:
        s = self.size
        gram, linear, weights = self.gram[:s, :s], self.linear[:s], self.weights[:s]
        tolerance = 1e-12 * max(float(np.abs(linear).max()), 1e-300)
        blocked = np.zeros(s, dtype=bool)
        for _ in range(3 * s + 10):
            free = np.ones(s, dtype=bool)
            free[self.passive] = False
            free &= ~blocked
            if not free.any():
                break
            descent = linear - gram[:, self.passive] @ weights[self.passive]
            descent[~free] = -np.inf
            entering = int(np.argmax(descent))
            if descent[entering] <= tolerance:
                break
            if not self._enter(entering):
                blocked[entering] = True
                continue
            while True:
                trial = _cho_solve_lower(self.factor, linear[self.passive])
                if np.all(trial > 0):
                    weights[self.passive] = trial
                    break
                # Step from the feasible point towards the trial until a weight hits 0; drop those.
                current = weights[self.passive]
                negative = trial <= 0
                gap = current[negative] - trial[negative]  # >= 0; 0 only where both are 0
                ratios = np.divide(current[negative], gap, out=np.zeros_like(gap), where=gap > 0)
                alpha = float(ratios.min())
                moved = current + alpha * (trial - current)
                leaving = np.zeros(len(moved), dtype=bool)
                leaving[np.flatnonzero(negative)[int(np.argmin(ratios))]] = True
                leaving |= moved <= 1e-14 * max(float(np.abs(moved).max()), 1e-300)
                weights[self.passive] = np.where(leaving, 0.0, moved)
                if leaving[-1] and self.passive[-1] == entering and alpha == 0.0:
                    blocked[entering] = True  # degenerate entry (rounding): leave it out of this solve
                self.passive = [v for v, out in zip(self.passive, leaving, strict=True) if not out]
                self._refactor()
                if not self.passive:
                    break
        return weights.copy()


def _omp_steps(grads: np.ndarray, budget: int, ridge: float) -> Iterator[tuple[list[int], np.ndarray]]:
    """Non-negative OMP towards the sum of the rows: (positions so far, their weights) after each pick."""
    grads = as_float64(grads)
    n = len(grads)
    k = _budget(budget, n)
    target = grads.sum(axis=0)
    scale = float(np.linalg.norm(target)) * float(
        np.sqrt(np.einsum("ij,ij->i", grads, grads).max(initial=0.0))
    )
    solver = _GramNNLS(k, ridge)
    chosen_rows = np.zeros((k, grads.shape[1]))
    chosen: list[int] = []
    available = np.ones(n, dtype=bool)
    residual = target.copy()
    for step in range(k):
        correlation = grads @ residual
        correlation[~available] = -np.inf
        pick = int(np.argmax(correlation))
        if correlation[pick] <= 1e-12 * scale:  # <= 0 up to rounding noise of the residual
            return
        row = grads[pick]
        solver.add(chosen_rows[:step] @ row, float(row @ row), float(row @ target))
        chosen_rows[step] = row
        chosen.append(pick)
        available[pick] = False
        weights = solver.solve()
        residual = target - weights @ chosen_rows[: step + 1]
        yield list(chosen), weights


def gradmatch_omp(grads: np.ndarray, budget: int, ridge: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative OMP (GradMatch; Killamsetty et al. 2021) for one class, without the random fill.

    Target G = sum_i g_i. Each step adds the unchosen j maximising <g_j, r>
    (stopping when that is <= 0, up to rounding), then solves
    w = argmin_{w>=0} ||G - sum_s w_s g_s||^2 + ridge ||w||^2 and sets
    r = G - sum_s w_s g_s. Returns the positions in the order chosen (at most
    ``budget``; fewer if it stopped early) and their weights (some may be 0).
    """
    chosen: list[int] = []
    weights = np.zeros(0)
    for chosen, weights in _omp_steps(grads, budget, ridge):  # noqa: B007 (the last step is the result)
        pass
    return np.asarray(chosen, dtype=np.int64), weights


def _batch_bounds(n: int, batch_size: int) -> np.ndarray:
    """Start of each consecutive batch of ``batch_size`` members (the last may be smaller), then n."""
    return np.append(np.arange(0, n, batch_size), n)


def gradmatch_per_batch(
    grads: np.ndarray, budget: int, batch_size: int, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
    """GradMatch over mini-batches (CORDS's per-batch variant) for one class, without the random fill.

    The members, in pool order, form consecutive batches of ``batch_size`` (the
    last may be smaller), as CORDS's sequential loader does; each batch is
    represented by its mean gradient, and NN-OMP matches the sum of the batch
    means. Batches are added until they hold ``budget`` members; the last one
    added keeps only its first members up to the budget. The batch weights are
    then solved again with that last batch represented by the members it keeps
    (cutting it had left its weight matched to members it no longer has), and
    each member gets its batch's weight times size / kept. Returns (positions,
    weights): at most ``budget`` (fewer if OMP stopped early). With
    ``batch_size`` 1 this is ``gradmatch_omp``.
    """
    grads = as_float64(grads)
    bounds = _batch_bounds(len(grads), batch_size)
    sizes = np.diff(bounds)
    means = np.add.reduceat(grads, bounds[:-1], axis=0) / sizes[:, None] if len(grads) else grads
    most = min(len(sizes), math.ceil(budget / batch_size) + 1)  # one batch may be short
    batches: list[int] = []
    weights = np.zeros(0)
    for step in _omp_steps(means, most, ridge):
        batches, weights = step
        if sizes[batches].sum() >= budget:
            break
    positions = np.concatenate([np.arange(bounds[b], bounds[b + 1]) for b in batches] or [np.zeros(0, int)])
    positions = positions[:budget].astype(np.int64)
    if batch_size == 1 or not batches:
        return positions, np.repeat(weights, sizes[batches])[:budget]
    kept = np.minimum(sizes[batches], np.maximum(budget - np.cumsum(sizes[batches]) + sizes[batches], 0))
    batches, kept = np.asarray(batches)[kept > 0], kept[kept > 0]
    kept_means = np.stack(
        [grads[bounds[b] : bounds[b] + m].mean(axis=0) for b, m in zip(batches, kept, strict=True)]
    )
    weights = _ridge_nnls(kept_means, means.sum(axis=0), ridge) * sizes[batches] / kept
    return positions, np.repeat(weights, kept)


def _ridge_nnls(columns: np.ndarray, target: np.ndarray, ridge: float) -> np.ndarray:
    """argmin_{w>=0} ||target - sum_s w_s columns_s||^2 + ridge ||w||^2 (one row per column)."""
    solver = _GramNNLS(len(columns), ridge)
    gram = columns @ columns.T
    linear = columns @ target
    for s in range(len(columns)):
        solver.add(gram[s, :s], float(gram[s, s]), float(linear[s]))
    return solver.solve()


def gradmatch_residual(
    grads: np.ndarray, indices: np.ndarray, weights: np.ndarray, labels: np.ndarray | None = None
) -> float:
    """Relative residual ||G - sum_s w_s g_s|| / ||G||, G = sum of all rows.

    Without labels, on one set. With labels, the mean over classes of each
    class's relative residual (its own G, its own chosen rows). A set whose
    G is 0 contributes the absolute residual instead.
    """
    grads = as_float64(grads)
    indices = np.asarray(indices, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    if labels is None:
        target = grads.sum(axis=0)
        gap = float(np.linalg.norm(target - weights @ grads[indices]))
        norm = float(np.linalg.norm(target))
        return gap / norm if norm > 0 else gap
    labels = np.asarray(labels)
    residuals = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        inside = np.isin(indices, members)
        position = np.searchsorted(members, indices[inside])
        residuals.append(gradmatch_residual(grads[members], position, weights[inside]))
    return float(np.mean(residuals)) if residuals else 0.0


@registry.register("sample_selector", "gradmatch")
@dataclass(frozen=True, kw_only=True)
class GradMatch(SelectorBase):
    """GradMatch (Killamsetty et al. 2021): per class, non-negative ridge OMP matching the gradient sum.

    ridge = 0.5 as in CORDS. If OMP stops early (no unchosen gradient has a
    positive correlation with the residual), the rest of the class's budget is
    filled uniformly at random with weight 1, as CORDS does. Chosen elements
    whose NNLS weight is 0 stay selected with weight 0.

    ``batch_size`` > 1 (for large classes): OMP over consecutive mini-batches of
    each class's members, each represented by its mean gradient, as CORDS's
    per-batch variant (``GradMatchPB``); every member of a chosen batch gets its
    batch's weight, and the last batch chosen is cut to the budget. batch_size
    times fewer candidates and OMP steps; the gradient is matched with whole
    batches only, so the residual is that of the batch problem, with no bound
    against the per-sample one (measured in ``results/perf``). batch_size = 1
    is exactly the per-sample GradMatch.
    """

    needs_grads = True
    ridge: float = 0.5
    batch_size: int = 1

    def __post_init__(self) -> None:
        if not (np.isfinite(self.ridge) and self.ridge >= 0):
            raise ValueError(f"ridge must be finite and >= 0, got {self.ridge}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        grads = _require_grads(pool, "gradmatch")

        def choose(members: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            chosen, weights = gradmatch_per_batch(grads[members], k, self.batch_size, self.ridge)
            missing = k - len(chosen)
            if missing > 0:
                unchosen = np.setdiff1d(np.arange(len(members)), chosen)
                fill = rng.choice(unchosen, size=missing, replace=False)
                chosen = np.concatenate([chosen, fill])
                weights = np.concatenate([weights, np.ones(missing)])
            return chosen, weights.astype(np.float32)

        return _per_class(pool, budget, choose)


# --------------------------------------------------------------------------- OCS


def ocs_scores(grads: np.ndarray, memory_grads: np.ndarray | None, tau: float) -> np.ndarray:
    """OCS score S_i + V_i + tau A_i per candidate (Yoon et al. 2022), with cosine similarity.

    S_i = cos(g_i, mean g), V_i = -mean_{j != i} cos(g_i, g_j),
    A_i = cos(g_i, mean memory gradient) (0 without memory). V comes from
    sum_j u_j of the unit vectors u, never an n x n matrix:
    sum_{j != i} cos(g_i, g_j) = u_i . sum_j u_j - ||u_i||^2. A zero vector has
    cosine 0 with everything.
    """
    grads = as_float64(grads)
    n = len(grads)
    if n == 0:
        return np.zeros(0)
    normalised = unit_rows(grads)
    similarity = normalised @ unit(grads.mean(axis=0))
    if n > 1:
        others = normalised @ normalised.sum(axis=0) - np.einsum("ij,ij->i", normalised, normalised)
        diversity = -others / (n - 1)
    else:
        diversity = np.zeros(1)
    if memory_grads is None or len(memory_grads) == 0:
        affinity = np.zeros(n)
    else:
        affinity = normalised @ unit(as_float64(memory_grads).mean(axis=0))
    return similarity + diversity + tau * affinity


@registry.register("sample_selector", "ocs")
@dataclass(frozen=True, kw_only=True)
class OnlineCoresetSelection(SelectorBase):
    """OCS (Yoon et al., ICLR 2022): top-k of minibatch similarity + diversity + tau x memory affinity.

    The end-of-task form over the whole pool, cosine similarity on gradient
    proxies; tau = 1000 as in the paper's code. Ties go to the lower index.
    Weights are 1.
    """

    needs_grads = True
    tau: float = 1000.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.tau):
            raise ValueError(f"tau must be finite, got {self.tau}")

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        grads = _require_grads(pool, "ocs")
        k = _budget(budget, len(grads))
        scores = ocs_scores(grads, pool.memory_grads, self.tau)
        # lexsort: primary key descending score, secondary ascending index (ties to the lower index)
        order = np.lexsort((np.arange(len(scores)), -scores))
        return Selection.of(order[:k])
