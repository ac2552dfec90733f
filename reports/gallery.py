"""Attribution gallery: the same stored samples, with the tokens each token selector keeps.

Results store no images, so the gallery is computed when the report is made: the first
task of the results that has ground-truth masks (split-shapes) is built with the results'
own task parameters, its model starts from the committed backbone and is fine-tuned for a
few seeded epochs on the first experience, and every registered token selector ranks the
same training images. Kept tokens (the top ⌈t·P⌉) are drawn as they are, dropped ones
dimmed; the ground-truth mask is outlined. Deterministic: fixed seeds, CPU, deterministic
algorithms.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmark import registry
from benchmark.config import TrainConfig
from benchmark.model import TokenBatch, full_positions
from benchmark.pretrain import default_recipe, load_backbone_weights
from benchmark.train import TrainSettings, seeded_generator, train_experience, whole
from methods.base import TokenInputs
from reports.figures import CAPTION_FONT_SIZE, PAPER_STYLE, save_figure
from reports.leaderboard import Record, finished_records
from tasks.base import TaskStream, patchify
from tasks.caption_text import decode_ids

GALLERY_SEED = 0
GALLERY_EPOCHS = 3
GALLERY_IMAGES = 6
GALLERY_TOKEN_FRACTION = 0.25
GALLERY_INPUT_DROPOUT = 0.5  # what core tokensets train with by default
DIM = 0.22  # brightness left to a dropped token
MASK_COLOR = "#ffd400"
CELL_INCHES = 0.82
GALLERY_STEM = "attribution_gallery"


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


def gallery_sources(records: Sequence[Record]) -> list[GallerySource]:
    """Each distinct (task, task parameters) of the finished records, those with attribution first.

    A token selector's parameters are taken from the records when they ran it with one setting.
    """
    finished = finished_records(records)
    selector_params: dict[str, set[str]] = {}
    for record in finished:
        config = record["config"]
        if config.get("token_selector"):
            params = json.dumps(config.get("token_selector_params") or {}, sort_keys=True)
            selector_params.setdefault(config["token_selector"], set()).add(params)
    chosen_params = {
        name: json.loads(next(iter(settings)))
        for name, settings in selector_params.items()
        if len(settings) == 1
    }
    sources: dict[str, tuple[bool, GallerySource]] = {}
    for record in finished:
        config = record["config"]
        key = json.dumps([config["task"], config.get("task_params") or {}], sort_keys=True)
        has_attribution = bool(record.get("attribution"))
        if key not in sources or (has_attribution and not sources[key][0]):
            source = GallerySource(config["task"], dict(config.get("task_params") or {}), chosen_params)
            sources[key] = (has_attribution, source)
    ordered = sorted(sources.items(), key=lambda item: (not item[1][0], item[0]))
    return [source for _, (_, source) in ordered]


def first_stream_with_masks(sources: Sequence[GallerySource]) -> tuple[GallerySource, TaskStream] | None:
    """The first source whose task builds and has masks; a task that cannot be built is passed over."""
    for source in sources:
        try:
            stream = registry.create("task", source.task, **source.task_params).build()
        except Exception:  # e.g. a CIFAR archive that is not on this machine
            continue
        if stream.has_masks:
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
            kept_count = math.ceil(token_fraction * tokens)
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
                top = torch.sort(-scores.detach().float(), dim=1, stable=True).indices[:, :kept_count]
                keep = np.zeros((len(chosen), tokens), dtype=bool)
                np.put_along_axis(keep, top.numpy(), True, axis=1)
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


def _token_grid(values: np.ndarray, image_size: int, patch_size: int) -> np.ndarray:
    """[P] per-token values → [H, W] per-pixel values (row-major patches)."""
    side = image_size // patch_size
    return np.kron(values.reshape(side, side).astype(float), np.ones((patch_size, patch_size)))


def _outline(axes, mask: np.ndarray, patch_size: int, color: str, width: float) -> None:
    """Draw the boundary of the union of the masked patches."""
    side = math.isqrt(mask.size)
    grid = mask.reshape(side, side)
    padded = np.pad(grid, 1)
    for row in range(side):
        for col in range(side):
            if not grid[row, col]:
                continue
            top, left = row * patch_size - 0.5, col * patch_size - 0.5
            bottom, right = top + patch_size, left + patch_size
            if not padded[row, col + 1]:
                axes.plot([left, right], [top, top], color=color, linewidth=width)
            if not padded[row + 2, col + 1]:
                axes.plot([left, right], [bottom, bottom], color=color, linewidth=width)
            if not padded[row + 1, col]:
                axes.plot([left, left], [top, bottom], color=color, linewidth=width)
            if not padded[row + 1, col + 2]:
                axes.plot([right, right], [top, bottom], color=color, linewidth=width)


def draw_gallery(gallery: Gallery, title: str) -> Figure:
    """Rows: images (first column: the image and its mask); columns: token selectors."""
    selectors = list(gallery.kept)
    rows, columns = len(gallery.images), 1 + len(selectors)
    figure = Figure(figsize=(CELL_INCHES * columns + 0.2, CELL_INCHES * rows + 0.75), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False)
    size = gallery.images.shape[-1]
    for row, (image, mask) in enumerate(zip(gallery.images, gallery.masks, strict=True)):
        rgb = image.transpose(1, 2, 0).astype(float) / 255.0
        if rgb.shape[-1] == 1:
            rgb = np.repeat(rgb, 3, axis=-1)
        for column in range(columns):
            axes = grid[row, column]
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_linewidth(0.4)
                spine.set_color("0.6")
            if column == 0:
                axes.imshow(rgb, interpolation="nearest")
                _outline(axes, mask, gallery.patch_size, MASK_COLOR, 1.2)
                axes.set_ylabel(gallery.row_label(row), fontsize=CAPTION_FONT_SIZE)
                if row == 0:
                    axes.set_title("image, mask", fontsize=7)
                continue
            name = selectors[column - 1]
            keep = gallery.kept[name][row]
            shade = DIM + (1.0 - DIM) * _token_grid(keep, size, gallery.patch_size)
            axes.imshow(rgb * shade[..., None], interpolation="nearest")
            _outline(axes, mask, gallery.patch_size, MASK_COLOR, 0.6)
            hits = int((keep & mask).sum())
            axes.set_xlabel(f"mask kept {hits}/{int(mask.sum())}", fontsize=5.5, labelpad=1)
            if row == 0:
                axes.set_title(name, fontsize=7)
    figure.suptitle(title, fontsize=CAPTION_FONT_SIZE, color="0.25")
    return figure


def gallery_title(source: GallerySource, gallery: Gallery, caption: str, epochs: int) -> str:
    tokens = gallery.masks.shape[1]
    text = (
        f"{source.task}: top {gallery.kept_per_image} of {tokens} tokens kept by each token selector "
        f"(t = {GALLERY_TOKEN_FRACTION:g}; dimmed: dropped; yellow: ground-truth mask; under each: "
        f"mask tokens kept) on the same "
        f"{len(gallery.images)} training images of task 1, model fine-tuned {epochs} epochs from the "
        f"committed backbone (seed {GALLERY_SEED}), computed at report time. {caption}"
    )
    return textwrap.fill(text, 140)


def attribution_gallery(
    records: Sequence[Record], out_dir: Path, caption: str, epochs: int = GALLERY_EPOCHS
) -> tuple[list[Path], str | None]:
    """``attribution_gallery.pdf``/``.png`` and no note, or no file and a note saying why."""
    found = first_stream_with_masks(gallery_sources(records))
    if found is None:
        for stale in (out_dir / f"{GALLERY_STEM}.pdf", out_dir / f"{GALLERY_STEM}.png"):
            stale.unlink(missing_ok=True)
        return [], "No attribution gallery: no task of these results has ground-truth masks."
    source, stream = found
    gallery = compute_gallery(source, stream, epochs=epochs)
    with matplotlib.rc_context(PAPER_STYLE):
        figure = draw_gallery(gallery, gallery_title(source, gallery, caption, epochs))
        return save_figure(figure, out_dir / GALLERY_STEM), None
