"""Helpers the tasks share: patch masks, class-incremental splits, blurred boundaries.

What a task hands the runner (``TaskStream``, ``Experience``, ``BackboneSpec``)
is declared in ``benchmark.contracts``.
"""

from __future__ import annotations

import numpy as np

from benchmark.contracts import Experience


def pixel_mask_to_patches(masks: np.ndarray, patch_size: int, min_fraction: float) -> np.ndarray:
    """bool [n, H, W] → bool [n, tokens]: a patch is relevant if ≥ min_fraction of it is object."""
    n, height, width = masks.shape
    rows, cols = height // patch_size, width // patch_size
    cover = masks.reshape(n, rows, patch_size, cols, patch_size).mean(axis=(2, 4))
    relevant = cover >= min_fraction
    # Every object touches at least one patch: keep the best-covered one if the threshold missed all.
    empty = ~relevant.reshape(n, -1).any(axis=1)
    if empty.any():
        flat = cover.reshape(n, -1)
        best = flat.argmax(axis=1)
        relevant = relevant.reshape(n, -1)
        relevant[np.where(empty)[0], best[empty]] = flat[empty, best[empty]] > 0
        return relevant
    return relevant.reshape(n, -1)


def class_order(classes: int, class_order_seed: int | None) -> list[int]:
    """The order in which classes form the tasks: 0, 1, … without a seed, else a permutation drawn by it."""
    if class_order_seed is None:
        return list(range(classes))
    if isinstance(class_order_seed, bool) or not isinstance(class_order_seed, int) or class_order_seed < 0:
        raise ValueError(f"class_order_seed must be a non-negative integer or None, got {class_order_seed!r}")
    return [int(c) for c in np.random.default_rng([class_order_seed, 1]).permutation(classes)]


def check_boundary_overlap(boundary_overlap: float) -> None:
    """A one-line ``ValueError`` unless ``boundary_overlap`` is in [0, 1)."""
    if not 0.0 <= boundary_overlap < 1.0:
        raise ValueError(f"boundary_overlap must be in [0, 1), got {boundary_overlap:g}")


def class_incremental(
    images: np.ndarray,
    labels: np.ndarray,
    train_index: np.ndarray,
    test_index: np.ndarray,
    class_order: list[int],
    classes_per_task: int,
    masks: np.ndarray | None = None,
    *,
    boundary_overlap: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[Experience, ...]:
    """Split a labelled set into experiences of ``classes_per_task`` consecutive classes.

    ``boundary_overlap`` > 0 blurs the task boundaries (see ``blur_boundaries``); it needs the task's
    seeded ``rng``. At 0 nothing is drawn and the stream is the sharp one. Test sets and
    ``Experience.classes`` (the task's own classes) are never changed.
    """
    if len(class_order) % classes_per_task:
        raise ValueError(f"{len(class_order)} classes do not split into tasks of {classes_per_task}")
    check_boundary_overlap(boundary_overlap)
    tasks = [
        tuple(class_order[start : start + classes_per_task])
        for start in range(0, len(class_order), classes_per_task)
    ]
    trains = [train_index[np.isin(labels[train_index], classes)] for classes in tasks]
    if boundary_overlap > 0.0:
        if rng is None:
            raise ValueError("boundary_overlap > 0 needs the task's seeded generator (rng)")
        trains = blur_boundaries(trains, boundary_overlap, rng)
    experiences = []
    for classes, train in zip(tasks, trains, strict=True):
        test = test_index[np.isin(labels[test_index], classes)]
        experiences.append(
            Experience(
                classes=classes,
                train_images=images[train],
                train_labels=labels[train].astype(np.int64),
                test_images=images[test],
                test_labels=labels[test].astype(np.int64),
                train_masks=None if masks is None else masks[train],
                test_masks=None if masks is None else masks[test],
            )
        )
    return tuple(experiences)


def blur_boundaries(trains: list[np.ndarray], overlap: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Move training samples of each task's classes one task earlier, so that boundaries overlap.

    ``trains[i]`` holds the sample indices of task i's classes. For each task i but the last,
    m_i = round(overlap · len(trains[i])) samples are drawn (``rng``, without replacement) from what
    is left of task i+1's own samples and moved into task i. So task i (0 < i < last) gives m_{i-1}
    of its samples to task i-1 and takes m_i from task i+1: with tasks of equal size its size is
    unchanged and a fraction ``overlap`` of it is next-task data; task 0 only takes (its next-task
    fraction is overlap / (1 + overlap)); the last task only gives. Every sample stays in exactly one
    task and the total is unchanged. Indices come back sorted.
    """
    own = [np.asarray(train) for train in trains]
    blurred = []
    for task in range(len(own) - 1):
        count = min(round(overlap * len(trains[task])), len(own[task + 1]))
        picked = rng.choice(len(own[task + 1]), size=count, replace=False)
        moved = own[task + 1][picked]
        own[task + 1] = np.delete(own[task + 1], picked)
        blurred.append(np.sort(np.concatenate([own[task], moved])))
    blurred.append(own[-1])
    return blurred
