"""What a task's model is and how it is scored: one registry entry per kind of output.

A task stream names its objective (``TaskStream.objective``); the cell runner
builds the model and computes the accuracy-matrix metric through it, so a
classifier, a VQA model and a captioner share one runner. ``classification``
serves both class labels and VQA answers (a question is a text input of the
same ViT, BLIP-style fusion in every block).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

import torch

from benchmark import registry
from benchmark.model import TokenBatch, TokenViT
from benchmark.train import ContinualModel, accuracy
from tasks.base import TaskStream


class Objective(Protocol):
    metric: ClassVar[str]  # what the accuracy matrix holds

    def build_model(self, stream: TaskStream, mask_token: bool) -> ContinualModel: ...

    def evaluate(
        self,
        model: ContinualModel,
        data: TokenBatch,
        targets: torch.Tensor,
        references: Sequence[Sequence[str]] | None,
        batch_size: int,
        device: torch.device,
    ) -> float: ...


def text_length(stream: TaskStream) -> int:
    """Length L of the stream's text inputs (0 without)."""
    texts = [e.train_text for e in stream.experiences if e.train_text is not None]
    return max((t.shape[1] for t in texts), default=0)


@registry.register("objective", "classification")
class Classification:
    """Cross-entropy over the stream's classes (or VQA answers); the metric is accuracy."""

    metric: ClassVar[str] = "accuracy"

    def build_model(self, stream: TaskStream, mask_token: bool) -> TokenViT:
        length = text_length(stream)
        vocabulary = len(stream.vocabulary) if length else 0
        return TokenViT(stream.backbone, stream.num_classes, vocabulary, length, mask_token)

    def evaluate(
        self,
        model: ContinualModel,
        data: TokenBatch,
        targets: torch.Tensor,
        references: Sequence[Sequence[str]] | None,
        batch_size: int,
        device: torch.device,
    ) -> float:
        assert isinstance(model, TokenViT)
        return accuracy(model, data, targets, batch_size, device)
