"""The step between selectors and memory: budgets per class, top tokens, and contract checks."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.contracts import BackboneSpec, SamplePool, Selection, TokenInputs
from benchmark.model import TokenViT
from benchmark.selection import attribution_quality, choose_memory
from benchmark.train import whole
from methods.base import SelectorBase, per_class_budgets


@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=80),
    budget=st.integers(min_value=-3, max_value=100),
)
def test_per_class_budgets_total_exactly_and_stay_proportional(labels: list[int], budget: int) -> None:
    array = np.asarray(labels)
    shares = per_class_budgets(array, budget)
    counts = {int(c): int(n) for c, n in zip(*np.unique(array, return_counts=True), strict=True)}
    assert sum(shares.values()) == min(max(budget, 0), len(array))
    for label, share in shares.items():
        assert 0 <= share <= counts[label]
        exact = counts[label] * min(max(budget, 0), len(array)) / len(array)
        assert abs(share - exact) < 1 + 1e-9  # floor or floor + 1 of its proportional share


class FixedSamples(SelectorBase):
    """Returns whatever it was built with (to test the checks)."""

    def __init__(self, indices: list[int], weights: list[float] | None = None) -> None:
        self.selection = Selection.of(indices, None if weights is None else np.asarray(weights))

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection:
        return self.selection


class ScoresByPosition:
    """Relevance = a fixed score per position (ties included)."""

    needs_mask: ClassVar[bool] = False

    def __init__(self, scores: list[float]) -> None:
        self.scores = torch.tensor(scores)

    def rank(self, model: torch.nn.Module, inputs: TokenInputs, targets: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(len(targets), -1).clone()


LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


@pytest.fixture(scope="module")
def tiny() -> tuple[TokenViT, SamplePool, torch.Tensor]:
    model = TokenViT(BackboneSpec(4, 1, 2, "glyphs-20", embed_dim=8, depth=1, num_heads=2), num_classes=3)
    pool = SamplePool(np.zeros((6, 8), np.float32), None, LABELS.numpy())
    patches = torch.randint(0, 255, (6, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return model, pool, patches


def test_top_tokens_by_score_ties_to_the_lower_position(tiny: tuple) -> None:
    model, pool, patches = tiny
    scores = ScoresByPosition([0.1, 0.9, 0.5, 0.5])
    choice = choose_memory(
        model, pool, whole(patches), LABELS, None, FixedSamples([4, 1]), scores, 0.5, 2,
        np.random.default_rng(0), torch.device("cpu"),
    )  # fmt: skip
    assert choice.selection.indices.tolist() == [4, 1]
    assert choice.kept_positions.tolist() == [[1, 2], [1, 2]]  # 0.9, then the first of the tied 0.5s
    assert choice.top_tokens.tolist() == [1, 1]
    kept_whole = choose_memory(
        model, pool, whole(patches), LABELS, None, FixedSamples([0]), scores, 1.0, 1,
        np.random.default_rng(0), torch.device("cpu"),
    )  # fmt: skip
    assert kept_whole.kept_positions is None  # t = 1 keeps whole samples: the coreset


@pytest.mark.parametrize(
    ("indices", "weights", "message"),
    [
        ([0, 1, 2], None, "for a budget of 2"),
        ([1, 1], None, "repeated or out-of-range"),
        ([0, 6], None, "repeated or out-of-range"),
        ([0, 1], [1.0, -0.5], "not finite and non-negative"),
        ([0, 1], [1.0, float("nan")], "not finite and non-negative"),
    ],
)
def test_a_selector_breaking_the_contract_is_caught(
    tiny: tuple, indices: list[int], weights, message: str
) -> None:
    model, pool, patches = tiny
    with pytest.raises(ValueError, match=message):
        choose_memory(
            model, pool, whole(patches), LABELS, None, FixedSamples(indices, weights), None, 1.0, 2,
            np.random.default_rng(0), torch.device("cpu"),
        )  # fmt: skip


def test_attribution_quality_by_hand() -> None:
    masks = np.array([[True, True, False, False], [False, False, False, True]])
    kept = np.array([[0, 2], [1, 3]])
    quality = attribution_quality(kept, np.array([2, 3]), masks)
    assert quality["precision"] == pytest.approx(0.5)  # 1 of 2 kept inside, in each sample
    assert quality["recall"] == pytest.approx((0.5 + 1.0) / 2)
    assert quality["pointing_game"] == pytest.approx(0.5)  # top token 2 misses, 3 hits
