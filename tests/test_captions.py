"""seq-captions (procedural captioned scenes split by category) and the encoder–decoder captioner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark import registry
from benchmark.captioner import CaptionModel
from benchmark.contracts import BOS_ID, EOS_ID, PAD_ID, TokenBatch, decode_ids, full_positions, patchify
from benchmark.pretrain import WEIGHTS_DIR, default_recipe, load_backbone_weights
from methods.attention_hooks import capture_attention
from tasks.caption_scenes import (
    CATEGORY_SHAPES,
    DISTRACTOR_SHAPES,
    SHAPE_WORDS,
    caption_vocabulary,
    describe,
    draw_scene,
    longest_caption_words,
)
from tasks.caption_text import encode_captions, words

torch.set_num_threads(1)


def small_stream(**params: object):
    return registry.create("task", "seq-captions", train_per_task=40, test_per_task=12, **params).build()


@pytest.fixture(scope="module")
def stream():
    return small_stream()


def test_stream_is_deterministic_and_split_by_category(stream) -> None:
    again = small_stream()
    assert len(stream.experiences) == len(CATEGORY_SHAPES) == 5
    assert stream.vocabulary[0] == "<pad>" and stream.num_classes == len(stream.vocabulary)
    assert stream.has_masks and stream.tokens == 16 and stream.backbone.pretrain_set == "shapes-15"
    for index, (experience, twin) in enumerate(zip(stream.experiences, again.experiences, strict=True)):
        np.testing.assert_array_equal(experience.train_images, twin.train_images)
        np.testing.assert_array_equal(experience.train_labels, twin.train_labels)
        assert experience.test_references == twin.test_references
        assert experience.classes == (index,)
        own = SHAPE_WORDS[CATEGORY_SHAPES[index]]
        others = {SHAPE_WORDS[s] for s in CATEGORY_SHAPES} - {own}
        for references in experience.test_references:
            assert 1 <= len(references) == 4 and len(set(references)) == 4
            for reference in references:
                assert own in words(reference)  # every caption names the category's shape
                assert not others & set(words(reference))  # and, by default, no other category
    other = registry.create("task", "seq-captions", train_per_task=40, test_per_task=12, data_seed=1).build()
    assert not np.array_equal(other.experiences[0].train_images, stream.experiences[0].train_images)


def test_targets_are_encoded_references_with_masks(stream) -> None:
    experience = stream.experiences[2]
    labels = experience.train_labels
    assert labels.dtype == np.int64 and labels.shape == (40, longest_caption_words() + 2)
    assert (labels[:, 0] == BOS_ID).all() and ((labels == EOS_ID).sum(axis=1) == 1).all()
    after_eos = np.cumsum(labels == EOS_ID, axis=1) - (labels == EOS_ID)
    assert (labels[after_eos > 0] == PAD_ID).all()
    for row in labels:
        text = decode_ids(row.tolist(), stream.vocabulary)
        assert "triangle" in text.split() and "<unk>" not in text
    test_first = [decode_ids(row.tolist(), stream.vocabulary) for row in experience.test_labels]
    assert test_first == [references[0] for references in experience.test_references]
    assert experience.train_masks is not None and experience.train_masks.shape == (40, 16)
    assert experience.train_masks.any(axis=1).all()
    assert experience.test_masks is not None and experience.test_masks.any(axis=1).all()
    vocabulary = set(stream.vocabulary)
    assert all(set(words(r)) <= vocabulary for refs in experience.test_references for r in refs)


def test_mask_covers_exactly_the_objects_a_caption_mentions() -> None:
    rng = np.random.default_rng(3)
    scenes = [draw_scene("square", DISTRACTOR_SHAPES, rng, two_object_fraction=1.0) for _ in range(20)]
    two = [scene for scene in scenes if len(scene.objects) == 2]
    assert len(two) >= 15  # placement almost always finds room for the second object
    for scene in two:
        assert not (scene.masks[0] & scene.masks[1]).any()  # objects never overlap
        for caption in describe(scene, 6, rng):
            named = {SHAPE_WORDS[scene.objects[i].shape] for i in caption.mentions}
            assert named == {SHAPE_WORDS[o.shape] for o in scene.objects} & set(words(caption.text))
    vocabulary = caption_vocabulary()
    assert len(vocabulary) == len(set(vocabulary)) and vocabulary[:4] == ("<pad>", "<bos>", "<eos>", "<unk>")


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"train_per_task": 0}, "train_per_task"),
        ({"test_per_task": -1}, "test_per_task"),
        ({"data_seed": -2}, "data_seed"),
        ({"data_seed": 1.5}, "data_seed"),
        ({"epochs": 0}, "epochs"),
        ({"max_length": 5}, "max_length"),
        ({"references_per_image": 9}, "references_per_image"),
        ({"second_object": "elephant"}, "second_object"),
    ],
)
def test_bad_parameters_are_one_line_errors(params: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named) as caught:
        registry.create("task", "seq-captions", **params)
    assert "\n" not in str(caught.value)


def test_encode_cuts_long_captions_and_maps_unknown_words() -> None:
    vocabulary = ("<pad>", "<bos>", "<eos>", "<unk>", "a", "red", "circle")
    ids = encode_captions(["A red circle.", "a red blue circle circle circle"], vocabulary, 6)
    assert ids.tolist() == [[1, 4, 5, 6, 2, 0], [1, 4, 5, 3, 6, 2]]
    assert decode_ids(ids[1].tolist(), vocabulary) == "a red <unk> circle"


def _model(stream, seed: int = 0) -> CaptionModel:
    torch.manual_seed(seed)
    return CaptionModel(
        stream.backbone, len(stream.vocabulary), int(stream.experiences[0].train_labels.shape[1])
    )


def _batch(stream, count: int = 6, task: int = 0) -> tuple[TokenBatch, torch.Tensor]:
    experience = stream.experiences[task]
    patches = torch.from_numpy(patchify(experience.train_images[:count], stream.backbone.patch_size))
    return TokenBatch(patches, full_positions(count, patches.shape[1])), torch.from_numpy(
        experience.train_labels[:count]
    )


def test_loss_is_per_sample_causal_and_ignores_padding(stream) -> None:
    model = _model(stream).eval()
    batch, targets = _batch(stream)
    loss = model.per_sample_loss(batch, targets)
    assert loss.shape == (6,) and torch.isfinite(loss).all()
    for i in range(6):  # the same caption without its padding columns scores the same
        length = int((targets[i] != PAD_ID).sum())
        one = TokenBatch(batch.patches[i : i + 1], batch.positions[i : i + 1])
        torch.testing.assert_close(model.per_sample_loss(one, targets[i : i + 1, :length])[0], loss[i])
    logits = model(batch, targets)
    changed = targets.clone()
    changed[:, 4:] = 5
    torch.testing.assert_close(model(batch, changed)[:, :4], logits[:, :4])  # position t never sees t + 1


def test_features_and_grad_proxy_match_autograd(stream) -> None:
    model = _model(stream).eval()
    batch, targets = _batch(stream, 3)
    assert model.features(batch).shape == (3, 64)
    proxy = model.output_grad_proxy(batch, targets)
    vocab = len(stream.vocabulary)
    assert proxy.shape == (3, vocab * (1 + 64))
    for i in range(3):
        model.zero_grad()
        one = TokenBatch(batch.patches[i : i + 1], batch.positions[i : i + 1])
        model.per_sample_loss(one, targets[i : i + 1]).sum().backward()
        expected = torch.cat([model.output.bias.grad, model.output.weight.grad.flatten()])
        torch.testing.assert_close(proxy[i], expected, rtol=1e-4, atol=1e-6)
    sketch = model.output_grad_proxy(batch, targets, max_dims=256, seed=1)
    assert sketch.shape == (3, 16 * 17)
    torch.testing.assert_close(sketch, model.output_grad_proxy(batch, targets, max_dims=256, seed=1))


def test_generate_decodes_kept_tokens_and_hooks_see_the_encoder(stream) -> None:
    model = _model(stream)
    model.load_backbone(load_backbone_weights(default_recipe(stream.backbone), WEIGHTS_DIR))
    batch, _ = _batch(stream, 4)
    kept = torch.tensor([[0, 5, 10, 15]]).expand(4, -1)
    partial = TokenBatch(torch.gather(batch.patches, 1, kept[..., None].expand(-1, -1, 192)), kept)
    for inputs in (batch, partial):
        generated = model.generate(inputs, max_length=7)
        assert len(generated) == 4
        for ids in generated:
            assert len(ids) <= 5 and all(token >= 3 for token in ids)
            assert isinstance(model.decode(ids, stream.vocabulary), str)
    with capture_attention(model.encoder) as captured:
        model.encode(partial)
    maps = captured.tensors()
    assert len(maps) == stream.backbone.depth and maps[0].shape == (4, 4, 5, 5)


def test_a_few_steps_lower_the_loss(stream) -> None:
    model = _model(stream)
    model.load_backbone(load_backbone_weights(default_recipe(stream.backbone), WEIGHTS_DIR))
    batch, targets = _batch(stream, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    model.train()
    first = model.per_sample_loss(batch, targets).mean()
    for _ in range(15):
        loss = model.per_sample_loss(batch, targets).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.per_sample_loss(batch, targets).mean() < 0.8 * first
