"""Coreset selectors from the field: herding, k-center, CRAIG, GradMatch and OCS.

Each class registers as a ``sample_selector`` and follows the contract of
``methods.base``: ``select(pool, budget, rng)`` returns min(budget, n) distinct
int64 pool indices with float32 non-negative weights, deterministic given the
generator's state. Definitions follow METHODS.md ("Sample selectors").

    from benchmark import registry
    selector = registry.create("sample_selector", "gradmatch", ridge=0.5)
    selection = selector.select(pool, budget=200, rng=np.random.default_rng(0))

The module-level objective functions (``kcenter_radius``,
``facility_location_value``, ``gradmatch_residual``, ``herding_mean_distance``,
``ocs_scores``) are what the tests and ``tools.perf_selectors`` measure.

All arithmetic runs in float64 on numpy/BLAS: the pools are at most a few
hundred thousand rows of low-dimensional proxies, and float64 keeps the greedy
choices stable against rounding. Nothing here builds a dense n x n matrix over
the whole pool; CRAIG builds one per class only up to ``dense_max`` members.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from benchmark import registry
from benchmark.contracts import SamplePool, Selection
from methods.base import SelectorBase, per_class_budgets

# Temporaries are cut into blocks of about this many float64 elements (32 MiB).
_BLOCK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- shared helpers


def _budget(budget: int, n: int) -> int:
    return min(max(int(budget), 0), n)


def _as_float64(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float64)


def _row_blocks(rows: int, cols: int) -> Iterator[slice]:
    step = max(1, _BLOCK_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (cosine 0 with everything)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else np.zeros_like(vector)


def _distances(a: np.ndarray, b: np.ndarray, a_sq: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)] by the Gram expansion (callers centre the data first)."""
    squared = a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    np.maximum(squared, 0.0, out=squared)
    return np.sqrt(squared, out=squared)


def _nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point: distance to and position of its nearest centre (first centre on ties), chunked."""
    shift = points.mean(axis=0) if len(points) else 0.0
    points, centres = points - shift, centres - shift
    points_sq, centres_sq = np.einsum("ij,ij->i", points, points), np.einsum("ij,ij->i", centres, centres)
    distance = np.empty(len(points))
    position = np.empty(len(points), dtype=np.int64)
    for block in _row_blocks(len(points), len(centres)):
        block_distances = _distances(points[block], centres, points_sq[block], centres_sq)
        position[block] = np.argmin(block_distances, axis=1)
        distance[block] = block_distances[np.arange(len(position[block])), position[block]]
    return distance, position


def _require_grads(pool: SamplePool, method: str) -> np.ndarray:
    if pool.grads is None:
        raise ValueError(
            f"sample selector {method!r} needs gradient proxies, but the pool has grads=None "
            "(the runner computes them when the selector declares needs_grads)"
        )
    return _as_float64(pool.grads)


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


# --------------------------------------------------------------------------- herding


def _herding_order(unit_features: np.ndarray, k: int) -> np.ndarray:
    """The first k herding picks (positions) of one class of L2-normalised features."""
    mean = unit_features.mean(axis=0)
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
    unit = _unit_rows(_as_float64(features))
    labels = np.asarray(labels)
    chosen = np.zeros(len(labels), dtype=bool)
    chosen[np.asarray(indices, dtype=np.int64)] = True
    gaps = [
        float(np.linalg.norm(unit[labels == c].mean(axis=0) - unit[(labels == c) & chosen].mean(axis=0)))
        for c in np.unique(labels)
        if np.any((labels == c) & chosen)
    ]
    return float(np.mean(gaps)) if gaps else float("nan")


@registry.register("sample_selector", "herding")
@dataclass(frozen=True, kw_only=True)
class Herding(SelectorBase):
    """Herding (Welling 2009; iCaRL, Rebuffi et al. 2017): per class, match the class mean of unit embeddings.

    Step t adds argmin_i ||mu - (sum_{s in S} h_s + h_i) / t|| over unchosen i,
    mu the mean of the class's normalised embeddings. Weights are 1.
    """

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        unit = _unit_rows(_as_float64(pool.features))

        def choose(members: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            return _herding_order(unit[members], k), np.ones(k, dtype=np.float32)

        return _per_class(pool, budget, choose)


# --------------------------------------------------------------------------- k-center


def kcenter_order(features: np.ndarray, k: int, first: int) -> np.ndarray:
    """Greedy k-center from centre ``first``: k distinct positions, each the farthest from its nearest centre.

    The plain greedy (running minimum updated by one distance pass per step),
    with passes pruned by the triangle inequality: a point whose current
    nearest centre a lies at distance >= 2 m from the new centre c (m its
    current distance) is at least m from c, so its minimum cannot change and is
    not recomputed. Ties go to the lowest index; chosen points are never
    picked again. Distances use the Gram expansion on centred data.
    """
    points = _as_float64(features)
    n = len(points)
    k = _budget(k, n)
    order = np.empty(k, dtype=np.int64)
    if k == 0:
        return order
    centred = points - points.mean(axis=0)
    sq_norms = np.einsum("ij,ij->i", centred, centred)
    centres = np.empty((k, points.shape[1]))
    nearest = np.full(n, np.inf)  # squared distance to the nearest centre; -1 once chosen
    assigned = np.zeros(n, dtype=np.int64)  # which centre (by step) is the nearest
    pick = int(first)
    for t in range(k):
        order[t] = pick
        centre = centred[pick]
        centres[t] = centre
        if t == 0:
            candidates = np.arange(n)
        else:
            between = sq_norms[order[:t]] + sq_norms[pick] - 2.0 * (centres[:t] @ centre)
            # a relative margin keeps the pruning safe against rounding of the expansion
            between -= 1e-9 * (sq_norms[order[:t]] + sq_norms[pick])
            candidates = np.flatnonzero(between[assigned] <= 4.0 * nearest)
        squared = sq_norms[candidates] + sq_norms[pick] - 2.0 * (centred[candidates] @ centre)
        closer = squared < nearest[candidates]
        nearest[candidates[closer]] = np.maximum(squared[closer], 0.0)
        assigned[candidates[closer]] = t
        nearest[pick] = -1.0
        pick = int(np.argmax(nearest))
    return order


def kcenter_radius(features: np.ndarray, indices: np.ndarray) -> float:
    """Covering radius max_i min_{s in indices} ||h_i - h_s|| (0 for an empty pool, inf with no centres)."""
    points = _as_float64(features)
    indices = np.asarray(indices, dtype=np.int64)
    if len(points) == 0:
        return 0.0
    if len(indices) == 0:
        return float("inf")
    distance, _ = _nearest(points, points[indices])
    return float(distance.max())


@registry.register("sample_selector", "kcenter")
@dataclass(frozen=True, kw_only=True)
class KCenter(SelectorBase):
    """Greedy k-center (Sener & Savarese 2018): add the sample farthest from its nearest centre, whole pool.

    The first centre is drawn from the generator; the greedy choice gives a
    covering radius at most twice the optimum. Weights are 1.
    """

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        n = len(pool)
        k = _budget(budget, n)
        if k == 0:
            return Selection.empty()
        first = int(rng.integers(n))
        return Selection.of(kcenter_order(pool.features, k, first))


# --------------------------------------------------------------------------- CRAIG (facility location)


def _similarity_offset(centred: np.ndarray) -> float:
    """c >= every pairwise distance: twice the largest distance to the mean (triangle inequality).

    The greedy choice does not depend on c once c bounds the distances, and this
    bound costs one pass instead of all pairs.
    """
    if len(centred) == 0:
        return 0.0
    radius = float(np.sqrt(np.einsum("ij,ij->i", centred, centred).max()))
    return 2.0 * radius * (1.0 + 1e-9)


class _FacilityRows:
    """Rows s_j. = c - ||g_j - g_.|| of one class's similarity, with a bounded cache of rows.

    A class of at most ``dense_max`` members is computed whole up front. A
    larger class is matrix-free: rows are computed on demand (chunked matrix
    products) and at most dense_max^2 values are kept, for the candidates that
    the lazy greedy has evaluated most often (they tend to be evaluated again:
    outliers whose gains shrink slowly stay near the top of the heap).
    float64 throughout, so that near-equal gains are ordered as the naive
    greedy orders them.
    """

    def __init__(self, grads: np.ndarray, dense_max: int) -> None:
        self.centred = grads - grads.mean(axis=0)
        self.centred_t = np.ascontiguousarray(self.centred.T)
        self.offset = _similarity_offset(self.centred)
        self.sq_norms = np.einsum("ij,ij->i", self.centred, self.centred)
        self.size = n = len(grads)
        self.dense = n <= dense_max
        capacity = n if self.dense else max(1, dense_max * dense_max // n)
        # start with the first rows cached, computed in place: all of them for a dense class
        self.cache = np.empty((capacity, n))
        for block in _row_blocks(capacity, n):
            self._compute(np.arange(capacity)[block], out=self.cache[block])
        self.owner = np.arange(capacity)  # candidate held by each cache row
        self.slot_of = np.full(n, -1, dtype=np.int64)  # cache row holding candidate j, -1: none
        self.slot_of[:capacity] = self.owner
        self.evaluations = np.zeros(n, dtype=np.int64)

    def _compute(self, candidates: np.ndarray, out: np.ndarray) -> np.ndarray:
        # ||a||^2 + ||b||^2 - 2 a.b on centred data, then c - sqrt(.)
        if len(candidates) == 1:
            # BLAS sends a one-row product to gemv, whose rounding differs from gemm's; two rows keep
            # every row bit-identical however it is batched, so ties break as in the naive greedy.
            out[:] = (self.centred[np.repeat(candidates, 2)] @ self.centred_t)[:1]
        else:
            np.matmul(self.centred[candidates], self.centred_t, out=out)
        out *= -2.0
        out += self.sq_norms
        out += self.sq_norms[candidates][:, None]
        np.maximum(out, 0.0, out=out)
        np.sqrt(out, out=out)
        out[np.arange(len(candidates)), candidates] = 0.0  # exactly: a point covers itself fully
        np.subtract(self.offset, out, out=out)
        return out

    def rows(self, candidates: np.ndarray, count: bool = True) -> np.ndarray:
        """A fresh array with the rows of ``candidates`` (distinct); ``count`` records an evaluation."""
        slots = self.slot_of[candidates]
        if count:
            self.evaluations[candidates] += 1
        if np.all(slots >= 0):
            return self.cache[slots]
        out = np.empty((len(candidates), self.size))
        missing = np.flatnonzero(slots < 0)
        for block in _row_blocks(len(missing), self.size):
            rows = missing[block]
            out[rows] = self._compute(candidates[rows], out=np.empty((len(rows), self.size)))
        present = np.flatnonzero(slots >= 0)
        out[present] = self.cache[slots[present]]
        self._admit(candidates[missing], out[missing], protected=slots[present])
        return out

    def _admit(self, new: np.ndarray, new_rows: np.ndarray, protected: np.ndarray) -> None:
        """Cache new rows in place of less evaluated ones; the rows just served stay."""
        count = min(len(new), len(self.owner) - len(protected))
        if count <= 0:
            return
        standing = self.evaluations[self.owner]
        standing[protected] = np.iinfo(np.int64).max
        victims = np.argpartition(standing, count - 1)[:count]
        victims = victims[np.argsort(standing[victims], kind="stable")]
        ranked = np.argsort(-self.evaluations[new], kind="stable")[:count]
        admit = self.evaluations[new[ranked]] > standing[victims]
        victims, ranked = victims[admit], ranked[admit]
        self.slot_of[self.owner[victims]] = -1
        self.cache[victims] = new_rows[ranked]
        self.owner[victims] = new[ranked]
        self.slot_of[new[ranked]] = victims

    def gains(self, candidates: np.ndarray, covered: np.ndarray, count: bool = True) -> np.ndarray:
        """F(S + j) - F(S) = sum_i max(0, s_ji - covered_i) for each candidate j."""
        excess = self.rows(candidates, count)
        np.subtract(excess, covered, out=excess)
        np.maximum(excess, 0.0, out=excess)
        # numpy sums each row pairwise in the same order whatever the batch, so bounds stay monotone
        return excess.sum(axis=1)


def facility_similarity(grads: np.ndarray) -> np.ndarray:
    """The dense similarity matrix s_ji = c - ||g_j - g_i|| that CRAIG uses on one class (small sets only)."""
    grads = _as_float64(grads)
    rows = _FacilityRows(grads, dense_max=len(grads))
    return rows.rows(np.arange(len(grads)), count=False)


def _lazy_greedy_facility_location(rows: _FacilityRows, k: int) -> list[int]:
    """Maximise F(S) = sum_i max_{j in S} s_ji by Minoux's lazy greedy; equals the naive greedy.

    The heap holds (-gain bound, index, step the bound was computed at). Gains
    only shrink as S grows (submodularity; the rounding is monotone too, each
    row being summed in the same order), so a bound computed at the current
    step that tops the heap is the true maximum; ties go to the lower index,
    as in the naive greedy. Stale tops are refreshed in batches that double
    while the same step keeps needing refreshes (one matrix product per batch).
    """
    n = rows.size
    covered = np.zeros(n)
    everyone = np.arange(n)
    initial = np.concatenate([rows.gains(everyone[b], covered, count=False) for b in _row_blocks(n, n)])
    heap = [(-float(gain), j, 0) for j, gain in enumerate(initial)]
    heapq.heapify(heap)
    chosen: list[int] = []
    batch = 1
    while len(chosen) < k:
        _, j, step = heapq.heappop(heap)
        if step == len(chosen):
            chosen.append(j)
            np.maximum(covered, rows.rows(np.array([j]))[0], out=covered)
            batch = 1
            continue
        stale = [j]
        while heap and len(stale) < batch and heap[0][2] != len(chosen):
            stale.append(heapq.heappop(heap)[1])
        for candidate, gain in zip(stale, rows.gains(np.array(stale), covered), strict=True):
            heapq.heappush(heap, (-float(gain), candidate, len(chosen)))
        batch = min(2 * batch, 64)
    return chosen


def _craig_weights(grads: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Cluster sizes: how many members have each chosen element as their most similar (nearest) one."""
    _, nearest = _nearest(grads, grads[chosen])
    nearest[chosen] = np.arange(len(chosen))  # a chosen element is its own nearest, even among duplicates
    return np.bincount(nearest, minlength=len(chosen)).astype(np.float32)


def facility_location_value(
    grads: np.ndarray, indices: np.ndarray, labels: np.ndarray | None = None
) -> float:
    """CRAIG's objective F(S) = sum_i max_{j in S} (c - ||g_i - g_j||), c as in the selector.

    Without labels, one set (c from all rows). With labels, the sum over
    classes of each class's F on its own members and its own chosen indices,
    which is what per-class CRAIG maximises.
    """
    grads = _as_float64(grads)
    indices = np.asarray(indices, dtype=np.int64)
    if labels is None:
        if len(indices) == 0:
            return 0.0
        offset = _similarity_offset(grads - grads.mean(axis=0))
        distance, _ = _nearest(grads, grads[indices])
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
class Craig(SelectorBase):
    """CRAIG (Mirzasoleiman et al. 2020): per class, lazy-greedy facility location on gradients.

    Similarity s_ij = c - ||g_i - g_j|| with c >= the class's largest distance.
    Classes up to ``dense_max`` members use a dense similarity matrix; larger
    ones compute rows on demand (matrix-free), with the same greedy result.
    """

    needs_grads = True
    dense_max: int = 5000

    def __post_init__(self) -> None:
        if self.dense_max < 0:
            raise ValueError(f"dense_max must be >= 0, got {self.dense_max}")

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        grads = _require_grads(pool, "craig")

        def choose(members: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            class_grads = grads[members]
            rows = _FacilityRows(class_grads, self.dense_max)
            chosen = np.asarray(_lazy_greedy_facility_location(rows, k), dtype=np.int64)
            return chosen, _craig_weights(class_grads, chosen)

        return _per_class(pool, budget, choose)


# --------------------------------------------------------------------------- GradMatch (NN-OMP)


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
        below = linalg.solve_triangular(self.factor, column, lower=True) if self.passive else column[:0]
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
        self.factor = linalg.cholesky(block, lower=True) if self.passive else np.zeros((0, 0))

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
                trial = linalg.cho_solve((self.factor, True), linear[self.passive])
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


def gradmatch_omp(grads: np.ndarray, budget: int, ridge: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative OMP (GradMatch; Killamsetty et al. 2021) for one class, without the random fill.

    Target G = sum_i g_i. Each step adds the unchosen j maximising <g_j, r>
    (stopping when that is <= 0, up to rounding), then solves
    w = argmin_{w>=0} ||G - sum_s w_s g_s||^2 + ridge ||w||^2 and sets
    r = G - sum_s w_s g_s. Returns the positions in the order chosen (at most
    ``budget``; fewer if it stopped early) and their weights (some may be 0).
    """
    grads = _as_float64(grads)
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
    weights = np.zeros(0)
    for step in range(k):
        correlation = grads @ residual
        correlation[~available] = -np.inf
        pick = int(np.argmax(correlation))
        if correlation[pick] <= 1e-12 * scale:  # <= 0 up to rounding noise of the residual
            break
        row = grads[pick]
        solver.add(chosen_rows[:step] @ row, float(row @ row), float(row @ target))
        chosen_rows[step] = row
        chosen.append(pick)
        available[pick] = False
        weights = solver.solve()
        residual = target - weights @ chosen_rows[: step + 1]
    return np.asarray(chosen, dtype=np.int64), weights


def gradmatch_residual(
    grads: np.ndarray, indices: np.ndarray, weights: np.ndarray, labels: np.ndarray | None = None
) -> float:
    """Relative residual ||G - sum_s w_s g_s|| / ||G||, G = sum of all rows.

    Without labels, on one set. With labels, the mean over classes of each
    class's relative residual (its own G, its own chosen rows). A set whose
    G is 0 contributes the absolute residual instead.
    """
    grads = _as_float64(grads)
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
    """

    needs_grads = True
    ridge: float = 0.5

    def __post_init__(self) -> None:
        if not (np.isfinite(self.ridge) and self.ridge >= 0):
            raise ValueError(f"ridge must be finite and >= 0, got {self.ridge}")

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        grads = _require_grads(pool, "gradmatch")

        def choose(members: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            chosen, weights = gradmatch_omp(grads[members], k, self.ridge)
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
    grads = _as_float64(grads)
    n = len(grads)
    if n == 0:
        return np.zeros(0)
    unit = _unit_rows(grads)
    similarity = unit @ _unit(grads.mean(axis=0))
    if n > 1:
        others = unit @ unit.sum(axis=0) - np.einsum("ij,ij->i", unit, unit)
        diversity = -others / (n - 1)
    else:
        diversity = np.zeros(1)
    if memory_grads is None or len(memory_grads) == 0:
        affinity = np.zeros(n)
    else:
        affinity = unit @ _unit(_as_float64(memory_grads).mean(axis=0))
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
