"""Helpers every sample selector shares (the selection contracts live in ``benchmark.contracts``).

A sample selector is any object with ``select(pool, budget, rng) -> Selection``
and the class attributes that declare what it needs (``SelectorBase`` holds
the defaults).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class SelectorBase:
    """Defaults for the capability attributes; a selector overrides what differs."""

    needs_grads: ClassVar[bool] = False
    uses_memory: ClassVar[bool] = True
    trains_jointly: ClassVar[bool] = False


def per_class_budgets(labels: np.ndarray, budget: int, tie_order: np.ndarray | None = None) -> dict[int, int]:
    """Split ``budget`` over classes in proportion to class size; total exactly min(budget, n).

    Floors first, then the remainder one each to the classes with the largest
    fractional share (ties: larger class, then earlier in ``tie_order``, the
    pool's seeded class order; without one, smaller label), never more than a
    class holds.
    """
    classes, counts = np.unique(labels, return_counts=True)
    n = int(counts.sum())
    total = min(max(int(budget), 0), n)
    if total == 0:
        return {int(c): 0 for c in classes}
    exact = counts * total / n
    shares = np.minimum(np.floor(exact).astype(np.int64), counts)
    remainder = total - int(shares.sum())
    rank = {int(c): i for i, c in enumerate(classes if tie_order is None else tie_order)}
    if len(rank) != len(classes) or any(int(c) not in rank for c in classes):
        raise ValueError("tie_order must list every class of the labels once")
    order = sorted(
        range(len(classes)), key=lambda i: (-(exact[i] - shares[i]), -counts[i], rank[int(classes[i])])
    )
    while remainder > 0:
        for i in order:
            if remainder == 0:
                break
            if shares[i] < counts[i]:
                shares[i] += 1
                remainder -= 1
    return {int(c): int(s) for c, s in zip(classes, shares, strict=True)}
