"""The types that cross a boundary: what tasks hand the engine, what selectors see and return.

The engine (``benchmark/``) owns these; the plug-in packages (``tasks/``,
``methods/``) and ``reports/`` import them from here and never the other way
round (``tests/test_import_rules.py`` keeps that shape).

- Tasks build a ``TaskStream`` of ``Experience``\\ s and name the ``BackboneSpec``
  their model needs. Images are stored as they would be kept in memory: uint8
  [n, C, H, W]; labels are global class ids (int64), so the stream is
  class-incremental. A *text input* (``train_text``: int64 ids [n, L], 0 =
  padding), e.g. a VQA question, is part of a sample: stored whole and counted
  in the bytes. A *sequence target* (``train_labels`` int64 [n, L], e.g. a
  caption) replaces the class label; ``test_references`` then holds each test
  image's reference strings for the metric.
- Models read a ``TokenBatch``: any subset of a sample's patch tokens with
  their own positions (``patchify`` fixes the token order).
- Sample selectors (docs/design.md, "Public contracts") take a ``SamplePool`` and
  return a ``Selection``; token selectors rank ``TokenInputs``; a pair
  selector (single-stage selection) spends a byte budget on (sample, token)
  pairs itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeGuard

import numpy as np
import torch

if TYPE_CHECKING:
    from benchmark.memory import ByteCosts

TEXT_TOKEN_BYTES = 2  # text token ids are stored as uint16 (a vocabulary of at most 65 536 words)

# Text ids every text task shares (captions, and the padding of questions): a model and a metric tell
# them apart without knowing the task.
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


def decode_ids(ids: Sequence[int], vocabulary: Sequence[str]) -> str:
    """Words of the ids up to the first eos; pad, bos and eos are not words (<unk> stays visible)."""
    out = []
    for token in ids:
        if token == EOS_ID:
            break
        if token in (PAD_ID, BOS_ID):
            continue
        out.append(vocabulary[token])
    return " ".join(out)


# ---------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class TokenBatch:
    """Patch tokens of a batch as stored: uint8 [B, K, C·p·p], their positions int64 [B, K], and an
    optional text input int64 [B, L] (token ids, 0 = padding).

    Two optional per-token fields say how a token enters the model: ``masked`` (bool [B, K]) marks
    positions that stand for a dropped token (the learned mask token where the model has one, else a
    zero patch); ``scale`` (float [B, K]) multiplies each patch embedding (channel dropout: 0 for a
    dropped token, 1 / (1 − p) for a kept one).
    """

    patches: torch.Tensor
    positions: torch.Tensor
    text: torch.Tensor | None = None
    masked: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    def _map(self, per_token: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
        return tuple(None if t is None else per_token(t) for t in (self.masked, self.scale))

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(
            self.patches.to(device),
            self.positions.to(device),
            None if self.text is None else self.text.to(device),
            *self._map(lambda t: t.to(device)),
        )

    def take(self, index: torch.Tensor | slice) -> TokenBatch:
        """The samples at ``index`` (a tensor of indices or a slice)."""
        return TokenBatch(
            self.patches[index],
            self.positions[index],
            None if self.text is None else self.text[index],
            *self._map(lambda t: t[index]),
        )

    def gather(self, index: torch.Tensor) -> TokenBatch:
        """Each sample's tokens at ``index`` (int64 [B, K']: places in this batch's K tokens, not image
        positions), in that order; the text is kept whole."""
        pixels = index.unsqueeze(-1).expand(-1, -1, self.patches.shape[2])
        return TokenBatch(
            self.patches.gather(1, pixels),
            self.positions.gather(1, index),
            self.text,
            *self._map(lambda t: t.gather(1, index)),
        )

    def __len__(self) -> int:
        return int(self.patches.shape[0])


def full_positions(batch_size: int, tokens: int) -> torch.Tensor:
    return torch.arange(tokens).expand(batch_size, tokens)


def patchify(images: np.ndarray, patch_size: int) -> np.ndarray:
    """uint8 [n, C, H, W] → [n, tokens, C·p·p], tokens in row-major order, (C, p, p) per patch."""
    n, channels, height, width = images.shape
    rows, cols = height // patch_size, width // patch_size
    patches = images.reshape(n, channels, rows, patch_size, cols, patch_size)
    patches = patches.transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(patches.reshape(n, rows * cols, channels * patch_size * patch_size))


# ----------------------------------------------------------------------------------------------- tasks


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
    """The ViT a task trains, and the procedural set its weights are pretrained on.

    Images are square unless ``image_height`` is given (a text task's sentences are one row of
    word tokens: ``image_height = 1``, ``patch_size = 1``, see ``text_as_patches``).
    ``vocabulary_size`` > 0 says each patch is a word id's two bytes, embedded by a word table
    of that size (the text model, ``benchmark.text_model``), not pixels.
    """

    image_size: int  # the image's width (and its height, unless image_height is given)
    channels: int
    patch_size: int
    pretrain_set: str  # name of a set in ``benchmark.pretrain_sets``; never a task's classes
    embed_dim: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    image_height: int = 0  # 0: square images
    vocabulary_size: int = 0  # 0: patches are pixels

    @property
    def height(self) -> int:
        return self.image_height or self.image_size

    @property
    def tokens(self) -> int:
        return (self.height // self.patch_size) * (self.image_size // self.patch_size)


# Fields added to BackboneSpec after weights were committed, at the value that reproduces the older
# backbones: a recipe leaves them out of its hash there, so the committed files keep their names.
LATER_BACKBONE_FIELDS: dict[str, int] = {"image_height": 0, "vocabulary_size": 0}


# ------------------------------------------------------------------------------------- text as tokens


def text_as_patches(ids: np.ndarray) -> np.ndarray:
    """Word ids int [n, L] (uint16 range) → uint8 [n, 2, 1, L]: each id's low and high byte as two
    "channels" of a 1×L image, so that ``patchify(·, 1)`` makes one 2-byte patch per word and the
    memory stores and counts a kept word exactly as its id (2 bytes) plus its position (2 bytes)."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or (ids.size and (ids.min() < 0 or ids.max() > 0xFFFF)):
        raise ValueError("word ids must be [n, L] in [0, 65535] to be stored as uint16")
    wide = ids.astype(np.uint16)
    pair = np.stack([wide & 0xFF, wide >> 8], axis=1).astype(np.uint8)
    return pair[:, :, None, :]


def patches_as_ids(patches: torch.Tensor) -> torch.Tensor:
    """uint8 word patches [..., 2] (low, high byte) → int64 word ids [...]: ``text_as_patches`` undone."""
    wide = patches.long()
    return wide[..., 0] + 256 * wide[..., 1]


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


# ------------------------------------------------------------------------------------------- selectors


@dataclass(frozen=True)
class SamplePool:
    """The finished task's training samples as the selectors see them."""

    features: np.ndarray  # float32 [n, d]: penultimate features (CLS after the final norm)
    grads: np.ndarray | None  # float32 [n, g]: last-layer gradient proxies, or None
    labels: np.ndarray  # int64 [n]
    memory_grads: np.ndarray | None = None  # float32 [m, g]: what memory already holds
    # Classes in the order that takes the remainder of a per-class budget split when shares tie
    # (``methods.base.per_class_budgets``), drawn by the cell's generator; None: by label.
    tie_order: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.features.shape[0] != n:
            raise ValueError(f"features has {self.features.shape[0]} rows for {n} labels")
        if self.grads is not None and self.grads.shape[0] != n:
            raise ValueError(f"grads has {self.grads.shape[0]} rows for {n} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Selection:
    """Chosen pool indices (distinct, int64) and their non-negative float32 weights."""

    indices: np.ndarray
    weights: np.ndarray

    @classmethod
    def of(cls, indices: np.ndarray | list[int], weights: np.ndarray | None = None) -> Selection:
        chosen = np.asarray(indices, dtype=np.int64).reshape(-1)
        if weights is None:
            weights = np.ones(len(chosen), dtype=np.float32)
        return cls(chosen, np.asarray(weights, dtype=np.float32).reshape(-1))

    @classmethod
    def empty(cls) -> Selection:
        return cls.of(np.zeros(0, dtype=np.int64))


class SampleSelector(Protocol):
    """``select(pool, budget, rng)``; the class attributes declare what it needs (Mammoth's
    ``COMPATIBILITY``, as attributes), so the runner computes only that and refuses an impossible cell."""

    needs_grads: ClassVar[bool]
    uses_memory: ClassVar[bool]  # False: a bound that stores nothing (``none``, ``joint``)
    trains_jointly: ClassVar[bool]  # True: each task trains on every task's data so far (``joint``)

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection: ...


class PairSelector(Protocol):
    """A sample selector that also selects tokens (single-stage): given every sample's token relevance
    [n, P], it returns sample → sorted kept positions whose bytes (``costs``) fit ``budget_bytes``.
    With a token selector the runner calls ``select_pairs`` instead of ``select``."""

    def select(self, pool: SamplePool, budget: int, rng: np.random.Generator) -> Selection: ...

    def select_pairs(
        self, pool: SamplePool, relevance: np.ndarray, budget_bytes: int, costs: ByteCosts
    ) -> dict[int, np.ndarray]: ...


def selects_pairs(entry: object) -> TypeGuard[PairSelector]:
    """Whether a sample selector (an instance, or its registered class) is a ``PairSelector``."""
    return callable(getattr(entry, "select_pairs", None))


@dataclass(frozen=True)
class TokenInputs:
    """What a token selector ranks: stored samples with every token, and what it may draw on."""

    batch: TokenBatch  # uint8 patches [B, P, d] with positions [B, P]
    rng: np.random.Generator  # for selectors that draw (random, tie-breaking)
    masks: torch.Tensor | None = None  # bool [B, P] ground-truth relevance, where the task has it
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class TokenSelector(Protocol):
    needs_mask: ClassVar[bool]  # True: only on tasks with a ground-truth relevance mask

    def rank(self, model: torch.nn.Module, inputs: TokenInputs, targets: torch.Tensor) -> torch.Tensor: ...
