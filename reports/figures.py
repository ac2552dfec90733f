"""Paper figures per task: memory vs accuracy (coresets and core tokensets in facets), forgetting, seed-mean
accuracy matrices, the budget split, and the coreset size each core tokenset performs like.

Each ``draw_*`` returns a ``matplotlib.figure.Figure`` (``reports.style``: paper style, colours and
markers that never repeat within a figure, legends fitted to the figure); each ``*_figure`` writes it
with ``style.save_figure``, its description and provenance in ``<stem>.caption.txt``.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.lines
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import (
    EngFormatter,
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    NullLocator,
)

from benchmark.config import AUTO
from reports.coreset_size import PAPER_CLAIM
from reports.records import (
    ACCURACY,
    BOUND,
    CORESET,
    KIND_ORDER,
    TOKENSET,
    finished_cells,
    is_auto,
    same_fraction,
)
from reports.style import (
    BOUND_COLORS,
    COLUMN_WIDTH_INCHES,
    PAPER_STYLE,
    SMALL_FONT_SIZE,
    TEXT_WIDTH_INCHES,
    Color,
    SeriesStyle,
    file_slug,
    finite,
    percent,
    place_legend,
    save_figure,
    sequential_styles,
    series_styles,
)

PANEL_HEIGHT_INCHES = 2.3
RATIO_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
MIN_BYTES_SPAN = 10.0  # a memory axis spans at least a factor of 10
DODGE = 0.035  # log10 spread of the points of one x value, so error bars stay apart
REFERENCE_COLOR = "0.6"
BOUND_SORT = {"none": 0, "joint": 1}
BOUND_NAMES = {"none": "no memory", "joint": "joint (all data so far)"}
KIND_TITLES = {CORESET: "coresets (whole samples)", TOKENSET: "core tokensets (kept tokens of more samples)"}


# --- series and their styles -------------------------------------------------------------------------


def fraction_label(value: float | str) -> str:
    return AUTO if is_auto(value) else f"{float(value):g}"


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


def series_names(board: pd.DataFrame) -> list[str]:
    """Every stored-memory series of the report, sorted by name (the order styles are given out in)."""
    return sorted(set(series_labels(board)[board["kind"] != BOUND]))


def board_styles(board: pd.DataFrame) -> dict[str, SeriesStyle]:
    """The colour and marker of each series over the whole leaderboard frame: pass all of it so that
    figures agree."""
    return series_styles(series_names(board))


def method_palette(board: pd.DataFrame) -> dict[str, Color]:
    return {name: style.color for name, style in board_styles(board).items()}


def _dodge(count: int) -> np.ndarray:
    """Multiplicative x offsets for ``count`` series drawn at the same x (log axis)."""
    return 10 ** (np.linspace(-DODGE, DODGE, count) if count > 1 else np.zeros(1))


def _caption(text: str, provenance: str) -> str:
    return f"{text} {provenance}".strip()


# --- memory vs accuracy -----------------------------------------------------------------------------


def bytes_per_retention(rows: pd.DataFrame) -> float | None:
    """Bytes a retention of 1.0 allows for this task (median of bytes_allowed / retention), if known."""
    stored = rows[(rows["kind"] != BOUND) & (rows["bytes_allowed"] > 0)]
    ratios = (stored["bytes_allowed"] / stored["retention"]).dropna()
    return float(ratios.median()) if len(ratios) else None


def _plot_bounds(axes, bounds: pd.DataFrame) -> None:
    for _, row in bounds.iterrows():
        if math.isnan(row["final_accuracy_mean"]):
            continue
        bound = row["method"].split("[")[0]
        color = BOUND_COLORS.get(bound, "0.3")
        axes.axhline(row["final_accuracy_mean"], linestyle=":", color=color, linewidth=0.9)
        above = bound != "none"  # labels sit outside the band between the bounds, where data lie
        axes.annotate(
            BOUND_NAMES.get(bound, row["method"]),
            xy=(0.01, row["final_accuracy_mean"]),
            xycoords=("axes fraction", "data"),
            xytext=(0, 1.5 if above else -1.5),
            textcoords="offset points",
            ha="left",
            va="bottom" if above else "top",
            color=color,
            fontsize=SMALL_FONT_SIZE,
        )


def _bytes_axis(axes, rows: pd.DataFrame, top_label: bool = True) -> None:
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0)))
    axes.xaxis.set_major_formatter(EngFormatter(unit="B", places=0, sep=" "))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("memory (bytes)")
    axes.margins(x=0.08, y=0.12)
    axes.grid(True, which="major", linewidth=0.3, alpha=0.5)
    ratio = bytes_per_retention(rows)
    if ratio is None:
        return
    top = axes.secondary_xaxis("top", functions=(lambda b: b / ratio * 100.0, lambda p: p * ratio / 100.0))
    if top_label:
        top.set_xlabel("retention (% of each task's training data)")
    retentions = sorted(rows.loc[rows["kind"] != BOUND, "retention"].dropna().unique())
    top.set_xticks([value * 100.0 for value in retentions])
    top.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}%"))
    top.xaxis.set_minor_locator(NullLocator())


def _plot_series(
    axes, points: pd.DataFrame, style: SeriesStyle, label: str, shift: float, dashed: bool, best: bool
) -> None:
    """One series with its error bars; the best of its panel is drawn bolder, the others lighter."""
    points = points[points["bytes_allowed"] > 0].sort_values("bytes_allowed")
    axes.errorbar(
        points["bytes_allowed"].to_numpy() * shift,
        points["final_accuracy_mean"].to_numpy(),
        yerr=np.nan_to_num(points["final_accuracy_ci"].to_numpy(dtype=float)),
        color=style.color,
        marker=style.marker,
        linestyle="--" if dashed else "-",
        capsize=1.5,
        elinewidth=0.6,
        linewidth=1.8 if best else 0.9,
        alpha=1.0 if best else 0.6,
        zorder=3 if best else 2,
        label=f"{label} (best)" if best else label,
    )


def metric_label(rows: pd.DataFrame) -> str:
    """``final average accuracy``, or the metric the rows hold instead (``final average CIDEr``)."""
    metrics = set(rows["metric"])
    return (
        "final average accuracy" if metrics == {ACCURACY} else f"final average {', '.join(sorted(metrics))}"
    )


def _at_least_a_factor(axes, factor: float) -> None:
    """Widen a log x axis to span at least ``factor`` (one retention: the sideways spread of its points
    must not look like a difference in memory)."""
    low, high = axes.get_xlim()
    if high / low < factor:
        middle = math.sqrt(low * high)
        axes.set_xlim(middle / math.sqrt(factor), middle * math.sqrt(factor))


def best_series(stored: pd.DataFrame, names: pd.Series, kind: str) -> str | None:
    """The series of ``kind`` with the best mean final accuracy over its retentions (first by name on a
    tie); None where there is none."""
    members = stored[(stored["kind"] == kind) & stored["final_accuracy_mean"].notna()]
    if members.empty:
        return None
    means = members.groupby(names[members.index])["final_accuracy_mean"].mean()
    return str(means.sort_index().idxmax())


def draw_memory_accuracy(board: pd.DataFrame, task: str) -> Figure:
    """Final accuracy against memory bytes for ``task`` (a task label of the leaderboard ``board``): a facet
    of coresets and one of core tokensets (which also shows the best coreset, grey, for reference), each
    with the bounds as dotted lines."""
    rows = board[board["task"] == task]
    if rows.empty:
        raise ValueError(f"no finished cells for task {task!r}")
    styles = board_styles(board)
    stored = rows[rows["kind"] != BOUND]
    names = series_labels(board)[stored.index]
    kinds = [kind for kind in (CORESET, TOKENSET) if (stored["kind"] == kind).any()] or [CORESET]
    width = COLUMN_WIDTH_INCHES if len(kinds) == 1 else TEXT_WIDTH_INCHES
    figure = Figure(figsize=(width, PANEL_HEIGHT_INCHES), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, len(kinds), sharey=True, squeeze=False)[0]
    reference = best_series(stored, names, CORESET)
    for axes, kind in zip(panels, kinds, strict=True):
        members = sorted(set(names[stored["kind"] == kind]))
        best = best_series(stored, names, kind)
        for name, shift in zip(members, _dodge(len(members)), strict=True):
            dashed = kind == TOKENSET
            _plot_series(axes, stored[names == name], styles[name], name, shift, dashed, name == best)
        if kind == TOKENSET and reference is not None:
            points = stored[names == reference].sort_values("bytes_allowed")
            axes.plot(
                points["bytes_allowed"],
                points["final_accuracy_mean"],
                color=REFERENCE_COLOR,
                linewidth=2.2,
                marker="o",
                markersize=6,
                alpha=0.6,
                zorder=0,
                label=f"best coreset ({reference}), for reference",
            )
        _plot_bounds(axes, rows[rows["kind"] == BOUND])
        _bytes_axis(axes, rows)
        axes.set_title(KIND_TITLES[kind] if len(kinds) > 1 else "", fontsize=7)
    panels[0].set_ylabel(metric_label(rows))
    for axes in panels:
        _at_least_a_factor(axes, MIN_BYTES_SPAN)
    handles, labels = {}, []
    for axes in panels:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    place_legend(figure, [handles[label] for label in labels], labels, handlelength=2.2, columnspacing=1.2)
    return figure


def memory_accuracy_caption(task: str, provenance: str) -> str:
    return _caption(
        f"{task}: final average accuracy against memory (the bytes each retention allows, log scale; top "
        "axis: retention, % of each task's training data), mean and Student-t 95% CI over seeds; points of "
        "one retention are spread sideways a little so that their error bars stay apart. Coresets (solid) "
        "and core tokensets (dashed) in separate panels, the best of each (highest mean over retentions) "
        "bold, and the best coreset again in grey beside the core tokensets; dotted: no memory and joint "
        "training on all data so far.",
        provenance,
    )


def memory_accuracy_figure(board: pd.DataFrame, task: str, out_dir: Path, caption: str) -> list[Path]:
    """``memory_accuracy_<task>.pdf``, ``.png`` and ``.caption.txt`` in ``out_dir``."""
    with matplotlib.rc_context(PAPER_STYLE):
        figure = draw_memory_accuracy(board, task)
        return save_figure(
            figure, out_dir / f"memory_accuracy_{file_slug(task)}", memory_accuracy_caption(task, caption)
        )


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

    ``caption`` (grid, seeds, commit) goes into the caption file. The files are
    ``accuracy_matrix_<task>_<method>_<r…|bound>[_t…].pdf/.png/.caption.txt`` (``_t…`` only when a
    token fraction is given for a core tokenset). The colour scale is 0–1 for accuracy, 0 to the
    largest value for another metric (CIDEr).
    """
    matrix, seeds = mean_accuracy_matrix(cells, task, method, retention, token_fraction)
    metric = ",".join(sorted(set(matching_cells(cells, task, method, retention, token_fraction)["metric"])))
    retention_text = "no retention (a bound)" if retention is None else percent(retention)
    fraction_text = ""
    if token_fraction is not None and (is_auto(token_fraction) or float(token_fraction) < 1.0):
        fraction_text = ", t=auto" if is_auto(token_fraction) else f", t={float(token_fraction):g}"
    with matplotlib.rc_context(PAPER_STYLE):
        figure = Figure(figsize=(COLUMN_WIDTH_INCHES, 2.8), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        sns.heatmap(
            matrix,
            ax=axes,
            vmin=0.0,
            vmax=1.0 if metric == ACCURACY else max(float(np.nanmax(matrix)), 1.0),
            cmap="viridis",
            annot=True,
            fmt=".2f",
            annot_kws={"fontsize": 6},
            square=True,
            xticklabels=range(1, matrix.shape[1] + 1),
            yticklabels=range(1, matrix.shape[0] + 1),
            cbar_kws={"label": metric, "shrink": 0.8},
        )
        axes.tick_params(axis="y", labelrotation=0)
        axes.set_xlabel("evaluated on task")
        axes.set_ylabel("after training task")
        axes.set_title(
            f"{task}, {method}, {retention_text}{fraction_text}, mean of {seeds} seeds",
            fontsize=SMALL_FONT_SIZE,
        )
        retention_slug = "bound" if retention is None else f"r{retention * 100:g}"
        fraction_slug = ""
        if fraction_text and token_fraction is not None:
            fraction_slug = "_tauto" if is_auto(token_fraction) else f"_t{float(token_fraction):g}"
        stem = f"accuracy_matrix_{file_slug(task)}_{file_slug(method)}_{retention_slug}{fraction_slug}"
        text = (
            f"{task}: {metric} after training each task (rows) on each task (columns), {method} at "
            f"{retention_text}{fraction_text}, mean of {seeds} seeds."
        )
        return save_figure(figure, out_dir / stem, _caption(text, caption))


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


def draw_forgetting(board: pd.DataFrame, task: str) -> Figure:
    """Average forgetting (mean and 95% CI over seeds) per method, one marker per retention."""
    rows = board[board["task"] == task]
    if rows.empty:
        raise ValueError(f"no finished cells for task {task!r}")
    labels = series_labels(board)[rows.index]
    order = sorted(
        set(labels),
        key=lambda name: (
            KIND_ORDER[rows["kind"][labels == name].iloc[0]],
            BOUND_SORT.get(name, len(BOUND_SORT)),
            name,
        ),
    )
    retentions = sorted(rows["retention"].dropna().unique())
    styles = sequential_styles(max(len(retentions), 1))
    figure = Figure(figsize=(COLUMN_WIDTH_INCHES, 0.8 + 0.17 * len(order)), layout="constrained")
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
                xerr=finite(row["forgetting_ci"]),
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
                xerr=finite(row["forgetting_ci"]),
                fmt=styles[index].marker,
                color=styles[index].color,
                capsize=1.5,
                elinewidth=0.7,
                label=f"retention {percent(retention)}",
            )
    axes.set_yticks(range(len(order)), order)
    axes.set_ylim(len(order) - 0.5, -0.5)
    axes.set_xlabel("average forgetting (lower is better)")
    axes.grid(True, axis="x", linewidth=0.3, alpha=0.5)
    handles, names = axes.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    place_legend(figure, list(unique.values()), list(unique))
    return figure


def forgetting_figure(board: pd.DataFrame, task: str, out_dir: Path, caption: str) -> list[Path]:
    """``forgetting_<task>.pdf``, ``.png`` and ``.caption.txt`` in ``out_dir``."""
    with matplotlib.rc_context(PAPER_STYLE):
        figure = draw_forgetting(board, task)
        text = (
            f"{task}: average forgetting per method (how much accuracy on earlier tasks falls by the end), "
            "mean and Student-t 95% CI over seeds, one marker per retention."
        )
        return save_figure(figure, out_dir / f"forgetting_{file_slug(task)}", _caption(text, caption))


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


def draw_budget_split(board: pd.DataFrame, task: str) -> Figure | None:
    """Final accuracy against token fraction t at fixed bytes: a panel per swept core tokenset, a line
    per retention; the coreset of the same sample selector is the t = 1 point (a hollow square).
    None when no core tokenset of ``task`` ran at more than one token fraction."""
    methods = split_methods(board, task)
    if not methods:
        return None
    retentions = sorted(board.loc[board["task"] == task, "retention"].dropna().unique())
    styles = dict(zip(retentions, sequential_styles(len(retentions)), strict=True))
    columns = min(len(methods), 2)
    panel_rows = math.ceil(len(methods) / columns)
    width = COLUMN_WIDTH_INCHES if columns == 1 else TEXT_WIDTH_INCHES
    figure = Figure(figsize=(width, 0.5 + 2.0 * panel_rows), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(panel_rows, columns, squeeze=False, sharey=True)
    for index, method in enumerate(methods):
        axes = grid[index // columns, index % columns]
        points = budget_split_points(board, task, method)
        for retention, line in points.groupby("retention", sort=True):
            style = styles[retention]
            x = line["token_fraction"].to_numpy(dtype=float)
            mean = line["final_accuracy_mean"].to_numpy(dtype=float)
            half = np.nan_to_num(line["final_accuracy_ci"].to_numpy(dtype=float))
            axes.errorbar(
                x,
                mean,
                yerr=half,
                marker=style.marker,
                color=style.color,
                capsize=1.5,
                elinewidth=0.6,
                label=f"retention {percent(retention)}",
            )
            coreset = line[line["source"] == "coreset"]
            axes.plot(
                coreset["token_fraction"],
                coreset["final_accuracy_mean"],
                linestyle="none",
                marker="s",
                markersize=5,
                markerfacecolor="white",
                color=style.color,
            )
        axes.set_xscale("log", base=2)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xticks(sorted(points["token_fraction"].unique()))
        axes.set_title(method, fontsize=7)
        axes.set_xlabel("token fraction t: share of each kept sample's tokens")
        axes.grid(True, linewidth=0.3, alpha=0.5)
        if index % columns == 0:
            axes.set_ylabel(metric_label(board[board["task"] == task]))
    for index in range(len(methods), panel_rows * columns):
        grid[index // columns, index % columns].set_visible(False)
    handles, names = grid[0, 0].get_legend_handles_labels()
    square = matplotlib.lines.Line2D(
        [], [], linestyle="none", marker="s", markerfacecolor="white", color="0.3", markersize=5
    )
    place_legend(figure, [*handles, square], [*names, "coreset of the same sample selector (t = 1)"])
    return figure


def budget_split_figure(board: pd.DataFrame, task: str, out_dir: Path, caption: str) -> list[Path]:
    """``budget_split_<task>.pdf``/``.png``/``.caption.txt``, or nothing when no token fraction was swept
    (a stale figure of an earlier report is removed)."""
    stem = out_dir / f"budget_split_{file_slug(task)}"
    with matplotlib.rc_context(PAPER_STYLE):
        figure = draw_budget_split(board, task)
        if figure is None:
            for suffix in (".pdf", ".png", ".caption.txt"):
                stem.with_name(stem.name + suffix).unlink(missing_ok=True)
            return []
        text = (
            f"{task}: final accuracy at fixed memory bytes as the budget moves from more samples with fewer "
            "tokens each (small t) to whole samples (t = 1), mean and Student-t 95% CI over seeds."
        )
        return save_figure(figure, stem, _caption(text, caption))


# --- the coreset size each core tokenset performs like -----------------------------------------------------


def draw_coreset_size(board: pd.DataFrame, task: str) -> Figure | None:
    """k (``coreset_size``) against retention for each core tokenset of ``task``, log-log, with its 95%
    bootstrap CI; a hollow marker where k lies beyond the coreset curve (a bound); k = 1 (as good as
    the coreset of its own bytes) and the seed paper's 2–10 marked. None without any k."""
    rows = board[(board["task"] == task) & board["coreset_size_ratio"].notna()]
    if rows.empty:
        return None
    styles = board_styles(board)
    names = series_labels(board)[rows.index]
    members = sorted(set(names))
    figure = Figure(figsize=(COLUMN_WIDTH_INCHES, PANEL_HEIGHT_INCHES), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.axhspan(*PAPER_CLAIM, color="0.92", zorder=0, label="seed paper: × 2–10 (at 1%)")
    axes.axhline(1.0, color="0.4", linewidth=0.8, linestyle=":", label="× 1: as its own coreset")
    for name, shift in zip(members, _dodge(len(members)), strict=True):
        series = rows[names == name].sort_values("retention")
        style = styles[name]
        x = series["retention"].to_numpy(dtype=float) * 100.0 * shift
        k = series["coreset_size_ratio"].to_numpy(dtype=float)
        low = np.nan_to_num(k - series["coreset_size_low"].to_numpy(dtype=float))
        high = np.nan_to_num(series["coreset_size_high"].to_numpy(dtype=float) - k)
        axes.errorbar(x, k, yerr=[low, high], color=style.color, marker="none", capsize=1.5, elinewidth=0.6)
        axes.plot(x, k, color=style.color, marker=style.marker, label=name)
        beyond = series["coreset_size_position"].isin(["below", "above"]).to_numpy()
        axes.plot(
            x[beyond],
            k[beyond],
            linestyle="none",
            marker=style.marker,
            markersize=5,
            markerfacecolor="white",
            color=style.color,
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}%"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xticks(sorted(rows["retention"].unique() * 100.0))
    axes.yaxis.set_major_locator(FixedLocator(RATIO_TICKS))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"× {value:g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("retention (% of each task's training data)")
    axes.set_ylabel("coreset size matched, × k")
    axes.grid(True, which="major", linewidth=0.3, alpha=0.5)
    hollow = matplotlib.lines.Line2D(
        [], [], linestyle="none", marker="o", markerfacecolor="white", color="0.3", markersize=5
    )
    handles, labels = axes.get_legend_handles_labels()
    place_legend(figure, [*handles, hollow], [*labels, "hollow: beyond the coreset curve (a bound)"])
    return figure


def coreset_size_figure(board: pd.DataFrame, task: str, out_dir: Path, caption: str) -> list[Path]:
    """``coreset_size_<task>.pdf``/``.png``/``.caption.txt``, or nothing (a stale one removed) when no
    core tokenset of ``task`` has a coreset curve."""
    stem = out_dir / f"coreset_size_{file_slug(task)}"
    with matplotlib.rc_context(PAPER_STYLE):
        figure = draw_coreset_size(board, task)
        if figure is None:
            for suffix in (".pdf", ".png", ".caption.txt"):
                stem.with_name(stem.name + suffix).unlink(missing_ok=True)
            return []
        text = (
            f"{task}: the coreset size each core tokenset performs like, as a multiple k of its own bytes: "
            "the memory at which the coreset of the same sample selector reaches the tokenset's accuracy, "
            "interpolated in log bytes on that coreset's accuracy curve; 95% bootstrap CI over seeds. k < 1: "
            "the tokenset is worse than the coreset of its own bytes. Hollow: the accuracy lies beyond the "
            "curve's range, so k is a bound. Grey band: the seed paper's claim for a 1% core tokenset "
            "(as a coreset 2–10 times larger)."
        )
        return save_figure(figure, stem, _caption(text, caption))
