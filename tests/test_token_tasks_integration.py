"""The issue-21 tasks through the cell runner: every selector runs a cell within its bytes.

split-shapes at 64 and 256 tokens, split-shapes-distractors and split-text, each with tiny data and one
epoch (the road, not the science); bytes are checked against the one formula, by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from benchmark.cell import TaskCache, run_cell
from benchmark.config import CellConfig, TrainConfig
from benchmark.results import FINISHED
from tests.conftest import every_memory_method

TINY_SHAPES = {"train_per_class": 8, "test_per_class": 4}
TASKS: dict[str, dict[str, Any]] = {
    "shapes-64": {"task": "split-shapes", "params": {**TINY_SHAPES, "patch_size": 4}},
    "shapes-256": {"task": "split-shapes", "params": {**TINY_SHAPES, "image_size": 64, "patch_size": 4}},
    "distractors": {"task": "split-shapes-distractors", "params": TINY_SHAPES},
    "text": {"task": "split-text", "params": TINY_SHAPES},
}


@pytest.fixture(scope="module")
def cache() -> TaskCache:
    return TaskCache()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny cells run fastest on one thread (two oversubscribe a shared 2-core machine many times over)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cell(name: str, method: str, retention: float = 0.2, token_fraction: float = 0.25) -> CellConfig:
    selector, _, token_selector = method.partition("+")
    return CellConfig(
        grid="test",
        task=TASKS[name]["task"],
        task_params=dict(TASKS[name]["params"]),
        method=method,
        sample_selector=selector,
        token_selector=token_selector or None,
        selector_params={},
        token_selector_params={},
        retention=retention,
        token_fraction=token_fraction if token_selector else 1.0,
        seed=0,
        train=TrainConfig(epochs=1, batch_size=8, replay_batch_size=8),
    )


@pytest.mark.parametrize("method", every_memory_method())
@pytest.mark.parametrize("name", ["distractors", "text"])
def test_every_selector_runs_a_cell_within_its_bytes(name: str, method: str, cache: TaskCache) -> None:
    record = run_cell(cell(name, method), "test", cache)
    assert record.status == FINISHED, record.error
    assert 0 < record.bytes_used <= record.bytes_allowed
    assert all(n > 0 for n in record.samples_per_task[:-1])
    if "+" in method and not method.startswith("tokengreedy"):
        assert record.attribution is not None  # both tasks have masks: what was kept is scored


@pytest.mark.parametrize("name", ["shapes-64", "shapes-256", "distractors", "text"])
def test_bytes_follow_the_formula_at_each_granularity(name: str, cache: TaskCache) -> None:
    stream = cache.get(TASKS[name]["task"], TASKS[name]["params"])
    tokens = stream.tokens
    patch_bytes = stream.experiences[0].train_images[0].nbytes // tokens
    coreset = run_cell(cell(name, "random"), "test", cache)
    tokenset = run_cell(cell(name, "random+rollout"), "test", cache)
    assert coreset.status == tokenset.status == FINISHED, (coreset.error, tokenset.error)
    whole = tokens * patch_bytes + 2
    kept = -(-tokens // 4)
    partial = kept * (patch_bytes + 2) + 2
    assert coreset.bytes_used == sum(coreset.samples_per_task) * whole
    assert tokenset.bytes_used == sum(tokenset.samples_per_task) * partial
    assert tokenset.tokens_per_sample == kept and tokenset.bytes_used <= tokenset.bytes_allowed
