"""``token_fraction = "auto"``: pick t per task from a held-out validation slice of its training data.

For each candidate t the memory is selected, as it would be, from the rest of
the task's training data at the cell's byte budget (smaller t: more samples,
fewer tokens each). Each candidate memory is scored by how well it stands for
the task: a nearest-neighbour classifier whose references are the stored
samples, seen as replay feeds them (only their kept tokens), labels the
held-out slice, seen whole. Both sides of the trade-off enter: more samples
cover a class better, fewer tokens per sample describe each worse. The test
set is never used. On easy tasks the accuracy saturates, so ties are broken
by the mean margin (cosine similarity to the nearest reference of the true
class minus that to the nearest reference of another class), then by the
larger t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark.contracts import SamplePool, SampleSelector, TokenBatch, TokenSelector
from benchmark.selection import choose_memory, features_and_grads
from benchmark.splits import stratified_split
from benchmark.train import ContinualModel, as_fed

AUTO_CANDIDATES: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class HeldOut:
    """Features (as the model sees them whole) and categories of the samples the candidates must label."""

    features: np.ndarray
    categories: np.ndarray


@dataclass(frozen=True)
class SplitChoice:
    token_fraction: float
    scores: dict[str, float]  # candidate t (as text) → nearest-neighbour validation accuracy
    margins: dict[str, float]  # candidate t (as text) → mean nearest-neighbour margin (the tie-breaker)


def kept_batch(data: TokenBatch, indices: np.ndarray, kept_positions: np.ndarray | None) -> TokenBatch:
    """Samples ``indices`` as stored: only their kept tokens (every token when ``kept_positions`` is None)."""
    chosen = data.take(torch.from_numpy(indices))
    if kept_positions is None:
        return chosen
    return chosen.gather(torch.from_numpy(kept_positions))  # a whole sample's places are its positions


def nearest_neighbour_scores(
    reference: np.ndarray, reference_labels: np.ndarray, query: np.ndarray, query_labels: np.ndarray
) -> tuple[float, float]:
    """1-NN accuracy by cosine similarity (ties to the first reference) and the mean margin.

    The margin of a query is its similarity to the nearest reference of its own
    class minus that to the nearest reference of another class (−2 / +2 stand
    in where a side has no reference).
    """
    if len(reference) == 0 or len(query) == 0:
        return 0.0, -2.0
    a = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    b = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    similarity = b @ a.T
    nearest = similarity.argmax(axis=1)
    accuracy = float((reference_labels[nearest] == query_labels).mean())
    same = reference_labels[None, :] == query_labels[:, None]
    own = np.where(same, similarity, -2.0).max(axis=1, initial=-2.0)
    other = np.where(~same, similarity, -2.0).max(axis=1, initial=-2.0)
    return accuracy, float((own - other).mean())


def choose_token_fraction(
    model: ContinualModel,
    data: TokenBatch,
    targets: torch.Tensor,
    categories: np.ndarray,
    masks: torch.Tensor | None,
    grads: np.ndarray | None,
    features: np.ndarray,
    sample_selector: SampleSelector,
    token_selector: TokenSelector,
    budget_for: dict[float, int],
    replay_mode: str,
    rng: np.random.Generator,
    batch_size: int,
    device: torch.device,
    validation: HeldOut | None = None,
) -> SplitChoice:
    """The candidate t whose memory (from the training part) best labels the held-out slice.

    ``budget_for[t]`` is the number of samples the byte budget allows at t. ``validation`` is the
    task's validation slice (protocol 2): the memory is then selected from every training sample.
    Without it (protocol 1) ``VALIDATION_FRACTION`` of the training data is held out here.
    """
    if validation is None:
        train, held_out = stratified_split(categories, VALIDATION_FRACTION, rng)
        query, query_categories = features[held_out], categories[held_out]
    else:
        train = np.arange(len(categories))
        query, query_categories = validation.features, validation.categories
    tokens = data.positions.shape[1]
    pool = SamplePool(features[train], None if grads is None else grads[train], categories[train])
    train_data = data.take(torch.from_numpy(train))
    scores: dict[str, float] = {}
    margins: dict[str, float] = {}
    for fraction in AUTO_CANDIDATES:
        choice = choose_memory(
            model,
            pool,
            train_data,
            targets[torch.from_numpy(train)],
            None if masks is None else masks[torch.from_numpy(train)],
            sample_selector,
            token_selector,
            fraction,
            budget_for[fraction],
            rng,
            device,
        )
        indices = choice.selection.indices
        stored = as_fed(kept_batch(train_data, indices, choice.kept_positions), replay_mode, tokens)
        reference, _ = features_and_grads(
            model, stored, targets[torch.from_numpy(train[indices])], False, batch_size, device
        )
        key = f"{fraction:g}"
        scores[key], margins[key] = nearest_neighbour_scores(
            reference, categories[train[indices]], query, query_categories
        )
    best = max(AUTO_CANDIDATES, key=lambda t: (scores[f"{t:g}"], margins[f"{t:g}"], t))
    return SplitChoice(best, scores, margins)
