"""Single-stage memory selection: rank (sample, token) pairs jointly and keep the best within the bytes.

The seed paper selects in two stages (samples, then a fixed fraction t of
tokens of each) and leaves open how to split a budget between them (its open
question 2). ``tokengreedy`` scores each pair by sample importance × token
relevance and takes pairs in that order while the byte budget allows, so how
many samples and how many tokens of each are stored falls out of the
selection. Sample importance is the norm of the sample's last-layer gradient
proxy (GraNd, Paul et al. 2021, "Deep Learning on a Data Diet"), scaled to
[0, 1]; token relevance comes from the method's token selector, min–max scaled
per sample (a constant relevance scales to 1 everywhere).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from benchmark import registry
from benchmark.contracts import SamplePool, Selection
from benchmark.memory import ByteCosts
from methods.base import SelectorBase, per_class_budgets


def importance_from_grads(grads: np.ndarray) -> np.ndarray:
    """GraNd scores: the gradient-proxy norm per sample, divided by the largest (all zero stays zero)."""
    norms = np.linalg.norm(grads.astype(np.float64), axis=1)
    top = norms.max(initial=0.0)
    return norms / top if top > 0 else norms


def scaled_relevance(relevance: np.ndarray) -> np.ndarray:
    """Per sample, relevance min–max scaled to [0, 1]; a sample with constant relevance gets 1 everywhere."""
    low = relevance.min(axis=1, keepdims=True)
    span = relevance.max(axis=1, keepdims=True) - low
    return np.where(span > 0, (relevance - low) / np.where(span > 0, span, 1.0), 1.0)


def greedy_pairs(
    importance: np.ndarray, relevance: np.ndarray, budget_bytes: int, costs: ByteCosts
) -> dict[int, np.ndarray]:
    """Sample → sorted kept positions: pairs in order of importance × relevance while the bytes last.

    Ties go to the more important sample, then the lower sample index, then the
    lower position. A sample cut off mid-way keeps only tokens strictly more
    relevant than its best dropped one (a tie across the cut would make the
    cut arbitrary), so a relevance that is constant over tokens keeps whole
    samples. Where the next token does not fit but the rest of its sample does
    (a whole sample stores no positions), the sample is completed. The bytes of
    the result never exceed ``budget_bytes``.
    """
    n, tokens = relevance.shape
    scaled = scaled_relevance(relevance)
    score = importance[:, None] * scaled
    sample_of = np.repeat(np.arange(n), tokens)
    position_of = np.tile(np.arange(tokens), n)
    order = np.lexsort((position_of, sample_of, -np.repeat(importance, tokens), -score.ravel()))
    left = budget_bytes
    kept: dict[int, list[int]] = {}
    for pair in order:
        sample, position = int(sample_of[pair]), int(position_of[pair])
        have = kept.get(sample, [])
        if position in have:
            continue  # taken when its sample was completed
        spent = costs.of(len(have)) if have else 0
        cost = costs.of(len(have) + 1) - spent
        if cost <= left:
            left -= cost
            kept.setdefault(sample, []).append(position)
        elif costs.of(tokens) - spent <= left:
            # A whole sample stores no positions, so completing it can cost less than the next
            # partial step: take the rest of its tokens.
            left -= costs.of(tokens) - spent
            rest = [p for p in np.argsort(-scaled[sample], kind="stable").tolist() if p not in have]
            kept.setdefault(sample, []).extend(int(p) for p in rest)
    chosen: dict[int, np.ndarray] = {}
    for sample, positions in kept.items():
        if len(positions) < tokens:
            values = scaled[sample]
            dropped_best = np.delete(values, positions).max()
            positions = [p for p in positions if values[p] > dropped_best]
        if positions:
            chosen[sample] = np.sort(np.asarray(positions, dtype=np.int64))
    return chosen


def byte_shares(labels: np.ndarray, budget_bytes: int) -> dict[int, int]:
    """⌊budget · class size / n⌋ bytes per class (the few bytes of remainder stay unspent)."""
    classes, counts = np.unique(labels, return_counts=True)
    total = max(int(budget_bytes), 0)
    return {int(c): total * int(k) // len(labels) for c, k in zip(classes, counts, strict=True)}


@registry.register("sample_selector", "tokengreedy")
class TokenGreedy(SelectorBase):
    """Single-stage selection: (sample, token) pairs by GraNd importance × token relevance within the bytes.

    As a plain coreset (no token selector) it keeps the most important samples
    of each class (GraNd). With a token selector the runner calls
    ``select_pairs``, and the byte budget, not a token fraction, decides how
    many tokens each sample keeps.
    """

    needs_grads: ClassVar[bool] = True

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        assert pool.grads is not None
        importance = importance_from_grads(pool.grads)
        chosen = []
        for label, share in per_class_budgets(pool.labels, budget, pool.tie_order).items():
            members = np.flatnonzero(pool.labels == label)
            ranked = members[np.lexsort((members, -importance[members]))]
            chosen.append(ranked[:share])
        return Selection.of(np.sort(np.concatenate(chosen)) if chosen else [])

    def select_pairs(
        self, pool: SamplePool, relevance: np.ndarray, budget_bytes: int, costs: ByteCosts
    ) -> dict[int, np.ndarray]:
        """Per class, its share of the bytes (by class size) spent greedily on that class's pairs; the
        block headers' reserve is set aside first."""
        assert pool.grads is not None
        importance = importance_from_grads(pool.grads)
        chosen: dict[int, np.ndarray] = {}
        for label, share in byte_shares(pool.labels, budget_bytes - costs.reserve_bytes).items():
            members = np.flatnonzero(pool.labels == label)
            picked = greedy_pairs(importance[members], relevance[members], share, costs)
            chosen.update({int(members[i]): kept for i, kept in picked.items()})
        return dict(sorted(chosen.items()))
