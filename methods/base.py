"""The selection contracts (DESIGN, "Public contracts") and helpers every selector shares.

A sample selector is any object with ``select(pool, budget, rng) -> Selection``
and the class attributes below that declare what it needs, so that the runner
computes only what is needed and refuses an impossible cell before it runs
(Mammoth's ``COMPATIBILITY``, as attributes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np
import torch

from benchmark.model import TokenBatch


@dataclass(frozen=True)
class SamplePool:
    """The finished task's training samples as the selectors see them."""

    features: np.ndarray  # float32 [n, d]: penultimate features (CLS after the final norm)
    grads: np.ndarray | None  # float32 [n, g]: last-layer gradient proxies, or None
    labels: np.ndarray  # int64 [n]
    memory_grads: np.ndarray | None = None  # float32 [m, g]: what memory already holds

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.features.shape[0] != n:
            raise ValueError(f"features has {self.features.shape[0]} rows for {n} labels")
        if self.grads is not None and self.grads.shape[0] != n:
            raise ValueError(f"grads has {self.grads.shape[0]} rows for {n} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Selection:
    """Chosen pool indices (distinct, int64) and their non-negative float32 weights."""

    indices: np.ndarray
    weights: np.ndarray

    @classmethod
    def of(cls, indices: np.ndarray | list[int], weights: np.ndarray | None = None) -> Selection:
        chosen = np.asarray(indices, dtype=np.int64).reshape(-1)
        if weights is None:
            weights = np.ones(len(chosen), dtype=np.float32)
        return cls(chosen, np.asarray(weights, dtype=np.float32).reshape(-1))

    @classmethod
    def empty(cls) -> Selection:
        return cls.of(np.zeros(0, dtype=np.int64))


class SampleSelector(Protocol):
    needs_grads: ClassVar[bool]
    uses_memory: ClassVar[bool]  # False: a bound that stores nothing (``none``, ``joint``)
    trains_jointly: ClassVar[bool]  # True: each task trains on every task's data so far (``joint``)

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection: ...


@dataclass(frozen=True)
class TokenInputs:
    """What a token selector ranks: stored samples with every token, and what it may draw on."""

    batch: TokenBatch  # uint8 patches [B, P, d] with positions [B, P]
    rng: np.random.Generator  # for selectors that draw (random, tie-breaking)
    masks: torch.Tensor | None = None  # bool [B, P] ground-truth relevance, where the task has it
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class TokenSelector(Protocol):
    needs_mask: ClassVar[bool]  # True: only on tasks with a ground-truth relevance mask

    def rank(self, model: torch.nn.Module, inputs: TokenInputs, targets: torch.Tensor) -> torch.Tensor: ...


class SelectorBase:
    """Defaults for the capability attributes; a selector overrides what differs."""

    needs_grads: ClassVar[bool] = False
    uses_memory: ClassVar[bool] = True
    trains_jointly: ClassVar[bool] = False


def per_class_budgets(labels: np.ndarray, budget: int) -> dict[int, int]:
    """Split ``budget`` over classes in proportion to class size; total exactly min(budget, n).

    Floors first, then the remainder one each to the classes with the largest
    fractional share (ties: larger class, then smaller label), never more than
    a class holds.
    """
    classes, counts = np.unique(labels, return_counts=True)
    n = int(counts.sum())
    total = min(max(int(budget), 0), n)
    if total == 0:
        return {int(c): 0 for c in classes}
    exact = counts * total / n
    shares = np.minimum(np.floor(exact).astype(np.int64), counts)
    remainder = total - int(shares.sum())
    order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - shares[i]), -counts[i], classes[i]))
    while remainder > 0:
        for i in order:
            if remainder == 0:
                break
            if shares[i] < counts[i]:
                shares[i] += 1
                remainder -= 1
    return {int(c): int(s) for c, s in zip(classes, shares, strict=True)}
