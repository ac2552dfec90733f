"""Issue 12's engine: replay drop/mask, token_fraction "auto", tokengreedy, partial-input accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from benchmark.cell import run_cell
from benchmark.config import CellConfig, TrainConfig
from benchmark.contracts import BackboneSpec, TokenBatch, full_positions
from benchmark.learner import TaskCache
from benchmark.memory import MemoryBuffer, kept_token_count
from benchmark.model import TokenViT, fill_masked
from benchmark.partial_inputs import keep_first, oracle_order
from benchmark.token_split import AUTO_CANDIDATES, nearest_neighbour_scores
from methods.tokengreedy import ByteCosts, greedy_pairs

TINY = {"train_per_class": 40, "test_per_class": 12}
CACHE = TaskCache()


def cell(method: str, fraction: float | str = 0.25, **train: object) -> CellConfig:
    sample, _, token = method.partition("+")
    return CellConfig(
        grid="t",
        task="split-shapes",
        task_params=TINY,
        method=method,
        sample_selector=sample,
        token_selector=token or None,
        selector_params={},
        token_selector_params={},
        retention=0.1,
        token_fraction=fraction,
        seed=0,
        train=TrainConfig(epochs=1, **train),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def drop_and_mask() -> tuple[dict, dict]:
    drop = run_cell(cell("random+gradcam", replay="drop"), "test", CACHE).to_dict()
    mask = run_cell(cell("random+gradcam", replay="mask"), "test", CACHE).to_dict()
    return drop, mask


def test_mask_and_drop_replay_store_identical_bytes(drop_and_mask: tuple[dict, dict]) -> None:
    drop, mask = drop_and_mask
    assert drop["status"] == mask["status"] == "finished"
    # Storage does not depend on how replay feeds the model: same samples, tokens and bytes per task.
    assert drop["bytes_used_per_task"] == mask["bytes_used_per_task"]
    assert min(drop["bytes_used_per_task"]) > 0
    assert drop["bytes_allowed_per_task"] == mask["bytes_allowed_per_task"]
    assert drop["samples_per_task"] == mask["samples_per_task"]
    assert drop["tokens_per_task"] == mask["tokens_per_task"]
    # ...while the model is fed differently (input dropout and replay use the mask token).
    assert drop["accuracy_matrix"] != mask["accuracy_matrix"]


def model_and_pair() -> tuple[TokenViT, TokenBatch, TokenBatch, torch.Tensor]:
    """A model with a mask token, and two images that differ only outside the kept positions."""
    spec = BackboneSpec(8, 3, 2, "shapes-15", embed_dim=16, depth=2, num_heads=2)
    torch.manual_seed(0)
    model = TokenViT(spec, 4, mask_token=True).eval()
    first = torch.randint(0, 256, (1, 16, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    second = first.clone()
    kept = torch.tensor([[1, 5, 6, 12]])
    dropped = torch.tensor([p for p in range(16) if p not in kept[0]])
    second[0, dropped] = 255 - second[0, dropped]
    positions = full_positions(1, 16)
    return model, TokenBatch(first, positions), TokenBatch(second, positions), kept


def test_drop_replay_output_is_independent_of_dropped_pixels() -> None:
    model, first, second, kept = model_and_pair()
    order = torch.cat([kept, torch.tensor([[p for p in range(16) if p not in kept[0]]])], dim=1)
    with torch.no_grad():
        a, b = (model(keep_first(x, order, 4)) for x in (first, second))
        whole_a, whole_b = model(first), model(second)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(whole_a, whole_b)  # the pixels do matter when they are fed


def test_mask_replay_output_is_independent_of_dropped_pixels() -> None:
    model, first, second, kept = model_and_pair()
    masked = torch.ones(1, 16, dtype=torch.bool)
    masked[0, kept[0]] = False
    with torch.no_grad():
        a = model(TokenBatch(first.patches, first.positions, None, masked))
        b = model(TokenBatch(second.patches, second.positions, None, masked))
        partial = keep_first(first, torch.cat([kept, kept.new_zeros(1, 12)], dim=1), 4)
        filled = model(fill_masked(partial, 16))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, filled)  # fill_masked builds the same input from the stored tokens
    assert filled.shape == (1, 4)


def test_partial_input_accuracy_at_t_1_equals_the_test_accuracy() -> None:
    record = run_cell(cell("random+rollout", partial_inputs=True), "test", CACHE).to_dict()
    partial = record["partial_input_accuracy"]
    assert set(partial) == {"random", "oracle"}
    assert partial["random"]["1"] == record["accuracy_matrix"] == partial["oracle"]["1"]
    assert set(partial["random"]) == {"1", "0.5", "0.25", "0.125"}
    # Seeing an eighth of the tokens at random costs accuracy on the first task, right after learning it
    # (one epoch of this tiny stream learns the first task, before any replay; not every later one).
    assert partial["random"]["0.125"][0][0] < record["accuracy_matrix"][0][0]


def test_oracle_order_puts_every_mask_token_first() -> None:
    masks = torch.tensor([[False, True, False, True], [True, False, False, False]])
    order = oracle_order(masks, torch.Generator().manual_seed(0))
    assert sorted(order[0, :2].tolist()) == [1, 3]
    assert order[1, 0].item() == 0


def test_auto_picks_a_candidate_per_task_and_stores_at_it() -> None:
    record = run_cell(cell("random+rollout", fraction="auto"), "test", CACHE).to_dict()
    assert record["status"] == "finished", record["error"]
    chosen = record["token_fraction_per_task"]
    assert len(chosen) == 4 and set(chosen) <= set(AUTO_CANDIDATES)
    for fraction, samples, tokens, scores in zip(
        chosen,
        record["samples_per_task"],
        record["tokens_per_task"],
        record["auto_token_fraction_scores"],
        strict=True,
    ):
        assert tokens == samples * kept_token_count(fraction, 16)
        key = f"{fraction:g}"
        best = max(scores[f"accuracy@{t:g}"] for t in AUTO_CANDIDATES)
        assert scores[f"accuracy@{key}"] == best
    assert record["bytes_used"] <= record["bytes_allowed"]


def test_nearest_neighbour_scores_by_hand() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 1.0]])
    query = np.array([[0.9, 0.1], [0.2, 0.8], [1.0, 0.0]])
    accuracy, margin = nearest_neighbour_scores(reference, np.array([0, 1]), query, np.array([0, 1, 1]))
    assert accuracy == pytest.approx(2 / 3)
    unit = query / np.linalg.norm(query, axis=1, keepdims=True)
    expected = np.mean([unit[0, 0] - unit[0, 1], unit[1, 1] - unit[1, 0], unit[2, 1] - unit[2, 0]])
    assert margin == pytest.approx(expected)


COSTS = ByteCosts(tokens=8, patch_bytes=12, position_bytes=2, sample_bytes=2, reserve_bytes=0)


def stored_bytes(chosen: dict[int, np.ndarray], costs: ByteCosts) -> int:
    return sum(costs.of(len(kept)) for kept in chosen.values())


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(0, 600),
    st.integers(0, 2**16),
)
def test_tokengreedy_never_exceeds_the_budget(samples: int, budget: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    importance = rng.random(samples)
    relevance = rng.normal(size=(samples, 8))
    chosen = greedy_pairs(importance, relevance, budget, COSTS)
    assert stored_bytes(chosen, COSTS) <= budget
    for kept in chosen.values():
        assert 1 <= len(kept) <= 8 and len(np.unique(kept)) == len(kept)
        assert np.all(np.diff(kept) > 0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(0, 600), st.integers(0, 2**16))
@example(1, 98, 0)  # exactly one whole sample's bytes: reached only by completing the sample
def test_tokengreedy_with_constant_relevance_keeps_whole_samples(
    samples: int, budget: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    importance = rng.random(samples)
    chosen = greedy_pairs(importance, np.full((samples, 8), 0.3), budget, COSTS)
    assert all(len(kept) == 8 for kept in chosen.values())
    assert len(chosen) == min(samples, budget // COSTS.of(8))
    # ...and the most important ones.
    assert sorted(chosen) == sorted(np.argsort(-importance, kind="stable")[: len(chosen)].tolist())


def test_tokengreedy_cell_stays_within_bytes_and_varies_tokens() -> None:
    record = run_cell(cell("tokengreedy+gradcam", fraction=1.0), "test", CACHE).to_dict()
    assert record["status"] == "finished", record["error"]
    assert all(
        u <= a for u, a in zip(record["bytes_used_per_task"], record["bytes_allowed_per_task"], strict=True)
    )
    assert record["token_fraction_per_task"] == [None] * 4
    assert record["tokens_per_sample"] is None
    assert record["attribution"] is not None


def test_ragged_replay_draws_each_sample_once_grouped_by_token_count() -> None:
    memory = MemoryBuffer(4)
    two = memory.block(
        np.full((3, 2, 1), 7, np.uint8), np.array([[0, 1], [1, 2], [2, 3]]), np.array([0, 1, 2])
    )
    four = memory.block(np.full((2, 4, 1), 9, np.uint8), None, np.array([3, 4]))
    memory.add_blocks(0, [two, four], 10**4)
    entry = memory.entries[0]
    assert entry.nbytes == two.nbytes + four.nbytes + 2 * 4  # two block headers
    replay = memory.replay_set()
    groups = replay.draw(torch.tensor([4, 0, 2, 3]))
    labels = sorted(int(v) for _, targets in groups for v in targets)
    assert labels == [0, 2, 3, 4]
    assert [batch.patches.shape[1] for batch, _ in groups] == [2, 4]
