"""The attribution gallery's data: the same training images, ranked by every token selector.

Results store no images, so the gallery is computed when a report is made: the
first task of the results that has ground-truth masks is built with the
results' own task parameters, its model starts from the committed backbone and
is fine-tuned for a few seeded epochs on the first experience, and every
registered token selector ranks the same training images; each keeps its top
⌈t·P⌉ tokens by the memory's own rule (``selection.top_tokens``).
Deterministic: fixed seeds, CPU, deterministic algorithms. ``reports.gallery``
draws it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from benchmark import registry
from benchmark.config import TrainConfig
from benchmark.contracts import TaskStream, TokenBatch, TokenInputs, decode_ids, full_positions, patchify
from benchmark.memory import kept_token_count
from benchmark.pretrain import default_recipe, load_backbone_weights
from benchmark.selection import top_tokens
from benchmark.train import TrainSettings, seeded_generator, train_experience, whole

GALLERY_SEED = 0
GALLERY_EPOCHS = 3
GALLERY_IMAGES = 6
GALLERY_TOKEN_FRACTION = 0.25
GALLERY_INPUT_DROPOUT = 0.5  # what core tokensets train with by default


@dataclass(frozen=True)
class GallerySource:
    """The task the gallery is computed on, as the results ran it."""

    task: str
    task_params: dict
    token_selector_params: dict[str, dict]


@dataclass(frozen=True)
class Gallery:
    images: np.ndarray  # uint8 [n, C, H, W]
    labels: np.ndarray  # int64 [n] classes, or [n, L] captions
    masks: np.ndarray  # bool [n, P]
    kept: dict[str, np.ndarray]  # selector -> bool [n, P]
    patch_size: int
    kept_per_image: int
    captions: tuple[str, ...] = ()  # row labels: a caption task's caption, a VQA question and answer

    def row_label(self, row: int) -> str:
        if self.captions:
            return textwrap.fill(self.captions[row], 24)
        return f"class {int(self.labels[row])}"


def first_stream_with_masks(sources: Sequence[GallerySource]) -> tuple[GallerySource, TaskStream] | None:
    """The first source whose task builds, has masks and is made of images (a text task's tokens are
    words, which the gallery does not draw); a task that cannot be built is passed over."""
    for source in sources:
        try:
            stream = registry.create("task", source.task, **source.task_params).build()
        except Exception:  # e.g. a CIFAR archive that is not on this machine
            continue
        if stream.has_masks and not stream.backbone.vocabulary_size:
            return source, stream
    return None


def pick_images(labels: np.ndarray, count: int, seed: int = GALLERY_SEED) -> np.ndarray:
    """``count`` training indices, as even over the classes as they divide, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == label)) for label in classes]
    chosen = [int(indices[i]) for i in range(count) for indices in per_class if i < len(indices)]
    return np.asarray(chosen[:count], dtype=np.int64)


def compute_gallery(
    source: GallerySource,
    stream: TaskStream,
    count: int = GALLERY_IMAGES,
    token_fraction: float = GALLERY_TOKEN_FRACTION,
    epochs: int = GALLERY_EPOCHS,
) -> Gallery:
    """Fine-tune on the first experience, then rank the same ``count`` images with every token selector."""
    experience = stream.experiences[0]
    assert experience.train_masks is not None
    spec = stream.backbone
    patches = torch.from_numpy(patchify(experience.train_images, spec.patch_size))
    labels = torch.from_numpy(experience.train_labels)
    # A VQA sample's question goes in with its image: the model answers it, attributions rank for it.
    text = None if experience.train_text is None else torch.from_numpy(experience.train_text)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(GALLERY_SEED)
            # The task's own model (a classifier, or a captioner for a caption task), as a cell builds it.
            model = registry.create("objective", stream.objective).build_model(stream, mask_token=False)
            model.encoder.load_backbone(load_backbone_weights(default_recipe(spec)))
            train = TrainConfig()
            optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
            settings = TrainSettings(
                epochs=epochs,
                batch_size=train.batch_size,
                replay_batch_size=train.replay_batch_size,
                input_dropout=GALLERY_INPUT_DROPOUT,
                eval_batch_size=train.eval_batch_size,
            )
            device = torch.device("cpu")
            generator = seeded_generator(GALLERY_SEED, 1, 0)
            train_experience(
                model, optimizer, whole(patches, text), labels, None, settings, generator, device
            )
            model.eval()
            chosen = pick_images(experience.categories, count)
            tokens = patches.shape[1]
            kept_count = kept_token_count(token_fraction, tokens)
            questions = None if text is None else text[chosen]
            batch = TokenBatch(patches[chosen], full_positions(len(chosen), tokens), questions)
            masks = torch.from_numpy(experience.train_masks[chosen])
            kept: dict[str, np.ndarray] = {}
            for name in registry.names("token_selector"):
                selector = registry.create(
                    "token_selector", name, **source.token_selector_params.get(name, {})
                )
                rng = np.random.default_rng([GALLERY_SEED, 7])
                scores = selector.rank(model, TokenInputs(batch, rng, masks, device), labels[chosen])
                keep = np.zeros((len(chosen), tokens), dtype=bool)
                np.put_along_axis(keep, top_tokens(scores, kept_count).positions, True, axis=1)
                kept[name] = keep
    finally:
        torch.use_deterministic_algorithms(deterministic)
    return Gallery(
        images=experience.train_images[chosen],
        labels=experience.train_labels[chosen],
        masks=experience.train_masks[chosen],
        kept=kept,
        patch_size=spec.patch_size,
        kept_per_image=kept_count,
        captions=row_texts(stream, experience.train_labels[chosen], questions),
    )


def row_texts(stream: TaskStream, labels: np.ndarray, questions: torch.Tensor | None) -> tuple[str, ...]:
    """What labels each gallery row: a caption, or a question and its answer; nothing for a class."""
    if labels.ndim == 2:
        return tuple(decode_ids(row.tolist(), stream.vocabulary) for row in labels)
    if questions is not None:
        return tuple(
            " ".join(stream.vocabulary[i] for i in question.tolist() if i) + f" → {stream.answers[int(y)]}"
            for question, y in zip(questions, labels, strict=True)
        )
    return ()
