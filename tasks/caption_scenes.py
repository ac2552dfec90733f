"""Procedural captioned scenes: one or two coloured shapes on a noisy background, described in words.

A scene has a *main* object, whose shape is the scene's category (the task it
belongs to, as COCO images are split by object category), and, in some
scenes, a second object. Every scene gets several reference captions from
varied templates ("a small red triangle above a blue circle", "a blue circle
below a small red triangle", "there is a red triangle", ...), each recording
which objects it mentions, so that a ground-truth token mask can be drawn for
it. Everything is drawn from an explicit numpy generator.
"""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass

import numpy as np

from benchmark.contracts import SPECIAL_TOKENS
from tasks.procedural import COLOURS, SHAPES, _background, _draw_clutter

# The five categories (one task each) and the shapes a second object may take without naming a category.
CATEGORY_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
DISTRACTOR_SHAPES: tuple[str, ...] = ("ring", "hbar", "ex")
SHAPE_WORDS: dict[str, str] = {
    "circle": "circle",
    "square": "square",
    "triangle": "triangle",
    "diamond": "diamond",
    "cross": "cross",
    "ring": "ring",
    "hbar": "bar",
    "ex": "x",
}
# Object diameter as a fraction of the image side, before a ±10% jitter.
SIZE_SCALES: dict[str, float] = {"small": 0.28, "large": 0.45}
# A relation is named only when one axis dominates the offset between the centres by this factor.
RELATION_DOMINANCE = 1.5
_PLACEMENT_TRIES = 200

ONE_OBJECT_TEMPLATES: tuple[str, ...] = (
    "a $ms $mc $mh",
    "a $mc $mh",
    "there is a $ms $mc $mh",
    "a $mc $mh $region",
    "a $ms $mh that is $mc",
    "a picture of a $mc $mh",
)
# (template, indices of the objects it mentions: 0 = main, 1 = second)
TWO_OBJECT_TEMPLATES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("a $ms $mc $mh $relation a $oc $oh", (0, 1)),
    ("a $oc $oh $inverse a $ms $mc $mh", (0, 1)),
    ("a $mc $mh and a $os $oc $oh", (0, 1)),
    ("there is a $ms $mc $mh", (0,)),
    ("a $mc $mh next to a $oc $oh", (0, 1)),
    ("two shapes a $mc $mh and a $oc $oh", (0, 1)),
)
RELATIONS: dict[str, str] = {
    "above": "below",
    "below": "above",
    "to the left of": "to the right of",
    "to the right of": "to the left of",
}
REGIONS: tuple[str, ...] = ("at the top", "at the bottom", "on the left", "on the right", "in the middle")
MAX_REFERENCES = min(len(ONE_OBJECT_TEMPLATES), len(TWO_OBJECT_TEMPLATES))


@dataclass(frozen=True)
class SceneObject:
    shape: str  # a key of ``tasks.procedural.SHAPES``
    colour: str  # a key of ``tasks.procedural.COLOURS``
    size: str  # a key of SIZE_SCALES
    centre: tuple[float, float]  # (y, x) in pixels


@dataclass(frozen=True)
class Scene:
    """A drawn scene: its pixels, its objects (main first) and each object's pixel mask."""

    image: np.ndarray  # uint8 [3, H, W]
    objects: tuple[SceneObject, ...]
    masks: np.ndarray  # bool [objects, H, W]


@dataclass(frozen=True)
class Caption:
    text: str
    mentions: tuple[int, ...]  # indices into Scene.objects


def caption_vocabulary() -> tuple[str, ...]:
    """Special tokens, then every word a template can produce, sorted: fixed, independent of the data."""
    vocabulary = set(SHAPE_WORDS.values()) | set(COLOURS) | set(SIZE_SCALES) | {"an"}
    phrases = [*ONE_OBJECT_TEMPLATES, *(t for t, _ in TWO_OBJECT_TEMPLATES), *RELATIONS, *REGIONS]
    for phrase in phrases:
        vocabulary |= {w for w in phrase.split() if not w.startswith("$")}
    return SPECIAL_TOKENS + tuple(sorted(vocabulary))


def longest_caption_words() -> int:
    """The most words any template can produce (every slot one word, relations as long as they get)."""
    longest_relation = max(RELATIONS, key=lambda r: len(r.split()))
    fill = {"relation": longest_relation, "inverse": longest_relation, "region": max(REGIONS, key=len)}
    texts = [*ONE_OBJECT_TEMPLATES, *(t for t, _ in TWO_OBJECT_TEMPLATES)]
    return max(len(string.Template(t).substitute(_Filler(fill)).split()) for t in texts)


class _Filler(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "w"


def draw_scene(
    main_shape: str,
    other_shapes: tuple[str, ...],
    rng: np.random.Generator,
    *,
    image_size: int = 32,
    two_object_fraction: float = 0.5,
    clutter: int = 3,
    noise: float = 18.0,
) -> Scene:
    """One scene: the main object and, with probability ``two_object_fraction``, a second one.

    Sizes are small or large with equal odds, but two large objects do not fit
    side by side in a small image, so in a two-object scene the second object
    is small whenever the main one is large. The second object is placed so
    that the two do not touch and one axis clearly dominates their offset,
    which makes the relation ("above", "to the left of") unambiguous.
    """
    colours = tuple(COLOURS)
    main_size = ("small", "large")[int(rng.integers(2))]
    radius = _radius(main_size, image_size, rng)
    centre = _place(radius, image_size, rng)
    objects = [SceneObject(main_shape, colours[int(rng.integers(len(colours)))], main_size, centre)]
    radii = [radius]
    if rng.random() < two_object_fraction:
        size = "small" if main_size == "large" else ("small", "large")[int(rng.integers(2))]
        other_radius = _radius(size, image_size, rng)
        for _ in range(_PLACEMENT_TRIES):
            other_centre = _place(other_radius, image_size, rng)
            if _fits_beside(centre, radius, other_centre, other_radius):
                shape = other_shapes[int(rng.integers(len(other_shapes)))]
                colour = colours[int(rng.integers(len(colours)))]
                objects.append(SceneObject(shape, colour, size, other_centre))
                radii.append(other_radius)
                break
    canvas = _background(rng, image_size, noise)
    grid_y, grid_x = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    _draw_clutter(canvas, rng, clutter, grid_y, grid_x)
    masks = np.zeros((len(objects), image_size, image_size), dtype=bool)
    for index, (item, item_radius) in enumerate(zip(objects, radii, strict=True)):
        angle = rng.uniform(-0.15, 0.15)
        dy, dx = (grid_y - item.centre[0]) / item_radius, (grid_x - item.centre[1]) / item_radius
        inside = SHAPES[item.shape](
            np.cos(angle) * dy - np.sin(angle) * dx, np.sin(angle) * dy + np.cos(angle) * dx
        )
        rgb = np.asarray(COLOURS[item.colour], dtype=np.float32) + rng.normal(0.0, 10.0, size=3)
        canvas[:, inside] = np.clip(rgb, 0, 255)[:, None]
        masks[index] = inside
    return Scene(canvas.astype(np.uint8), tuple(objects), masks)


def describe(scene: Scene, count: int, rng: np.random.Generator, image_size: int = 32) -> tuple[Caption, ...]:
    """``count`` reference captions of a scene, each from a different template chosen by ``rng``."""
    main = scene.objects[0]
    slots = {"ms": main.size, "mc": main.colour, "mh": SHAPE_WORDS[main.shape]}
    if len(scene.objects) == 1:
        slots["region"] = _region(main.centre, image_size)
        templates = [(t, (0,)) for t in ONE_OBJECT_TEMPLATES]
    else:
        other = scene.objects[1]
        relation = _relation(main.centre, other.centre)
        slots |= {"os": other.size, "oc": other.colour, "oh": SHAPE_WORDS[other.shape]}
        slots |= {"relation": relation, "inverse": RELATIONS[relation]}
        templates = list(TWO_OBJECT_TEMPLATES)
    if not 1 <= count <= len(templates):
        raise ValueError(f"count must be in [1, {len(templates)}], got {count}")
    chosen = rng.permutation(len(templates))[:count]
    return tuple(
        Caption(_with_articles(string.Template(templates[i][0]).substitute(slots)), templates[i][1])
        for i in chosen
    )


def _with_articles(text: str) -> str:
    """Templates write "a"; English wants "an" before a vowel sound ("an orange ring", "an x")."""
    tokens = text.split()
    for i, (token, following) in enumerate(itertools.pairwise(tokens)):
        if token == "a" and (following[0] in "aeiou" or following == "x"):
            tokens[i] = "an"
    return " ".join(tokens)


def _radius(size: str, image_size: int, rng: np.random.Generator) -> float:
    return 0.5 * SIZE_SCALES[size] * image_size * float(rng.uniform(0.9, 1.1))


def _place(radius: float, image_size: int, rng: np.random.Generator) -> tuple[float, float]:
    margin = min(radius + 1.0, image_size / 2)
    centre_y, centre_x = rng.uniform(margin, image_size - margin, size=2)
    return float(centre_y), float(centre_x)


def _fits_beside(
    centre: tuple[float, float], radius: float, other: tuple[float, float], other_radius: float
) -> bool:
    dy, dx = abs(other[0] - centre[0]), abs(other[1] - centre[1])
    apart = np.hypot(dy, dx) >= radius + other_radius + 1.5
    clear = max(dy, dx) >= RELATION_DOMINANCE * min(dy, dx)
    return bool(apart and clear)


def _relation(main: tuple[float, float], other: tuple[float, float]) -> str:
    """Where the main object is relative to the other one (image y grows downwards)."""
    dy, dx = main[0] - other[0], main[1] - other[1]
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "to the left of" if dx < 0 else "to the right of"


def _region(centre: tuple[float, float], image_size: int) -> str:
    middle = image_size / 2
    dy, dx = centre[0] - middle, centre[1] - middle
    if max(abs(dy), abs(dx)) < 0.15 * image_size:
        return "in the middle"
    if abs(dy) >= abs(dx):
        return "at the top" if dy < 0 else "at the bottom"
    return "on the left" if dx < 0 else "on the right"
