"""Paper figures: memory used vs final accuracy per task, and seed-mean accuracy matrices.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global
backend switch), sized for one paper column, and written atomically as PDF and PNG.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.lines
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter, NullLocator

from benchmark.config import AUTO
from benchmark.results import write_bytes_atomic
from reports.records import BOUND, KIND_ORDER, finished_cells, is_auto, same_fraction

COLUMN_WIDTH_INCHES = 3.4
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
CAPTION_FONT_SIZE = 6
CAPTION_WRAP_CHARS = 85
NARROW_WRAP_CHARS = 70  # figures whose labels leave less than the full width to the title
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
LINE_STYLE_BY_KIND = {"coreset": "-", "core tokenset": "--"}
BOUND_COLORS = {"none": "0.45", "joint": "0.15"}
Color = tuple[float, float, float]


# --- series and their colours ---------------------------------------------------------------------


def series_labels(frame: pd.DataFrame) -> pd.Series:
    """Line name of each row: its method, plus ``t=…`` when the method runs at several token fractions."""
    stored = frame[frame["kind"] != BOUND]
    fractions = stored.groupby("method")["token_fraction"].nunique()
    swept = set(fractions[fractions > 1].index)
    return pd.Series(
        [
            f"{method} t={fraction_label(fraction)}" if method in swept else method
            for method, fraction in zip(frame["method"], frame["token_fraction"], strict=True)
        ],
        index=frame.index,
    )


def fraction_label(value: float | str) -> str:
    return AUTO if is_auto(value) else f"{float(value):g}"


def palette_for(frame: pd.DataFrame) -> dict[str, Color]:
    """Colour-blind-safe colour per stored-memory series, by sorted name over ``frame``."""
    names = sorted(set(series_labels(frame)[frame["kind"] != BOUND]))
    colors = sns.color_palette("colorblind", n_colors=10)
    return {name: tuple(colors[index % len(colors)]) for index, name in enumerate(names)}


def method_palette(board: pd.DataFrame) -> dict[str, Color]:
    """The colour of each method over the whole leaderboard frame: pass all of it so that figures agree."""
    return palette_for(board)


def marker_for(frame: pd.DataFrame) -> dict[str, str]:
    names = sorted(set(series_labels(frame)[frame["kind"] != BOUND]))
    return {name: MARKERS[index % len(MARKERS)] for index, name in enumerate(names)}


# --- memory vs accuracy -----------------------------------------------------------------------------


def bytes_per_retention(rows: pd.DataFrame) -> float | None:
    """Bytes a retention of 1.0 allows for this task (median of bytes_allowed / retention), if known."""
    stored = rows[(rows["kind"] != BOUND) & (rows["bytes_allowed"] > 0)]
    ratios = (stored["bytes_allowed"] / stored["retention"]).dropna()
    return float(ratios.median()) if len(ratios) else None


def _plot_series(axes, rows: pd.DataFrame, color: Color, marker: str, label: str) -> None:
    points = rows[rows["bytes_used_mean"] > 0].sort_values("bytes_used_mean")
    x = points["bytes_used_mean"].to_numpy()
    mean = points["final_accuracy_mean"].to_numpy()
    half_width = points["final_accuracy_ci"].to_numpy()
    style = LINE_STYLE_BY_KIND[points["kind"].iloc[0]] if len(points) else "-"
    axes.plot(x, mean, linestyle=style, marker=marker, color=color, label=label)
    axes.fill_between(x, mean - half_width, mean + half_width, color=color, alpha=0.18, linewidth=0)


def _plot_bounds(axes, bounds: pd.DataFrame) -> None:
    for _, row in bounds.iterrows():
        if math.isnan(row["final_accuracy_mean"]):
            continue
        color = BOUND_COLORS.get(row["method"], "0.3")
        axes.axhline(row["final_accuracy_mean"], linestyle=":", color=color, linewidth=0.9)
        above = row["method"] != "none"  # labels sit outside the band between the bounds, where data lie
        axes.annotate(
            row["method"],
            xy=(0.01, row["final_accuracy_mean"]),
            xycoords=("axes fraction", "data"),
            xytext=(0, 1.5 if above else -1.5),
            textcoords="offset points",
            ha="left",
            va="bottom" if above else "top",
            color=color,
            fontsize=CAPTION_FONT_SIZE,
        )


def _format_axes(axes, rows: pd.DataFrame) -> None:
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0)))
    axes.xaxis.set_major_formatter(EngFormatter(unit="B", places=0, sep=" "))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("memory used (bytes)")
    axes.set_ylabel("final average accuracy")
    axes.margins(x=0.06, y=0.12)
    axes.grid(True, which="major", linewidth=0.3, alpha=0.5)
    ratio = bytes_per_retention(rows)
    if ratio is None:
        return
    top = axes.secondary_xaxis("top", functions=(lambda b: b / ratio * 100.0, lambda p: p * ratio / 100.0))
    top.set_xlabel("retention (% of task inputs)")
    retentions = sorted(rows.loc[rows["kind"] != BOUND, "retention"].dropna().unique())
    top.set_xticks([value * 100.0 for value in retentions])
    top.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}%"))
    top.xaxis.set_minor_locator(NullLocator())


def legend_columns(labels: Sequence[str]) -> int:
    """As many columns as fit 3.4 in at 7 pt: names up to 12 characters three, up to 24 two, else one."""
    longest = max(len(label) for label in labels)
    return min(3 if longest <= 12 else 2 if longest <= 24 else 1, len(labels))


def figure_height(labels: Sequence[str]) -> float:
    """2.6 in with one legend row; each further row adds its own height instead of shrinking the plot."""
    rows = math.ceil(len(labels) / legend_columns(labels)) if labels else 0
    return 2.45 + 0.15 * max(rows, 1)


def _legend(figure: Figure, axes) -> None:
    handles, labels = axes.get_legend_handles_labels()
    if not handles:
        return
    figure.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=legend_columns(labels),
        frameon=False,
        handlelength=2.2,
        columnspacing=1.2,
    )


def draw_memory_accuracy(frame: pd.DataFrame, task: str, caption: str) -> Figure:
    """Final accuracy against memory used for ``task`` (a task label of the leaderboard ``frame``)."""
    palette, markers = palette_for(frame), marker_for(frame)
    rows = frame[frame["task"] == task]
    if rows.empty:
        raise ValueError(f"no finished cells for task {task!r}")
    stored = rows[rows["kind"] != BOUND]
    names = series_labels(frame)[stored.index]
    legend_order = sorted(
        set(names), key=lambda name: (KIND_ORDER[stored["kind"][names == name].iloc[0]], name)
    )
    figure = Figure(figsize=(COLUMN_WIDTH_INCHES, figure_height(legend_order)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name in legend_order:  # coresets first, then core tokensets
        _plot_series(axes, stored[names == name], palette[name], markers[name], name)
    _plot_bounds(axes, rows[rows["kind"] == BOUND])
    _format_axes(axes, rows)
    _legend(figure, axes)
    title = textwrap.fill(f"{task}. {caption}", CAPTION_WRAP_CHARS)
    figure.suptitle(title, fontsize=CAPTION_FONT_SIZE, color="0.25")
    return figure


def memory_accuracy_figure(board: pd.DataFrame, task: str, out_dir: Path, caption: str) -> list[Path]:
    """``memory_accuracy_<task>.pdf`` and ``.png`` in ``out_dir``."""
    with matplotlib.rc_context(PAPER_STYLE):
        figure = draw_memory_accuracy(board, task, caption)
        return save_figure(figure, out_dir / f"memory_accuracy_{file_slug(task)}")


# --- accuracy matrix ------------------------------------------------------------------------------


def matching_cells(
    cells: pd.DataFrame,
    task: str,
    method: str,
    retention: float | None,
    token_fraction: float | str | None = None,
) -> pd.DataFrame:
    """Finished cells of one leaderboard row (all token fractions must agree unless one is given)."""
    finished = finished_cells(cells)
    wanted_retention = math.nan if retention is None else retention
    chosen = finished[
        (finished["task_label"] == task)
        & (finished["method_label"] == method)
        & np.isclose(finished["retention"], wanted_retention, rtol=1e-9, atol=1e-12, equal_nan=True)
    ]
    if token_fraction is not None:
        chosen = chosen[[same_fraction(value, token_fraction) for value in chosen["token_fraction"]]]
    fractions = {str(value) for value in chosen["token_fraction"]}
    if len(fractions) > 1:
        raise ValueError(
            f"{method} on {task} ran at token fractions {sorted(fractions)}: pass token_fraction"
        )
    return chosen


def mean_accuracy_matrix(
    cells: pd.DataFrame,
    task: str,
    method: str,
    retention: float | None,
    token_fraction: float | str | None = None,
) -> tuple[np.ndarray, int]:
    """Seed-mean accuracy matrix of one leaderboard row, and the number of seeds."""
    chosen = matching_cells(cells, task, method, retention, token_fraction)
    if chosen.empty:
        raise ValueError(f"no finished cells for {task} {method} retention={retention}")
    matrices = list(chosen["accuracy_matrix"])
    if len({matrix.shape for matrix in matrices}) > 1:
        raise ValueError(f"accuracy matrices of {task} {method} differ in shape across seeds")
    return np.mean(matrices, axis=0), len(matrices)


def accuracy_matrix_figure(
    cells: pd.DataFrame,
    task: str,
    method: str,
    retention: float | None,
    out_dir: Path,
    token_fraction: float | str | None = None,
    caption: str = "",
) -> list[Path]:
    """Annotated heat map of the seed-mean accuracy matrix (row: after task i, column: task j).

    ``caption`` (grid, seeds, commit) goes under the title. The file is
    ``accuracy_matrix_<task>_<method>_<r…|bound>[_t…].pdf/.png`` (``_t…`` only when a token
    fraction is given for a core tokenset).
    """
    matrix, seeds = mean_accuracy_matrix(cells, task, method, retention, token_fraction)
    retention_text = "bound" if retention is None else f"{retention * 100:g}%"
    fraction_text = ""
    if token_fraction is not None and (is_auto(token_fraction) or float(token_fraction) < 1.0):
        fraction_text = ", t=auto" if is_auto(token_fraction) else f", t={float(token_fraction):g}"
    with matplotlib.rc_context(PAPER_STYLE):
        figure = Figure(figsize=(COLUMN_WIDTH_INCHES, 3.0 if caption else 2.8), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        sns.heatmap(
            matrix,
            ax=axes,
            vmin=0.0,
            vmax=1.0,
            cmap="viridis",
            annot=True,
            fmt=".2f",
            annot_kws={"fontsize": 6},
            square=True,
            xticklabels=range(1, matrix.shape[1] + 1),
            yticklabels=range(1, matrix.shape[0] + 1),
            cbar_kws={"label": "accuracy", "shrink": 0.8},
        )
        axes.tick_params(axis="y", labelrotation=0)
        axes.set_xlabel("evaluated on task")
        axes.set_ylabel("after training task")
        axes.set_title(
            f"{task}, {method}, {retention_text}{fraction_text}, mean of {seeds} seeds",
            fontsize=CAPTION_FONT_SIZE,
        )
        if caption:
            figure.suptitle(
                textwrap.fill(caption, NARROW_WRAP_CHARS), fontsize=CAPTION_FONT_SIZE, color="0.25"
            )
        retention_slug = "bound" if retention is None else f"r{retention * 100:g}"
        fraction_slug = ""
        if fraction_text and token_fraction is not None:
            fraction_slug = "_tauto" if is_auto(token_fraction) else f"_t{float(token_fraction):g}"
        stem = f"accuracy_matrix_{file_slug(task)}_{file_slug(method)}_{retention_slug}{fraction_slug}"
        return save_figure(figure, out_dir / stem)


def middle_retention(rows: pd.DataFrame) -> float | None:
    """The middle of a task's retentions (the lower middle of an even count), None without stored rows."""
    retentions = sorted(rows.loc[rows["kind"] != BOUND, "retention"].dropna().unique())
    return float(retentions[(len(retentions) - 1) // 2]) if retentions else None


def matrix_selection(frame: pd.DataFrame, task: str) -> list[tuple[str, float | None, float | str | None]]:
    """(method, retention, token fraction) whose accuracy matrices the report draws for ``task``.

    The bounds, and at the middle retention the best coreset and the best core tokenset by final
    accuracy (first in leaderboard order on a tie).
    """
    rows = frame[frame["task"] == task]
    chosen: list[tuple[str, float | None, float | str | None]] = [
        (method, None, None) for method in rows.loc[rows["kind"] == BOUND, "method"]
    ]
    retention = middle_retention(rows)
    if retention is None:
        return chosen
    at_middle = rows[np.isclose(rows["retention"].astype(float), retention)]
    for kind in ("coreset", "core tokenset"):
        candidates = at_middle[(at_middle["kind"] == kind) & at_middle["final_accuracy_mean"].notna()]
        if candidates.empty:
            continue
        best = candidates.loc[candidates["final_accuracy_mean"].idxmax()]
        chosen.append((best["method"], retention, best["token_fraction"]))
    return chosen


def accuracy_matrix_figures(
    cells: pd.DataFrame, board: pd.DataFrame, task: str, out_dir: Path, caption: str
) -> list[Path]:
    """The heat maps of ``matrix_selection`` for ``task``."""
    return [
        path
        for method, retention, fraction in matrix_selection(board, task)
        for path in accuracy_matrix_figure(
            cells, task, method, retention, out_dir, token_fraction=fraction, caption=caption
        )
    ]


# --- forgetting per method ----------------------------------------------------------------------------


def draw_forgetting(frame: pd.DataFrame, task: str, caption: str) -> Figure:
    """Average forgetting (mean and 95% CI over seeds) per method, one marker per retention."""
    rows = frame[frame["task"] == task]
    if rows.empty:
        raise ValueError(f"no finished cells for task {task!r}")
    labels = series_labels(frame)[rows.index]
    order = sorted(
        set(labels),
        key=lambda name: (
            KIND_ORDER[rows["kind"][labels == name].iloc[0]],
            BOUND_SORT.get(name, len(BOUND_SORT)),
            name,
        ),
    )
    retentions = sorted(rows["retention"].dropna().unique())
    colors = sns.color_palette("rocket", n_colors=max(len(retentions), 1) + 1)[1:]
    height = 0.9 + 0.17 * len(order)
    figure = Figure(figsize=(COLUMN_WIDTH_INCHES, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    offsets = np.linspace(-0.22, 0.22, len(retentions)) if len(retentions) > 1 else np.zeros(1)
    for position, name in enumerate(order):
        group = rows[labels == name]
        if group["kind"].iloc[0] == BOUND:
            row = group.iloc[0]
            axes.errorbar(
                row["forgetting_mean"],
                position,
                xerr=_finite(row["forgetting_ci"]),
                fmt="D",
                color=BOUND_COLORS.get(name, "0.3"),
                capsize=1.5,
                elinewidth=0.7,
                label="bound (no retention)" if position == 0 else None,
            )
            continue
        for index, retention in enumerate(retentions):
            at = group[np.isclose(group["retention"].astype(float), retention)]
            if at.empty:
                continue
            row = at.iloc[0]
            axes.errorbar(
                row["forgetting_mean"],
                position + offsets[index],
                xerr=_finite(row["forgetting_ci"]),
                fmt="o",
                color=colors[index],
                capsize=1.5,
                elinewidth=0.7,
                label=f"retention {retention * 100:g}%",
            )
    axes.set_yticks(range(len(order)), order)
    axes.set_ylim(len(order) - 0.5, -0.5)
    axes.set_xlabel("average forgetting (lower is better)")
    axes.grid(True, axis="x", linewidth=0.3, alpha=0.5)
    handles, names = axes.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    figure.legend(
        list(unique.values()),
        list(unique),
        loc="outside lower center",
        ncol=min(len(unique), 2),
        frameon=False,
    )
    figure.suptitle(
        textwrap.fill(f"{task}: forgetting, mean ± 95% CI over seeds. {caption}", NARROW_WRAP_CHARS),
        fontsize=CAPTION_FONT_SIZE,
        color="0.25",
    )
    return figure


BOUND_SORT = {"none": 0, "joint": 1}


def _finite(value: float) -> float:
    return 0.0 if value is None or math.isnan(value) else float(value)


def forgetting_figure(board: pd.DataFrame, task: str, out_dir: Path, caption: str) -> list[Path]:
    """``forgetting_<task>.pdf`` and ``.png`` in ``out_dir``."""
    with matplotlib.rc_context(PAPER_STYLE):
        figure = draw_forgetting(board, task, caption)
        return save_figure(figure, out_dir / f"forgetting_{file_slug(task)}")


# --- budget split: token fraction at fixed bytes --------------------------------------------------------


def sample_selector_label(method: str) -> str:
    """``gradmatch`` of ``gradmatch+gradlrp`` (a label's bracketed parameters dropped)."""
    return method.split("[", 1)[0].split("+", 1)[0]


def split_methods(frame: pd.DataFrame, task: str) -> list[str]:
    """Core-tokenset methods of ``task`` run at more than one token fraction."""
    rows = frame[(frame["task"] == task) & (frame["kind"] == "core tokenset")]
    fractions = rows.groupby("method")["token_fraction"].nunique()
    return sorted(fractions[fractions > 1].index)


def budget_split_points(frame: pd.DataFrame, task: str, method: str) -> pd.DataFrame:
    """Rows of ``method`` on ``task`` plus, at t = 1, its sample selector's coreset at the same retentions.

    Columns: retention, token_fraction, final_accuracy_mean, final_accuracy_ci, source
    ("core tokenset" or "coreset"). A core tokenset already run at t = 1 is kept and no coreset added.
    """
    rows = frame[(frame["task"] == task) & (frame["method"] == method)].assign(source="core tokenset")
    coreset = frame[
        (frame["task"] == task)
        & (frame["kind"] == "coreset")
        & (frame["method"] == sample_selector_label(method))
        & frame["retention"].isin(rows["retention"])
    ].assign(source="coreset", token_fraction=1.0)
    at_one = set(rows.loc[[same_fraction(value, 1.0) for value in rows["token_fraction"]], "retention"])
    coreset = coreset[~coreset["retention"].isin(at_one)]
    columns = ["retention", "token_fraction", "final_accuracy_mean", "final_accuracy_ci", "source"]
    points = pd.concat([rows[columns], coreset[columns]], ignore_index=True)
    return points.sort_values(["retention", "token_fraction"], ignore_index=True)


def draw_budget_split(frame: pd.DataFrame, task: str, caption: str) -> Figure | None:
    """Final accuracy against token fraction t at fixed bytes: a panel per swept core tokenset, a line
    per retention; the coreset of the same sample selector is the t = 1 point (a hollow square).
    None when no core tokenset of ``task`` ran at more than one token fraction."""
    methods = split_methods(frame, task)
    if not methods:
        return None
    retentions = sorted(frame.loc[frame["task"] == task, "retention"].dropna().unique())
    colors = dict(zip(retentions, sns.color_palette("rocket", n_colors=len(retentions) + 1)[1:], strict=True))
    columns = min(len(methods), 2)
    panel_rows = math.ceil(len(methods) / columns)
    width = COLUMN_WIDTH_INCHES if columns == 1 else 2 * COLUMN_WIDTH_INCHES
    figure = Figure(figsize=(width, 0.9 + 2.0 * panel_rows), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(panel_rows, columns, squeeze=False, sharey=True)
    for index, method in enumerate(methods):
        axes = grid[index // columns, index % columns]
        points = budget_split_points(frame, task, method)
        for retention, line in points.groupby("retention", sort=True):
            color = colors[retention]
            x = line["token_fraction"].to_numpy(dtype=float)
            mean = line["final_accuracy_mean"].to_numpy(dtype=float)
            half = np.nan_to_num(line["final_accuracy_ci"].to_numpy(dtype=float))
            axes.plot(x, mean, marker="o", color=color, label=f"retention {retention * 100:g}%")
            axes.fill_between(x, mean - half, mean + half, color=color, alpha=0.18, linewidth=0)
            coreset = line[line["source"] == "coreset"]
            axes.plot(
                coreset["token_fraction"],
                coreset["final_accuracy_mean"],
                linestyle="none",
                marker="s",
                markersize=5,
                markerfacecolor="white",
                color=color,
            )
        axes.set_xscale("log", base=2)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
        fractions = sorted(points["token_fraction"].unique())
        axes.set_xticks(fractions)
        axes.set_title(method, fontsize=7)
        axes.set_xlabel("token fraction t (fixed bytes)")
        axes.grid(True, linewidth=0.3, alpha=0.5)
        if index % columns == 0:
            axes.set_ylabel("final average accuracy")
    for index in range(len(methods), panel_rows * columns):
        grid[index // columns, index % columns].set_visible(False)
    handles, names = grid[0, 0].get_legend_handles_labels()
    square = matplotlib.lines.Line2D(
        [], [], linestyle="none", marker="s", markerfacecolor="white", color="0.3", markersize=5
    )
    figure.legend(
        [*handles, square],
        [*names, "coreset (t = 1)"],
        loc="outside lower center",
        ncol=min(len(handles) + 1, 2 if columns == 1 else 4),
        frameon=False,
    )
    text = (
        f"{task}: accuracy at fixed memory bytes as the budget moves from more samples (small t) "
        f"to whole samples (t = 1), mean ± 95% CI over seeds. {caption}"
    )
    wrap = NARROW_WRAP_CHARS if columns == 1 else 2 * NARROW_WRAP_CHARS
    figure.suptitle(textwrap.fill(text, wrap), fontsize=CAPTION_FONT_SIZE, color="0.25")
    return figure


def budget_split_figure(board: pd.DataFrame, task: str, out_dir: Path, caption: str) -> list[Path]:
    """``budget_split_<task>.pdf``/``.png``, or nothing when no token fraction was swept (a stale
    figure of an earlier report is removed)."""
    stem = out_dir / f"budget_split_{file_slug(task)}"
    with matplotlib.rc_context(PAPER_STYLE):
        figure = draw_budget_split(board, task, caption)
        if figure is None:
            for suffix in (".pdf", ".png"):
                stem.with_name(stem.name + suffix).unlink(missing_ok=True)
            return []
        return save_figure(figure, stem)


# --- files ------------------------------------------------------------------------------------------


def file_slug(name: str) -> str:
    """A file-name-safe version of a label: ``random+random`` stays, ``a[b=1, c=2]`` → ``a_b=1_c=2_``."""
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", name)


def save_figure(figure: Figure, stem: Path) -> list[Path]:
    """``stem.pdf`` (no creation date, so reruns give the same file) and ``stem.png`` at 200 dpi."""
    options = {"pdf": {"metadata": {"CreationDate": None}}, "png": {"dpi": PNG_DPI}}
    paths = []
    for file_format, format_options in options.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format=file_format, **format_options)
        path = stem.parent / f"{stem.name}.{file_format}"
        write_bytes_atomic(path, buffer.getvalue())
        paths.append(path)
    return paths
