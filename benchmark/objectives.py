"""What a task's model is and how it is scored: one registry entry per kind of output.

A task stream names its objective (``TaskStream.objective``); the cell runner
builds the model and computes the accuracy-matrix metric through it, so a
classifier, a VQA model and a captioner share one runner. ``classification``
serves both class labels and VQA answers (a question is a text input of the
same ViT, BLIP-style fusion in every block); ``captioning`` trains an
encoder–decoder captioner and scores greedy captions by CIDEr.

Besides ``evaluate`` (one test set), an objective may define
``evaluate_many`` (every task's test set at once: the captioner tokenizes all
of a row's captions in one Java run) and ``final_metrics`` (a metric set
computed once at the end of a cell, recorded as ``CellResult.extra_metrics``);
``evaluate_row`` and ``final_metrics`` below fall back when it does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from benchmark import registry
from benchmark.caption_metrics import ALL_METRICS, HEADLINE_METRIC, CaptionScorer, require_java
from benchmark.captioner import CaptionModel
from benchmark.contracts import TaskStream, TokenBatch
from benchmark.model import TokenViT
from benchmark.train import ContinualModel, accuracy, predict


class EvalSet(NamedTuple):
    """One task's test split as the objectives score it."""

    data: TokenBatch
    targets: torch.Tensor
    references: Sequence[Sequence[str]] | None


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


@runtime_checkable
class ClassPredictor(Protocol):
    """An objective whose model predicts one class per sample (the shortcut diagnostics need it)."""

    def predict(
        self, model: ContinualModel, data: TokenBatch, batch_size: int, device: torch.device
    ) -> torch.Tensor: ...


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

    def predict(
        self, model: ContinualModel, data: TokenBatch, batch_size: int, device: torch.device
    ) -> torch.Tensor:
        """The predicted class of every sample of ``data``, int64 [m]."""
        assert isinstance(model, TokenViT)
        return predict(model, data, batch_size, device)


def evaluate_row(
    objective: Objective,
    model: ContinualModel,
    sets: Sequence[EvalSet],
    batch_size: int,
    device: torch.device,
) -> list[float]:
    """The metric on every test set (a row of the accuracy matrix), through ``evaluate_many`` if defined."""
    many = getattr(objective, "evaluate_many", None)
    if many is not None:
        return [float(v) for v in many(model, sets, batch_size, device)]
    return [objective.evaluate(model, *s, batch_size, device) for s in sets]


def final_metrics(
    objective: Objective,
    model: ContinualModel,
    sets: Sequence[EvalSet],
    batch_size: int,
    device: torch.device,
) -> dict[str, Any] | None:
    """The objective's end-of-cell metric set (``CellResult.extra_metrics``), or None if it has none."""
    final = getattr(objective, "final_metrics", None)
    return None if final is None else final(model, sets, batch_size, device)


@registry.register("objective", "captioning")
class Captioning:
    """Caption cross-entropy of an encoder–decoder captioner; the metric is CIDEr of greedy captions.

    The model is ``benchmark.captioner.CaptionModel`` (the stream's TokenViT
    encoder, a 2-layer transformer decoder over the stream's vocabulary).
    ``evaluate`` decodes greedily and scores the captions against the test
    references with pycocoevalcap's CIDEr (CIDEr-D) after the PTB tokenizer,
    each test set its own corpus (its IDF), as COCO's evaluation does; METEOR
    (a JVM that loads for seconds) is left to ``final_metrics``, which computes
    BLEU-1..4, METEOR, ROUGE-L, CIDEr and SPICE (or why it cannot run) once,
    with the final model, on every task's test set.
    """

    metric: ClassVar[str] = HEADLINE_METRIC

    def __init__(self) -> None:
        self.vocabulary: tuple[str, ...] = ()  # set by build_model: how generated ids become words

    @staticmethod
    def check_available() -> None:
        """Before a grid runs (``benchmark.preflight``): the metrics' Java, or a one-line UserError."""
        require_java()

    def build_model(self, stream: TaskStream, mask_token: bool) -> CaptionModel:
        targets = stream.experiences[0].train_labels
        if targets.ndim != 2 or not stream.vocabulary:
            raise ValueError(f"task {stream.name} has no caption targets (int64 [n, L]) and vocabulary")
        self.vocabulary = stream.vocabulary
        return CaptionModel(
            stream.backbone, len(stream.vocabulary), int(targets.shape[1]), mask_token=mask_token
        )

    def captions(
        self, model: ContinualModel, data: TokenBatch, batch_size: int, device: torch.device
    ) -> list[str]:
        """Greedy captions of every sample of ``data``, in order."""
        assert isinstance(model, CaptionModel)
        if not self.vocabulary:
            raise ValueError("the captioning objective decodes with the vocabulary build_model was given")
        out: list[str] = []
        for start in range(0, len(data), batch_size):
            chunk = data.take(slice(start, start + batch_size)).to(device)
            out += [model.decode(ids, self.vocabulary) for ids in model.generate(chunk)]
        return out

    def evaluate(
        self,
        model: ContinualModel,
        data: TokenBatch,
        targets: torch.Tensor,
        references: Sequence[Sequence[str]] | None,
        batch_size: int,
        device: torch.device,
    ) -> float:
        return self.evaluate_many(model, [EvalSet(data, targets, references)], batch_size, device)[0]

    def evaluate_many(
        self, model: ContinualModel, sets: Sequence[EvalSet], batch_size: int, device: torch.device
    ) -> list[float]:
        """CIDEr of every test set, each its own corpus; one tokenizer run for all of them."""
        scores = self._score(model, sets, batch_size, device, (HEADLINE_METRIC,))
        return [float(s[HEADLINE_METRIC] or 0.0) for s in scores]

    def final_metrics(
        self, model: ContinualModel, sets: Sequence[EvalSet], batch_size: int, device: torch.device
    ) -> dict[str, Any]:
        """Every caption metric per task and their mean over tasks; ``not_available``: metric → why not."""
        scores = self._score(model, sets, batch_size, device, ALL_METRICS)
        average: dict[str, float | None] = {}
        for name in ALL_METRICS:
            values = [s[name] for s in scores]
            average[name] = None if any(v is None for v in values) else float(np.mean(values))
        not_available = {name: why for s in scores for name, why in s.not_available.items()}
        return {
            "metric": HEADLINE_METRIC,
            "per_task": [dict(s) for s in scores],
            "average": average,
            "not_available": not_available,
        }

    def _score(
        self,
        model: ContinualModel,
        sets: Sequence[EvalSet],
        batch_size: int,
        device: torch.device,
        metrics: Sequence[str],
    ) -> list[Any]:
        jobs = []
        for test in sets:
            if test.references is None:
                raise ValueError("captioning needs test_references for every test set")
            predictions = self.captions(model, test.data, batch_size, device)
            references = {i: list(refs) for i, refs in enumerate(test.references)}
            jobs.append((references, dict(enumerate(predictions))))
        with CaptionScorer(metrics, shared_meteor=True) as scorer:  # one METEOR JVM per worker process
            return scorer.score_many(jobs)
