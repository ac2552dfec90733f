"""Each data axis of the regime map changes what it says: boundary overlap, appearance modes, object size."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from benchmark import registry
from benchmark.cli import main
from benchmark.contracts import Experience, TaskStream
from benchmark.grid import load_grid
from tasks.base import blur_boundaries, class_incremental
from tasks.procedural import TASK_SHAPE_CLASSES, class_prototypes, render_shapes
from tests.conftest import GRIDS, REPO_ROOT
from tests.test_cli import GOOD, run_cli

SMALL_SHAPES = {"train_per_class": 20, "test_per_class": 5}
# sha256 (16 hex digits) of every array of the stream, made by the code before boundary_overlap existed.
SHARP_DIGESTS = {"split-shapes": "7c26f787462863fc", "split-digits": "7abd2e19ec87ea41"}


def build(task: str, **params: object) -> TaskStream:
    extra = SMALL_SHAPES if task == "split-shapes" else {}
    return registry.create("task", task, **extra, **params).build()


def stream_digest(stream: TaskStream) -> str:
    digest = hashlib.sha256()
    for experience in stream.experiences:
        for name in (
            "train_images",
            "train_labels",
            "test_images",
            "test_labels",
            "train_masks",
            "test_masks",
        ):
            array = getattr(experience, name)
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def image_rows(experiences: tuple[Experience, ...]) -> list[bytes]:
    return [image.tobytes() for experience in experiences for image in experience.train_images]


# --- boundary_overlap -------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["split-shapes", "split-digits"])
def test_overlap_zero_is_todays_stream_byte_for_byte(task: str) -> None:
    default, zero = build(task), build(task, boundary_overlap=0.0)
    assert stream_digest(default) == stream_digest(zero) == SHARP_DIGESTS[task]


@pytest.mark.parametrize("task", ["split-shapes", "split-digits"])
def test_overlap_moves_next_task_samples_earlier_and_loses_none(task: str) -> None:
    sharp, blurred = build(task), build(task, boundary_overlap=0.2)
    last = len(blurred.experiences) - 1
    for index, (before, after) in enumerate(zip(sharp.experiences, blurred.experiences, strict=True)):
        assert after.classes == before.classes
        np.testing.assert_array_equal(after.test_images, before.test_images)
        np.testing.assert_array_equal(after.test_labels, before.test_labels)
        if index < last:
            following = blurred.experiences[index + 1].classes
            in_next = np.isin(after.train_labels, following)
            # Task i takes round(0.2 n_i) samples of task i+1; task 0 only takes, the others also give.
            expected = 0.2 / 1.2 if index == 0 else 0.2
            assert in_next.mean() == pytest.approx(expected, abs=0.01)
            assert np.isin(after.train_labels[~in_next], after.classes).all()
            if after.train_masks is not None:
                assert len(after.train_masks) == len(after.train_labels)
        else:
            assert np.isin(after.train_labels, after.classes).all()
    rows = image_rows(blurred.experiences)
    assert len(rows) == len(set(rows))  # no sample twice, within or across tasks
    assert sorted(rows) == sorted(image_rows(sharp.experiences))  # and none lost: the total is kept
    again = build(task, boundary_overlap=0.2)
    assert stream_digest(again) == stream_digest(blurred)  # seeded


def test_the_new_parameter_keeps_the_names_of_committed_cells() -> None:
    """Adding boundary_overlap (default 0) must not rename the finished cells of the default grid (made
    under protocol 1 with fixed streams)."""
    committed = {path.stem for path in (REPO_ROOT / "results" / "default_protocol1" / "cells").glob("*.json")}
    overrides = ["protocol=1", "stream_seeds=false", "seeds=[0, 1, 2]"]
    assert {cell.config_hash for cell in load_grid(GRIDS / "default.toml", overrides).cells} <= committed


def test_blur_boundaries_counts_on_index_arrays() -> None:
    trains = [np.arange(start, start + 100) for start in range(0, 500, 100)]
    blurred = blur_boundaries(trains, 0.3, np.random.default_rng(0))
    assert [len(task) for task in blurred] == [130, 100, 100, 100, 70]
    assert sorted(np.concatenate(blurred).tolist()) == list(range(500))
    for index, task in enumerate(blurred[:-1]):
        assert ((task >= 100 * (index + 1)) & (task < 100 * (index + 2))).sum() == 30


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_overlap_out_of_range_is_a_one_line_error(value: float) -> None:
    for task in ("split-shapes", "split-digits"):
        with pytest.raises(ValueError, match=rf"^boundary_overlap must be in \[0, 1\), got {value:g}$"):
            registry.create("task", task, boundary_overlap=value)
    labels = np.repeat(np.arange(4), 3)
    images = np.zeros((12, 1, 2, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="boundary_overlap must be in"):
        class_incremental(
            images, labels, np.arange(12), np.arange(0), [0, 1, 2, 3], 2, boundary_overlap=value
        )


def test_overlap_needs_a_generator() -> None:
    labels = np.repeat(np.arange(4), 3)
    images = np.zeros((12, 1, 2, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="seeded generator"):
        class_incremental(images, labels, np.arange(12), np.arange(0), [0, 1, 2, 3], 2, boundary_overlap=0.5)


# --- modes_per_class ------------------------------------------------------------------------------


def orientations(masks: np.ndarray) -> np.ndarray:
    """Each object's principal-axis angle (radians, modulo π) from its mask's second moments."""
    angles = []
    for mask in masks:
        y, x = np.nonzero(mask)
        y, x = y - y.mean(), x - x.mean()
        angles.append(0.5 * np.arctan2(2.0 * (x * y).mean(), (x * x).mean() - (y * y).mean()))
    return np.asarray(angles)


def orientation_clusters(angles: np.ndarray, gap: float = 0.4) -> int:
    """Clusters of angles modulo π: gaps wider than ``gap`` on the circle of doubled angles."""
    doubled = np.sort(np.mod(2.0 * angles, 2.0 * np.pi))
    gaps = np.diff(np.concatenate([doubled, doubled[:1] + 2.0 * np.pi]))
    return max(int((gaps > gap).sum()), 1)


def test_one_mode_is_one_prototype_per_class() -> None:
    prototypes = class_prototypes(TASK_SHAPE_CLASSES, 1, np.random.default_rng(0))
    assert [len(modes) for modes in prototypes] == [1] * len(TASK_SHAPE_CLASSES)
    assert all(modes == prototypes[0] for modes in prototypes)


@pytest.mark.parametrize("modes", [2, 3, 4])
def test_k_modes_are_k_distinct_prototypes(modes: int) -> None:
    prototypes = class_prototypes(TASK_SHAPE_CLASSES, modes, np.random.default_rng(0))
    for class_modes in prototypes:
        assert len(class_modes) == modes
        assert len({mode["rotation"] for mode in class_modes}) == modes
        assert len({tuple(sorted(mode.items())) for mode in class_modes}) == modes


@pytest.mark.parametrize("modes", [1, 2, 3, 4])
def test_rendered_objects_fall_into_modes_per_class_orientations(modes: int) -> None:
    """An elongated bar is drawn at ``modes`` distinct orientations (π/modes apart), ±0.15 rad each."""
    _, _, masks = render_shapes(
        (("hbar", "orange"),),
        40 * modes,
        np.random.default_rng(modes),
        image_size=64,
        object_scale=0.5,
        modes_per_class=modes,
    )
    assert orientation_clusters(orientations(masks)) == modes


def test_the_task_renders_with_its_modes_per_class() -> None:
    stream = build("split-shapes", modes_per_class=3)
    per_class = SMALL_SHAPES["train_per_class"] + SMALL_SHAPES["test_per_class"]
    images, labels, _ = render_shapes(
        TASK_SHAPE_CLASSES, per_class, np.random.default_rng(0), modes_per_class=3
    )
    train = (np.arange(len(labels)) % per_class >= SMALL_SHAPES["test_per_class"]) & np.isin(labels, [0, 1])
    np.testing.assert_array_equal(stream.experiences[0].train_images, images[train])
    assert not np.array_equal(
        stream.experiences[0].train_images, build("split-shapes").experiences[0].train_images
    )


def test_zero_modes_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match=r"^modes_per_class must be at least 1, got 0$"):
        registry.create("task", "split-shapes", modes_per_class=0)


# --- object_scale -----------------------------------------------------------------------------------


def test_mask_area_grows_as_object_scale_squared() -> None:
    areas = {}
    for scale in (0.15, 0.3, 0.6):
        _, _, masks = render_shapes(TASK_SHAPE_CLASSES, 12, np.random.default_rng(0), object_scale=scale)
        areas[scale] = masks.sum(axis=(1, 2)).mean()
    for scale in (0.15, 0.6):
        assert areas[scale] / areas[0.3] == pytest.approx((scale / 0.3) ** 2, rel=0.1)
    # The task's per-patch masks (what the oracle keeps) follow: more of the image is object.
    covered = [build("split-shapes", object_scale=scale).experiences[0].train_masks.mean() for scale in areas]
    assert covered == sorted(covered) and covered[-1] > 2 * covered[0]


# --- through the CLI ----------------------------------------------------------------------------------


def regime_grid(tmp_path: Path, table: str) -> Path:
    grid = tmp_path / "regime.toml"
    grid.write_text(f'name = "regime"\n{GOOD}\n[task_params.split-shapes]\n{table}\n')
    return grid


def test_negative_overlap_through_the_cli_is_one_line_exit_2(tmp_path: Path) -> None:
    grid = regime_grid(tmp_path, "boundary_overlap = -0.1")
    done = run_cli(
        "run", str(grid), "--results", str(tmp_path / "results"), "--no-progress",
        "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "boundary_overlap must be in [0, 1), got -0.1" in lines[0]
    assert not (tmp_path / "results").exists()


def test_zero_modes_through_the_cli_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In this process, through the CLI's ``main`` (what ``python -m benchmark`` runs; see test_bad_input)."""
    grid = regime_grid(tmp_path, "modes_per_class = 0")
    results = tmp_path / "results"
    capsys.readouterr()
    status = main(["run", str(grid), "--results", str(results), "--no-progress",
                   "--tracking-uri", f"sqlite:///{tmp_path / 'ml.db'}"])  # fmt: skip
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "modes_per_class must be at least 1, got 0" in lines[0]
    assert not results.exists()
