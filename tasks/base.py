"""What a task hands the runner: a stream of experiences and the backbone it needs.

Images are stored as they would be kept in memory: uint8 [n, C, H, W]. Labels
are global class ids (int64), so the stream is class-incremental: one head over
every class of every task.

Vision–language tasks add two things. A *text input* (``train_text``: int64
token ids [n, L] over the stream's ``vocabulary``, 0 = padding), e.g. a VQA
question, is part of what a sample is: it is stored whole in memory and counted
in the bytes. A *sequence target* (``train_labels`` int64 [n, L], e.g. a caption)
replaces the class label; ``test_references`` then holds each test image's
reference strings for the metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXT_TOKEN_BYTES = 2  # text token ids are stored as uint16 (a vocabulary of at most 65 536 words)


@dataclass(frozen=True)
class Experience:
    """One task of the stream: its training and test split."""

    classes: tuple[int, ...]
    train_images: np.ndarray  # uint8 [n, C, H, W]
    train_labels: np.ndarray  # int64 [n]
    test_images: np.ndarray  # uint8 [m, C, H, W]
    test_labels: np.ndarray  # int64 [m]
    train_masks: np.ndarray | None = None  # bool [n, tokens]: ground-truth relevant patches
    test_masks: np.ndarray | None = None  # bool [m, tokens]
    train_text: np.ndarray | None = None  # int64 [n, L]: token ids of a text input (0 = padding)
    test_text: np.ndarray | None = None  # int64 [m, L]
    test_references: tuple[tuple[str, ...], ...] | None = None  # per test sample, its reference texts
    train_categories: np.ndarray | None = None  # int64 [n]: class of each sample when labels are sequences

    def __post_init__(self) -> None:
        for name in ("train_images", "test_images"):
            images = getattr(self, name)
            if images.dtype != np.uint8 or images.ndim != 4:
                raise ValueError(f"{name} must be uint8 [n, C, H, W], got {images.dtype} {images.shape}")
        if len(self.train_images) != len(self.train_labels):
            raise ValueError("train_images and train_labels differ in length")
        if len(self.test_images) != len(self.test_labels):
            raise ValueError("test_images and test_labels differ in length")
        if (self.train_text is None) != (self.test_text is None):
            raise ValueError("train_text and test_text must both be given or both be None")
        for name, images in (("train_text", self.train_images), ("test_text", self.test_images)):
            text = getattr(self, name)
            if text is not None and (text.ndim != 2 or len(text) != len(images) or text.dtype != np.int64):
                raise ValueError(f"{name} must be int64 [n, L] with one row per image")
        if self.test_references is not None and len(self.test_references) != len(self.test_images):
            raise ValueError("test_references must hold one tuple of references per test image")

    @property
    def categories(self) -> np.ndarray:
        """int64 [n]: what per-class selection groups by (the labels, or the categories of sequences)."""
        if self.train_labels.ndim == 1:
            return self.train_labels
        if self.train_categories is None:
            raise ValueError("sequence targets need train_categories for per-class selection")
        return self.train_categories

    @property
    def train_bytes(self) -> int:
        """Bytes of the training inputs as stored (uint8 pixels, uint16 text ids): the retention base."""
        text = 0 if self.train_text is None else self.train_text.size * TEXT_TOKEN_BYTES
        return int(self.train_images.nbytes) + int(text)


@dataclass(frozen=True)
class BackboneSpec:
    """The ViT a task trains, and the procedural set its weights are pretrained on."""

    image_size: int
    channels: int
    patch_size: int
    pretrain_set: str  # name of a set in ``benchmark.pretrain_sets``; never a task's classes
    embed_dim: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class TaskStream:
    """A built task: its experiences in order, the class count and its backbone."""

    name: str
    experiences: tuple[Experience, ...]
    num_classes: int
    backbone: BackboneSpec
    has_masks: bool
    epochs: int  # epochs a task needs to be learned from the pretrained backbone
    vocabulary: tuple[str, ...] = ()  # words of text inputs / sequence targets; index 0 is padding
    answers: tuple[str, ...] = ()  # names of the classes where they are words (VQA answers)
    objective: str = "classification"  # registry kind "objective": the model it builds and its metric

    @property
    def tokens(self) -> int:
        return self.backbone.tokens


def patchify(images: np.ndarray, patch_size: int) -> np.ndarray:
    """uint8 [n, C, H, W] → [n, tokens, C·p·p], tokens in row-major order, (C, p, p) per patch."""
    n, channels, height, width = images.shape
    rows, cols = height // patch_size, width // patch_size
    patches = images.reshape(n, channels, rows, patch_size, cols, patch_size)
    patches = patches.transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(patches.reshape(n, rows * cols, channels * patch_size * patch_size))


def pixel_mask_to_patches(masks: np.ndarray, patch_size: int, min_fraction: float) -> np.ndarray:
    """bool [n, H, W] → bool [n, tokens]: a patch is relevant if ≥ min_fraction of it is object."""
    n, height, width = masks.shape
    rows, cols = height // patch_size, width // patch_size
    cover = masks.reshape(n, rows, patch_size, cols, patch_size).mean(axis=(2, 4))
    relevant = cover >= min_fraction
    # Every object touches at least one patch: keep the best-covered one if the threshold missed all.
    empty = ~relevant.reshape(n, -1).any(axis=1)
    if empty.any():
        flat = cover.reshape(n, -1)
        best = flat.argmax(axis=1)
        relevant = relevant.reshape(n, -1)
        relevant[np.where(empty)[0], best[empty]] = flat[empty, best[empty]] > 0
        return relevant
    return relevant.reshape(n, -1)


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded stratified train/test split, each sorted."""
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * test_fraction)
        test.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def class_incremental(
    images: np.ndarray,
    labels: np.ndarray,
    train_index: np.ndarray,
    test_index: np.ndarray,
    class_order: list[int],
    classes_per_task: int,
    masks: np.ndarray | None = None,
) -> tuple[Experience, ...]:
    """Split a labelled set into experiences of ``classes_per_task`` consecutive classes."""
    if len(class_order) % classes_per_task:
        raise ValueError(f"{len(class_order)} classes do not split into tasks of {classes_per_task}")
    experiences = []
    for start in range(0, len(class_order), classes_per_task):
        classes = tuple(class_order[start : start + classes_per_task])
        train = train_index[np.isin(labels[train_index], classes)]
        test = test_index[np.isin(labels[test_index], classes)]
        experiences.append(
            Experience(
                classes=classes,
                train_images=images[train],
                train_labels=labels[train].astype(np.int64),
                test_images=images[test],
                test_labels=labels[test].astype(np.int64),
                train_masks=None if masks is None else masks[train],
                test_masks=None if masks is None else masks[test],
            )
        )
    return tuple(experiences)
