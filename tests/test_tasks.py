from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from benchmark import registry
from benchmark.contracts import patchify
from benchmark.errors import UserError
from tasks.base import pixel_mask_to_patches
from tasks.procedural import TASK_SHAPE_CLASSES, pretrain_shape_classes
from tests.conftest import write_cifar_fixture


def small_shapes(**params: object):
    return registry.create("task", "split-shapes", train_per_class=6, test_per_class=4, **params).build()


def test_split_shapes_is_deterministic_and_class_incremental() -> None:
    first, second = small_shapes(), small_shapes()
    assert len(first.experiences) == 5
    for a, b in zip(first.experiences, second.experiences, strict=True):
        np.testing.assert_array_equal(a.train_images, b.train_images)
    seen: set[int] = set()
    for experience in first.experiences:
        classes = set(np.unique(experience.train_labels).tolist())
        assert classes == set(experience.classes) and len(classes) == 2
        assert not classes & seen
        seen |= classes
        assert experience.train_images.dtype == np.uint8
        assert experience.train_masks is not None and experience.train_masks.shape == (12, first.tokens)
        assert experience.train_masks.any(axis=1).all()  # every image has its object somewhere
    other = registry.create("task", "split-shapes", train_per_class=6, test_per_class=4, data_seed=1).build()
    assert not np.array_equal(other.experiences[0].train_images, first.experiences[0].train_images)


def test_object_scale_grows_the_mask() -> None:
    small = small_shapes(object_scale=0.2).experiences[0].train_masks.mean()
    large = small_shapes(object_scale=0.6).experiences[0].train_masks.mean()
    assert large > 2 * small


def test_pretraining_classes_are_disjoint_from_the_task() -> None:
    pretrain = pretrain_shape_classes(15)
    assert len(set(pretrain)) == 15
    assert not set(pretrain) & set(TASK_SHAPE_CLASSES)


def test_split_digits_uses_every_digit_once() -> None:
    stream = registry.create("task", "split-digits").build()
    train = sum(len(e.train_labels) for e in stream.experiences)
    test = sum(len(e.test_labels) for e in stream.experiences)
    assert train + test == 1797
    assert stream.tokens == 16 and not stream.has_masks
    assert stream.experiences[0].train_images.max() > 200  # rescaled from 0..16 to uint8


def test_patchify_is_row_major_channel_first() -> None:
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    patches = patchify(images, 2)
    assert patches.shape == (2, 4, 12)
    np.testing.assert_array_equal(patches[0, 1], images[0, :, 0:2, 2:4].reshape(-1))


def test_mask_threshold() -> None:
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = True  # a quarter of patch 0
    assert pixel_mask_to_patches(masks, 2, 0.25)[0].tolist() == [True, False, False, False]
    assert pixel_mask_to_patches(masks, 2, 0.5)[0].tolist() == [True, False, False, False]  # best patch kept


def test_cifar_loader_reads_the_python_archive(tmp_path: Path) -> None:
    write_cifar_fixture(tmp_path)
    stream = registry.create("task", "split-cifar100", root=str(tmp_path), classes_per_task=10).build()
    assert len(stream.experiences) == 2
    first = stream.experiences[0]
    assert first.train_images.shape == (30, 3, 32, 32) and len(set(first.classes)) == 10
    assert stream.tokens == 16


def test_cifar_loader_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIFAR100_ROOT", raising=False)
    with pytest.raises(UserError, match="needs a local CIFAR-100"):
        registry.create("task", "split-cifar100").build()
    with pytest.raises(UserError, match="no CIFAR-100 python archive"):
        registry.create("task", "split-cifar100", root=str(tmp_path)).build()


def test_cifar_loader_refuses_code_in_pickles(tmp_path: Path) -> None:
    folder = write_cifar_fixture(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with (folder / "train").open("wb") as stream:
        pickle.dump({b"data": Evil(), b"fine_labels": []}, stream)
    with pytest.raises(UserError, match=r"refusing to load builtins\.print"):
        registry.create("task", "split-cifar100", root=str(tmp_path)).build()
