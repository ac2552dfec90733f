"""Accuracy on partial test inputs: does a loss of a core tokenset come from the model or from what was kept?

After each task the model sees only ⌈t·P⌉ tokens of each test image, chosen
at random or by the ground-truth mask (the oracle: mask tokens first, the rest
at random), fed as replay feeds stored tokens (``drop`` or ``mask``). The
token subsets are fixed per cell seed and test set, so the rows of a matrix
differ only by the model. At t = 1 this is the ordinary test accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from benchmark.contracts import TokenBatch
from benchmark.memory import kept_token_count
from benchmark.train import as_fed, seeded_generator

PARTIAL_FRACTIONS: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
PARTIAL_STREAM = 6  # seeded_generator stream id of the token orders


def random_order(size: int, tokens: int, generator: torch.Generator) -> torch.Tensor:
    """[size, tokens]: a uniform random order of each sample's tokens."""
    return torch.rand(size, tokens, generator=generator).argsort(dim=1)


def oracle_order(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[size, tokens]: each sample's mask tokens first, then the others, each part in random order."""
    noise = torch.rand(masks.shape, generator=generator)
    return (noise - masks.float()).argsort(dim=1)


def keep_first(batch: TokenBatch, order: torch.Tensor, count: int) -> TokenBatch:
    """Each sample's first ``count`` tokens of ``order``, in place order (text kept whole)."""
    if count == batch.positions.shape[1]:
        return batch
    return batch.gather(order[:, :count].sort(dim=1).values)


def token_orders(
    tests: Sequence[TokenBatch], masks: Sequence[torch.Tensor | None], seed: int
) -> dict[str, list[torch.Tensor]]:
    """Per mode ("random", and "oracle" where every test set has masks), one order per test set."""
    orders: dict[str, list[torch.Tensor]] = {"random": []}
    with_masks = all(m is not None for m in masks)
    if with_masks:
        orders["oracle"] = []
    for task, (test, mask) in enumerate(zip(tests, masks, strict=True)):
        size, tokens = test.positions.shape
        orders["random"].append(random_order(size, tokens, seeded_generator(seed, PARTIAL_STREAM, task, 0)))
        if with_masks:
            assert mask is not None
            orders["oracle"].append(oracle_order(mask, seeded_generator(seed, PARTIAL_STREAM, task, 1)))
    return orders


def partial_row(
    evaluate: Callable[[TokenBatch, int], float],
    tests: Sequence[TokenBatch],
    orders: dict[str, list[torch.Tensor]],
    fractions: Sequence[float],
    replay_mode: str,
) -> dict[str, dict[str, list[float]]]:
    """mode → t → the metric on each test set when the model sees that fraction of its tokens.

    ``evaluate(batch, task)`` scores the model on test set ``task`` given as ``batch``.
    """
    row: dict[str, dict[str, list[float]]] = {}
    for mode, per_task in orders.items():
        row[mode] = {}
        for fraction in fractions:
            values = []
            for task, (test, order) in enumerate(zip(tests, per_task, strict=True)):
                tokens = test.positions.shape[1]
                partial = keep_first(test, order, kept_token_count(fraction, tokens))
                values.append(evaluate(as_fed(partial, replay_mode, tokens), task))
            row[mode][f"{fraction:g}"] = values
    return row
