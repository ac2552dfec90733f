"""Procedural images with ground truth: coloured shapes on clutter, and grey stroke glyphs.

Everything is drawn with numpy from an explicit generator, so a seed gives the
same pixels on every machine. Tasks draw their classes from these primitives;
the pretraining sets draw *other* classes from the same primitives, so that a
backbone learns to see shapes and colours without ever seeing a task's class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Shape masks on a grid of offsets (dy, dx) normalised by the object radius.
ShapeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

SHAPES: dict[str, ShapeFn] = {
    "circle": lambda y, x: y**2 + x**2 <= 1.0,
    "square": lambda y, x: (np.abs(y) <= 0.8) & (np.abs(x) <= 0.8),
    "triangle": lambda y, x: (y <= 0.8) & (y >= -0.9 + 2.0 * np.abs(x)),
    "diamond": lambda y, x: np.abs(y) + np.abs(x) <= 1.0,
    "ring": lambda y, x: (y**2 + x**2 <= 1.0) & (y**2 + x**2 >= 0.3),
    "cross": lambda y, x: ((np.abs(y) <= 0.3) | (np.abs(x) <= 0.3)) & (np.abs(y) <= 1) & (np.abs(x) <= 1),
    "hbar": lambda y, x: (np.abs(y) <= 0.35) & (np.abs(x) <= 1.0),
    "ex": lambda y, x: (
        ((np.abs(y - x) <= 0.4) | (np.abs(y + x) <= 0.4)) & (np.abs(y) <= 0.9) & (np.abs(x) <= 0.9)
    ),
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 200, 210),
    "orange": (240, 130, 30),
    "white": (235, 235, 235),
}

ShapeClass = tuple[str, str]  # (shape, colour)

# The ten classes of split-shapes, two per task; no pretraining set uses them.
TASK_SHAPE_CLASSES: tuple[ShapeClass, ...] = (
    ("circle", "red"),
    ("square", "blue"),
    ("triangle", "green"),
    ("diamond", "yellow"),
    ("ring", "magenta"),
    ("cross", "cyan"),
    ("hbar", "orange"),
    ("ex", "white"),
    ("square", "red"),
    ("circle", "green"),
)


def pretrain_shape_classes(count: int = 15, seed: int = 12345) -> tuple[ShapeClass, ...]:
    """``count`` shape×colour classes that no task uses, fixed by ``seed``."""
    every = [(shape, colour) for shape in SHAPES for colour in COLOURS]
    unused = [pair for pair in every if pair not in TASK_SHAPE_CLASSES]
    order = np.random.default_rng(seed).permutation(len(unused))[:count]
    return tuple(unused[i] for i in sorted(order))


def class_prototypes(
    classes: tuple[ShapeClass, ...], modes_per_class: int, rng: np.random.Generator
) -> list[list[dict[str, float]]]:
    """Per class, ``modes_per_class`` appearance modes (size, aspect, shade, rotation)."""
    prototypes = []
    for _ in classes:
        modes = []
        for mode in range(modes_per_class):
            if modes_per_class == 1:
                modes.append({"scale": 1.0, "aspect": 1.0, "shade": 1.0, "rotation": 0.0})
            else:
                modes.append(
                    {
                        "scale": float(rng.uniform(0.75, 1.2)),
                        "aspect": float(rng.uniform(0.7, 1.3)),
                        "shade": float(rng.uniform(0.7, 1.0)),
                        "rotation": float(np.pi * mode / modes_per_class),
                    }
                )
        prototypes.append(modes)
    return prototypes


def render_shapes(
    classes: tuple[ShapeClass, ...],
    per_class: int,
    rng: np.random.Generator,
    image_size: int = 32,
    object_scale: float = 0.35,
    clutter: int = 6,
    noise: float = 18.0,
    modes_per_class: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``per_class`` images of each class: (uint8 [n,3,H,W], int64 labels [n], bool masks [n,H,W]).

    One object per image at a random place, on a noisy background with
    ``clutter`` thin lines and dots in random colours; ``object_scale`` is the
    object's diameter as a fraction of the image side. The mask is the object's
    pixels: the ground truth that token attribution is scored against.
    """
    prototypes = class_prototypes(classes, modes_per_class, rng)
    n = per_class * len(classes)
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    masks = np.zeros((n, image_size, image_size), dtype=bool)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), per_class)
    grid_y, grid_x = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    for i, label in enumerate(labels):
        shape, colour = classes[label]
        mode = prototypes[label][int(rng.integers(modes_per_class))]
        canvas = _background(rng, image_size, noise)
        _draw_clutter(canvas, rng, clutter, grid_y, grid_x)
        radius = 0.5 * object_scale * image_size * mode["scale"] * rng.uniform(0.85, 1.15)
        margin = min(radius + 1.0, image_size / 2)
        centre_y, centre_x = rng.uniform(margin, image_size - margin, size=2)
        angle = mode["rotation"] + rng.uniform(-0.15, 0.15)
        dy, dx = (grid_y - centre_y) / radius, (grid_x - centre_x) / radius
        ry = np.cos(angle) * dy - np.sin(angle) * dx
        rx = (np.sin(angle) * dy + np.cos(angle) * dx) * mode["aspect"]
        inside = SHAPES[shape](ry, rx)
        rgb = np.asarray(COLOURS[colour], dtype=np.float32) * mode["shade"]
        rgb = rgb + rng.normal(0.0, 10.0, size=3)
        canvas[:, inside] = np.clip(rgb, 0, 255)[:, None]
        images[i] = canvas.astype(np.uint8)
        masks[i] = inside
    return images, labels, masks


def _background(rng: np.random.Generator, size: int, noise: float) -> np.ndarray:
    base = rng.uniform(40, 110)
    tint = rng.normal(0.0, 8.0, size=(3, 1, 1))
    return np.clip(base + tint + rng.normal(0.0, noise, size=(3, size, size)), 0, 255).astype(np.float32)


def _draw_clutter(
    canvas: np.ndarray, rng: np.random.Generator, count: int, grid_y: np.ndarray, grid_x: np.ndarray
) -> None:
    size = canvas.shape[1]
    for _ in range(count):
        rgb = rng.uniform(0, 255, size=3)
        y0, x0, y1, x1 = rng.uniform(0, size, size=4)
        if rng.random() < 0.5:  # a thin line segment
            length = max(np.hypot(y1 - y0, x1 - x0), 1e-3)
            t = np.clip(((grid_y - y0) * (y1 - y0) + (grid_x - x0) * (x1 - x0)) / length**2, 0, 1)
            dist = np.hypot(grid_y - (y0 + t * (y1 - y0)), grid_x - (x0 + t * (x1 - x0)))
            stroke = dist <= 0.5
        else:  # a small dot
            stroke = (grid_y - y0) ** 2 + (grid_x - x0) ** 2 <= rng.uniform(0.5, 2.0)
        canvas[:, stroke] = rgb[:, None]


def glyph_prototypes(count: int, rng: np.random.Generator, strokes: int = 3) -> list[np.ndarray]:
    """``count`` stroke glyphs, each a [strokes, 4] array of segment end points on a unit square."""
    anchors = np.linspace(0.15, 0.85, 4)
    glyphs = []
    for _ in range(count):
        points = anchors[rng.integers(0, 4, size=(strokes, 4))]
        glyphs.append(points)
    return glyphs


def render_glyphs(
    glyphs: list[np.ndarray], per_class: int, rng: np.random.Generator, image_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Grey 8×8 stroke glyphs like scikit-learn's digits: (uint8 [n,1,H,W], int64 labels)."""
    n = per_class * len(glyphs)
    images = np.empty((n, 1, image_size, image_size), dtype=np.uint8)
    labels = np.repeat(np.arange(len(glyphs), dtype=np.int64), per_class)
    hi = 4 * image_size  # draw at 4× and average down, as the digits were scanned
    grid_y, grid_x = np.mgrid[0:hi, 0:hi].astype(np.float32) / hi
    for i, label in enumerate(labels):
        canvas = np.zeros((hi, hi), dtype=np.float32)
        shift = rng.normal(0.0, 0.05, size=2)
        width = rng.uniform(0.06, 0.1)
        for y0, x0, y1, x1 in glyphs[label] + np.concatenate([shift, shift]):
            length_sq = max((y1 - y0) ** 2 + (x1 - x0) ** 2, 1e-6)
            t = np.clip(((grid_y - y0) * (y1 - y0) + (grid_x - x0) * (x1 - x0)) / length_sq, 0, 1)
            dist = np.hypot(grid_y - (y0 + t * (y1 - y0)), grid_x - (x0 + t * (x1 - x0)))
            canvas = np.maximum(canvas, dist <= width)
        small = canvas.reshape(image_size, 4, image_size, 4).mean(axis=(1, 3))
        small = small * rng.uniform(0.8, 1.0) + rng.normal(0.0, 0.03, size=small.shape)
        images[i, 0] = np.clip(small * 255, 0, 255).astype(np.uint8)
    return images, labels
