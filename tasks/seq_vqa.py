"""seq-vqa: procedural visual question answering whose question distribution shifts from task to task.

Four tasks on the same kind of scene (2–4 coloured shapes on clutter, 32×32,
16 tokens, one object to a patch), like a learner moving from VQA v2 to
CLEVR-style reasoning:

1. attribute: "what colour is the circle ?", "what shape is the red object ?", "what size is ...";
2. counting: "how many red objects ?", "how many squares ?" (zero … four);
3. relations: "what shape is left of the square ?", "what colour is above the red object ?";
4. existence and comparison: "is there a blue cross ?", "are the circle and the square the same colour ?".

A sample is an image, a question (``train_text``: int64 ids over ``vocabulary``,
padded with 0 to ``QUESTION_LENGTH``) and its answer id (over ``answers``,
shared by every task: one head). Answers are balanced exactly within each
family of questions: the largest answer share of the four tasks is 1/6, 1/5,
1/8 and 1/2, and a model blind to the image, which can still tell the question's
family, scores 0.34 / 0.21 / 0.31 / 0.50 at the defaults (each training
question's most common answer, looked up for the test questions). The mask of a sample marks
the patches of the objects its question is about: the queried object, the
counted ones, the anchor and the answer of a relation, the two compared ones,
the found ones; for a count of zero or an absent object, every object, since
each must be looked at to answer. With one object to a patch, the mask is
exactly the referents' patches (a patch counts when ``mask_min_fraction`` of it
is a referent, and each referent has at least its best-covered patch).

The backbone (32 px, patch 8) is pretrained on "cells-16": single objects in a
cell of the same grid, of shapes and colours that seq-vqa never shows, so the
ViT has learned to see an object in a cell but never a question, nor any of
seq-vqa's answers. (split-shapes' "shapes-15" backbone, trained on objects three
times larger, did worse than no pretraining: README, "Continual VQA".)
"""

from __future__ import annotations

import numpy as np

from benchmark import registry
from benchmark.contracts import BackboneSpec, Experience, TaskStream
from tasks.base import pixel_mask_to_patches
from tasks.vqa_scenes import (
    ANSWERS,
    FAMILIES,
    QUESTION_LENGTH,
    TASK_FAMILIES,
    VOCABULARY,
    SceneSettings,
    VqaSample,
    draw_samples,
    task_answers,
    tokenise,
)

IMAGE_SIZE = 32
PATCH_SIZE = 8
# Each split of a task holds every (family, answer) pair at least once.
MIN_PER_TASK = max(sum(len(FAMILIES[f][1]) for f in families) for families in TASK_FAMILIES)


@registry.register("task", "seq-vqa")
class SeqVqa:
    """Procedural VQA on 32×32 shape scenes, 4 tasks (attribute, count, relation, exist/compare), masks."""

    def __init__(
        self,
        *,
        train_per_task: int = 4000,
        test_per_task: int = 300,
        image_size: int = IMAGE_SIZE,
        clutter: int = 4,
        mask_min_fraction: float = 0.125,
        data_seed: int = 0,
        epochs: int = 10,
    ) -> None:
        if image_size != IMAGE_SIZE:
            raise ValueError(
                f"image_size must be {IMAGE_SIZE} (object sizes are in pixels), got {image_size}"
            )
        if train_per_task < MIN_PER_TASK or test_per_task < MIN_PER_TASK:
            raise ValueError(
                f"train_per_task and test_per_task must be at least {MIN_PER_TASK} (one per family and "
                f"answer), got {train_per_task} and {test_per_task}"
            )
        if clutter < 0:
            raise ValueError(f"clutter must be at least 0, got {clutter}")
        if not 0.0 < mask_min_fraction <= 1.0:
            raise ValueError(f"mask_min_fraction must be in (0, 1], got {mask_min_fraction}")
        if data_seed < 0:
            raise ValueError(f"data_seed must be at least 0, got {data_seed}")
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        self.train_per_task = train_per_task
        self.test_per_task = test_per_task
        self.settings = SceneSettings(image_size=image_size, clutter=clutter)
        self.mask_min_fraction = mask_min_fraction
        self.data_seed = data_seed
        self.epochs = epochs

    def samples(self, task: int, split: str) -> list[VqaSample]:
        """The samples of one task's ``"train"`` or ``"test"`` split, with their scene ground truth."""
        count = self.train_per_task if split == "train" else self.test_per_task
        # One generator per (task, split): a split does not change when another one's size does.
        rng = np.random.default_rng([self.data_seed, task, ("train", "test").index(split)])
        return draw_samples(TASK_FAMILIES[task], count, rng, self.settings)

    def arrays(self, samples: list[VqaSample]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """uint8 images [n,3,H,W], int64 answer ids [n], bool patch masks [n, tokens], int64 text [n, L]."""
        images = np.stack([sample.image for sample in samples])
        labels = np.array([ANSWERS.index(sample.answer) for sample in samples], dtype=np.int64)
        masks = np.stack([self.referent_patches(sample) for sample in samples])
        text = tokenise([sample.question for sample in samples], QUESTION_LENGTH)
        return images, labels, masks, text

    def referent_patches(self, sample: VqaSample) -> np.ndarray:
        """bool [tokens]: patches of the referents, each referent at least its best-covered patch."""
        per_object = pixel_mask_to_patches(
            sample.object_masks[list(sample.referents)], PATCH_SIZE, self.mask_min_fraction
        )
        return per_object.any(axis=0)

    def build(self) -> TaskStream:
        experiences = []
        for task, families in enumerate(TASK_FAMILIES):
            train_images, train_labels, train_masks, train_text = self.arrays(self.samples(task, "train"))
            test_images, test_labels, test_masks, test_text = self.arrays(self.samples(task, "test"))
            experiences.append(
                Experience(
                    classes=tuple(ANSWERS.index(answer) for answer in task_answers(families)),
                    train_images=train_images,
                    train_labels=train_labels,
                    test_images=test_images,
                    test_labels=test_labels,
                    train_masks=train_masks,
                    test_masks=test_masks,
                    train_text=train_text,
                    test_text=test_text,
                )
            )
        backbone = BackboneSpec(
            image_size=IMAGE_SIZE, channels=3, patch_size=PATCH_SIZE, pretrain_set="cells-16"
        )
        return TaskStream(
            "seq-vqa",
            tuple(experiences),
            len(ANSWERS),
            backbone,
            has_masks=True,
            epochs=self.epochs,
            vocabulary=VOCABULARY,
            answers=ANSWERS,
        )
