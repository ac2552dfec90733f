"""Attribution gallery: the same stored samples, with the tokens each token selector keeps.

The engine computes it (``benchmark.gallery``: the first task of the results
with ground-truth masks, a briefly fine-tuned model, every token selector);
this module picks its source from the records and draws it: kept tokens as
they are, dropped ones dimmed, the ground-truth mask outlined.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmark.gallery import (
    GALLERY_EPOCHS,
    GALLERY_SEED,
    GALLERY_TOKEN_FRACTION,
    Gallery,
    GallerySource,
    compute_gallery,
    first_stream_with_masks,
)
from reports.records import attribution_columns, finished_cells
from reports.style import CAPTION_SUFFIX, PAPER_STYLE, SMALL_FONT_SIZE, save_figure

DIM = 0.22  # brightness left to a dropped token
MASK_COLOR = "#ffd400"
CELL_INCHES = 0.82
GALLERY_STEM = "attribution_gallery"


def gallery_sources(cells: pd.DataFrame) -> list[GallerySource]:
    """Each distinct (task, task parameters) of the finished cells, those with attribution first.

    A token selector's parameters are taken from the cells when they ran it with one setting.
    """
    finished = finished_cells(cells)
    attribution = attribution_columns(finished)
    selector_params: dict[str, set[str]] = {}
    for _, row in finished[finished["token_selector"].notna()].iterrows():
        params = json.dumps(row["token_selector_params"], sort_keys=True)
        selector_params.setdefault(row["token_selector"], set()).add(params)
    chosen_params = {
        name: json.loads(next(iter(settings)))
        for name, settings in selector_params.items()
        if len(settings) == 1
    }
    sources: dict[str, tuple[bool, GallerySource]] = {}
    for _, row in finished.iterrows():
        key = json.dumps([row["task"], row["task_params"]], sort_keys=True)
        has_attribution = bool(attribution) and bool(row[attribution].notna().any())
        if key not in sources or (has_attribution and not sources[key][0]):
            source = GallerySource(row["task"], dict(row["task_params"]), chosen_params)
            sources[key] = (has_attribution, source)
    ordered = sorted(sources.items(), key=lambda item: (not item[1][0], item[0]))
    return [source for _, (_, source) in ordered]


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


def draw_gallery(gallery: Gallery) -> Figure:
    """Rows: images (first column: the image and its mask); columns: token selectors."""
    selectors = list(gallery.kept)
    rows, columns = len(gallery.images), 1 + len(selectors)
    figure = Figure(figsize=(CELL_INCHES * columns + 0.2, CELL_INCHES * rows + 0.45), layout="constrained")
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
                axes.set_ylabel(gallery.row_label(row), fontsize=SMALL_FONT_SIZE)
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
    return figure


def gallery_caption(source: GallerySource, gallery: Gallery, caption: str, epochs: int) -> str:
    tokens = gallery.masks.shape[1]
    text = (
        f"{source.task}: top {gallery.kept_per_image} of {tokens} tokens kept by each token selector "
        f"(t = {GALLERY_TOKEN_FRACTION:g}; dimmed: dropped; yellow: ground-truth mask; under each: "
        f"mask tokens kept) on the same "
        f"{len(gallery.images)} training images of task 1, model fine-tuned {epochs} epochs from the "
        f"committed backbone (seed {GALLERY_SEED}), computed at report time. {caption}"
    )
    return text


def attribution_gallery(
    cells: pd.DataFrame, out_dir: Path, caption: str, epochs: int = GALLERY_EPOCHS
) -> tuple[list[Path], str | None]:
    """``attribution_gallery.pdf``/``.png`` and no note, or no file and a note saying why."""
    found = first_stream_with_masks(gallery_sources(cells))
    if found is None:
        for stale in (out_dir / f"{GALLERY_STEM}{suffix}" for suffix in (".pdf", ".png", CAPTION_SUFFIX)):
            stale.unlink(missing_ok=True)
        return [], "No attribution gallery: no task of these results has ground-truth masks."
    source, stream = found
    gallery = compute_gallery(source, stream, epochs=epochs)
    with matplotlib.rc_context(PAPER_STYLE):
        figure = draw_gallery(gallery)
        return save_figure(
            figure, out_dir / GALLERY_STEM, gallery_caption(source, gallery, caption, epochs)
        ), None
