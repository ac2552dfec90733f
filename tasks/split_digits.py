"""split-digits: scikit-learn's shipped 8×8 handwritten digits, class-incremental."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from benchmark import registry
from benchmark.contracts import BackboneSpec, TaskStream
from benchmark.splits import stratified_split
from tasks.base import check_boundary_overlap, class_incremental, class_order


@registry.register("task", "split-digits")
class SplitDigits:
    """scikit-learn's 8×8 digits (shipped, no download), 5 tasks of 2 classes, patch 2 (16 tokens).

    ``boundary_overlap``: the fraction of each task's training data drawn from the next task's
    classes (``tasks.base.blur_boundaries``; 0: sharp boundaries). ``class_order_seed`` draws the
    order in which classes form the tasks (None: 0, 1, …); a grid with ``stream_seeds = true`` sets it
    and ``data_seed`` to each cell's seed.
    """

    def __init__(
        self,
        *,
        test_fraction: float = 0.25,
        patch_size: int = 2,
        data_seed: int = 0,
        epochs: int = 10,
        boundary_overlap: float = 0.0,
        class_order_seed: int | None = None,
    ) -> None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if 8 % patch_size:
            raise ValueError(f"patch_size must divide 8, got {patch_size}")
        check_boundary_overlap(boundary_overlap)
        self.order = class_order(10, class_order_seed)
        self.test_fraction = test_fraction
        self.patch_size = patch_size
        self.data_seed = data_seed
        self.epochs = epochs
        self.boundary_overlap = boundary_overlap

    def build(self) -> TaskStream:
        digits = load_digits()
        # The digits hold 0..16 grey levels: rescale to the uint8 range they are stored in.
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
        labels = digits.target.astype(np.int64)
        rng = np.random.default_rng(self.data_seed)
        train_index, test_index = stratified_split(labels, self.test_fraction, rng)
        experiences = class_incremental(
            images,
            labels,
            train_index,
            test_index,
            self.order,
            2,
            boundary_overlap=self.boundary_overlap,
            rng=rng,
        )
        backbone = BackboneSpec(
            image_size=8, channels=1, patch_size=self.patch_size, pretrain_set="glyphs-20"
        )
        return TaskStream("split-digits", experiences, 10, backbone, has_masks=False, epochs=self.epochs)
