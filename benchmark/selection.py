"""After a task: build the selectors' view of it, pick samples, then tokens, within the byte budget.

Gradient proxies follow docs/methods.md: for cross-entropy on logits z = W h + b,
∂ℓ/∂z = p − e_y and ∂ℓ/∂W = (p − e_y) hᵀ; the proxy concatenates both
(as CORDS does), from one batched forward pass, no per-sample backward. Each
model computes its own (``features_and_grad_proxy``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.contracts import SamplePool, SampleSelector, Selection, TokenBatch, TokenInputs, TokenSelector
from benchmark.memory import kept_token_count, samples_within_budget
from benchmark.train import ContinualModel


@torch.no_grad()
def features_and_grads(
    model: ContinualModel,
    data: TokenBatch,
    targets: torch.Tensor,
    with_grads: bool,
    batch_size: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Penultimate features [n, D] and, if asked, last-layer gradient proxies [n, g], in batches."""
    model.eval()
    features, grads = [], []
    for start in range(0, len(data), batch_size):
        chunk = data.take(slice(start, start + batch_size)).to(device)
        hidden, grad = model.features_and_grad_proxy(
            chunk, targets[start : start + batch_size].to(device), with_grads
        )
        features.append(hidden.float().cpu())
        if grad is not None:
            grads.append(grad.float().cpu())
    feature_matrix = torch.cat(features).numpy() if features else np.zeros((0, 0), np.float32)
    grad_matrix = torch.cat(grads).numpy() if with_grads and grads else None
    return feature_matrix, grad_matrix


@dataclass(frozen=True)
class MemoryChoice:
    """What to store of one task: sample indices, kept token positions, attribution scores."""

    selection: Selection
    kept_positions: np.ndarray | None  # int64 [k, K] sorted, None when every token is kept
    budget_samples: int
    top_tokens: np.ndarray | None = None  # int64 [k]: the most relevant token of each sample


def sample_budget(
    budget_bytes: int,
    token_fraction: float,
    tokens: int,
    patch_bytes: int,
    text_tokens: int = 0,
    label_tokens: int = 1,
) -> int:
    kept = kept_token_count(token_fraction, tokens)
    return samples_within_budget(budget_bytes, kept, tokens, patch_bytes, text_tokens, label_tokens)


def choose_memory(
    model: ContinualModel,
    pool: SamplePool,
    data: TokenBatch,
    targets: torch.Tensor,
    masks: torch.Tensor | None,
    sample_selector: SampleSelector,
    token_selector: TokenSelector | None,
    token_fraction: float,
    budget_samples: int,
    rng: np.random.Generator,
    device: torch.device,
    rank_batch_size: int = 64,
) -> MemoryChoice:
    """Samples by the sample selector, then the top ⌈t·P⌉ tokens of each by the token selector.

    ``data`` holds every token of the task's training samples (and their text
    input, if any); ``targets`` what each is trained to output.
    """
    selection = sample_selector.select(pool, budget_samples, rng)
    _check_selection(selection, len(pool), budget_samples)
    tokens = data.positions.shape[1]
    kept = kept_token_count(token_fraction, tokens)
    if token_selector is None or kept == tokens or len(selection.indices) == 0:
        return MemoryChoice(selection, None, budget_samples)
    chosen = torch.from_numpy(selection.indices)
    relevance = rank_tokens(model, token_selector, data, targets, masks, chosen, rng, device, rank_batch_size)
    top = top_tokens(relevance, kept)
    return MemoryChoice(selection, top.positions, budget_samples, top.best)


@dataclass(frozen=True)
class TopTokens:
    """The tokens a stored sample keeps: its ``kept`` most relevant, in place order, and its best one."""

    positions: np.ndarray  # int64 [k, kept], sorted
    best: np.ndarray  # int64 [k]: the most relevant token of each sample


def top_tokens(relevance: torch.Tensor, kept: int) -> TopTokens:
    """The one top-t rule (selection, storage, gallery): the ``kept`` highest-relevance tokens per sample.

    A stable sort on −relevance: ties go to the lower position, so the choice is deterministic.
    """
    top = torch.sort(-relevance.detach().float(), dim=1, stable=True).indices[:, :kept]
    return TopTokens(top.sort(dim=1).values.numpy().astype(np.int64), top[:, 0].numpy().astype(np.int64))


def rank_tokens(
    model: ContinualModel,
    token_selector: TokenSelector,
    data: TokenBatch,
    targets: torch.Tensor,
    masks: torch.Tensor | None,
    chosen: torch.Tensor,
    rng: np.random.Generator,
    device: torch.device,
    batch_size: int = 64,
) -> torch.Tensor:
    """The token selector's relevance [k, P] of the samples at ``chosen``, in batches, checked."""
    chosen_targets = targets[chosen]
    scores = []
    for start in range(0, len(chosen), batch_size):
        index = chosen[start : start + batch_size]
        inputs = TokenInputs(data.take(index), rng, None if masks is None else masks[index], device)
        relevance = token_selector.rank(model, inputs, chosen_targets[start : start + batch_size])
        scores.append(relevance.detach().float().cpu())
    relevance = torch.cat(scores) if scores else torch.zeros(0, data.positions.shape[1])
    if relevance.shape != (len(chosen), data.positions.shape[1]) or not torch.isfinite(relevance).all():
        raise ValueError(f"token selector returned {tuple(relevance.shape)} scores (finite required)")
    return relevance


def _check_selection(selection: Selection, pool_size: int, budget: int) -> None:
    indices = selection.indices
    if len(indices) > budget:
        raise ValueError(f"selector returned {len(indices)} samples for a budget of {budget}")
    if len(np.unique(indices)) != len(indices) or (
        len(indices) and (indices.min() < 0 or indices.max() >= pool_size)
    ):
        raise ValueError("selector returned repeated or out-of-range indices")
    if (
        len(selection.weights) != len(indices)
        or not np.all(np.isfinite(selection.weights))
        or np.any(selection.weights < 0)
    ):
        raise ValueError("selector returned weights that are not finite and non-negative")


def attribution_quality(
    kept_positions: np.ndarray | Sequence[np.ndarray], relevance_top: np.ndarray, masks: np.ndarray
) -> dict[str, float]:
    """Precision of kept tokens inside the mask, recall of the mask, pointing game of the top token.

    ``kept_positions`` is one int64 [k, K] array when every sample keeps K tokens, or one array per
    sample when the counts differ (single-stage selection); precision is then the mean over samples.
    ``masks`` are the k samples' bool [k, P] masks.
    """
    mask_sizes = np.maximum(masks.sum(axis=1), 1)
    if isinstance(kept_positions, np.ndarray):
        rows = np.arange(len(kept_positions))[:, None]
        inside = masks[rows, kept_positions]
        precision = float(inside.mean())
        recall = float((inside.sum(axis=1) / mask_sizes).mean())
    else:
        ragged = [masks[i, kept] for i, kept in enumerate(kept_positions)]
        precision = float(np.mean([row.mean() for row in ragged]))
        recall = float(np.mean([row.sum() / size for row, size in zip(ragged, mask_sizes, strict=True)]))
    return {
        "precision": precision,
        "recall": recall,
        "pointing_game": float(masks[np.arange(len(relevance_top)), relevance_top].mean()),
    }
