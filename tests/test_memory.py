from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.memory import (
    MemoryBuffer,
    kept_token_count,
    retention_budget_bytes,
    samples_within_budget,
    stored_sample_bytes,
)


@settings(max_examples=200, deadline=None)
@given(
    retention=st.floats(min_value=1e-4, max_value=1.0, exclude_min=False),
    samples=st.integers(min_value=1, max_value=400),
    tokens=st.sampled_from([4, 16, 64]),
    patch_bytes=st.sampled_from([4, 48, 192]),
    token_fraction=st.floats(min_value=0.01, max_value=1.0),
)
def test_memory_never_exceeds_its_byte_budget(
    retention: float, samples: int, tokens: int, patch_bytes: int, token_fraction: float
) -> None:
    train_bytes = samples * tokens * patch_bytes
    budget = retention_budget_bytes(retention, train_bytes)
    kept = kept_token_count(token_fraction, tokens)
    count = min(samples_within_budget(budget, kept, tokens, patch_bytes), samples)
    memory = MemoryBuffer(tokens)
    patches = np.zeros((count, kept, patch_bytes), dtype=np.uint8)
    positions = np.tile(np.arange(kept), (count, 1))
    entry = memory.add(0, patches, positions, np.zeros(count, dtype=np.int64), budget)
    # Counted from what is held, and within the budget.
    held = patches.nbytes + entry.labels.nbytes + (0 if entry.positions is None else entry.positions.nbytes)
    assert memory.bytes_used == held <= budget
    # One more sample would not have fitted (the budget is used, not wasted), unless the pool ran out.
    if count < samples:
        assert held + stored_sample_bytes(kept, tokens, patch_bytes) > budget


def test_token_fraction_one_is_the_coreset() -> None:
    tokens, patch_bytes = 16, 192
    assert kept_token_count(1.0, tokens) == tokens
    # A whole sample stores no positions: same bytes as the coreset's sample.
    assert stored_sample_bytes(tokens, tokens, patch_bytes) == tokens * patch_bytes + 2
    memory = MemoryBuffer(tokens)
    entry = memory.add(
        0,
        np.zeros((3, tokens, patch_bytes), np.uint8),
        np.tile(np.arange(tokens), (3, 1)),
        np.arange(3),
        10**6,
    )
    assert entry.positions is None
    assert memory.bytes_used == 3 * (tokens * patch_bytes + 2)


def test_a_kept_token_costs_its_pixels_and_its_position() -> None:
    assert stored_sample_bytes(4, 16, 192) == 4 * (192 + 2) + 2


def test_over_budget_is_refused() -> None:
    memory = MemoryBuffer(16)
    with pytest.raises(ValueError, match="allowed"):
        memory.add(0, np.zeros((2, 16, 10), np.uint8), None, np.arange(2), 100)


def test_replay_tensors_restore_positions() -> None:
    memory = MemoryBuffer(4)
    memory.add(
        0, np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3), np.array([[0, 3], [1, 2]]), [5, 6], 10**4
    )
    batch, labels = memory.tensors()
    assert batch.positions.tolist() == [[0, 3], [1, 2]]
    assert labels.tolist() == [5, 6]
    assert batch.patches.dtype.is_floating_point is False


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_retention_outside_unit_interval_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="retention"):
        retention_budget_bytes(bad, 1000)
