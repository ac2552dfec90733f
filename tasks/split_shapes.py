"""split-shapes: procedural coloured shapes on clutter, with per-patch ground-truth masks."""

from __future__ import annotations

import numpy as np

from benchmark import registry
from benchmark.contracts import BackboneSpec, TaskStream
from tasks.base import check_boundary_overlap, class_incremental, class_order, pixel_mask_to_patches
from tasks.procedural import TASK_SHAPE_CLASSES, render_shapes


@registry.register("task", "split-shapes")
class SplitShapes:
    """Procedural 32×32 shape×colour images on clutter, 16 tokens, 5 tasks of 2 classes, with object masks.

    Regime parameters: ``modes_per_class`` appearance modes per class (1: one prototype; k: k
    prototypes of distinct rotation, size, aspect and shade), ``object_scale`` the object's diameter
    as a fraction of the image side, ``boundary_overlap`` the fraction of each task's training data
    drawn from the next task's classes (``tasks.base.blur_boundaries``; 0: sharp boundaries).
    ``class_order_seed`` draws the order in which classes form the tasks (None: 0, 1, …); a grid with
    ``stream_seeds = true`` sets it and ``data_seed`` to each cell's seed.
    """

    def __init__(
        self,
        *,
        train_per_class: int = 150,
        test_per_class: int = 60,
        image_size: int = 32,
        patch_size: int = 8,
        object_scale: float = 0.35,
        clutter: int = 6,
        modes_per_class: int = 1,
        classes_per_task: int = 2,
        mask_min_fraction: float = 0.25,
        data_seed: int = 0,
        epochs: int = 3,
        boundary_overlap: float = 0.0,
        class_order_seed: int | None = None,
    ) -> None:
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if not 0.05 <= object_scale <= 0.9:
            raise ValueError(f"object_scale must be in [0.05, 0.9], got {object_scale}")
        if modes_per_class < 1:
            raise ValueError(f"modes_per_class must be at least 1, got {modes_per_class}")
        if train_per_class < 1 or test_per_class < 1:
            raise ValueError("train_per_class and test_per_class must be at least 1")
        check_boundary_overlap(boundary_overlap)
        self.order = class_order(len(TASK_SHAPE_CLASSES), class_order_seed)
        self.train_per_class = train_per_class
        self.test_per_class = test_per_class
        self.image_size = image_size
        self.patch_size = patch_size
        self.object_scale = object_scale
        self.clutter = clutter
        self.modes_per_class = modes_per_class
        self.classes_per_task = classes_per_task
        self.mask_min_fraction = mask_min_fraction
        self.data_seed = data_seed
        self.epochs = epochs
        self.boundary_overlap = boundary_overlap

    def build(self) -> TaskStream:
        rng = np.random.default_rng(self.data_seed)
        per_class = self.train_per_class + self.test_per_class
        images, labels, pixel_masks = render_shapes(
            TASK_SHAPE_CLASSES,
            per_class,
            rng,
            image_size=self.image_size,
            object_scale=self.object_scale,
            clutter=self.clutter,
            modes_per_class=self.modes_per_class,
        )
        masks = pixel_mask_to_patches(pixel_masks, self.patch_size, self.mask_min_fraction)
        # Images are drawn i.i.d., so the first images of each class are the test split.
        position = np.arange(len(labels)) % per_class
        test_index = np.flatnonzero(position < self.test_per_class)
        train_index = np.flatnonzero(position >= self.test_per_class)
        experiences = class_incremental(
            images,
            labels,
            train_index,
            test_index,
            self.order,
            self.classes_per_task,
            masks,
            boundary_overlap=self.boundary_overlap,
            rng=rng,
        )
        backbone = BackboneSpec(
            image_size=self.image_size, channels=3, patch_size=self.patch_size, pretrain_set="shapes-15"
        )
        return TaskStream(
            "split-shapes", experiences, len(TASK_SHAPE_CLASSES), backbone, has_masks=True, epochs=self.epochs
        )
