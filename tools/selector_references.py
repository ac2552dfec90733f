"""Plain reference implementations of the coreset selectors: each definition written out directly.

They are what a careful reader of the papers would write first, with numpy
and scipy, and serve two purposes: the tests check the suite's selectors
against them on small pools, and ``tools.perf_selectors`` times them as the
"plain" peer. Per-class ones split the budget as the suite does
(``methods.base.per_class_budgets``).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from methods.base import per_class_budgets
from methods.coresets import facility_similarity


def naive_greedy(similarity: np.ndarray, k: int) -> list[int]:
    """Facility location by plain greedy: every step, every gain; ties to the lowest index (argmax)."""
    covered = np.zeros(len(similarity))
    chosen: list[int] = []
    for _ in range(k):
        gains = np.maximum(similarity - covered, 0.0).sum(axis=1)
        gains[chosen] = -np.inf
        chosen.append(int(np.argmax(gains)))
        covered = np.maximum(covered, similarity[chosen[-1]])
    return chosen


def naive_facility_location(grads: np.ndarray, labels: np.ndarray, budget: int) -> np.ndarray:
    """Per-class naive greedy facility location (CRAIG's objective) on the dense similarity."""
    chosen: list[int] = []
    for label, share in sorted(per_class_budgets(labels, budget).items()):
        members = np.flatnonzero(labels == label)
        picked = naive_greedy(facility_similarity(grads[members]), share)
        chosen.extend(members[picked].tolist())
    return np.asarray(chosen, dtype=np.int64)


def plain_kcenter(features: np.ndarray, k: int, first: int) -> np.ndarray:
    """Sener & Savarese's greedy without pruning: a full distance pass over the pool every step."""
    points = features.astype(np.float64)
    chosen = [first]
    nearest = np.linalg.norm(points - points[first], axis=1)
    while len(chosen) < k:
        nearest[chosen] = -1.0
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return np.asarray(chosen, dtype=np.int64)


def plain_herding(features: np.ndarray, labels: np.ndarray, budget: int) -> np.ndarray:
    """Per-class herding as docs/methods.md has it: argmin_i ||mu - (sum_S h + h_i) / t|| over unchosen i."""
    points = features.astype(np.float64)
    unit = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-300)
    chosen: list[int] = []
    for label, share in sorted(per_class_budgets(labels, budget).items()):
        members = np.flatnonzero(labels == label)
        h = unit[members]
        mu = h.mean(axis=0)
        total = np.zeros_like(mu)
        picked: list[int] = []
        for t in range(1, share + 1):
            distance = np.linalg.norm(mu - (total + h) / t, axis=1)
            distance[picked] = np.inf
            picked.append(int(np.argmin(distance)))
            total += h[picked[-1]]
        chosen.extend(members[picked].tolist())
    return np.asarray(chosen, dtype=np.int64)


def plain_gradmatch(
    grads: np.ndarray, labels: np.ndarray, budget: int, ridge: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class NN-OMP as CORDS writes it: scipy NNLS on [A; sqrt(ridge) I] w = [G; 0] at every step."""
    indices: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for label, share in sorted(per_class_budgets(labels, budget).items()):
        if share == 0:
            continue
        members = np.flatnonzero(labels == label)
        g = grads[members].astype(np.float64)
        target = g.sum(axis=0)
        scale = np.linalg.norm(target) * np.linalg.norm(g, axis=1).max()
        picked: list[int] = []
        w = np.zeros(0)
        residual = target
        for _ in range(share):
            correlation = g @ residual
            correlation[picked] = -np.inf
            j = int(np.argmax(correlation))
            if correlation[j] <= 1e-12 * scale:
                break
            picked.append(j)
            system = np.vstack([g[picked].T, np.sqrt(ridge) * np.eye(len(picked))])
            w = nnls(system, np.concatenate([target, np.zeros(len(picked))]), maxiter=50 * len(picked))[0]
            residual = target - w @ g[picked]
        missing = share - len(picked)
        if missing:
            fill = rng.choice(np.setdiff1d(np.arange(len(members)), picked), size=missing, replace=False)
            picked.extend(fill.tolist())
            w = np.concatenate([w, np.ones(missing)])
        indices.append(members[picked])
        weights.append(w)
    return np.concatenate(indices), np.concatenate(weights)


def plain_ocs(grads: np.ndarray, budget: int, block: int = 2048) -> np.ndarray:
    """OCS without memory: minibatch similarity + diversity from the pairwise cosine matrix (row blocks)."""
    g = grads.astype(np.float64)
    unit = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-300)
    n = len(g)
    mean = g.mean(axis=0)
    similarity = unit @ (mean / max(np.linalg.norm(mean), 1e-300))
    diversity = np.empty(n)
    for start in range(0, n, block):
        cosines = unit[start : start + block] @ unit.T
        rows = np.arange(len(cosines))
        cosines[rows, start + rows] = 0.0
        diversity[start : start + block] = -cosines.sum(axis=1) / max(n - 1, 1)
    scores = similarity + diversity  # no memory: the affinity term is 0
    return np.lexsort((np.arange(n), -scores))[:budget]
