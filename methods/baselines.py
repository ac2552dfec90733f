"""The bounds every continual-learning table needs, and the simplest memories.

- ``none``: no memory (lower bound: plain fine-tuning in sequence).
- ``joint``: after each task, train on every task's data so far (upper bound; no memory).
- ``random``: a uniform coreset.
- ``reservoir``: Vitter's algorithm R over the task's stream.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from benchmark import registry
from benchmark.contracts import SamplePool, Selection
from methods.base import SelectorBase


@registry.register("sample_selector", "none")
class NoMemory(SelectorBase):
    """No memory: fine-tune in sequence (the lower bound)."""

    uses_memory: ClassVar[bool] = False

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        return Selection.empty()


@registry.register("sample_selector", "joint")
class JointTraining(SelectorBase):
    """Joint (cumulative) training: after each task, train on all tasks' data so far (the upper bound)."""

    uses_memory: ClassVar[bool] = False
    trains_jointly: ClassVar[bool] = True

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        return Selection.empty()


@registry.register("sample_selector", "random")
class RandomSamples(SelectorBase):
    """Uniform random coreset: k distinct samples drawn from the generator."""

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        count = min(max(budget, 0), len(pool))
        return Selection.of(np.sort(rng.choice(len(pool), size=count, replace=False)))


@registry.register("sample_selector", "reservoir")
class Reservoir(SelectorBase):
    """Reservoir sampling (Vitter 1985, algorithm R) over the task's training stream.

    The i-th sample seen (1-based) enters a full reservoir with probability
    capacity / i, replacing a uniform slot. The design (docs/design.md) fixes a byte budget per
    finished task, so the reservoir runs over each task's stream with that
    task's capacity (a cross-task reservoir would move bytes between tasks).
    """

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        capacity = min(max(budget, 0), len(pool))
        if capacity == 0:
            return Selection.empty()
        reservoir = np.arange(capacity, dtype=np.int64)
        seen = np.arange(capacity + 1, len(pool) + 1)  # 1-based position of each later sample
        slots = np.floor(rng.random(len(seen)) * seen).astype(np.int64)  # uniform in [0, i)
        for offset in np.flatnonzero(slots < capacity):
            reservoir[slots[offset]] = capacity + offset
        return Selection.of(np.sort(reservoir))
