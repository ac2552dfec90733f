"""Does the captioner learn? Train on seq-captions from the pretrained encoder and print CIDEr.

    python -m tools.captioner_check [--epochs N] [--train-per-task N] [--seed S]

First task 1 alone, then the five tasks in sequence without replay (the
fine-tuning lower bound), printing the CIDEr matrix (row = after training
task i, column = test set of task j). AdamW at lr 3e-4, batch 32, one
optimizer for the stream, as the cell runner trains classifiers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from benchmark import registry
from benchmark.caption_metrics import CaptionScorer
from benchmark.captioner import CaptionModel
from benchmark.contracts import Experience, TaskStream, TokenBatch, full_positions, patchify
from benchmark.pretrain import WEIGHTS_DIR, default_recipe, load_backbone_weights
from benchmark.train import seeded_generator

LR = 3e-4
BATCH_SIZE = 32
EVAL_BATCH_SIZE = 256


@dataclass(frozen=True)
class CaptionData:
    """One experience as tensors: uint8 patches and int64 caption targets."""

    train_patches: torch.Tensor
    train_targets: torch.Tensor
    test_patches: torch.Tensor
    test_references: tuple[tuple[str, ...], ...]


def to_caption_data(experience: Experience, patch_size: int) -> CaptionData:
    if experience.test_references is None:
        raise ValueError("a caption experience needs test_references")
    return CaptionData(
        torch.from_numpy(patchify(experience.train_images, patch_size)),
        torch.from_numpy(experience.train_labels),
        torch.from_numpy(patchify(experience.test_images, patch_size)),
        experience.test_references,
    )


def build_captioner(stream: TaskStream, seed: int, pretrained: bool = True) -> CaptionModel:
    """A ``CaptionModel`` for the stream, initialised from ``seed``, encoder from the committed backbone."""
    max_length = int(stream.experiences[0].train_labels.shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CaptionModel(stream.backbone, len(stream.vocabulary), max_length)
    if pretrained:
        model.load_backbone(load_backbone_weights(default_recipe(stream.backbone), WEIGHTS_DIR))
    return model


def train_captions(
    model: CaptionModel,
    optimizer: torch.optim.Optimizer,
    data: CaptionData,
    epochs: int,
    generator: torch.Generator,
    batch_size: int = BATCH_SIZE,
) -> float:
    """Teacher-forced training on one experience; returns the last epoch's mean loss."""
    model.train()
    n, tokens = data.train_patches.shape[:2]
    positions = full_positions(n, tokens)
    mean_loss = float("nan")
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        losses = []
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            batch = TokenBatch(data.train_patches[index], positions[index])
            loss = model.per_sample_loss(batch, data.train_targets[index]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        mean_loss = float(np.mean(losses))
    return mean_loss


def predict_captions(
    model: CaptionModel, patches: torch.Tensor, vocabulary: tuple[str, ...], batch_size: int = EVAL_BATCH_SIZE
) -> list[str]:
    """Greedy captions of every image, in order."""
    captions: list[str] = []
    for start in range(0, len(patches), batch_size):
        chunk = patches[start : start + batch_size]
        batch = TokenBatch(chunk, full_positions(len(chunk), chunk.shape[1]))
        captions += [model.decode(ids, vocabulary) for ids in model.generate(batch)]
    return captions


def cider_row(
    model: CaptionModel, data: list[CaptionData], vocabulary: tuple[str, ...], scorer: CaptionScorer
) -> list[float]:
    """CIDEr on every task's test set (each its own corpus), one tokenizer run for all."""
    jobs = []
    for task in data:
        predictions = predict_captions(model, task.test_patches, vocabulary)
        jobs.append((dict(enumerate(task.test_references)), dict(enumerate(predictions))))
    return [float(scores["CIDEr"] or 0.0) for scores in scorer.score_many(jobs)]


def run_check(
    stream: TaskStream, epochs: int, seed: int, report: Callable[[str], None] = print
) -> tuple[float, np.ndarray, float]:
    """(CIDEr of task 1 trained alone, the no-replay CIDEr matrix, seconds spent training the stream)."""
    data = [to_caption_data(e, stream.backbone.patch_size) for e in stream.experiences]
    with CaptionScorer(("CIDEr",)) as scorer:
        model = build_captioner(stream, seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
        tick = time.perf_counter()
        loss = train_captions(model, optimizer, data[0], epochs, seeded_generator(seed, 1, 0))
        alone = cider_row(model, data[:1], stream.vocabulary, scorer)[0]
        report(f"task 1 alone: loss {loss:.3f}, CIDEr {alone:.3f} ({time.perf_counter() - tick:.1f} s)")
        examples = predict_captions(model, data[0].test_patches[:3], stream.vocabulary)
        for prediction, references in zip(examples, data[0].test_references, strict=False):
            report(f"  {prediction!r}  vs  {references[0]!r}")

        model = build_captioner(stream, seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
        matrix = np.zeros((len(data), len(data)))
        train_seconds = 0.0
        for index, task in enumerate(data):
            tick = time.perf_counter()
            loss = train_captions(model, optimizer, task, epochs, seeded_generator(seed, 1, index))
            train_seconds += time.perf_counter() - tick
            matrix[index] = cider_row(model, data, stream.vocabulary, scorer)
            cells = " ".join(f"{value:6.3f}" for value in matrix[index])
            report(f"after task {index + 1}: loss {loss:.3f} CIDEr [{cells}]")
    return alone, matrix, train_seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=0, help="epochs a task (0: the task's default)")
    parser.add_argument("--train-per-task", type=int, default=0, help="0: the task's default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    params = {"train_per_task": args.train_per_task} if args.train_per_task else {}
    started = time.perf_counter()
    stream = registry.create("task", "seq-captions", **params).build()
    epochs = args.epochs or stream.epochs
    print(f"seq-captions: {len(stream.experiences[0].train_labels)} train images a task, {epochs} epochs")
    alone, matrix, train_seconds = run_check(stream, epochs, args.seed)
    diagonal = np.diag(matrix)
    print(f"diagonal CIDEr {np.round(diagonal, 3).tolist()} (mean {diagonal.mean():.3f})")
    print(f"final average CIDEr {matrix[-1].mean():.3f}; task 1 alone {alone:.3f}")
    print(f"stream training {train_seconds:.1f} s; whole check {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
