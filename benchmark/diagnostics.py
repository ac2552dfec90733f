"""Shortcut diagnostics: has sparse input come to mean "an old class"?

A core tokenset replays old tasks as partial inputs while new data arrives
whole (unless input dropout makes it partial too), so a model can learn the
format instead of the content: whole images → the newest task, sparse ones →
an old task. Measured after each task i on the test splits, from the model as
it was then:

- accuracy on old tasks (j < i, mean over tasks) and on the new one (j = i),
  on whole inputs and on partial ones (⌈t·P⌉ tokens, fed as replay feeds
  them; the ground-truth mask's tokens first where the task has masks, else
  at random: the orders of ``benchmark.partial_inputs``);
- the share of old tasks' test samples predicted as one of the newest task's
  classes, on whole and on partial inputs. A format shortcut shows as a high
  share on whole inputs with a low one on partial inputs.

t is the cell's token fraction, or ¼ for a coreset (whose memory is whole).
Objectives that predict one class per sample have them (``ClassPredictor``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from benchmark.contracts import TokenBatch
from benchmark.memory import kept_token_count
from benchmark.partial_inputs import keep_first
from benchmark.train import as_fed

CORESET_DIAGNOSTIC_FRACTION = 0.25  # t for cells whose memory keeps whole samples

Predict = Callable[[TokenBatch], torch.Tensor]  # predicted class per sample


def diagnostic_fraction(token_fraction: float | str) -> float:
    """The partial-input fraction the diagnostics use for a cell's token fraction."""
    if isinstance(token_fraction, float) and token_fraction < 1.0:
        return token_fraction
    return CORESET_DIAGNOSTIC_FRACTION


def shortcut_row(
    predict: Predict,
    tests: Sequence[tuple[TokenBatch, torch.Tensor]],
    classes: Sequence[Sequence[int]],
    index: int,
    orders: Sequence[torch.Tensor],
    fraction: float,
    replay_mode: str,
) -> dict[str, float | None]:
    """The diagnostics after task ``index`` from ``tests`` (inputs and classes of every task's test split)."""
    seen = range(index + 1)
    whole = [predict(tests[j][0]) for j in seen]
    partial = []
    for j in seen:
        batch = tests[j][0]
        tokens = batch.positions.shape[1]
        kept = keep_first(batch, orders[j], kept_token_count(fraction, tokens))
        partial.append(predict(as_fed(kept, replay_mode, tokens)))
    newest = torch.tensor(list(classes[index]), dtype=torch.int64)
    row: dict[str, float | None] = {}
    for name, predictions in (("whole", whole), ("partial", partial)):
        accuracies = [float((p == tests[j][1]).float().mean()) for j, p in enumerate(predictions)]
        old = predictions[:index]
        row[f"old_{name}"] = sum(accuracies[:index]) / index if index else None
        row[f"new_{name}"] = accuracies[index]
        row[f"newest_share_{name}"] = (
            float(torch.isin(torch.cat(old), newest).float().mean()) if old else None
        )
    return row
