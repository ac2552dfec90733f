"""seq-vqa through the cell runner: memory keeps each question with its image, bytes count it exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import benchmark.learner
from benchmark import registry
from benchmark.cell import run_cell
from benchmark.config import CellConfig, TrainConfig
from benchmark.contracts import patchify
from benchmark.learner import TaskCache
from benchmark.results import FINISHED
from tasks.vqa_scenes import QUESTION_LENGTH
from tests.conftest import every_memory_method

TINY = {"train_per_task": 40, "test_per_task": 20}
PATCH_BYTES = 3 * 8 * 8  # uint8 RGB pixels of one 8×8 patch
TOKENS = 16
QUESTION_BYTES = QUESTION_LENGTH * 2  # uint16 token ids, kept whole
LABEL_BYTES = 2  # uint16 answer id
POSITION_BYTES = 2  # uint16 position of a kept token


@pytest.fixture(scope="module")
def cache() -> TaskCache:
    return TaskCache()


def vqa_cell(
    method: str, retention: float = 0.1, token_fraction: float = 1.0, **task_params: Any
) -> CellConfig:
    selector, _, token_selector = method.partition("+")
    return CellConfig(
        grid="test",
        task="seq-vqa",
        task_params={**TINY, **task_params},
        method=method,
        sample_selector=selector,
        token_selector=token_selector or None,
        selector_params={},
        token_selector_params={},
        retention=retention,
        token_fraction=token_fraction,
        seed=0,
        train=TrainConfig(epochs=1, batch_size=16, replay_batch_size=16),
    )


def run_capturing_replay(
    config: CellConfig, cache: TaskCache, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, list[Any]]:
    """Run a cell; return its record and the replay memory handed to each task's training."""
    replays: list[Any] = []
    train = benchmark.learner.train_experience

    def spy(model: Any, optimizer: Any, data: Any, targets: Any, replay: Any, *rest: Any, **kw: Any) -> float:
        replays.append(replay)
        return train(model, optimizer, data, targets, replay, *rest, **kw)

    monkeypatch.setattr(benchmark.learner, "train_experience", spy)
    return run_cell(config, "test", cache), replays


def assert_replay_is_stored_training_samples(replays: list[Any], cache: TaskCache, kept_tokens: int) -> None:
    """Every replayed sample is one training sample of an earlier task: its question, its answer and
    the pixels of its kept patches at their own positions."""
    stream = cache.get("seq-vqa", TINY)
    stored = replays[-1]
    assert stored is not None
    whole = stored.whole()
    assert whole is not None, "every stored sample keeps the same tokens here"
    batch, targets = whole
    assert batch.text is not None and batch.text.shape[1] == QUESTION_LENGTH
    assert batch.positions.shape[1] == kept_tokens
    earlier = stream.experiences[:-1]
    images = np.concatenate([patchify(e.train_images, 8) for e in earlier])
    texts = np.concatenate([e.train_text for e in earlier])
    labels = np.concatenate([e.train_labels for e in earlier])
    for patches, positions, text, label in zip(
        batch.patches.numpy(), batch.positions.numpy(), batch.text.numpy(), targets.numpy(), strict=True
    ):
        same = np.flatnonzero(
            (texts == text).all(axis=1)
            & (labels == label)
            & (images[:, positions] == patches).all(axis=(1, 2))
        )
        assert len(same) >= 1, "a replayed question does not belong to its stored image"


def test_a_coreset_cell_stores_whole_questions_and_counts_their_bytes(
    cache: TaskCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, replays = run_capturing_replay(vqa_cell("random"), cache, monkeypatch)
    assert record.status == FINISHED, record.error
    assert len(record.accuracy_matrix) == 4
    per_sample = TOKENS * PATCH_BYTES + QUESTION_BYTES + LABEL_BYTES
    assert record.bytes_used == sum(record.samples_per_task) * per_sample > 0
    assert record.bytes_used_per_task == [n * per_sample for n in record.samples_per_task]
    assert replays[0] is None
    assert_replay_is_stored_training_samples(replays, cache, TOKENS)
    assert record.attribution is None  # a coreset keeps every token: nothing to score


def test_a_core_tokenset_cell_keeps_the_question_and_scores_its_tokens_against_its_referents(
    cache: TaskCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, replays = run_capturing_replay(
        vqa_cell("random+gradlrp", token_fraction=0.25), cache, monkeypatch
    )
    assert record.status == FINISHED, record.error
    kept = 4  # ⌈0.25 · 16⌉
    assert record.tokens_per_sample == kept
    per_sample = kept * (PATCH_BYTES + POSITION_BYTES) + QUESTION_BYTES + LABEL_BYTES
    assert record.bytes_used == sum(record.samples_per_task) * per_sample > 0
    assert record.bytes_used <= record.bytes_allowed
    assert_replay_is_stored_training_samples(replays, cache, kept)
    # seq-vqa has a relevance mask per question (its referents' patches): attribution is measured.
    assert record.attribution is not None
    assert 0.0 <= record.attribution["precision"] <= 1.0


def test_a_gradient_coreset_runs_on_vqa(cache: TaskCache) -> None:
    record = run_cell(vqa_cell("gradmatch"), "test", cache)
    assert record.status == FINISHED, record.error
    assert record.bytes_used > 0


@pytest.mark.parametrize("method", every_memory_method())
def test_every_selector_runs_a_vqa_cell_within_its_bytes(method: str, cache: TaskCache) -> None:
    record = run_cell(vqa_cell(method, token_fraction=0.25 if "+" in method else 1.0), "test", cache)
    assert record.status == FINISHED, record.error
    assert 0 < record.bytes_used <= record.bytes_allowed
    assert all(n > 0 for n in record.samples_per_task[:-1])  # every finished task left a memory
    if "+" in method:  # a core tokenset is scored against the question's referent patches
        assert record.attribution is not None


def test_the_attribution_gallery_asks_each_image_its_question(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.gallery import GallerySource, compute_gallery
    from benchmark.model import TokenViT

    stream = TaskCache().get("seq-vqa", TINY)
    seen_text: list[bool] = []
    forward = TokenViT.forward

    def spy(self: TokenViT, batch: Any) -> torch.Tensor:
        seen_text.append(batch.text is not None)
        return forward(self, batch)

    monkeypatch.setattr(TokenViT, "forward", spy)
    gallery = compute_gallery(GallerySource("seq-vqa", TINY, {}), stream, count=3, epochs=1)
    assert seen_text and all(seen_text), "a VQA model was trained or ranked without its questions"
    experience = stream.experiences[0]
    for row, label in zip(gallery.captions, gallery.labels, strict=True):
        question, answer = row.split(" → ")
        assert answer == stream.answers[int(label)]
        ids = [stream.vocabulary.index(word) for word in question.split()]
        assert any(list(text[text > 0]) == ids for text in experience.train_text)
    assert len(gallery.captions) == 3 and set(gallery.kept) == set(registry.names("token_selector"))
