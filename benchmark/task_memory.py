"""After a task: choose its memory within the byte budget and store it (docs/design.md, "Data flow").

The budget is r × the task's base: under protocol 2 what its training samples
cost stored whole (inputs plus label, caption or question), so a coreset keeps
exactly ⌊r·n⌋ samples; under protocol 1 the bytes of its training inputs
alone. Two-stage selection picks samples at token fraction t, then the top t of
each one's tokens; a pair selector (single-stage) spends the bytes on (sample,
token) pairs itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from benchmark.cell_data import ExperienceTensors
from benchmark.config import AUTO, CellConfig
from benchmark.contracts import SamplePool, selects_pairs
from benchmark.learner import CellEntries, Learner
from benchmark.memory import BLOCK_HEADER_BYTES, MemoryBuffer, retention_budget_bytes
from benchmark.selection import (
    attribution_quality,
    choose_memory,
    features_and_grads,
    rank_tokens,
    sample_budget,
)
from benchmark.token_split import AUTO_CANDIDATES, HeldOut, choose_token_fraction

# Streams of the cell's randomness (``np.random.default_rng([seed, stream, task])``).
SELECTION_STREAM = 2
AUTO_STREAM = 5
TIE_ORDER_STREAM = 9


@dataclass(frozen=True)
class StoredTask:
    """What storing one task's memory measured."""

    samples: int  # samples stored
    quality: dict[str, float] | None  # attribution quality of the kept tokens (tasks with masks)
    token_fraction: float | None  # t used; None when tokens per sample vary (tokengreedy)
    tokens_stored: int
    classes: int  # classes (categories) of the task's training data
    classes_covered: int  # of those, classes with at least one stored sample
    auto_scores: dict[str, float] | None = None  # token_fraction = "auto": validation score per t


def budget_bytes_for(config: CellConfig, current: ExperienceTensors) -> int:
    """The task's byte budget: r × its base (by protocol, see the module docstring)."""
    assert config.retention is not None
    base = current.train_bytes if config.protocol == 1 else current.stored_bytes
    return retention_budget_bytes(config.retention, base)


def selection_pool(
    learner: Learner,
    memory: MemoryBuffer,
    current: ExperienceTensors,
    needs_grads: bool,
    tie_order: np.ndarray | None,
) -> SamplePool:
    """The selectors' view of the finished task: features, gradient proxies and memory's gradients."""
    batch_size, device = learner.settings.eval_batch_size, learner.device
    features, grads = features_and_grads(
        learner.model, current.train, current.train_targets, needs_grads, batch_size, device
    )
    memory_grads = None
    stored = memory.replay_set().whole() if needs_grads and len(memory) else None
    if stored is not None and stored[0].patches.shape[1] == current.train.positions.shape[1]:
        memory_grads = features_and_grads(learner.model, *stored, True, batch_size, device)[1]
    return SamplePool(features, grads, current.train_categories, memory_grads, tie_order)


def store_task_memory(
    learner: Learner,
    entries: CellEntries,
    memory: MemoryBuffer,
    current: ExperienceTensors,
    index: int,
    config: CellConfig,
) -> StoredTask:
    """Select task ``index``'s memory within its byte budget and store it."""
    budget_bytes = budget_bytes_for(config, current)
    tie_order = None
    if config.protocol >= 2:  # per-class ties drawn by the cell's generator, not given to low labels
        classes = np.unique(current.train_categories)
        tie_order = np.random.default_rng([config.seed, TIE_ORDER_STREAM, index]).permutation(classes)
    pool = selection_pool(learner, memory, current, entries.sample_selector.needs_grads, tie_order)
    rng = np.random.default_rng([config.seed, SELECTION_STREAM, index])
    selector, token_selector = entries.sample_selector, entries.token_selector
    if token_selector is not None and selects_pairs(selector):
        relevance = rank_tokens(
            learner.model,
            token_selector,
            current.train,
            current.train_targets,
            current.train_masks,
            torch.arange(len(pool)),
            rng,
            learner.device,
        )
        costs = replace(current.byte_costs, reserve_bytes=BLOCK_HEADER_BYTES * current.byte_costs.tokens)
        picked = selector.select_pairs(pool, relevance.numpy(), budget_bytes, costs)
        return _store_pairs(memory, current, index, picked, relevance, budget_bytes)
    return _store_samples_then_tokens(
        learner, entries, memory, current, index, pool, budget_bytes, config, rng
    )


def _store_samples_then_tokens(
    learner: Learner,
    entries: CellEntries,
    memory: MemoryBuffer,
    current: ExperienceTensors,
    index: int,
    pool: SamplePool,
    budget_bytes: int,
    config: CellConfig,
    rng: np.random.Generator,
) -> StoredTask:
    """Two-stage selection: samples within the bytes at token fraction t, then the top t of their tokens."""
    tokens, patch_bytes = current.train.patches.shape[1:]

    def budget_at(fraction: float) -> int:
        return sample_budget(
            budget_bytes, fraction, tokens, patch_bytes, current.text_tokens, current.label_tokens
        )

    fraction, auto_scores = config.token_fraction, None
    if fraction == AUTO:
        fraction, auto_scores = _auto_token_fraction(
            learner, entries, current, pool, budget_at, config, index
        )
    assert isinstance(fraction, float)
    choice = choose_memory(
        learner.model,
        pool,
        current.train,
        current.train_targets,
        current.train_masks,
        entries.sample_selector,
        entries.token_selector,
        fraction,
        budget_at(fraction),
        rng,
        learner.device,
    )
    chosen = torch.from_numpy(choice.selection.indices)
    kept = choice.kept_positions
    stored_patches = current.train.patches[chosen].numpy()
    quality = None
    if kept is not None:
        stored_patches = np.take_along_axis(stored_patches, kept[:, :, None], axis=1)
        if current.train_masks is not None:
            assert choice.top_tokens is not None
            quality = attribution_quality(kept, choice.top_tokens, current.train_masks[chosen].numpy())
    text = None if current.train.text is None else current.train.text[chosen].numpy()
    entry = memory.add(index, stored_patches, kept, current.train_targets[chosen].numpy(), budget_bytes, text)
    covered = _coverage(current, choice.selection.indices)
    return StoredTask(len(entry), quality, fraction, entry.tokens_stored, *covered, auto_scores)


def _auto_token_fraction(
    learner: Learner,
    entries: CellEntries,
    current: ExperienceTensors,
    pool: SamplePool,
    budget_at: Callable[[float], int],
    config: CellConfig,
    index: int,
) -> tuple[float, dict[str, float]]:
    """``token_fraction = "auto"``: the t chosen on held-out data, and every candidate's scores.

    Protocol 2 scores the candidates on the task's validation slice; protocol 1 holds out part of the
    training data itself.
    """
    assert entries.token_selector is not None
    held_out = None
    if current.validation is not None:
        assert current.validation.categories is not None
        split = current.validation
        features, _ = features_and_grads(
            learner.model, split.data, split.targets, False, learner.settings.eval_batch_size, learner.device
        )
        held_out = HeldOut(features, split.categories)
    split_choice = choose_token_fraction(
        learner.model,
        current.train,
        current.train_targets,
        current.train_categories,
        current.train_masks,
        pool.grads,
        pool.features,
        entries.sample_selector,
        entries.token_selector,
        {t: budget_at(t) for t in AUTO_CANDIDATES},
        learner.settings.replay_mode,
        np.random.default_rng([config.seed, AUTO_STREAM, index]),
        learner.settings.eval_batch_size,
        learner.device,
        held_out,
    )
    scores = {f"accuracy@{t}": v for t, v in split_choice.scores.items()}
    scores.update({f"margin@{t}": v for t, v in split_choice.margins.items()})
    return split_choice.token_fraction, scores


def _store_pairs(
    memory: MemoryBuffer,
    current: ExperienceTensors,
    index: int,
    picked: dict[int, np.ndarray],
    relevance: torch.Tensor,
    budget_bytes: int,
) -> StoredTask:
    """Store a pair selector's choice (sample → kept positions) in blocks of equal token count."""
    by_count: dict[int, list[int]] = {}
    for sample, kept in picked.items():
        by_count.setdefault(len(kept), []).append(sample)
    blocks = []
    for count in sorted(by_count, reverse=True):
        samples = np.asarray(by_count[count], dtype=np.int64)
        positions = np.stack([picked[int(i)] for i in samples])
        patches = np.take_along_axis(current.train.patches[samples].numpy(), positions[:, :, None], axis=1)
        text = None if current.train.text is None else current.train.text[samples].numpy()
        blocks.append(memory.block(patches, positions, current.train_targets[samples].numpy(), text))
    if not blocks:
        blocks.append(
            memory.block(current.train.patches[:0].numpy(), None, current.train_targets[:0].numpy())
        )
    entry = memory.add_blocks(index, blocks, budget_bytes)
    quality = None
    if current.train_masks is not None and picked:
        samples = list(picked)
        best = relevance[samples].argmax(dim=1).numpy()
        quality = attribution_quality(list(picked.values()), best, current.train_masks[samples].numpy())
    covered = _coverage(current, np.asarray(list(picked), dtype=np.int64))
    return StoredTask(len(entry), quality, None, entry.tokens_stored, *covered)


def _coverage(current: ExperienceTensors, stored: np.ndarray) -> tuple[int, int]:
    """(classes of the task's training data, classes with at least one stored sample)."""
    categories = current.train_categories
    return len(np.unique(categories)), len(np.unique(categories[stored]))
