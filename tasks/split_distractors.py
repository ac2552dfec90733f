"""split-shapes-distractors: scenes where little of the image matters.

Each image holds one object of its class (one of split-shapes' ten shape×colour
classes) and ``distractors`` other objects, each a shape of one class in the
colour of another — a pair that is neither a task class nor a class of the
pretraining set, and that shares no shape or colour with the classes of the
image's own task (so within a task one object decides; the distractors carry
other tasks' shapes and colours) — on split-shapes' clutter. The class object covers
``relevant_share`` of the image's pixels (whatever its shape); each distractor
``distractor_share``, fixed along the share axis so that only the relevant
part changes. Objects never overlap (one pixel apart at least), but a
distractor may share a token with the class object.

The mask of an image is every token that holds a pixel of its class object:
exactly the tokens that decide the class. Its share of the tokens is larger
than ``relevant_share`` by the object's edge tokens, the more so the coarser
the tokens (README, "Scenes where little matters").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.signal import correlate

from benchmark import registry
from benchmark.contracts import BackboneSpec, TaskStream
from tasks.base import check_boundary_overlap, check_geometry, check_model_size, class_incremental
from tasks.procedural import (
    COLOURS,
    SHAPES,
    TASK_SHAPE_CLASSES,
    ShapeClass,
    _background,
    _draw_clutter,
    pretrain_shape_classes,
)

MAX_RELEVANT_SHARE = 0.35  # the widest shape (a bar) still fits the image
MAX_OBJECT_SHARE = 0.6  # class object and distractors together, so that a scene can be placed
PLACEMENT_TRIES = 200
SHAPE_JITTER = 0.15  # rotation (radians) and ±10% radius, as split-shapes draws one mode


def distractor_pairs(avoid: tuple[ShapeClass, ...] = ()) -> tuple[ShapeClass, ...]:
    """Shape×colour pairs that are neither a task class nor a pretraining class (every one has the shape
    of some class and the colour of another), sharing neither shape nor colour with the ``avoid`` classes."""
    taken = {*TASK_SHAPE_CLASSES, *pretrain_shape_classes()}
    shapes, colours = {shape for shape, _ in avoid}, {colour for _, colour in avoid}
    return tuple(
        (shape, colour)
        for shape in SHAPES
        for colour in COLOURS
        if (shape, colour) not in taken and shape not in shapes and colour not in colours
    )


@cache
def shape_area(shape: str, resolution: int = 801) -> float:
    """Area of ``SHAPES[shape]`` at radius 1 (so a shape of radius r covers ``shape_area · r²`` pixels)."""
    axis = np.linspace(-1.5, 1.5, resolution)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return float(SHAPES[shape](y, x).mean() * 3.0**2)


@dataclass(frozen=True)
class PlacedObject:
    """One object of a scene: what it is and where, enough to draw its pixels again."""

    shape: str
    colour: str
    centre: tuple[float, float]  # (y, x) in pixels
    radius: float
    angle: float

    def pixels(self, grid_y: np.ndarray, grid_x: np.ndarray) -> np.ndarray:
        """bool [H, W]: the pixels it covers."""
        dy, dx = (grid_y - self.centre[0]) / self.radius, (grid_x - self.centre[1]) / self.radius
        ry = np.cos(self.angle) * dy - np.sin(self.angle) * dx
        rx = np.sin(self.angle) * dy + np.cos(self.angle) * dx
        return SHAPES[self.shape](ry, rx)


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 [3, H, W]
    objects: tuple[PlacedObject, ...]  # the class object first, then the distractors
    class_pixels: np.ndarray  # bool [H, W]


def radius_for(shape: str, share: float, image_size: int) -> float:
    """The radius at which ``shape`` covers ``share`` of an ``image_size``² image."""
    return float(np.sqrt(share * image_size**2 / shape_area(shape)))


def draw_scene(
    target: ShapeClass,
    pairs: tuple[ShapeClass, ...],
    rng: np.random.Generator,
    *,
    image_size: int,
    relevant_share: float,
    distractors: int,
    distractor_share: float,
    clutter: int,
    noise: float = 18.0,
) -> Scene:
    """One image: background and clutter, ``distractors`` objects (each a pair of ``pairs``), then the
    class object on top."""
    grid_y, grid_x = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    for _ in range(PLACEMENT_TRIES):
        main = _place(target, relevant_share, image_size, rng)
        main_pixels = main.pixels(grid_y, grid_x)
        taken = _grown(main_pixels)
        others: list[tuple[PlacedObject, np.ndarray]] = []
        for _ in range(distractors):
            pair = pairs[int(rng.integers(len(pairs)))]
            placed = _place_apart(pair, distractor_share, rng, taken, grid_y, grid_x)
            if placed is None:
                break
            others.append(placed)
            taken |= _grown(placed[1])
        if len(others) == distractors:
            break
    else:
        raise ValueError(f"cannot place {distractors} distractors beside a class object of this size")
    canvas = _background(rng, image_size, noise)
    _draw_clutter(canvas, rng, clutter, grid_y, grid_x)
    for placed, pixels in (*others, (main, main_pixels)):
        rgb = np.asarray(COLOURS[placed.colour], dtype=np.float32) + rng.normal(0.0, 10.0, size=3)
        canvas[:, pixels] = np.clip(rgb, 0, 255)[:, None]
    return Scene(canvas.astype(np.uint8), (main, *(o for o, _ in others)), main_pixels)


def touched_tokens(pixels: np.ndarray, patch_size: int) -> np.ndarray:
    """bool [n, H, W] → bool [n, tokens]: the patches (row-major) that hold at least one True pixel."""
    n, height, width = pixels.shape
    blocks = pixels.reshape(n, height // patch_size, patch_size, width // patch_size, patch_size)
    return blocks.any(axis=(2, 4)).reshape(n, -1)


def _drawn(pair: ShapeClass, share: float, image_size: int, rng: np.random.Generator) -> tuple[float, float]:
    """An object's radius (its share of the image, ±10%) and its small rotation."""
    radius = radius_for(pair[0], share, image_size) * float(rng.uniform(0.9, 1.1))
    return radius, float(rng.uniform(-SHAPE_JITTER, SHAPE_JITTER))


def _place(pair: ShapeClass, share: float, image_size: int, rng: np.random.Generator) -> PlacedObject:
    """The class object: anywhere its radius keeps it inside the image, as split-shapes places it."""
    radius, angle = _drawn(pair, share, image_size, rng)
    margin = min(radius + 1.0, image_size / 2)
    centre_y, centre_x = rng.uniform(margin, image_size - margin, size=2)
    return PlacedObject(pair[0], pair[1], (float(centre_y), float(centre_x)), radius, angle)


def _place_apart(
    pair: ShapeClass,
    share: float,
    rng: np.random.Generator,
    taken: np.ndarray,
    grid_y: np.ndarray,
    grid_x: np.ndarray,
) -> tuple[PlacedObject, np.ndarray] | None:
    """A distractor wholly inside the image that covers no ``taken`` pixel, and its pixels, drawn uniformly
    among the places where it fits (one correlation of ``taken`` with its pixels); None if none."""
    size = taken.shape[0]
    radius, angle = _drawn(pair, share, size, rng)
    offset = rng.uniform(0.0, 1.0, size=2)
    reach = int(np.ceil(1.5 * radius)) + 1
    local = np.arange(-reach, reach + 1, dtype=np.float32)
    stencil = PlacedObject(pair[0], pair[1], (float(offset[0]), float(offset[1])), radius, angle).pixels(
        *np.meshgrid(local, local, indexing="ij")
    )
    blocked = np.pad(taken, reach, constant_values=True)  # outside the image counts as taken
    hits = correlate(blocked.astype(np.float32), stencil.astype(np.float32), mode="valid", method="fft")
    free = np.flatnonzero(hits < 0.5)
    for pick in rng.permutation(free)[:PLACEMENT_TRIES]:
        centre = (float(pick // size + offset[0]), float(pick % size + offset[1]))
        placed = PlacedObject(pair[0], pair[1], centre, radius, angle)
        pixels = placed.pixels(grid_y, grid_x)
        # Exact check in image coordinates (float rounding at the rim), and wholly inside the image.
        if not (pixels & taken).any() and pixels.sum() == stencil.sum():
            return placed, pixels
    return None


def _grown(pixels: np.ndarray) -> np.ndarray:
    """The pixels and their 8 neighbours: objects stay at least one pixel apart."""
    grown = pixels.copy()
    grown[1:] |= pixels[:-1]
    grown[:-1] |= pixels[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return grown


@registry.register("task", "split-shapes-distractors")
class SplitShapesDistractors:
    """split-shapes' ten classes as one object among distractors, 5 tasks of 2 classes, masks of the class
    object's tokens; ``relevant_share`` of the image decides the class.

    Granularity as split-shapes: ``image_size`` and ``patch_size`` (32/4 by default: 64 tokens). The
    backbone is pretrained on ``scenes-15``: the same kind of scene with the 15 classes no task uses.
    """

    def __init__(
        self,
        *,
        train_per_class: int = 150,
        test_per_class: int = 60,
        image_size: int = 32,
        patch_size: int = 4,
        relevant_share: float = 0.15,
        distractors: int = 3,
        distractor_share: float = 0.05,
        clutter: int = 6,
        classes_per_task: int = 2,
        data_seed: int = 0,
        epochs: int = 10,
        boundary_overlap: float = 0.0,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
    ) -> None:
        check_geometry(image_size, patch_size)
        check_model_size(embed_dim, depth, num_heads)
        check_boundary_overlap(boundary_overlap)
        if not 0.0 < relevant_share <= MAX_RELEVANT_SHARE:
            raise ValueError(f"relevant_share must be in (0, {MAX_RELEVANT_SHARE}], got {relevant_share:g}")
        if distractors < 0:
            raise ValueError(f"distractors must be non-negative, got {distractors}")
        if not 0.0 < distractor_share <= MAX_RELEVANT_SHARE:
            raise ValueError(
                f"distractor_share must be in (0, {MAX_RELEVANT_SHARE}], got {distractor_share:g}"
            )
        crowd = relevant_share + distractors * distractor_share
        if crowd > MAX_OBJECT_SHARE:
            raise ValueError(
                f"objects would cover {crowd:.0%} of the image (relevant_share + distractors × "
                f"distractor_share), more than {MAX_OBJECT_SHARE:.0%}: no room to place them apart"
            )
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        if train_per_class < 1 or test_per_class < 1:
            raise ValueError("train_per_class and test_per_class must be at least 1")
        self.train_per_class = train_per_class
        self.test_per_class = test_per_class
        self.image_size = image_size
        self.patch_size = patch_size
        self.relevant_share = relevant_share
        self.distractors = distractors
        self.distractor_share = distractor_share
        self.clutter = clutter
        self.classes_per_task = classes_per_task
        self.data_seed = data_seed
        self.epochs = epochs
        self.boundary_overlap = boundary_overlap
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads

    def distractor_pool(self, label: int) -> tuple[ShapeClass, ...]:
        """The pairs a distractor of class ``label``'s images is drawn from: no shape or colour of its
        task's classes (so one object decides within the task), only other tasks' shapes and colours."""
        first = label - label % self.classes_per_task
        return distractor_pairs(TASK_SHAPE_CLASSES[first : first + self.classes_per_task])

    def scenes(self) -> tuple[list[Scene], np.ndarray]:
        """Every scene of the stream (class-major, the first ``test_per_class`` of each class are test)
        and their labels: what ``build`` splits, with each object's placement for checking."""
        rng = np.random.default_rng(self.data_seed)
        per_class = self.train_per_class + self.test_per_class
        labels = np.repeat(np.arange(len(TASK_SHAPE_CLASSES), dtype=np.int64), per_class)
        pools = [self.distractor_pool(label) for label in range(len(TASK_SHAPE_CLASSES))]
        scenes = [
            draw_scene(
                TASK_SHAPE_CLASSES[label],
                pools[label],
                rng,
                image_size=self.image_size,
                relevant_share=self.relevant_share,
                distractors=self.distractors,
                distractor_share=self.distractor_share,
                clutter=self.clutter,
            )
            for label in labels
        ]
        return scenes, labels

    def build(self) -> TaskStream:
        scenes, labels = self.scenes()
        images = np.stack([scene.image for scene in scenes])
        masks = touched_tokens(np.stack([scene.class_pixels for scene in scenes]), self.patch_size)
        per_class = self.train_per_class + self.test_per_class
        position = np.arange(len(labels)) % per_class
        test_index = np.flatnonzero(position < self.test_per_class)
        train_index = np.flatnonzero(position >= self.test_per_class)
        experiences = class_incremental(
            images,
            labels,
            train_index,
            test_index,
            list(range(len(TASK_SHAPE_CLASSES))),
            self.classes_per_task,
            masks,
            boundary_overlap=self.boundary_overlap,
            rng=np.random.default_rng([self.data_seed, 1]),
        )
        backbone = BackboneSpec(
            image_size=self.image_size,
            channels=3,
            patch_size=self.patch_size,
            pretrain_set="scenes-15",
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
        )
        return TaskStream(
            "split-shapes-distractors",
            experiences,
            len(TASK_SHAPE_CLASSES),
            backbone,
            has_masks=True,
            epochs=self.epochs,
        )
