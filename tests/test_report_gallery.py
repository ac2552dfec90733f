"""reports/gallery.py: the attribution gallery is deterministic, shows every token selector, and is
skipped with a note where no task has masks."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark import registry
from benchmark.gallery import GallerySource, compute_gallery, first_stream_with_masks, pick_images
from reports.gallery import attribution_gallery, draw_gallery, gallery_caption, gallery_sources
from reports.records import cell_frame
from tests.test_reports import synthetic_records

SMALL_SHAPES = {"train_per_class": 20, "test_per_class": 5}


@pytest.fixture(scope="module")
def small_gallery():
    source = GallerySource("split-shapes", SMALL_SHAPES, {})
    found = first_stream_with_masks([GallerySource("split-digits", {}, {}), source])
    assert found is not None and found[0] == source  # split-digits has no masks: passed over
    stream = found[1]
    return source, stream, compute_gallery(source, stream, epochs=1)


def test_gallery_ranks_the_same_images_with_every_token_selector(small_gallery) -> None:
    _, stream, gallery = small_gallery
    assert list(gallery.kept) == registry.names("token_selector")
    assert gallery.images.shape[0] == 6 and gallery.kept_per_image == 4
    for keep in gallery.kept.values():
        assert keep.shape == gallery.masks.shape and (keep.sum(axis=1) == 4).all()
    # the oracle keeps the whole mask where it fits in the kept tokens
    small = gallery.masks.sum(axis=1) <= 4
    assert small.any()
    assert (gallery.kept["oracle"][small] >= gallery.masks[small]).all()
    labels = stream.experiences[0].train_labels
    assert np.array_equal(gallery.labels, labels[pick_images(labels, 6)])
    assert len(set(gallery.labels.tolist())) == 2  # both classes of the first task shown


def test_gallery_is_deterministic(small_gallery) -> None:
    source, stream, gallery = small_gallery
    again = compute_gallery(source, stream, epochs=1)
    assert all(np.array_equal(gallery.kept[name], again.kept[name]) for name in gallery.kept)


def test_gallery_figure_has_a_column_per_selector_and_the_caption(small_gallery) -> None:
    source, _, gallery = small_gallery
    figure = draw_gallery(gallery)
    titles = [axes.get_title() for axes in figure.axes[: 1 + len(gallery.kept)]]
    assert titles == ["image, mask", *gallery.kept]
    assert len(figure.axes) == 6 * (1 + len(gallery.kept))
    assert figure._suptitle is None  # what it shows and its provenance go into the caption file
    caption = gallery_caption(source, gallery, "Grid g; 1 seeds (0); commit abc.", epochs=1)
    assert caption.endswith("commit abc.") and f"top {gallery.kept_per_image} of 16 tokens" in caption


def test_gallery_sources_prefer_tasks_with_attribution() -> None:
    records = synthetic_records()
    sources = gallery_sources(cell_frame(records))
    assert sources[0].task == "split_shapes"  # its core tokensets carry attribution
    assert {source.task for source in sources} == {"split_shapes", "split_digits"}


def test_no_task_with_masks_is_a_note_not_a_file(tmp_path) -> None:
    stale = tmp_path / "attribution_gallery.png"
    stale.write_bytes(b"old")
    paths, note = attribution_gallery(cell_frame(synthetic_records()), tmp_path, "caption")
    assert paths == [] and "no task of these results has ground-truth masks" in note
    assert not stale.exists()
