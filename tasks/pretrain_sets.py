"""Procedural pretraining sets: classes that no task uses (DESIGN, "Models must learn").

Each entry draws its images and names the recipe that pretrains a backbone on
them; ``benchmark.pretrain`` runs the recipe and names the weights file by its
hash.
"""

from __future__ import annotations

import numpy as np

from benchmark import registry
from tasks.procedural import glyph_prototypes, pretrain_shape_classes, render_glyphs, render_shapes


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
