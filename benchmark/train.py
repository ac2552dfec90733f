"""Sequential training with interleaved replay and random input dropout; evaluation.

Every step sees one batch of new data and, when memory holds anything, one
batch drawn from memory; the two losses are added. Random input dropout
removes patch tokens of new data so that the model learns from partial inputs
like those a core tokenset replays. The trainer knows nothing of grids,
selectors or tracking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.model import TokenBatch, TokenViT, full_positions

ProgressHook = Callable[[str], None]


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    replay_batch_size: int
    input_dropout: float
    eval_batch_size: int


def seeded_generator(seed: int, *stream: int) -> torch.Generator:
    """A torch generator for one named stream of a cell's randomness."""
    state = np.random.SeedSequence([seed, *stream]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] % (2**63)))


def drop_tokens(batch: TokenBatch, drop_rate: float, generator: torch.Generator) -> TokenBatch:
    """Keep a uniform random ⌈(1 − p)·K⌉-sized subset of each sample's tokens (removal, not zeroing).

    The count is fixed per batch (its expectation under per-token dropout) so
    that a batch stays one tensor; which tokens survive is drawn per sample.
    """
    if drop_rate <= 0.0:
        return batch
    size, tokens = batch.positions.shape
    keep = max(1, round((1.0 - drop_rate) * tokens))
    order = torch.rand(size, tokens, generator=generator).argsort(dim=1)[:, :keep].sort(dim=1).values
    order = order.to(batch.positions.device)
    index = order.unsqueeze(-1).expand(-1, -1, batch.patches.shape[-1])
    return TokenBatch(batch.patches.gather(1, index), batch.positions.gather(1, order))


def train_experience(
    model: TokenViT,
    optimizer: torch.optim.Optimizer,
    patches: torch.Tensor,
    labels: torch.Tensor,
    replay: tuple[TokenBatch, torch.Tensor] | None,
    settings: TrainSettings,
    generator: torch.Generator,
    device: torch.device,
    on_epoch: ProgressHook | None = None,
) -> float:
    """Train on one experience (uint8 patches [n, P, d]); returns the last epoch's mean loss."""
    model.train()
    n, tokens = patches.shape[0], patches.shape[1]
    positions = full_positions(n, tokens)
    mean_loss = float("nan")
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=generator)
        losses = []
        for start in range(0, n, settings.batch_size):
            index = order[start : start + settings.batch_size]
            batch = drop_tokens(
                TokenBatch(patches[index], positions[index]), settings.input_dropout, generator
            )
            loss = F.cross_entropy(model(batch.to(device)), labels[index].to(device))
            if replay is not None:
                stored, stored_labels = replay
                pick = torch.randperm(len(stored), generator=generator)[: settings.replay_batch_size]
                replayed = TokenBatch(stored.patches[pick], stored.positions[pick]).to(device)
                loss = loss + F.cross_entropy(model(replayed), stored_labels[pick].to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        mean_loss = float(np.mean(losses))
        if on_epoch is not None:
            on_epoch(f"epoch {epoch + 1}/{settings.epochs} loss {mean_loss:.3f}")
    return mean_loss


@torch.no_grad()
def predict(model: TokenViT, batch: TokenBatch, batch_size: int, device: torch.device) -> torch.Tensor:
    """Predicted class per sample, in batches, in eval mode."""
    model.eval()
    predictions = []
    for start in range(0, len(batch), batch_size):
        chunk = TokenBatch(
            batch.patches[start : start + batch_size], batch.positions[start : start + batch_size]
        )
        predictions.append(model(chunk.to(device)).argmax(dim=1).cpu())
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64)


def accuracy(
    model: TokenViT, patches: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device
) -> float:
    if len(labels) == 0:
        return float("nan")
    batch = TokenBatch(patches, full_positions(patches.shape[0], patches.shape[1]))
    return float((predict(model, batch, batch_size, device) == labels).float().mean())
