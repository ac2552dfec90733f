"""A cell's view of its task stream: tensors per task, a validation slice, and test data sealed until the end.

Under protocol 2 each task's training data loses a seeded, stratified
validation slice (``VALIDATION_FRACTION``) before anything trains on it: the
slice scores ``[tune]`` candidates, ``token_fraction = "auto"`` and the
report's validation choices, and it is never trained on or stored. The test
splits are handed out sealed: reading one before the cell's final evaluation
raises (``SealedTests``), so no choice a cell makes can depend on test data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark.contracts import TEXT_TOKEN_BYTES, Experience, TokenBatch, decode_ids, patchify
from benchmark.memory import ByteCosts
from benchmark.objectives import EvalSet
from benchmark.splits import stratified_split
from benchmark.train import whole

VALIDATION_FRACTION = 0.1  # of each task's training data, per class (protocol 2)


@dataclass(frozen=True)
class EvalSplit:
    """Samples a cell scores the model on (a task's validation slice or its test split)."""

    data: TokenBatch
    targets: torch.Tensor  # int64 [m] classes, or [m, L] sequences
    references: tuple[tuple[str, ...], ...] | None  # reference texts of sequence targets
    masks: torch.Tensor | None  # bool [m, P] ground-truth relevance, where the task has it
    categories: np.ndarray | None = None  # int64 [m]: the class of each sample (validation slices)

    @property
    def eval_set(self) -> EvalSet:
        return EvalSet(self.data, self.targets, self.references)


@dataclass(frozen=True)
class ExperienceTensors:
    """One task as a cell trains on it: its training samples, and its validation slice (protocol 2)."""

    classes: tuple[int, ...]
    train: TokenBatch  # every token of each training sample (and its text input, if any)
    train_targets: torch.Tensor  # int64 [n] classes, or [n, L] sequences
    train_categories: np.ndarray  # int64 [n]: what per-class selection groups by
    train_masks: torch.Tensor | None
    train_bytes: int  # bytes of the training inputs as stored (the protocol-1 retention base)
    validation: EvalSplit | None = None

    @property
    def text_tokens(self) -> int:
        return 0 if self.train.text is None else int(self.train.text.shape[1])

    @property
    def label_tokens(self) -> int:
        return 1 if self.train_targets.ndim == 1 else int(self.train_targets.shape[1])

    @property
    def byte_costs(self) -> ByteCosts:
        """What storing one of its training samples costs, by tokens kept."""
        tokens, patch_bytes = self.train.patches.shape[1:]
        return ByteCosts.for_samples(int(tokens), int(patch_bytes), self.text_tokens, self.label_tokens)

    @property
    def stored_bytes(self) -> int:
        """Bytes of every training sample stored whole (inputs plus label, caption or question)."""
        return len(self.train) * self.byte_costs.of(self.byte_costs.tokens)

    def __len__(self) -> int:
        return len(self.train)


class SealedDataRead(RuntimeError):
    """Test data was read before the cell's final evaluation."""


class SealedTests:
    """Every task's test split, unreadable until ``open`` (called once, by the final evaluation)."""

    def __init__(self, splits: list[EvalSplit]) -> None:
        self._splits = splits
        self._open = False

    def open(self) -> list[EvalSplit]:
        self._open = True
        return self._splits

    @property
    def splits(self) -> list[EvalSplit]:
        if not self._open:
            raise SealedDataRead("test data read before the cell's final evaluation")
        return self._splits


@dataclass(frozen=True)
class StreamData:
    tasks: list[ExperienceTensors]
    tests: SealedTests


def stream_data(
    experiences: tuple[Experience, ...],
    patch_size: int,
    vocabulary: tuple[str, ...],
    validation_rng: np.random.Generator | None,
) -> StreamData:
    """Tensors of every task; with ``validation_rng``, each task's validation slice held out first."""
    tasks, tests = [], []
    for experience in experiences:
        task, test = to_tensors(experience, patch_size, vocabulary, validation_rng)
        tasks.append(task)
        tests.append(test)
    return StreamData(tasks, SealedTests(tests))


def to_tensors(
    experience: Experience,
    patch_size: int,
    vocabulary: tuple[str, ...] = (),
    validation_rng: np.random.Generator | None = None,
) -> tuple[ExperienceTensors, EvalSplit]:
    """One task's training tensors (and validation slice) and its test split."""
    train_patches = torch.from_numpy(patchify(experience.train_images, patch_size))
    train = whole(train_patches, _tensor(experience.train_text))
    targets = torch.from_numpy(experience.train_labels)
    categories = experience.categories
    masks = _tensor(experience.train_masks)
    test = EvalSplit(
        whole(torch.from_numpy(patchify(experience.test_images, patch_size)), _tensor(experience.test_text)),
        torch.from_numpy(experience.test_labels),
        experience.test_references,
        _tensor(experience.test_masks),
    )
    validation = None
    if validation_rng is not None:
        kept, held_out = (
            torch.from_numpy(i) for i in stratified_split(categories, VALIDATION_FRACTION, validation_rng)
        )
        validation = EvalSplit(
            train.take(held_out),
            targets[held_out],
            _references(targets[held_out], vocabulary),
            None if masks is None else masks[held_out],
            categories[held_out.numpy()],
        )
        train, targets, categories = train.take(kept), targets[kept], categories[kept.numpy()]
        masks = None if masks is None else masks[kept]
    train_bytes = int(train.patches.numel()) + (
        0 if train.text is None else int(train.text.numel()) * TEXT_TOKEN_BYTES
    )
    task = ExperienceTensors(experience.classes, train, targets, categories, masks, train_bytes, validation)
    return task, test


def _tensor(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(array)


def _references(targets: torch.Tensor, vocabulary: tuple[str, ...]) -> tuple[tuple[str, ...], ...] | None:
    """A validation sample's reference text: its own target sequence (None for class targets)."""
    if targets.ndim == 1:
        return None
    return tuple((decode_ids(row.tolist(), vocabulary),) for row in targets)
