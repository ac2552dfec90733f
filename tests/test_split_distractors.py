"""split-shapes-distractors: the mask is exactly the class object's tokens, recomputed from each scene."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark import registry
from tasks.procedural import SHAPES, TASK_SHAPE_CLASSES, pretrain_shape_classes
from tasks.split_distractors import SplitShapesDistractors, distractor_pairs

SMALL = {"train_per_class": 4, "test_per_class": 2}


def task(**params: object) -> SplitShapesDistractors:
    return registry.create("task", "split-shapes-distractors", **{**SMALL, **params})


def object_pixels(
    shape: str, centre: tuple[float, float], radius: float, angle: float, size: int
) -> np.ndarray:
    """The object's pixels drawn again, pixel by pixel (not the task's vectorised drawing)."""
    inside = np.zeros((size, size), dtype=bool)
    for y in range(size):
        for x in range(size):
            # Pixel coordinates in float32, as the image grid is.
            dy, dx = (np.float32(y) - centre[0]) / radius, (np.float32(x) - centre[1]) / radius
            ry = np.cos(angle) * dy - np.sin(angle) * dx
            rx = np.sin(angle) * dy + np.cos(angle) * dx
            inside[y, x] = bool(SHAPES[shape](ry, rx))
    return inside


def tokens_holding(pixels: np.ndarray, patch: int) -> list[int]:
    """Row-major indices of the patches that hold a True pixel, by a loop over patches."""
    size = pixels.shape[0]
    cells = size // patch
    return [
        row * cells + col
        for row in range(cells)
        for col in range(cells)
        if pixels[row * patch : (row + 1) * patch, col * patch : (col + 1) * patch].any()
    ]


@pytest.mark.parametrize(("size", "patch"), [(32, 8), (32, 4), (64, 4)])
def test_shapes_dtypes_and_class_incremental_split(size: int, patch: int) -> None:
    stream = task(image_size=size, patch_size=patch).build()
    assert stream.tokens == (size // patch) ** 2 and stream.has_masks
    assert stream.backbone.pretrain_set == "scenes-15" and stream.backbone.patch_size == patch
    seen: set[int] = set()
    for experience in stream.experiences:
        assert experience.train_images.shape == (8, 3, size, size)
        assert experience.train_images.dtype == np.uint8
        assert experience.train_masks is not None and experience.train_masks.dtype == bool
        assert experience.train_masks.shape == (8, stream.tokens)
        assert experience.train_masks.any(axis=1).all()
        classes = set(experience.train_labels.tolist())
        assert classes == set(experience.classes) and not classes & seen
        seen |= classes


@pytest.mark.parametrize(("size", "patch", "share"), [(32, 8, 0.05), (32, 4, 0.3), (64, 4, 0.15)])
def test_mask_is_exactly_the_tokens_of_the_class_object(size: int, patch: int, share: float) -> None:
    entry = task(image_size=size, patch_size=patch, relevant_share=share)
    scenes, labels = entry.scenes()
    stream = entry.build()
    # build() splits class-major scenes: the first test_per_class of each class are test, the rest train.
    per_class = SMALL["train_per_class"] + SMALL["test_per_class"]
    train_masks = np.concatenate([e.train_masks for e in stream.experiences])
    train_scenes = [s for i, s in enumerate(scenes) if i % per_class >= SMALL["test_per_class"]]
    rows = list(zip(train_scenes, np.repeat(np.arange(10), 4), train_masks, strict=True))
    for scene, label, mask in rows[::3]:  # every third: a pixel-by-pixel redraw is slow
        main, *distractors = scene.objects
        assert (main.shape, main.colour) == TASK_SHAPE_CLASSES[label]
        pixels = object_pixels(main.shape, main.centre, main.radius, main.angle, size)
        assert np.flatnonzero(mask).tolist() == tokens_holding(pixels, patch)
        image = scene.image
        for other in distractors:
            theirs = object_pixels(other.shape, other.centre, other.radius, other.angle, size)
            assert not (theirs & pixels).any(), "a distractor overlaps the class object"
            assert (other.shape, other.colour) in distractor_pairs()
        # The class object is drawn last: its pixels carry its colour everywhere.
        assert np.ptp(image[:, pixels].astype(int), axis=1).max() == 0
    assert labels.tolist() == np.repeat(np.arange(10), per_class).tolist()


def test_distractors_are_no_class_and_share_a_class_shape_and_colour() -> None:
    pairs = set(distractor_pairs())
    assert pairs and not pairs & set(TASK_SHAPE_CLASSES) and not pairs & set(pretrain_shape_classes())
    shapes = {shape for shape, _ in TASK_SHAPE_CLASSES}
    colours = {colour for _, colour in TASK_SHAPE_CLASSES}
    assert all(shape in shapes and colour in colours for shape, colour in pairs)
    scenes, _ = task(distractors=3).scenes()
    assert all(len(scene.objects) == 4 for scene in scenes)


def test_relevant_share_sets_the_class_objects_pixels_and_grows_its_tokens() -> None:
    shares = {}
    for share in (0.05, 0.15, 0.3):
        scenes, _ = task(relevant_share=share).scenes()
        pixel_share = np.mean([scene.class_pixels.mean() for scene in scenes])
        assert pixel_share == pytest.approx(share, rel=0.1)
        experiences = task(relevant_share=share).build().experiences
        shares[share] = np.concatenate([e.train_masks for e in experiences])
    assert shares[0.05].mean() < shares[0.15].mean() < shares[0.3].mean()


def test_deterministic_from_its_seed() -> None:
    first, again, other = task().build(), task().build(), task(data_seed=1).build()
    for a, b in zip(first.experiences, again.experiences, strict=True):
        np.testing.assert_array_equal(a.train_images, b.train_images)
        np.testing.assert_array_equal(a.train_masks, b.train_masks)
    assert not np.array_equal(first.experiences[0].train_images, other.experiences[0].train_images)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"relevant_share": 0.0}, "relevant_share must be in"),
        ({"patch_size": 5}, "patch_size 5 does not divide image_size 32"),
        ({"distractors": 8, "distractor_share": 0.1}, "no room to place them apart"),
        ({"distractor_share": 0.0}, "distractor_share must be in"),
    ],
)
def test_bad_parameters_are_one_line_errors(params: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        task(**params)
