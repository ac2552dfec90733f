"""Facility location for CRAIG: similarities s_ij = c - ||g_i - g_j|| and two greedy maximisers.

F(S) = sum_i max_{j in S} s_ij over one set of gradient proxies, c at least
the set's largest distance. Two maximisers:

- ``lazy_greedy`` (Minoux's lazy greedy): exactly the naive greedy's choices,
  (1 - 1/e)-optimal (Nemhauser et al. 1978);
- ``stochastic_greedy`` (Mirzasoleiman et al. 2015, "Lazier than lazy
  greedy"): each step takes the best of a uniform sample of
  ceil(n/k ln(1/eps)) unchosen elements, (1 - 1/e - eps)-optimal in expectation.

Rows come from a dense matrix for sets of at most ``dense_max`` members
(built in row blocks; a compiled kernel finishes and sums each block), or are
computed on demand with a cache of at most dense_max^2 values (``FacilityRows``),
so that no n x n matrix is held for a larger set. Everything is float64, and
the compiled kernels sum each row in numpy's pairwise order, so every gain is
bit-identical to ``np.maximum(row - covered, 0).sum()``: the lazy greedy makes
exactly the choices of the naive greedy written with numpy, ties to the
lower index.
"""

from __future__ import annotations

import heapq
import math

import numba
import numpy as np

from methods.arrays import row_blocks


def similarity_offset(centred: np.ndarray) -> float:
    """c >= every pairwise distance: twice the largest distance to the mean (triangle inequality).

    The greedy choice does not depend on c once c bounds the distances, and this
    bound costs one pass instead of all pairs.
    """
    if len(centred) == 0:
        return 0.0
    radius = float(np.sqrt(np.einsum("ij,ij->i", centred, centred).max()))
    return 2.0 * radius * (1.0 + 1e-9)


# --------------------------------------------------------------------------- compiled kernels


@numba.njit(inline="always")
def _positive(x: float) -> float:
    return x if x >= 0.0 else 0.0  # np.maximum(x, 0.0) for finite x, -0.0 included


@numba.njit(cache=True, nogil=True)
def _excess_leaf(row: np.ndarray, covered: np.ndarray, start: int, count: int) -> float:
    """numpy's pairwise-sum leaf (count <= 128) of max(row - covered, 0) over [start, start + count).

    Unsigned indices spare numba's negative-index wraparound in the loop.
    """
    first = np.uint64(start)
    end = np.uint64(start + count)
    if count < 8:
        total = 0.0
        for i in range(first, end):
            total += _positive(row[i] - covered[i])
        return total
    b = first
    r0 = _positive(row[b] - covered[b])
    r1 = _positive(row[b + np.uint64(1)] - covered[b + np.uint64(1)])
    r2 = _positive(row[b + np.uint64(2)] - covered[b + np.uint64(2)])
    r3 = _positive(row[b + np.uint64(3)] - covered[b + np.uint64(3)])
    r4 = _positive(row[b + np.uint64(4)] - covered[b + np.uint64(4)])
    r5 = _positive(row[b + np.uint64(5)] - covered[b + np.uint64(5)])
    r6 = _positive(row[b + np.uint64(6)] - covered[b + np.uint64(6)])
    r7 = _positive(row[b + np.uint64(7)] - covered[b + np.uint64(7)])
    stop = np.uint64(start + count - count % 8)
    i = first + np.uint64(8)
    while i < stop:
        r0 += _positive(row[i] - covered[i])
        r1 += _positive(row[i + np.uint64(1)] - covered[i + np.uint64(1)])
        r2 += _positive(row[i + np.uint64(2)] - covered[i + np.uint64(2)])
        r3 += _positive(row[i + np.uint64(3)] - covered[i + np.uint64(3)])
        r4 += _positive(row[i + np.uint64(4)] - covered[i + np.uint64(4)])
        r5 += _positive(row[i + np.uint64(5)] - covered[i + np.uint64(5)])
        r6 += _positive(row[i + np.uint64(6)] - covered[i + np.uint64(6)])
        r7 += _positive(row[i + np.uint64(7)] - covered[i + np.uint64(7)])
        i += np.uint64(8)
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < end:
        total += _positive(row[i] - covered[i])
        i += np.uint64(1)
    return total


@numba.njit(inline="always")
def _left_half(count: int) -> int:
    half = count // 2
    return half - half % 8


@numba.njit(cache=True, nogil=True)
def _excess_sum(row: np.ndarray, covered: np.ndarray, start: int, count: int) -> float:
    """sum of max(row - covered, 0) over [start, start + count) in numpy's pairwise order (zero start).

    numpy splits a sum longer than 128 into halves (the left one a multiple of
    8 long) and adds the two halves' sums; this walks the same tree with an
    explicit stack (a recursive kernel cannot be cached).
    """
    if count <= 128:
        return _excess_leaf(row, covered, start, count)
    starts = np.empty(64, dtype=np.int64)
    counts = np.empty(64, dtype=np.int64)
    lefts = np.empty(64)
    right_next = np.zeros(64, dtype=np.bool_)  # the left half of this node is summed
    depth = 0
    starts[0], counts[0] = start, count
    while True:
        while counts[depth] > 128:  # descend along left halves
            half = _left_half(counts[depth])
            depth += 1
            starts[depth], counts[depth], right_next[depth] = starts[depth - 1], half, False
        value = _excess_leaf(row, covered, starts[depth], counts[depth])
        while True:  # climb while nodes are complete
            depth -= 1
            if depth < 0:
                return value
            if not right_next[depth]:  # value is this node's left half: go sum the right one
                lefts[depth], right_next[depth] = value, True
                half = _left_half(counts[depth])
                depth += 1
                starts[depth], counts[depth] = starts[depth - 1] + half, counts[depth - 1] - half
                right_next[depth] = False
                break
            value = lefts[depth] + value


@numba.njit(cache=True, nogil=True)
def _excess_sums(rows: np.ndarray, covered: np.ndarray, out: np.ndarray) -> None:
    for r in range(rows.shape[0]):
        out[r] = _excess_sum(rows[r], covered, 0, rows.shape[1])


@numba.njit(cache=True, nogil=True)
def _finish_block(
    block: np.ndarray, sq_norms: np.ndarray, first: int, offset: float, zeros: np.ndarray, sums: np.ndarray
) -> None:
    """Gram products of rows first.. -> c - distance in place (numpy's operation order), and row sums."""
    n = np.uint64(block.shape[1])
    for r in range(block.shape[0]):
        i = first + r
        row = block[r]
        sq_i = sq_norms[i]
        for j in range(n):
            x = row[j] * -2.0
            x = x + sq_norms[j]
            x = x + sq_i
            row[j] = offset - np.sqrt(_positive(x))
        row[i] = offset - 0.0  # exactly: a point covers itself fully
        sums[r] = _excess_sum(row, zeros, 0, block.shape[1])


@numba.njit(cache=True, nogil=True)
def _lazy_greedy_dense(similarity: np.ndarray, initial: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Minoux's lazy greedy on a dense similarity matrix; (choices, their gains)."""
    n = similarity.shape[0]
    covered = np.zeros(n)
    heap = [(-initial[j], j, 0) for j in range(n)]
    heapq.heapify(heap)
    chosen = np.empty(k, dtype=np.int64)
    gains = np.empty(k)
    step = 0
    while step < k:
        negative_gain, j, computed_at = heapq.heappop(heap)
        if computed_at == step:
            chosen[step] = j
            gains[step] = -negative_gain
            step += 1
            row = similarity[j]
            for i in range(n):
                if row[i] > covered[i]:
                    covered[i] = row[i]
            continue
        heapq.heappush(heap, (-_excess_sum(similarity[j], covered, 0, n), j, step))
    return chosen, gains


# --------------------------------------------------------------------------- rows


def _centred(grads: np.ndarray) -> np.ndarray:
    return grads - grads.mean(axis=0)


def dense_similarity(grads: np.ndarray, offset: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The n x n similarity of one set (c from the set unless given) and each row's sum, in row blocks."""
    centred = _centred(grads)
    centred_t = np.ascontiguousarray(centred.T)
    sq_norms = np.einsum("ij,ij->i", centred, centred)
    offset = similarity_offset(centred) if offset is None else offset
    n = len(grads)
    similarity = np.empty((n, n))
    sums = np.empty(n)
    zeros = np.zeros(n)
    for block in row_blocks(n, n):
        out = similarity[block]
        if block.stop - block.start == 1:
            # BLAS sends a one-row product to gemv, whose rounding differs from gemm's: two rows instead.
            out[:] = (centred[[block.start, block.start]] @ centred_t)[:1]
        else:
            np.matmul(centred[block], centred_t, out=out)
        _finish_block(out, sq_norms, block.start, offset, zeros, sums[block])
    return similarity, sums


class FacilityRows:
    """Rows s_j. = c - ||g_j - g_.|| of one set, computed on demand, with a bounded cache of rows.

    At most dense_max^2 values are kept, for the candidates that the greedy has
    evaluated most often (they tend to be evaluated again: outliers whose gains
    shrink slowly stay near the top). ``prefill`` computes the first cached rows
    up front (the lazy greedy needs every row once anyway; the stochastic greedy
    does not).
    """

    def __init__(self, grads: np.ndarray, dense_max: int, offset: float | None = None, prefill: bool = True):
        self.centred = _centred(grads)
        self.centred_t = np.ascontiguousarray(self.centred.T)
        self.offset = similarity_offset(self.centred) if offset is None else offset
        self.sq_norms = np.einsum("ij,ij->i", self.centred, self.centred)
        self.size = n = len(grads)
        capacity = min(n, max(1, dense_max * dense_max // max(n, 1)))
        self.cache = np.empty((capacity, n))
        filled = capacity if prefill else 0
        for block in row_blocks(filled, n):
            self._compute(np.arange(filled)[block], out=self.cache[block])
        self.owner = np.full(capacity, -1, dtype=np.int64)  # candidate held by each cache row, -1: none
        self.owner[:filled] = np.arange(filled)
        self.slot_of = np.full(n, -1, dtype=np.int64)  # cache row holding candidate j, -1: none
        self.slot_of[:filled] = np.arange(filled)
        self.evaluations = np.zeros(n, dtype=np.int64)

    def _compute(self, candidates: np.ndarray, out: np.ndarray) -> np.ndarray:
        # ||a||^2 + ||b||^2 - 2 a.b on centred data, then c - sqrt(.)
        if len(candidates) == 1:
            # two rows keep every row bit-identical however it is batched (see dense_similarity)
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
        for block in row_blocks(len(missing), self.size):
            rows = missing[block]
            out[rows] = self._compute(candidates[rows], out=np.empty((len(rows), self.size)))
        present = np.flatnonzero(slots >= 0)
        out[present] = self.cache[slots[present]]
        self._admit(candidates[missing], out[missing], protected=slots[present])
        return out

    def _admit(self, new: np.ndarray, new_rows: np.ndarray, protected: np.ndarray) -> None:
        """Cache new rows in place of empty or less evaluated ones; the rows just served stay."""
        count = min(len(new), len(self.owner) - len(protected))
        if count <= 0:
            return
        standing = np.where(self.owner >= 0, self.evaluations[np.maximum(self.owner, 0)], -1)
        standing[protected] = np.iinfo(np.int64).max
        victims = np.argpartition(standing, count - 1)[:count]
        victims = victims[np.argsort(standing[victims], kind="stable")]
        ranked = np.argsort(-self.evaluations[new], kind="stable")[:count]
        admit = self.evaluations[new[ranked]] > standing[victims]
        victims, ranked = victims[admit], ranked[admit]
        held = self.owner[victims]
        self.slot_of[held[held >= 0]] = -1
        self.cache[victims] = new_rows[ranked]
        self.owner[victims] = new[ranked]
        self.slot_of[new[ranked]] = victims

    def gains(self, candidates: np.ndarray, covered: np.ndarray, count: bool = True) -> np.ndarray:
        """F(S + j) - F(S) = sum_i max(0, s_ji - covered_i) for each candidate j."""
        rows = self.rows(candidates, count)
        out = np.empty(len(candidates))
        _excess_sums(rows, covered, out)
        return out


def facility_similarity(grads: np.ndarray) -> np.ndarray:
    """The dense similarity matrix s_ji = c - ||g_j - g_i|| that CRAIG uses on one class (small sets only)."""
    return dense_similarity(np.ascontiguousarray(grads, dtype=np.float64))[0]


# --------------------------------------------------------------------------- maximisers


def _lazy_greedy_rows(rows: FacilityRows, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Minoux's lazy greedy on matrix-free rows; equals the naive greedy.

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
    initial = np.concatenate([rows.gains(everyone[b], covered, count=False) for b in row_blocks(n, n)])
    heap = [(-float(gain), j, 0) for j, gain in enumerate(initial)]
    heapq.heapify(heap)
    chosen: list[int] = []
    gains: list[float] = []
    batch = 1
    while len(chosen) < k:
        negative_gain, j, step = heapq.heappop(heap)
        if step == len(chosen):
            chosen.append(j)
            gains.append(-negative_gain)
            np.maximum(covered, rows.rows(np.array([j]))[0], out=covered)
            batch = 1
            continue
        stale = [j]
        while heap and len(stale) < batch and heap[0][2] != len(chosen):
            stale.append(heapq.heappop(heap)[1])
        for candidate, gain in zip(stale, rows.gains(np.array(stale), covered), strict=True):
            heapq.heappush(heap, (-float(gain), candidate, len(chosen)))
        batch = min(2 * batch, 64)
    return np.asarray(chosen, dtype=np.int64), np.asarray(gains, dtype=np.float64)


def lazy_greedy(
    grads: np.ndarray, k: int, dense_max: int, offset: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Maximise F over one set by lazy greedy: k positions in the order chosen, and each one's gain.

    Equals the naive greedy (every gain, every step; ties to the lower index),
    so the gains never increase. c is the set's own unless ``offset`` is given
    (a cell of a partitioned class uses its class's c, so that the gains of
    different cells compare).
    """
    k = min(max(int(k), 0), len(grads))
    if len(grads) <= dense_max:
        similarity, sums = dense_similarity(grads, offset)
        return _lazy_greedy_dense(similarity, sums, k)
    return _lazy_greedy_rows(FacilityRows(grads, dense_max, offset), k)


def stochastic_sample_size(n: int, k: int, epsilon: float) -> int:
    """ceil(n/k ln(1/eps)) elements a step (Mirzasoleiman et al. 2015), at most n."""
    return n if k <= 0 else min(n, max(1, math.ceil(n / k * math.log(1.0 / epsilon))))


def stochastic_greedy(
    grads: np.ndarray,
    k: int,
    epsilon: float,
    rng: np.random.Generator,
    dense_max: int,
    offset: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic greedy (Mirzasoleiman et al. 2015): each step, the best of a uniform unchosen sample.

    The sample has ceil(n/k ln(1/eps)) elements (drawn from ``rng``), so that
    E[F(S)] >= (1 - 1/e - eps) F(OPT). Within a sample the gains are evaluated
    lazily: a stale gain of an earlier step bounds the current one, and an
    element whose bound cannot beat the best fresh gain is skipped. Rows are
    computed on demand (never the n x n matrix). Ties go to the lower index;
    once the sample holds every unchosen element this is the plain greedy.
    """
    n = len(grads)
    k = min(max(int(k), 0), n)
    rows = FacilityRows(grads, dense_max, offset, prefill=False)
    size = stochastic_sample_size(n, k, epsilon)
    remaining = np.arange(n)  # unchosen elements in remaining[:left]; where[j] is j's position there
    where = np.arange(n)
    left = n
    bound = np.full(n, np.inf)
    covered = np.zeros(n)
    chosen = np.empty(k, dtype=np.int64)
    gains = np.empty(k)
    for step in range(k):
        sample = remaining[rng.choice(left, size=min(size, left), replace=False)]
        sample = sample[np.lexsort((sample, -bound[sample]))]  # highest bound first, then lower index
        best, best_gain = -1, -np.inf
        start, batch = 0, 1
        while start < len(sample):
            block = sample[start : start + batch]
            block = block[bound[block] >= best_gain]  # the rest cannot beat (or tie with) the best
            if len(block) == 0:
                break
            fresh = rows.gains(block, covered)
            bound[block] = fresh
            for candidate, gain in zip(block.tolist(), fresh.tolist(), strict=True):
                if gain > best_gain or (gain == best_gain and candidate < best):
                    best, best_gain = candidate, gain
            start += batch
            batch = min(2 * batch, 64)
        chosen[step], gains[step] = best, best_gain
        np.maximum(covered, rows.rows(np.array([best]), count=False)[0], out=covered)
        last = remaining[left - 1]  # swap the choice out of the unchosen prefix
        remaining[where[best]], where[last] = last, where[best]
        left -= 1
    return chosen, gains
