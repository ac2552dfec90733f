"""Procedural VQA scenes: 2–4 coloured shapes on clutter, their ground truth, and questions about them.

A sample is one scene and one question. Each question *family* draws the scene
for a wanted answer (so the answers of a task can be balanced exactly and a
blind model cannot do well) and names the objects the question is about, its
*referents*, whose pixels become the ground-truth relevance mask.

Objects sit one to a cell of the 8-pixel patch grid (the layout of Sort-of-CLEVR,
Santoro et al. 2017), wholly inside their cell: they never overlap, every
attribute is visible, and one patch token holds one whole object, so a token
selector keeps or drops objects, not fragments of them. (Objects placed freely
straddle up to four patches; the model then did not learn the questions:
README, "Continual VQA".) Positions are object centres in pixels, y down;
"left of" / "above" compare centres and need a clear margin (objects in one
column or row are too close to tell), so a relation is never borderline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from tasks.procedural import COLOURS, SHAPES, _background, _draw_clutter

SCENE_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SCENE_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SIZES: tuple[str, ...] = ("small", "large")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
ANSWERS: tuple[str, ...] = (*SCENE_COLOURS, *SCENE_SHAPES, *SIZES, *NUMBER_WORDS, "yes", "no")

GRID_CELL = 8  # pixels: objects sit one to a cell of this side, the patch size of seq-vqa's ViT
SIZE_RADIUS = MappingProxyType({"small": 2.2, "large": 3.3})  # pixels, before a ±4 % jitter; the
# sizes of each shape never overlap in pixel count
SIZE_JITTER = 0.04
EXTENT = 1.15  # a square's corner lies 1.13 radii from its centre: the bounding disc of every shape
CELL_MARGIN = 0.3  # pixels between an object's bounding disc and its cell's border
RELATION_MARGIN = 3.0  # pixels between centres along the axis of a relation
MIN_OBJECTS, MAX_OBJECTS = 2, 4
QUESTION_LENGTH = 12  # the longest template: "are the red object and the blue object the same shape ?"

_TEMPLATE_WORDS = (
    "what colour shape size is the object objects how many left right of above below there a are and same ?"
)


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("ss") else "s")


VOCABULARY: tuple[str, ...] = (
    "<pad>",
    *sorted({*_TEMPLATE_WORDS.split(), *SCENE_COLOURS, *SCENE_SHAPES, *(plural(s) for s in SCENE_SHAPES)}),
)


@dataclass(frozen=True)
class SceneObject:
    """One object's ground truth: attributes, centre (pixels, y down) and radius."""

    shape: str
    colour: str
    size: str
    y: float
    x: float
    radius: float


@dataclass(frozen=True)
class VqaSample:
    """A scene, its ground truth and one question with its answer and referents."""

    image: np.ndarray  # uint8 [3, H, W]
    objects: tuple[SceneObject, ...]
    object_masks: np.ndarray  # bool [objects, H, W]: each object's pixels
    family: str
    question: tuple[str, ...]
    answer: str
    referents: tuple[int, ...]  # indices into objects: what the question is about


@dataclass(frozen=True)
class SceneSettings:
    """How scenes are drawn: image side (pixels), clutter strokes and background noise."""

    image_size: int = 32
    clutter: int = 4
    noise: float = 18.0


Attributes = tuple[str, str, str]  # (shape, colour, size)
Layout = tuple[list[SceneObject], tuple[str, ...], tuple[int, ...]]  # objects, question, referents
Family = Callable[[np.random.Generator, str, int], Layout | None]


def relation_side(subject: SceneObject, anchor: SceneObject, relation: str) -> bool | None:
    """Whether ``subject`` is ``relation`` of ``anchor``; None when the centres are too close to tell."""
    offset = subject.x - anchor.x if relation in ("left", "right") else subject.y - anchor.y
    if abs(offset) <= RELATION_MARGIN:
        return None
    return bool(offset < 0) if relation in ("left", "above") else bool(offset > 0)


def relation_words(relation: str) -> tuple[str, ...]:
    return (relation, "of") if relation in ("left", "right") else (relation,)


def unique_relations(objects: Sequence[SceneObject]) -> list[tuple[int, str, int]]:
    """(anchor, relation, subject) where the subject is the only object on that side of the anchor and
    no other object is too close to the anchor along that axis to tell."""
    found = []
    for anchor in range(len(objects)):
        for relation in RELATIONS:
            sides = {i: relation_side(objects[i], objects[anchor], relation) for i in range(len(objects))}
            del sides[anchor]
            on_side = [i for i, side in sides.items() if side]
            if None not in sides.values() and len(on_side) == 1:
                found.append((anchor, relation, on_side[0]))
    return found


def place_objects(
    attributes: Sequence[Attributes], rng: np.random.Generator, image_size: int
) -> list[SceneObject]:
    """Objects with these attributes, one to a cell of the patch grid (distinct cells, drawn at
    random), each wholly inside its cell with a small jitter of its centre (Sort-of-CLEVR's layout,
    Santoro et al. 2017): one patch token holds one whole object."""
    side = image_size // GRID_CELL
    if len(attributes) > side * side:
        raise ValueError(f"{len(attributes)} objects do not fit a {side}×{side} grid of cells")
    cells = rng.choice(side * side, size=len(attributes), replace=False)
    jitter = rng.uniform(1.0 - SIZE_JITTER, 1.0 + SIZE_JITTER, size=len(attributes))
    placed = []
    for (shape, colour, size), cell, scale in zip(attributes, cells, jitter, strict=True):
        radius = SIZE_RADIUS[size] * float(scale)
        slack = max(0.0, GRID_CELL / 2 - EXTENT * radius - CELL_MARGIN)
        y, x = (np.array(divmod(int(cell), side)) + 0.5) * GRID_CELL + rng.uniform(-slack, slack, size=2)
        placed.append(SceneObject(shape, colour, size, float(y), float(x), radius))
    return placed


def render_scene(
    objects: Sequence[SceneObject], rng: np.random.Generator, settings: SceneSettings
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [3, H, W] image of the objects on a noisy, cluttered background, and bool [k, H, W] masks."""
    size = settings.image_size
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    canvas = _background(rng, size, settings.noise)
    _draw_clutter(canvas, rng, settings.clutter, grid_y, grid_x)
    masks = np.zeros((len(objects), size, size), dtype=bool)
    for i, item in enumerate(objects):
        angle = rng.uniform(-0.15, 0.15)
        dy, dx = (grid_y - item.y) / item.radius, (grid_x - item.x) / item.radius
        ry, rx = np.cos(angle) * dy - np.sin(angle) * dx, np.sin(angle) * dy + np.cos(angle) * dx
        inside = SHAPES[item.shape](ry, rx)
        rgb = np.asarray(COLOURS[item.colour], dtype=np.float32) + rng.normal(0.0, 10.0, size=3)
        canvas[:, inside] = np.clip(rgb, 0, 255)[:, None]
        masks[i] = inside
    return canvas.astype(np.uint8), masks


def _choice(rng: np.random.Generator, values: Sequence[str], exclude: Sequence[str] = ()) -> str:
    allowed = [v for v in values if v not in exclude]
    return allowed[int(rng.integers(len(allowed)))]


def _object_count(rng: np.random.Generator, least: int = MIN_OBJECTS) -> int:
    return int(rng.integers(max(least, MIN_OBJECTS), MAX_OBJECTS + 1))


def _random_object(
    rng: np.random.Generator, shapes_not: Sequence[str] = (), colours_not: Sequence[str] = ()
) -> Attributes:
    return (
        _choice(rng, SCENE_SHAPES, shapes_not),
        _choice(rng, SCENE_COLOURS, colours_not),
        _choice(rng, SIZES),
    )


def _query_colour(rng: np.random.Generator, answer: str, image_size: int) -> Layout:
    """what colour is the <shape> ? (the only object of that shape)"""
    shape = _choice(rng, SCENE_SHAPES)
    others = [_random_object(rng, shapes_not=[shape]) for _ in range(_object_count(rng) - 1)]
    objects = place_objects([(shape, answer, _choice(rng, SIZES)), *others], rng, image_size)
    return objects, ("what", "colour", "is", "the", shape, "?"), (0,)


def _query_shape(rng: np.random.Generator, answer: str, image_size: int) -> Layout:
    """what shape is the <colour> object ? (the only object of that colour)"""
    colour = _choice(rng, SCENE_COLOURS)
    others = [_random_object(rng, colours_not=[colour]) for _ in range(_object_count(rng) - 1)]
    objects = place_objects([(answer, colour, _choice(rng, SIZES)), *others], rng, image_size)
    return objects, ("what", "shape", "is", "the", colour, "object", "?"), (0,)


def _query_size(rng: np.random.Generator, answer: str, image_size: int) -> Layout:
    """what size is the <colour> <shape> ? (the only object of that colour and shape)"""
    shape, colour = _choice(rng, SCENE_SHAPES), _choice(rng, SCENE_COLOURS)
    attributes = [(shape, colour, answer)]
    while len(attributes) < _object_count(rng):
        other = _random_object(rng)
        if other[:2] != (shape, colour):
            attributes.append(other)
    objects = place_objects(attributes, rng, image_size)
    return objects, ("what", "size", "is", "the", colour, shape, "?"), (0,)


def _count_shape(rng: np.random.Generator, answer: str, image_size: int) -> Layout:
    """how many <shape>s ?"""
    wanted, shape = NUMBER_WORDS.index(answer), _choice(rng, SCENE_SHAPES)
    total = _object_count(rng, least=wanted)
    attributes = [_random_object(rng, shapes_not=[shape]) for _ in range(total)]
    attributes[:wanted] = [(shape, colour, size) for _, colour, size in attributes[:wanted]]
    # Nothing to count: the evidence for zero is every object in the scene.
    referents = tuple(range(wanted)) if wanted else tuple(range(total))
    return place_objects(attributes, rng, image_size), ("how", "many", plural(shape), "?"), referents


def _count_colour(rng: np.random.Generator, answer: str, image_size: int) -> Layout:
    """how many <colour> objects ?"""
    wanted, colour = NUMBER_WORDS.index(answer), _choice(rng, SCENE_COLOURS)
    total = _object_count(rng, least=wanted)
    attributes = [_random_object(rng, colours_not=[colour]) for _ in range(total)]
    attributes[:wanted] = [(shape, colour, size) for shape, _, size in attributes[:wanted]]
    referents = tuple(range(wanted)) if wanted else tuple(range(total))
    return place_objects(attributes, rng, image_size), ("how", "many", colour, "objects", "?"), referents


def _relate(asked: int) -> Family:
    """what <shape|colour> is <relation> the <anchor> ? (the only object on that side of a unique anchor)"""

    def propose(rng: np.random.Generator, answer: str, image_size: int) -> Layout | None:
        sizes = [_choice(rng, SIZES) for _ in range(_object_count(rng))]
        spots = place_objects([("circle", "red", size) for size in sizes], rng, image_size)
        valid = unique_relations(spots)
        if not valid:
            return None
        anchor, relation, target = valid[int(rng.integers(len(valid)))]
        named = int(rng.integers(2))  # the anchor is named by its shape (0) or by its colour (1)
        attributes = [[_choice(rng, SCENE_SHAPES), _choice(rng, SCENE_COLOURS)] for _ in spots]
        attributes[target][asked] = answer
        if named == asked and attributes[anchor][named] == answer:
            attributes[anchor][named] = _choice(rng, (SCENE_SHAPES, SCENE_COLOURS)[named], exclude=[answer])
        anchor_value = attributes[anchor][named]
        for i, pair in enumerate(attributes):
            if i != anchor and pair[named] == anchor_value:  # never the target's answer: see above
                pair[named] = _choice(rng, (SCENE_SHAPES, SCENE_COLOURS)[named], exclude=[anchor_value])
        anchor_words = (anchor_value,) if named == 0 else (anchor_value, "object")
        attribute = ("shape", "colour")[asked]
        question = ("what", attribute, "is", *relation_words(relation), "the", *anchor_words, "?")
        objects = [
            SceneObject(shape, colour, spot.size, spot.y, spot.x, spot.radius)
            for (shape, colour), spot in zip(attributes, spots, strict=True)
        ]
        return objects, question, (anchor, target)

    return propose


def _exist(rng: np.random.Generator, answer: str, image_size: int) -> Layout:
    """is there a <colour> <shape> ?"""
    shape, colour = _choice(rng, SCENE_SHAPES), _choice(rng, SCENE_COLOURS)
    attributes = [_random_object(rng) for _ in range(_object_count(rng))]
    if answer == "yes":
        attributes[0] = (shape, colour, attributes[0][2])
    else:
        for i in range(len(attributes)):
            while attributes[i][:2] == (shape, colour):
                attributes[i] = _random_object(rng)
    matches = tuple(i for i, item in enumerate(attributes) if item[:2] == (shape, colour))
    # An absent object: the evidence is every object in the scene.
    referents = matches or tuple(range(len(attributes)))
    return place_objects(attributes, rng, image_size), ("is", "there", "a", colour, shape, "?"), referents


def _same(compared: int) -> Family:
    """are the <a> and the <b> the same <shape|colour> ?

    Each of a and b names exactly one object by its other attribute.
    """

    def propose(rng: np.random.Generator, answer: str, image_size: int) -> Layout:
        named = 1 - compared
        names, values = (SCENE_SHAPES, SCENE_COLOURS)[named], (SCENE_SHAPES, SCENE_COLOURS)[compared]
        first = _choice(rng, names)
        second = _choice(rng, names, exclude=[first])
        value = _choice(rng, values)
        second_value = value if answer == "yes" else _choice(rng, values, exclude=[value])
        attributes = []
        for name, compared_value in ((first, value), (second, second_value)):
            pair = [name, name]
            pair[named], pair[compared] = name, compared_value
            attributes.append((pair[0], pair[1], _choice(rng, SIZES)))
        for _ in range(_object_count(rng) - 2):
            excluded = ([first, second], []) if named == 0 else ([], [first, second])
            attributes.append(_random_object(rng, *excluded))
        if named == 0:
            words = ("are", "the", first, "and", "the", second, "the", "same", "colour", "?")
        else:
            words = (
                "are",
                "the",
                first,
                "object",
                "and",
                "the",
                second,
                "object",
                "the",
                "same",
                "shape",
                "?",
            )
        return place_objects(attributes, rng, image_size), words, (0, 1)

    return propose


# Family name → (how it draws a scene and question for a wanted answer, the answers it gives).
FAMILIES: MappingProxyType[str, tuple[Family, tuple[str, ...]]] = MappingProxyType(
    {
        "query_colour": (_query_colour, SCENE_COLOURS),
        "query_shape": (_query_shape, SCENE_SHAPES),
        "query_size": (_query_size, SIZES),
        "count_colour": (_count_colour, NUMBER_WORDS),
        "count_shape": (_count_shape, NUMBER_WORDS),
        "relate_colour": (_relate(1), SCENE_COLOURS),
        "relate_shape": (_relate(0), SCENE_SHAPES),
        "exist": (_exist, ("yes", "no")),
        "same_colour": (_same(1), ("yes", "no")),
        "same_shape": (_same(0), ("yes", "no")),
    }
)

# The tasks of seq-vqa in order: the question distribution shifts from task to task.
TASK_NAMES: tuple[str, ...] = ("attribute", "counting", "relations", "existence")
TASK_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("query_colour", "query_shape", "query_size"),
    ("count_colour", "count_shape"),
    ("relate_colour", "relate_shape"),
    ("exist", "same_colour", "same_shape"),
)


def task_answers(families: Sequence[str]) -> tuple[str, ...]:
    """Every answer these families give, in ANSWERS order."""
    given = {answer for family in families for answer in FAMILIES[family][1]}
    return tuple(answer for answer in ANSWERS if answer in given)


def answer_schedule(families: Sequence[str], count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``count`` (family, answer) pairs in random order: families equally often (±1), and within a family
    its answers equally often (±1), so that no answer is a good blind guess."""
    per_family = [count // len(families)] * len(families)
    for index in rng.permutation(len(families))[: count % len(families)]:
        per_family[index] += 1
    pairs = []
    for family, family_count in zip(families, per_family, strict=True):
        answers = FAMILIES[family][1]
        order = rng.permutation(len(answers))
        pairs += [(family, answers[order[i % len(answers)]]) for i in range(family_count)]
    return [pairs[i] for i in rng.permutation(len(pairs))]


def draw_sample(
    family: str, answer: str, rng: np.random.Generator, settings: SceneSettings, tries: int = 100
) -> VqaSample:
    """One scene and question of ``family`` whose answer is ``answer``."""
    propose, answers = FAMILIES[family]
    if answer not in answers:
        raise ValueError(f"family {family!r} never answers {answer!r}")
    for _ in range(tries):
        layout = propose(rng, answer, settings.image_size)
        if layout is not None:
            break
    else:
        raise RuntimeError(f"no scene for {family!r} with answer {answer!r} in {tries} tries")
    objects, question, referents = layout
    order = rng.permutation(len(objects))  # the referents are drawn first: hide that in the metadata
    position = {int(old): new for new, old in enumerate(order)}
    shuffled = tuple(objects[int(i)] for i in order)
    image, masks = render_scene(shuffled, rng, settings)
    return VqaSample(
        image=image,
        objects=shuffled,
        object_masks=masks,
        family=family,
        question=question,
        answer=answer,
        referents=tuple(sorted(position[i] for i in referents)),
    )


def draw_samples(
    families: Sequence[str], count: int, rng: np.random.Generator, settings: SceneSettings
) -> list[VqaSample]:
    """``count`` samples of these families with balanced answers (see ``answer_schedule``)."""
    return [
        draw_sample(family, answer, rng, settings) for family, answer in answer_schedule(families, count, rng)
    ]


def tokenise(questions: Sequence[Sequence[str]], length: int = QUESTION_LENGTH) -> np.ndarray:
    """int64 [n, length] ids over VOCABULARY, padded with 0; a question longer than ``length`` is an error."""
    index = {word: i for i, word in enumerate(VOCABULARY)}
    ids = np.zeros((len(questions), length), dtype=np.int64)
    for row, words in enumerate(questions):
        if len(words) > length:
            raise ValueError(f"question of {len(words)} words exceeds length {length}: {' '.join(words)}")
        ids[row, : len(words)] = [index[word] for word in words]
    return ids


def detokenise(ids: np.ndarray) -> tuple[str, ...]:
    """The words of one row of token ids, padding dropped."""
    return tuple(VOCABULARY[int(i)] for i in ids if i != 0)
