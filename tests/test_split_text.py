"""split-text: sentences stored two bytes a word, masks recomputed from the words, disjoint pretraining."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

from benchmark import registry
from benchmark.contracts import PAD_ID, TokenBatch, full_positions, patches_as_ids, patchify, text_as_patches
from benchmark.memory import ByteCosts, MemoryBuffer
from benchmark.pretrain import default_recipe, load_backbone_weights
from benchmark.text_model import TextViT
from tasks.split_text import SplitText
from tasks.text_procedural import TASK_PAIRS, lexicon, pretrain_pairs

SMALL = {"train_per_class": 6, "test_per_class": 3}


def small(**params: object) -> SplitText:
    return registry.create("task", "split-text", **{**SMALL, **params})


def ids_of(images: np.ndarray) -> np.ndarray:
    return patches_as_ids(torch.from_numpy(patchify(images, 1))).numpy()


def test_sentences_are_two_byte_word_patches_of_24_to_48_words() -> None:
    stream = small().build()
    assert stream.tokens == 48 and stream.objective == "text-classification" and stream.has_masks
    assert stream.backbone.vocabulary_size == len(stream.vocabulary) == len(lexicon().words)
    for experience in stream.experiences:
        assert experience.train_images.shape == (12, 2, 1, 48) and experience.train_images.dtype == np.uint8
        assert experience.train_masks is not None and experience.train_masks.shape == (12, 48)
        assert experience.train_bytes == 12 * 48 * 2  # uint16 ids, padding included
        ids = ids_of(experience.train_images)
        lengths = (ids != PAD_ID).sum(axis=1)
        assert lengths.min() >= 24 and lengths.max() <= 48
        # Padding only at the end: every id after the first pad is a pad.
        assert all((row[length:] == PAD_ID).all() for row, length in zip(ids, lengths, strict=True))
        assert patchify(experience.train_images, 1).shape == (12, 48, 2)


def test_text_as_patches_round_trips_every_uint16() -> None:
    ids = np.array([[0, 1, 255, 256, 65535, 4097]])
    assert patches_as_ids(torch.from_numpy(patchify(text_as_patches(ids), 1))).tolist() == ids.tolist()
    with pytest.raises(ValueError, match="uint16"):
        text_as_patches(np.array([[65536]]))


def test_mask_is_exactly_the_words_of_the_class_phrases() -> None:
    words = lexicon()
    phrases = words.phrases(TASK_PAIRS)
    stream = small().build()
    for experience in stream.experiences:
        ids = ids_of(experience.train_images)
        for row, label, mask in zip(ids, experience.train_labels, experience.train_masks, strict=True):
            adjective, noun = phrases[label]
            # Recomputed from the words: each "adjective noun" of the class, both words marked.
            starts = [i for i in range(len(row) - 1) if row[i] == adjective and row[i + 1] == noun]
            own = sorted(i + k for i in starts for k in (0, 1))
            assert np.flatnonzero(mask).tolist() == own and 2 <= len(own) // 2 <= 3
            # Class words appear nowhere else: every other word is filler or a function word.
            assert not np.isin(row[~mask], words.class_words).any()


def test_a_class_is_a_pair_of_class_words_and_pretraining_pairs_are_others() -> None:
    assert len(set(TASK_PAIRS)) == len(TASK_PAIRS) == 10
    assert not set(TASK_PAIRS) & set(pretrain_pairs())
    # As split-shapes' colours and shapes: every class word is in some task class, shared across tasks.
    assert {a for a, _ in TASK_PAIRS} == {n for _, n in TASK_PAIRS} == set(range(8))


def test_deterministic_from_its_seed() -> None:
    first, again, other = small().build(), small().build(), small(data_seed=1).build()
    for a, b in zip(first.experiences, again.experiences, strict=True):
        np.testing.assert_array_equal(a.train_images, b.train_images)
        np.testing.assert_array_equal(a.train_masks, b.train_masks)
    assert not np.array_equal(first.experiences[0].train_images, other.experiences[0].train_images)


def test_pretraining_text_is_disjoint_from_the_task() -> None:
    words = lexicon()
    entry = registry.create("pretrain_set", "text-15")
    images, labels = entry.draw(20, 48, 0)
    ids = ids_of(images)
    assert images.dtype == np.uint8 and images.shape == (300, 2, 1, 48) and labels.max() == 14
    task_phrases = {tuple(p) for p in words.phrases(TASK_PAIRS).tolist()}
    seen = {(int(a), int(b)) for row in ids for a, b in pairwise(row)}
    assert not task_phrases & seen, "a task's class phrase in the pretraining text"
    task_sentences = {tuple(row) for e in small().build().experiences for row in ids_of(e.train_images)}
    assert not task_sentences & {tuple(row) for row in ids}


def test_memory_counts_a_kept_word_as_id_plus_position_and_a_sentence_as_ids_plus_label() -> None:
    experience = small().build().experiences[0]
    patches = patchify(experience.train_images, 1)
    costs = ByteCosts.for_samples(48, 2)
    assert costs.of(48) == 48 * 2 + 2 and costs.of(12) == 12 * (2 + 2) + 2
    memory = MemoryBuffer(48)
    kept = np.tile(np.arange(12), (3, 1))
    entry = memory.add(0, patches[:3, :12], kept, experience.train_labels[:3], bytes_allowed=10_000)
    assert entry.nbytes == 3 * costs.of(12)


def test_the_text_model_reads_kept_words_at_their_own_positions() -> None:
    stream = small().build()
    torch.manual_seed(0)
    model = TextViT(stream.backbone, stream.num_classes).eval()
    model.load_backbone(load_backbone_weights(default_recipe(stream.backbone)))
    patches = torch.from_numpy(patchify(stream.experiences[0].train_images[:4], 1))
    whole = TokenBatch(patches, full_positions(4, 48))
    ids = patches_as_ids(patches)
    expected = model.word_table(ids) + model.vit.pos_embed[0, 1:]
    torch.testing.assert_close(model.embed(whole)[:, 1:], expected)
    part = whole.gather(torch.tensor([[3, 7, 40]] * 4))
    torch.testing.assert_close(model.embed(part)[:, 1:], expected[:, [3, 7, 40]])
    assert model(part).shape == (4, 10)


def test_a_backbone_without_a_word_table_is_refused() -> None:
    stream = small().build()
    model = TextViT(stream.backbone, stream.num_classes)
    state = model.backbone_state()
    del state["word_table.weight"]
    with pytest.raises(ValueError, match="word_table"):
        model.load_backbone(state)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min_length": 30, "max_length": 24}, "min_length ≤ max_length"),
        ({"min_phrases": 0}, "class phrases per sentence"),
        ({"max_phrases": 5}, "class phrases per sentence"),
    ],
)
def test_bad_sentence_shapes_are_one_line_errors(params: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small(**params)


def test_the_attribution_gallery_passes_over_text() -> None:
    from benchmark.gallery import GallerySource, first_stream_with_masks

    text = GallerySource("split-text", dict(SMALL), {})
    shapes = GallerySource("split-shapes", {"train_per_class": 4, "test_per_class": 2}, {})
    assert first_stream_with_masks([text]) is None
    found = first_stream_with_masks([text, shapes])
    assert found is not None and found[0] is shapes
