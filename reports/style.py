"""How every report figure looks and is written: paper style, series colours and markers that never
repeat within a figure, legends fitted to the figure (never clipped), and files with a caption beside.

Figures are ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot, no global backend switch), sized
for a paper column (``COLUMN_WIDTH_INCHES``) or the full text width (``TEXT_WIDTH_INCHES``).
``save_figure`` writes ``<stem>.pdf``, ``<stem>.png`` and ``<stem>.caption.txt``: what the figure shows
and its provenance (grid, seeds, commit) go into the caption file, not into the figure.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import seaborn as sns
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.legend import Legend

from benchmark.results import write_bytes_atomic, write_text_atomic

COLUMN_WIDTH_INCHES = 3.4
TEXT_WIDTH_INCHES = 6.9
PNG_DPI = 200
PAPER_STYLE = {
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "lines.linewidth": 1.0,
    "lines.markersize": 3,
    "pdf.fonttype": 42,
}
SMALL_FONT_SIZE = 6
# Distinct markers: filled ones first, then line markers; a figure with more series than this still tells
# them apart by colour, which never repeats.
MARKERS = (
    "o",
    "s",
    "^",
    "D",
    "v",
    "P",
    "X",
    "<",
    ">",
    "p",
    "h",
    "*",
    "d",
    "H",
    "8",
    "1",
    "2",
    "3",
    "4",
    "+",
    "x",
)
BOUND_COLORS = {"none": "0.45", "joint": "0.15"}
LEGEND_MARGIN = 0.98  # share of the figure's width a legend may take
CAPTION_SUFFIX = ".caption.txt"
Color = tuple[float, float, float]


@dataclass(frozen=True)
class Drawn:
    """A figure and its caption (what it shows; the report adds the provenance)."""

    figure: Figure
    caption: str


@dataclass(frozen=True)
class SeriesStyle:
    color: Color
    marker: str


def distinct_colors(count: int) -> list[Color]:
    """``count`` colours, none repeated: seaborn's colour-blind palette up to 10, else ``count`` evenly
    spaced hues (husl) at alternating lightness, handed out a golden-ratio stride apart on the hue circle
    so that consecutive series (sorted names: often the same sample selector) differ clearly."""
    if count <= 10:
        palette = sns.color_palette("colorblind", n_colors=10)
    else:
        light, dark = sns.husl_palette(count, l=0.62), sns.husl_palette(count, l=0.4)
        stride = next(step for step in range(round(count * 0.382), count) if math.gcd(step, count) == 1)
        order = [(index * stride) % count for index in range(count)]
        palette = [(dark if index % 2 else light)[hue] for index, hue in enumerate(order)]
    return [tuple(color) for color in palette[:count]]


def series_styles(names: Sequence[str]) -> dict[str, SeriesStyle]:
    """A colour and a marker for each name, in the given order: no colour repeats; no marker repeats
    while there are at most ``len(MARKERS)`` names. Pass every series of a report so figures agree."""
    colors = distinct_colors(len(names))
    return {
        name: SeriesStyle(color, MARKERS[index % len(MARKERS)])
        for index, (name, color) in enumerate(zip(names, colors, strict=True))
    }


def sequential_styles(count: int, palette: str = "rocket") -> list[SeriesStyle]:
    """Styles for an ordered quantity (retention, …): a sequential palette (its lightest end left out)
    and a distinct marker each."""
    colors = sns.color_palette(palette, n_colors=count + 1)[1:]
    return [SeriesStyle(tuple(color), MARKERS[index % len(MARKERS)]) for index, color in enumerate(colors)]


# --- legends ------------------------------------------------------------------------------------------


def _fits(figure: Figure, legend: Legend) -> bool:
    figure.draw_without_rendering()
    box = legend.get_window_extent()
    return box.width <= LEGEND_MARGIN * figure.bbox.width


def place_legend(
    figure: Figure,
    handles: Sequence[Artist],
    labels: Sequence[str],
    max_columns: int | None = None,
    **options: object,
) -> Legend | None:
    """A figure legend below the axes in as many columns as fit the figure's width (long labels are
    wrapped when one column is still too wide); the figure grows by the legend's height, so the axes
    keep their size. Needs a constrained-layout figure."""
    if not handles:
        return None
    base_height = figure.get_figheight()
    labels = list(labels)
    columns = min(len(labels), max_columns or len(labels))
    wrap = max(len(label) for label in labels)
    while True:
        legend = figure.legend(
            handles, labels, loc="outside lower center", ncol=columns, frameon=False, **options
        )
        if _fits(figure, legend) or (columns == 1 and wrap <= 12):
            break
        legend.remove()
        if columns > 1:
            columns -= 1
        else:
            wrap = max(12, int(wrap * 0.8))
            labels = [textwrap.fill(label, wrap) for label in labels]
    height = legend.get_window_extent().height / figure.dpi
    figure.set_figheight(base_height + height)
    figure.draw_without_rendering()
    return legend


# --- files ----------------------------------------------------------------------------------------------


def file_slug(name: str) -> str:
    """A file-name-safe version of a label: ``random+random`` stays, ``a[b=1, c=2]`` → ``a_b=1_c=2_``."""
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", name)


def caption_path(stem: Path) -> Path:
    return stem.parent / f"{stem.name}{CAPTION_SUFFIX}"


def save_figure(figure: Figure, stem: Path, caption: str = "") -> list[Path]:
    """``stem.pdf`` (no creation date, so reruns give the same file), ``stem.png`` at 200 dpi and, given a
    caption (what the figure shows, then its provenance), ``stem.caption.txt``."""
    options = {"pdf": {"metadata": {"CreationDate": None}}, "png": {"dpi": PNG_DPI}}
    paths = []
    for file_format, format_options in options.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format=file_format, **format_options)
        path = stem.parent / f"{stem.name}.{file_format}"
        write_bytes_atomic(path, buffer.getvalue())
        paths.append(path)
    if caption:
        path = caption_path(stem)
        write_text_atomic(path, textwrap.fill(" ".join(caption.split()), 100) + "\n")
        paths.append(path)
    return paths


def percent(value: float) -> str:
    """A fraction as a percentage: ``0.005`` → ``0.5%``."""
    return f"{value * 100:g}%"


def finite(value: float | None) -> float:
    return 0.0 if value is None or math.isnan(value) else float(value)
