"""split-text: continual text classification of procedural sentences, with class-phrase masks.

Ten classes, each an (adjective, noun) pair of eight class adjectives and
eight class nouns, as a split-shapes class is a (colour, shape) pair; a
sentence of 24–48 words (``tasks.text_procedural``) holds its class phrase
two or three times among filler words that no class uses, so four to six word
tokens decide the class; its mask marks them. 5 tasks of 2 classes,
class-incremental, as split-shapes.

Storage: a sentence is its word ids as uint16, padded with id 0 to
``max_length``, laid out as a 1×L two-channel uint8 "image"
(``benchmark.contracts.text_as_patches``): a word token is a 2-byte patch, so a
whole sentence costs 2·L bytes (padding included: the stored record has a
fixed length, as an image has a fixed size) plus its label, and a kept word
its 2 bytes plus a 2-byte position. The model (objective
``text-classification``) is ``benchmark.text_model.TextViT``, pretrained on
``text-15``: 15 other pairs of the same class words, the same grammar and
filler (so every word's embedding is pretrained, and no task class is).
"""

from __future__ import annotations

import numpy as np

from benchmark import registry
from benchmark.contracts import BackboneSpec, TaskStream, text_as_patches
from tasks.base import check_boundary_overlap, check_model_size, class_incremental
from tasks.text_procedural import TASK_PAIRS, draw_sentences, lexicon, most_phrases

TEXT_PRETRAIN_SET = "text-15"
SHORTEST = 12  # room for one clause


def text_backbone(max_length: int, embed_dim: int = 64, depth: int = 4, num_heads: int = 4) -> BackboneSpec:
    """The text model's geometry: one row of ``max_length`` word tokens, an id's two bytes per token."""
    return BackboneSpec(
        image_size=max_length,
        channels=2,
        patch_size=1,
        pretrain_set=TEXT_PRETRAIN_SET,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        image_height=1,
        vocabulary_size=len(lexicon().words),
    )


def check_sentence_shape(min_length: int, max_length: int, phrases: tuple[int, int]) -> None:
    """A one-line ``ValueError`` unless lengths and class-phrase counts make sentences."""
    if not SHORTEST <= min_length <= max_length:
        raise ValueError(
            f"lengths must satisfy {SHORTEST} ≤ min_length ≤ max_length, got {min_length}, {max_length}"
        )
    low, high = phrases
    if not 1 <= low <= high or high > most_phrases(min_length):
        raise ValueError(
            f"class phrases per sentence must satisfy 1 ≤ min ≤ max ≤ {most_phrases(min_length)} "
            f"(the noun phrases of {min_length} words), got {low}, {high}"
        )


@registry.register("task", "split-text")
class SplitText:
    """Procedural sentences of 24–48 words, 10 classes decided by a class phrase (2 words) said 2–3 times,
    5 tasks of 2 classes, with masks of the class phrases' words; stored two bytes a word."""

    def __init__(
        self,
        *,
        train_per_class: int = 150,
        test_per_class: int = 60,
        min_length: int = 24,
        max_length: int = 48,
        min_phrases: int = 2,
        max_phrases: int = 3,
        classes_per_task: int = 2,
        data_seed: int = 0,
        epochs: int = 3,
        boundary_overlap: float = 0.0,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
    ) -> None:
        check_sentence_shape(min_length, max_length, (min_phrases, max_phrases))
        check_model_size(embed_dim, depth, num_heads)
        check_boundary_overlap(boundary_overlap)
        if train_per_class < 1 or test_per_class < 1:
            raise ValueError("train_per_class and test_per_class must be at least 1")
        self.train_per_class = train_per_class
        self.test_per_class = test_per_class
        self.min_length = min_length
        self.max_length = max_length
        self.phrases = (min_phrases, max_phrases)
        self.classes_per_task = classes_per_task
        self.data_seed = data_seed
        self.epochs = epochs
        self.boundary_overlap = boundary_overlap
        self.backbone = text_backbone(max_length, embed_dim, depth, num_heads)

    def build(self) -> TaskStream:
        rng = np.random.default_rng([self.data_seed, 7])
        words = lexicon()
        per_class = self.train_per_class + self.test_per_class
        sentences = draw_sentences(
            words.phrases(TASK_PAIRS),
            per_class,
            rng,
            min_length=self.min_length,
            max_length=self.max_length,
            phrases_per_sentence=self.phrases,
        )
        position = np.arange(len(sentences.labels)) % per_class
        experiences = class_incremental(
            text_as_patches(sentences.ids),
            sentences.labels,
            np.flatnonzero(position >= self.test_per_class),
            np.flatnonzero(position < self.test_per_class),
            list(range(len(TASK_PAIRS))),
            self.classes_per_task,
            sentences.masks,
            boundary_overlap=self.boundary_overlap,
            rng=rng,
        )
        return TaskStream(
            "split-text",
            experiences,
            len(TASK_PAIRS),
            self.backbone,
            has_masks=True,
            epochs=self.epochs,
            vocabulary=words.words,
            objective="text-classification",
        )
