"""seq-captions: continual image captioning on procedural scenes, five tasks split by object category.

As the continual-captioning benchmarks split COCO by object category (RATT,
Del Chiaro et al., NeurIPS 2020), each task holds the scenes whose main object
has one shape (circle, square, triangle, diamond, cross). By default a second
object, when present, takes a shape no task uses as its category (ring, bar,
x), so that no image names two tasks' categories: RATT drops the COCO images
that do. ``second_object="any"`` lets it take any shape instead.

A sample's target is one of its reference captions (int64 [L]: bos, words,
eos, then 0), drawn with the data seed; ``test_references`` holds every
reference of each test image for the metric (CIDEr), and ``test_labels`` the
first one encoded. Masks mark the patches of the objects the caption mentions
(for a test image: any of its references). ``num_classes`` is the vocabulary
size: the width of the captioner's output layer; the stream's objective is
``captioning`` (``benchmark.objectives``).

Per-class selection (herding, CRAIG, GradMatch, per-class budgets) groups the
samples by ``train_categories``: the main object's shape × colour
(``shape_index · 8 + colour_index``, 8 per task). The shape alone is the task,
so grouping by it would make per-class selection per-task; the colour is named
in almost every caption, so each group shares a caption mode.
"""

from __future__ import annotations

import numpy as np

from benchmark import registry
from benchmark.contracts import BackboneSpec, Experience, TaskStream
from tasks.base import pixel_mask_to_patches
from tasks.caption_scenes import (
    CATEGORY_SHAPES,
    DISTRACTOR_SHAPES,
    MAX_REFERENCES,
    Caption,
    Scene,
    caption_vocabulary,
    describe,
    draw_scene,
    longest_caption_words,
)
from tasks.caption_text import encode_captions
from tasks.procedural import COLOURS

SECOND_OBJECT_CHOICES = ("distractor", "any")
COLOUR_INDEX: dict[str, int] = {colour: index for index, colour in enumerate(COLOURS)}


@registry.register("task", "seq-captions")
class SeqCaptions:
    """Procedural 32×32 captioned scenes, 16 tokens, 5 tasks split by the main object's shape, with masks."""

    def __init__(
        self,
        *,
        train_per_task: int = 500,
        test_per_task: int = 100,
        references_per_image: int = 4,
        two_object_fraction: float = 0.5,
        second_object: str = "distractor",
        clutter: int = 3,
        image_size: int = 32,
        patch_size: int = 8,
        mask_min_fraction: float = 0.25,
        max_length: int = 0,
        data_seed: int = 0,
        epochs: int = 8,
    ) -> None:
        needed = longest_caption_words() + 2
        if isinstance(train_per_task, bool) or not isinstance(train_per_task, int) or train_per_task < 1:
            raise ValueError(f"train_per_task must be a positive integer, got {train_per_task!r}")
        if isinstance(test_per_task, bool) or not isinstance(test_per_task, int) or test_per_task < 1:
            raise ValueError(f"test_per_task must be a positive integer, got {test_per_task!r}")
        if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
            raise ValueError(f"data_seed must be a non-negative integer, got {data_seed!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or 0 < max_length < needed:
            raise ValueError(
                f"max_length must be 0 (fit the longest caption) or at least {needed} tokens "
                f"(the longest caption with bos and eos), got {max_length!r}"
            )
        if not 1 <= references_per_image <= MAX_REFERENCES:
            raise ValueError(
                f"references_per_image must be in [1, {MAX_REFERENCES}], got {references_per_image}"
            )
        if not 0.0 <= two_object_fraction <= 1.0:
            raise ValueError(f"two_object_fraction must be in [0, 1], got {two_object_fraction}")
        if second_object not in SECOND_OBJECT_CHOICES:
            raise ValueError(f"second_object must be one of {SECOND_OBJECT_CHOICES}, got {second_object!r}")
        if clutter < 0:
            raise ValueError(f"clutter must be non-negative, got {clutter}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16 to fit two objects, got {image_size}")
        self.train_per_task = train_per_task
        self.test_per_task = test_per_task
        self.references_per_image = references_per_image
        self.two_object_fraction = two_object_fraction
        self.second_object = second_object
        self.clutter = clutter
        self.image_size = image_size
        self.patch_size = patch_size
        self.mask_min_fraction = mask_min_fraction
        self.max_length = max_length or needed
        self.data_seed = data_seed
        self.epochs = epochs

    def build(self) -> TaskStream:
        vocabulary = caption_vocabulary()
        other_shapes = (
            DISTRACTOR_SHAPES if self.second_object == "distractor" else CATEGORY_SHAPES + DISTRACTOR_SHAPES
        )
        experiences = tuple(
            self._experience(category, shape, other_shapes, vocabulary)
            for category, shape in enumerate(CATEGORY_SHAPES)
        )
        backbone = BackboneSpec(
            image_size=self.image_size, channels=3, patch_size=self.patch_size, pretrain_set="shapes-15"
        )
        return TaskStream(
            "seq-captions",
            experiences,
            len(vocabulary),
            backbone,
            has_masks=True,
            epochs=self.epochs,
            vocabulary=vocabulary,
            objective="captioning",
        )

    def _experience(
        self, category: int, shape: str, other_shapes: tuple[str, ...], vocabulary: tuple[str, ...]
    ) -> Experience:
        rng = np.random.default_rng([self.data_seed, category])
        count = self.test_per_task + self.train_per_task
        scenes: list[Scene] = []
        references: list[tuple[Caption, ...]] = []
        for _ in range(count):
            scene = draw_scene(
                shape,
                other_shapes,
                rng,
                image_size=self.image_size,
                two_object_fraction=self.two_object_fraction,
                clutter=self.clutter,
            )
            scenes.append(scene)
            references.append(describe(scene, self.references_per_image, rng, self.image_size))
        images = np.stack([scene.image for scene in scenes])
        # Scenes are drawn i.i.d., so the first ones are the test split.
        test, train = slice(0, self.test_per_task), slice(self.test_per_task, count)
        pick = np.random.default_rng([self.data_seed, category, 1]).integers(
            self.references_per_image, size=self.train_per_task
        )
        train_targets = [refs[i] for refs, i in zip(references[train], pick, strict=True)]
        train_masks = self._patch_masks(scenes[train], [c.mentions for c in train_targets])
        test_mentions = [tuple(sorted({i for c in refs for i in c.mentions})) for refs in references[test]]
        return Experience(
            classes=(category,),
            train_images=images[train],
            train_labels=encode_captions([c.text for c in train_targets], vocabulary, self.max_length),
            test_images=images[test],
            test_labels=encode_captions(
                [refs[0].text for refs in references[test]], vocabulary, self.max_length
            ),
            train_masks=train_masks,
            test_masks=self._patch_masks(scenes[test], test_mentions),
            test_references=tuple(tuple(c.text for c in refs) for refs in references[test]),
            train_categories=np.array(
                [category * len(COLOURS) + COLOUR_INDEX[s.objects[0].colour] for s in scenes[train]],
                dtype=np.int64,
            ),
        )

    def _patch_masks(self, scenes: list[Scene], mentions: list[tuple[int, ...]]) -> np.ndarray:
        pixels = np.stack(
            [scene.masks[list(which)].any(axis=0) for scene, which in zip(scenes, mentions, strict=True)]
        )
        return pixel_mask_to_patches(pixels, self.patch_size, self.mask_min_fraction)
