"""Sequential training with interleaved replay and random input dropout; evaluation.

Every step sees one batch of new data and, when memory holds anything, one
batch drawn from memory; the two losses are added. Random input dropout
removes patch tokens of new data so that the model learns from partial inputs
like those a core tokenset replays. The trainer knows nothing of grids,
selectors or tracking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch

from benchmark.contracts import TokenBatch, full_positions
from benchmark.memory import ReplaySet
from benchmark.model import TokenViT, fill_masked

ProgressHook = Callable[[str], None]


class ContinualModel(Protocol):
    """What the trainer, the selectors and the attributions ask of a model (TokenViT, captioner)."""

    def __call__(self, batch: TokenBatch) -> torch.Tensor: ...
    def loss(self, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor: ...
    def per_sample_loss(self, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor: ...
    def target_score(self, batch: TokenBatch, targets: torch.Tensor) -> torch.Tensor: ...
    def features_and_grad_proxy(
        self, batch: TokenBatch, targets: torch.Tensor, with_grads: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...
    def train(self, mode: bool = True) -> ContinualModel: ...
    def eval(self) -> ContinualModel: ...

    @property
    def encoder(self) -> TokenViT: ...


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    replay_batch_size: int
    input_dropout: float
    eval_batch_size: int
    replay_mode: str = "drop"  # how partial inputs enter the model (``benchmark.config.REPLAY_MODES``)


def seeded_generator(seed: int, *stream: int) -> torch.Generator:
    """A torch generator for one named stream of a cell's randomness."""
    state = np.random.SeedSequence([seed, *stream]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] % (2**63)))


def drop_tokens(batch: TokenBatch, drop_rate: float, generator: torch.Generator) -> TokenBatch:
    """Keep a uniform random ⌈(1 − p)·K⌉-sized subset of each sample's tokens (removal, not zeroing).

    The count is fixed per batch (its expectation under per-token dropout) so
    that a batch stays one tensor; which tokens survive is drawn per sample.
    A text input is never dropped.
    """
    if drop_rate <= 0.0:
        return batch
    size, tokens = batch.positions.shape
    keep = max(1, round((1.0 - drop_rate) * tokens))
    order = torch.rand(size, tokens, generator=generator).argsort(dim=1)[:, :keep].sort(dim=1).values
    return batch.gather(order.to(batch.positions.device))


def channel_dropout(batch: TokenBatch, drop_rate: float, generator: torch.Generator) -> TokenBatch:
    """Each patch token's embedding zeroed with probability p, the rest scaled by 1 / (1 − p).

    The seed paper's code (``nn.Dropout2d`` on the [B, P, D] patch embeddings, tokens as channels):
    every position stays, dropped ones carry no content. A text input is never dropped.
    """
    if drop_rate <= 0.0:
        return batch
    kept = torch.rand(batch.positions.shape, generator=generator) >= drop_rate
    scale = kept.float() / (1.0 - drop_rate)
    return replace(batch, scale=scale.to(batch.positions.device))


def input_dropout(
    batch: TokenBatch, drop_rate: float, replay_mode: str, generator: torch.Generator
) -> TokenBatch:
    """Random input dropout of new data as the replay mode feeds partial inputs."""
    if replay_mode == "zero":
        return channel_dropout(batch, drop_rate, generator)
    return drop_tokens(batch, drop_rate, generator)


def as_fed(batch: TokenBatch, replay_mode: str, tokens: int) -> TokenBatch:
    """How a (possibly partial) batch enters the model under the replay mode."""
    return batch if replay_mode == "drop" else fill_masked(batch, tokens)


def train_experience(
    model: ContinualModel,
    optimizer: torch.optim.Optimizer,
    data: TokenBatch,
    targets: torch.Tensor,
    replay: ReplaySet | None,
    settings: TrainSettings,
    generator: torch.Generator,
    device: torch.device,
    on_epoch: ProgressHook | None = None,
) -> float:
    """Train on one experience (every token of each sample); returns the last epoch's mean loss."""
    model.train()
    n, tokens = data.positions.shape
    mean_loss = float("nan")
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=generator)
        losses = []
        for start in range(0, n, settings.batch_size):
            index = order[start : start + settings.batch_size]
            batch = input_dropout(data.take(index), settings.input_dropout, settings.replay_mode, generator)
            batch = as_fed(batch, settings.replay_mode, tokens)
            loss = model.loss(batch.to(device), targets[index].to(device))
            if replay is not None:
                pick = torch.randperm(len(replay), generator=generator)[: settings.replay_batch_size]
                # Samples keeping different token counts go in one forward per count, each loss weighted
                # by its share: the batch mean (samples do not interact), the plain loss for one group.
                for replayed, stored_targets in replay.draw(pick):
                    replayed = as_fed(replayed, settings.replay_mode, tokens).to(device)
                    share = len(replayed) / len(pick)
                    loss = loss + model.loss(replayed, stored_targets.to(device)) * share
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
        chunk = batch.take(slice(start, start + batch_size))
        predictions.append(model.predict(chunk.to(device)).cpu())
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64)


def accuracy(
    model: TokenViT, data: TokenBatch, labels: torch.Tensor, batch_size: int, device: torch.device
) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((predict(model, data, batch_size, device) == labels).float().mean())


def whole(patches: torch.Tensor, text: torch.Tensor | None = None) -> TokenBatch:
    """Every token of each sample, in place order."""
    return TokenBatch(patches, full_positions(patches.shape[0], patches.shape[1]), text)
