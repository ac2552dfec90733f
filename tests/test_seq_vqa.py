"""seq-vqa: every answer is recomputed from the scene metadata by a separate reading of the question."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark import registry
from benchmark.contracts import TEXT_TOKEN_BYTES
from tasks.pretrain_sets import CELL_COLOURS, CELL_SHAPES, draw_cell_objects
from tasks.procedural import COLOURS
from tasks.seq_vqa import SeqVqa
from tasks.vqa_scenes import (
    ANSWERS,
    NUMBER_WORDS,
    QUESTION_LENGTH,
    SCENE_COLOURS,
    SCENE_SHAPES,
    TASK_FAMILIES,
    VOCABULARY,
    SceneObject,
    VqaSample,
    detokenise,
    tokenise,
)

MARGIN = 2.0  # pixels along the axis of a relation that make it unambiguous to a reader
SMALL = dict(train_per_task=20, test_per_task=10)


@pytest.fixture(scope="module")
def default_task() -> SeqVqa:
    return registry.create("task", "seq-vqa")


@pytest.fixture(scope="module")
def default_stream(default_task: SeqVqa):
    return default_task.build()


def matching(objects: tuple[SceneObject, ...], description: list[str]) -> list[int]:
    """Objects fitting "circle", "red object", "red circle", "circles" or "red objects"."""
    shapes = {shape: shape for shape in SCENE_SHAPES} | {shape + "s": shape for shape in SCENE_SHAPES}
    shapes["crosses"] = "cross"
    colour = description[0] if description[0] in COLOURS else None
    noun = description[-1]
    shape = shapes.get(noun)
    assert shape or noun in ("object", "objects"), description
    return [
        i
        for i, item in enumerate(objects)
        if (colour is None or item.colour == colour) and (shape is None or item.shape == shape)
    ]


def the(objects: tuple[SceneObject, ...], description: list[str]) -> int:
    found = matching(objects, description)
    assert len(found) == 1, f"'the {' '.join(description)}' names {len(found)} objects"
    return found[0]


def read(question: tuple[str, ...], objects: tuple[SceneObject, ...]) -> tuple[str, set[int]]:
    """(answer, referents) of a question from the scene metadata alone."""
    text = " ".join(question)
    every = set(range(len(objects)))
    if match := re.fullmatch(r"what (colour|shape|size) is the ([a-z ]+) \?", text):
        target = the(objects, match[2].split())
        return getattr(objects[target], match[1]), {target}
    if match := re.fullmatch(r"what (colour|shape) is (left of|right of|above|below) the ([a-z ]+) \?", text):
        anchor = the(objects, match[3].split())
        axis = "x" if "of" in match[2] else "y"
        sign = -1 if match[2] in ("left of", "above") else 1
        offsets = {
            i: sign * (getattr(item, axis) - getattr(objects[anchor], axis))
            for i, item in enumerate(objects)
            if i != anchor
        }
        assert all(abs(offset) > MARGIN for offset in offsets.values()), "a borderline relation"
        on_side = [i for i, offset in offsets.items() if offset > 0]
        assert len(on_side) == 1, f"{len(on_side)} objects are {match[2]} the anchor"
        return getattr(objects[on_side[0]], match[1]), {anchor, on_side[0]}
    if match := re.fullmatch(r"how many ([a-z ]+) \?", text):
        counted = matching(objects, match[1].split())
        return NUMBER_WORDS[len(counted)], set(counted) or every
    if match := re.fullmatch(r"is there a ([a-z]+ [a-z]+) \?", text):
        found = matching(objects, match[1].split())
        return ("yes" if found else "no"), set(found) or every
    if match := re.fullmatch(r"are the ([a-z ]+) and the ([a-z ]+) the same (colour|shape) \?", text):
        first, second = the(objects, match[1].split()), the(objects, match[2].split())
        same = getattr(objects[first], match[3]) == getattr(objects[second], match[3])
        return ("yes" if same else "no"), {first, second}
    raise AssertionError(f"unknown question form: {text}")


def check_sample(sample: VqaSample, patch_mask: np.ndarray) -> None:
    answer, referents = read(sample.question, sample.objects)
    assert answer == sample.answer, " ".join(sample.question)
    assert referents == set(sample.referents)
    masks = sample.object_masks
    assert masks.shape == (len(sample.objects), 32, 32) and 2 <= len(sample.objects) <= 4
    assert (masks.sum(axis=0) <= 1).all(), "objects overlap"
    for item, mask in zip(sample.objects, masks, strict=True):
        assert mask.sum() >= 4, f"a {item.size} {item.shape} of {mask.sum()} pixels"
        # The image shows the metadata's colour on the object's pixels: the nearest of the palette.
        shown = sample.image[:, mask].astype(float).mean(axis=1)
        nearest = min(SCENE_COLOURS, key=lambda name: np.abs(shown - COLOURS[name]).sum())
        assert nearest == item.colour and np.abs(shown - COLOURS[item.colour]).max() < 60, (item, shown)
    for a, b in zip(sample.objects, masks.sum(axis=(1, 2)), strict=True):
        for c, d in zip(sample.objects, masks.sum(axis=(1, 2)), strict=True):
            if a.shape == c.shape and (a.size, c.size) == ("large", "small"):
                assert b > d, "a large object no bigger than a small one of its shape"
    # The mask covers the referents: each referent's best-covered patch, and no patch without them.
    per_patch = masks.reshape(len(masks), 4, 8, 4, 8).sum(axis=(2, 4)).reshape(len(masks), 16)
    # One object to a patch: each object's pixels lie in one patch, and no two objects share one.
    assert ((per_patch > 0).sum(axis=1) == 1).all(), "an object straddles patches"
    assert len(set(per_patch.argmax(axis=1).tolist())) == len(masks), "two objects in one patch"
    # So the mask is exactly the referents' patches.
    assert set(np.flatnonzero(patch_mask).tolist()) == {int(per_patch[r].argmax()) for r in sample.referents}
    for referent in sample.referents:
        assert patch_mask[per_patch[referent].argmax()]
    assert (per_patch[list(sample.referents)].sum(axis=0)[patch_mask] > 0).all()


def test_every_answer_and_mask_is_right_against_the_scene(default_task: SeqVqa) -> None:
    for task in range(len(TASK_FAMILIES)):
        for sample in default_task.samples(task, "test"):
            check_sample(sample, default_task.referent_patches(sample))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_answers_are_right_for_any_seed(seed: int) -> None:
    task = SeqVqa(**SMALL, data_seed=seed)
    for index in range(len(TASK_FAMILIES)):
        samples = task.samples(index, "train")
        for sample in samples:
            check_sample(sample, task.referent_patches(sample))
        assert {s.family for s in samples} == set(TASK_FAMILIES[index])


def test_stream_shapes_vocabulary_and_bytes(default_stream) -> None:
    stream = default_stream
    assert stream.name == "seq-vqa" and stream.has_masks and stream.tokens == 16
    assert stream.backbone.pretrain_set == "cells-16" and stream.backbone.image_size == 32
    assert stream.vocabulary == VOCABULARY and stream.vocabulary[0] == "<pad>"
    assert stream.answers == ANSWERS and stream.num_classes == len(ANSWERS) == 17
    assert len(stream.experiences) == 4
    for experience in stream.experiences:
        n, m = len(experience.train_labels), len(experience.test_labels)
        assert (n, m) == (4000, 300)
        assert experience.train_images.shape == (n, 3, 32, 32) and experience.train_images.dtype == np.uint8
        assert experience.train_text.shape == (n, QUESTION_LENGTH) and experience.train_text.dtype == np.int64
        assert experience.train_masks.shape == (n, 16) and experience.train_masks.any(axis=1).all()
        assert experience.test_masks.shape == (m, 16)
        assert experience.classes == tuple(sorted(np.unique(experience.train_labels).tolist()))
        assert experience.classes == tuple(sorted(np.unique(experience.test_labels).tolist()))
        assert experience.train_bytes == n * 3 * 32 * 32 + n * QUESTION_LENGTH * TEXT_TOKEN_BYTES
        # Padding only at the end of a question, and every question ends with "?".
        for row in experience.train_text:
            words = detokenise(row)
            assert row[: len(words)].all() and not row[len(words) :].any()
            assert words[-1] == "?"
    assert sorted(set().union(*(e.classes for e in stream.experiences))) == list(range(len(ANSWERS)))


def test_tokenise_round_trip_and_length() -> None:
    question = ("are", "the", "red", "object", "and", "the", "blue", "object", "the", "same", "shape", "?")
    ids = tokenise([question, ("how", "many", "crosses", "?")])
    assert ids.shape == (2, QUESTION_LENGTH) and ids.dtype == np.int64
    assert detokenise(ids[0]) == question and detokenise(ids[1]) == ("how", "many", "crosses", "?")
    assert ids[1, 4:].tolist() == [0] * (QUESTION_LENGTH - 4)
    with pytest.raises(ValueError, match="exceeds length"):
        tokenise([question], length=5)
    with pytest.raises(KeyError):
        tokenise([("what", "is", "love", "?")])


def test_a_blind_model_does_badly(default_stream) -> None:
    """The largest answer share per task, and a lookup from each training question to its most common
    answer, scored on the test questions (what a model that ignores the image could learn)."""
    majority = []
    for index, experience in enumerate(default_stream.experiences):
        share = np.bincount(experience.train_labels).max() / len(experience.train_labels)
        test_share = np.bincount(experience.test_labels).max() / len(experience.test_labels)
        majority.append(round(float(share), 3))
        by_question: dict[bytes, Counter[int]] = defaultdict(Counter)
        for row, label in zip(experience.train_text, experience.train_labels, strict=True):
            by_question[row.tobytes()][int(label)] += 1
        overall = Counter(experience.train_labels.tolist()).most_common(1)[0][0]
        guesses = [
            by_question[row.tobytes()].most_common(1)[0][0] if row.tobytes() in by_question else overall
            for row in experience.test_text
        ]
        blind = float(np.mean(np.array(guesses) == experience.test_labels))
        yes_no = index == 3
        assert max(share, test_share) <= (0.55 if yes_no else 0.45)
        assert blind <= (0.6 if yes_no else 0.45), (index, blind)
    assert majority == [0.167, 0.2, 0.125, 0.5]


def test_same_seed_same_data_and_other_seed_other_data() -> None:
    first = SeqVqa(**SMALL).build()
    again = SeqVqa(**SMALL).build()
    other = SeqVqa(**SMALL, data_seed=1).build()
    for a, b, c in zip(first.experiences, again.experiences, other.experiences, strict=True):
        for name in ("train_images", "train_labels", "train_text", "train_masks", "test_images", "test_text"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(a.train_images, c.train_images)
        assert not np.array_equal(a.train_text, c.train_text)
    # The test split does not depend on the training split's size.
    bigger = SeqVqa(train_per_task=30, test_per_task=10).build()
    np.testing.assert_array_equal(bigger.experiences[2].test_images, first.experiences[2].test_images)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"image_size": 64}, "image_size must be 32"),
        ({"train_per_task": 5}, "must be at least 10"),
        ({"test_per_task": 0}, "must be at least 10"),
        ({"clutter": -1}, "clutter must be at least 0"),
        ({"mask_min_fraction": 0.0}, r"mask_min_fraction must be in \(0, 1\]"),
        ({"data_seed": -3}, "data_seed must be at least 0"),
        ({"epochs": 0}, "epochs must be at least 1"),
    ],
)
def test_invalid_parameters_are_one_line_errors(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        registry.create("task", "seq-vqa", **params)
    assert "\n" not in str(caught.value)


def test_the_backbones_pretraining_set_shows_no_shape_colour_or_answer_of_seq_vqa() -> None:
    """cells-16: one object per image, wholly inside one patch, of a shape and colour seq-vqa never uses."""
    assert not {*CELL_SHAPES, *CELL_COLOURS} & {*SCENE_SHAPES, *SCENE_COLOURS, *ANSWERS, *VOCABULARY}
    images, labels = registry.create("pretrain_set", "cells-16").draw(3, 32, seed=0)
    assert images.shape == (16 * 3, 3, 32, 32) and sorted(set(labels.tolist())) == list(range(16))
    again, _, masks = draw_cell_objects(3, 32, np.random.default_rng(0))
    assert np.array_equal(again, images)
    classes = [(shape, colour) for shape in CELL_SHAPES for colour in CELL_COLOURS]
    for image, label, mask in zip(images, labels, masks, strict=True):
        per_patch = mask.reshape(4, 8, 4, 8).sum(axis=(1, 3))
        assert (per_patch > 0).sum() == 1 and mask.sum() >= 4, "the object straddles patches"
        shown = image[:, mask].astype(float).mean(axis=1)
        assert np.abs(shown - COLOURS[classes[label][1]]).max() < 60, (classes[label], shown)
