"""Procedural pretraining sets: classes that no task uses (docs/design.md, "Why every
model starts from a pretrained backbone").

Each entry draws its images and names the recipe that pretrains a backbone on
them; ``benchmark.pretrain`` runs the recipe and names the weights file by its
hash.
"""

from __future__ import annotations

import numpy as np

from benchmark import registry
from benchmark.contracts import text_as_patches
from tasks.procedural import glyph_prototypes, pretrain_shape_classes, render_glyphs, render_shapes
from tasks.split_distractors import distractor_pairs, draw_scene
from tasks.text_procedural import draw_sentences, lexicon, pretrain_pairs
from tasks.vqa_scenes import SIZES, SceneSettings, place_objects, render_scene


@registry.register("pretrain_set", "shapes-15")
class Shapes15:
    """15 shape×colour classes disjoint from split-shapes' ten, on the same clutter (RGB)."""

    classes = 15
    per_class = 200
    epochs = 6
    lr = 1e-3

    def draw(self, per_class: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        classes = pretrain_shape_classes(self.classes)
        images, labels, _ = render_shapes(
            classes, per_class, np.random.default_rng(seed), image_size=image_size
        )
        return images, labels


@registry.register("pretrain_set", "glyphs-20")
class Glyphs20:
    """20 procedural grey 8×8 stroke-glyph classes (no digit), for split-digits' backbone."""

    classes = 20
    per_class = 250
    epochs = 12
    lr = 1e-3

    def draw(self, per_class: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        return render_glyphs(glyph_prototypes(self.classes, rng), per_class, rng, image_size=image_size)


# Shapes and colours of the procedural primitives that seq-vqa never shows or answers.
CELL_SHAPES: tuple[str, ...] = ("diamond", "ring", "hbar", "ex")
CELL_COLOURS: tuple[str, ...] = ("magenta", "cyan", "orange", "white")


@registry.register("pretrain_set", "cells-16")
class Cells16:
    """16 shape×colour classes (shapes and colours seq-vqa never uses), one object in a random cell
    of the 8-pixel patch grid, drawn as seq-vqa draws its objects (RGB, 32×32)."""

    classes = 16
    per_class = 300
    epochs = 10
    lr = 1e-3

    def draw(self, per_class: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels, _ = draw_cell_objects(per_class, image_size, np.random.default_rng(seed))
        return images, labels


def draw_cell_objects(
    per_class: int, image_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cells-16's images: uint8 [n,3,H,W], int64 labels [n] (shape-major) and bool object masks [n,H,W]."""
    classes = [(shape, colour) for shape in CELL_SHAPES for colour in CELL_COLOURS]
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), per_class)
    settings = SceneSettings(image_size=image_size)
    images = np.empty((len(labels), 3, image_size, image_size), dtype=np.uint8)
    masks = np.empty((len(labels), image_size, image_size), dtype=bool)
    for i, label in enumerate(labels):
        shape, colour = classes[label]
        objects = place_objects([(shape, colour, SIZES[int(rng.integers(len(SIZES)))])], rng, image_size)
        images[i], object_masks = render_scene(objects, rng, settings)
        masks[i] = object_masks[0]
    return images, labels, masks


@registry.register("pretrain_set", "text-15")
class Text15:
    """15 procedural text classes: (class adjective, class noun) pairs that no task uses, in split-text's
    grammar and filler (sentences of half the backbone's length up to all of it, 24–48 words at
    split-text's default), for the text model (``TextViT``)."""

    objective = "text-classification"
    classes = 15
    per_class = 200
    epochs = 6
    lr = 1e-3
    phrases_per_sentence = (2, 3)

    def draw(self, per_class: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [n, 2, 1, L] sentences (``text_as_patches``) of L/2..L words (L = ``image_size``), labels."""
        sentences = draw_sentences(
            lexicon().phrases(pretrain_pairs(self.classes)),
            per_class,
            np.random.default_rng(seed),
            min_length=image_size // 2,
            max_length=image_size,
            phrases_per_sentence=self.phrases_per_sentence,
        )
        return text_as_patches(sentences.ids), sentences.labels


@registry.register("pretrain_set", "scenes-15")
class Scenes15:
    """shapes-15's classes, each as one object among three distractors, at a relevant share drawn from
    [0.05, 0.3] per image: split-shapes-distractors' scenes with classes that no task uses (the distractors
    are the same kind of pair: neither a task class nor a pretraining class, sharing no shape or colour
    with the image's class)."""

    classes = 15
    per_class = 200
    epochs = 10
    lr = 1e-3
    shares = (0.05, 0.3)
    distractors = 3
    distractor_share = 0.05

    def draw(self, per_class: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        classes = pretrain_shape_classes(self.classes)
        labels = np.repeat(np.arange(self.classes, dtype=np.int64), per_class)
        pools = [distractor_pairs((pair,)) for pair in classes]
        images = np.stack(
            [
                draw_scene(
                    classes[label],
                    pools[label],
                    rng,
                    image_size=image_size,
                    relevant_share=float(rng.uniform(*self.shares)),
                    distractors=self.distractors,
                    distractor_share=self.distractor_share,
                    clutter=6,
                ).image
                for label in labels
            ]
        )
        return images, labels
