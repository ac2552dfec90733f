"""Regime-map figures: heat maps of the core tokenset − coreset difference over pairs of swept axes,
and accuracy against token fraction at fixed bytes beside accuracy on partial test inputs.

Drawn like ``reports.figures`` (``reports.style``); each comes as a ``Drawn`` (the figure and its caption),
which the caller saves (``style.save_figure``) under ``PAPER_STYLE``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import matplotlib.lines
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from benchmark.config import DEFAULT_EQUIVALENCE_MARGIN
from reports.records import is_auto
from reports.regime_table import (
    CORESET,
    TOKEN_FRACTION,
    TOKENSET,
    Cell,
    axis_text,
    axis_value_text,
    best_candidate,
    display_value,
    fraction_order,
    regime_cells,
    value_order,
    varying_axes,
)
from reports.stats import BETTER, EQUIVALENT, WORSE, mean_ci
from reports.style import (
    COLUMN_WIDTH_INCHES,
    TEXT_WIDTH_INCHES,
    Drawn,
    file_slug,
    percent,
    place_legend,
    sequential_styles,
)

HEATMAP_CMAP = "vlag"  # diverging, blue (coreset better) – white (0) – red (core tokenset better)
SIGNIFICANT_MARK = "*"
VERDICT_MARKS = {BETTER: SIGNIFICANT_MARK, WORSE: SIGNIFICANT_MARK, EQUIVALENT: "="}
LINE_STYLES = ("-", "--", ":", "-.")
RANKING_COLORS = {"random": "0.35", "oracle": sns.color_palette("colorblind")[1]}


# --- heat maps ---------------------------------------------------------------------------------------


def default_axes_pairs(table: pd.DataFrame) -> list[tuple[str, str]]:
    """Every pair of the table's varying axes, retention (then token fraction) first in a pair."""
    axes = varying_axes(table)
    first = [axis for axis in ("retention", TOKEN_FRACTION) if axis in axes]
    ordered = [*first, *[axis for axis in axes if axis not in first]]
    return list(itertools.combinations(ordered, 2))


def most_common(values: Iterable[Any]) -> Any:
    """The most frequent value (compared as displayed); ties go to the first in ``value_order``."""
    values = list(values)
    counts = Counter(display_value(value) for value in values)
    return min(values, key=lambda value: (-counts[display_value(value)], value_order(value)))


T = TypeVar("T")


def settings_text(fixed: dict[str, Any]) -> str:
    """``object size 0.35, replay of kept tokens drop``."""
    return ", ".join(f"{axis_text(axis)} {axis_value_text(axis, value)}" for axis, value in fixed.items())


def fix_at_most_common(
    items: Sequence[T], axes: Sequence[str], value_of: Callable[[T, str], Any]
) -> tuple[list[T], dict[str, Any]]:
    """Keep the items at the most common value of each axis in turn; those values, by axis."""
    kept, fixed = list(items), {}
    for axis in axes:
        fixed[axis] = most_common(value_of(item, axis) for item in kept)
        kept = [item for item in kept if display_value(value_of(item, axis)) == display_value(fixed[axis])]
    return kept, fixed


def _distinct(values: Iterable[Any]) -> list[Any]:
    """One of each value as displayed (None and NaN are one), in ``value_order``."""
    found: dict[str, Any] = {}
    for value in values:
        found.setdefault(display_value(value), value)
    return sorted(found.values(), key=value_order)


def heatmap_grid(
    rows: pd.DataFrame, row_axis: str, column_axis: str
) -> tuple[list, list, np.ndarray, np.ndarray]:
    """(row values, column values, mean differences [r, c] NaN where not run, verdicts [r, c])."""
    row_values, column_values = _distinct(rows[row_axis]), _distinct(rows[column_axis])
    row_keys, column_keys = [display_value(v) for v in row_values], [display_value(v) for v in column_values]
    values = np.full((len(row_values), len(column_values)), np.nan)
    verdicts = np.full(values.shape, "", dtype=object)
    for _, row in rows.iterrows():  # matched as displayed: a setting left to its default is None or NaN
        i, j = (
            row_keys.index(display_value(row[row_axis])),
            column_keys.index(display_value(row[column_axis])),
        )
        values[i, j] = row["difference_mean"]
        verdicts[i, j] = row["verdict"]
    return row_values, column_values, values, verdicts


def draw_heatmap(rows: pd.DataFrame, row_axis: str, column_axis: str) -> Figure:
    row_values, column_values, values, verdicts = heatmap_grid(rows, row_axis, column_axis)
    finite = np.abs(values[np.isfinite(values)])
    limit = max(float(finite.max()) if finite.size else 0.0, 0.01)
    width = min(max(1.6 + 0.55 * len(column_values), COLUMN_WIDTH_INCHES), 2 * COLUMN_WIDTH_INCHES)
    figure = Figure(figsize=(width, 1.5 + 0.32 * len(row_values)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    sns.heatmap(
        pd.DataFrame(
            values,
            index=[axis_value_text(row_axis, v) for v in row_values],
            columns=[axis_value_text(column_axis, v) for v in column_values],
        ),
        ax=axes,
        cmap=HEATMAP_CMAP,
        center=0.0,
        vmin=-limit,
        vmax=limit,
        linewidths=0.4,
        linecolor="white",
        cbar_kws={"label": "Δ final accuracy (tokenset − coreset)"},
    )
    for (i, j), value in np.ndenumerate(values):
        if math.isnan(value):
            continue
        mark = VERDICT_MARKS.get(str(verdicts[i, j]), "")
        axes.text(
            j + 0.5,
            i + 0.5,
            f"{value:+.3f}{mark}",
            ha="center",
            va="center",
            fontsize=6,
            fontweight="bold" if mark == SIGNIFICANT_MARK else "normal",
        )
    axes.set_xlabel(axis_text(column_axis))
    axes.set_ylabel(axis_text(row_axis))
    axes.tick_params(axis="y", labelrotation=0)
    axes.tick_params(length=0)
    return figure


def draw_regime_heatmaps(table: pd.DataFrame, axes_pairs: Sequence[tuple[str, str]]) -> dict[str, Drawn]:
    """One heat map per task and pair of axes that both vary among that task's rows of ``table``.

    Cells: mean difference core tokenset − coreset (``difference_mean``), diverging colours centred
    at 0, the value written in each cell, bold with a star where the verdict is better or worse and
    "=" where it is equivalent (``regime_table``). Every other axis that varies is fixed at its most
    common value (named in the caption). ``table`` is a ``regime_table`` (per token fraction when a
    pair names ``token_fraction``). Keys: file-name stems, ``<task>_<row axis>_x_<column axis>``.
    """
    margin = table.attrs.get("equivalence_margin", DEFAULT_EQUIVALENCE_MARGIN)
    figures: dict[str, Drawn] = {}
    for task in sorted(set(table["task"])):
        rows = table[table["task"] == task]
        varying = varying_axes(rows)
        for row_axis, column_axis in axes_pairs:
            if row_axis not in varying or column_axis not in varying:
                continue
            others = [axis for axis in varying if axis not in (row_axis, column_axis)]
            records = rows.to_dict("records")
            kept, fixed = fix_at_most_common(records, others, lambda row, axis: row[axis])
            settings = ", ".join(
                f"{axis_text(axis)} {axis_value_text(axis, value)}" for axis, value in fixed.items()
            )
            caption = (
                f"{task}: final accuracy of the best core tokenset − the best coreset at equal bytes, mean "
                f"over seeds, by {axis_text(row_axis)} and {axis_text(column_axis)}. Bold with "
                f"{SIGNIFICANT_MARK}: the tokenset is better or worse (paired t-test, Holm-adjusted over the "
                f"table); =: equivalent within ±{margin:g} (paired TOST); unmarked: inconclusive. "
                + (f"Fixed at their most common value: {settings}." if settings else "No other axis varies.")
            )
            key = file_slug(f"{task}_{row_axis}_x_{column_axis}")
            figure = draw_heatmap(pd.DataFrame(kept, columns=rows.columns), row_axis, column_axis)
            figures[key] = Drawn(figure, caption)
    return figures


# --- accuracy against token fraction ------------------------------------------------------------------


def realized_fraction(cell: Cell) -> float:
    """The mean token fraction a cell used over its tasks (for "auto"); NaN when not recorded."""
    per_task = [value for value in cell.token_fraction_per_task if value is not None]
    if per_task:
        return float(np.mean(per_task))
    return math.nan if is_auto(cell.token_fraction) else float(cell.token_fraction)


def partial_accuracy_frame(cells: Sequence[Cell]) -> pd.DataFrame:
    """Per cell, ranking and t: the mean over tasks of the last row of its partial-input matrix."""
    rows = []
    for cell in cells:
        for ranking, matrices in (cell.partial_input_accuracy or {}).items():
            for fraction, matrix in matrices.items():
                if matrix:
                    rows.append(
                        {
                            "kind": cell.kind,
                            "ranking": ranking,
                            TOKEN_FRACTION: float(fraction),
                            "accuracy": float(np.mean(matrix[-1])),
                        }
                    )
    return pd.DataFrame(rows, columns=["kind", "ranking", TOKEN_FRACTION, "accuracy"])


def _fixed_regime(cells: Sequence[Cell]) -> tuple[list[Cell], dict[str, Any]]:
    """The cells at the most common value of every axis but retention that varies; and those values."""
    axes = [axis for axis, _ in cells[0].regime if axis not in ("task", "retention")]
    varying = [axis for axis in axes if len({display_value(dict(c.regime)[axis]) for c in cells}) > 1]
    return fix_at_most_common(cells, varying, lambda cell, axis: dict(cell.regime)[axis])


def _log2_axis(axes, fractions: Sequence[float]) -> None:
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xticks(sorted(set(fractions)))
    axes.grid(True, linewidth=0.3, alpha=0.5)


def _accuracy_panel(axes, cells: Sequence[Cell]) -> None:
    retentions = sorted({dict(c.regime)["retention"] for c in cells})
    retention_styles = dict(zip(retentions, sequential_styles(len(retentions)), strict=True))
    tokensets = [c for c in cells if c.kind == TOKENSET]
    methods = sorted({c.method for c in tokensets})
    styles = {method: LINE_STYLES[index % len(LINE_STYLES)] for index, method in enumerate(methods)}
    fractions: list[float] = []
    for retention in retentions:
        color, marker = retention_styles[retention].color, retention_styles[retention].marker
        for method in methods:
            at = [c for c in tokensets if c.method == method and dict(c.regime)["retention"] == retention]
            numeric = sorted(
                {c.token_fraction for c in at if not is_auto(c.token_fraction)}, key=fraction_order
            )
            stats = [mean_ci(c.accuracy for c in at if c.token_fraction == t) for t in numeric]
            mean = np.array([s[0] for s in stats])
            half = np.nan_to_num(np.array([s[1] for s in stats]))
            label = f"retention {percent(retention)}" + (f", {method}" if len(methods) > 1 else "")
            if numeric:
                axes.plot(numeric, mean, marker=marker, linestyle=styles[method], color=color, label=label)
                axes.fill_between(numeric, mean - half, mean + half, color=color, alpha=0.18, linewidth=0)
                fractions += numeric
            auto = [c for c in at if is_auto(c.token_fraction)]
            where = float(np.nanmean([realized_fraction(c) for c in auto])) if auto else math.nan
            if auto and not math.isnan(where):
                auto_mean, auto_half = mean_ci(c.accuracy for c in auto)
                axes.errorbar(
                    [where],
                    [auto_mean],
                    yerr=[np.nan_to_num(auto_half)],
                    marker="*",
                    markersize=6,
                    color=color,
                    label=None if numeric else f"{label} (auto)",
                )
        coresets = [c for c in cells if c.kind == CORESET and dict(c.regime)["retention"] == retention]
        if coresets:
            best = best_candidate(coresets)
            axes.plot(
                [1.0],
                [np.mean([c.accuracy for c in best])],
                linestyle="none",
                marker="s",
                markersize=5,
                markerfacecolor="white",
                color=color,
            )
            fractions.append(1.0)
    _log2_axis(axes, fractions)
    axes.set_xlabel("token fraction t: share of each kept sample's tokens (bytes fixed)")
    axes.set_ylabel("final average accuracy")


def _partial_panel(axes, cells: Sequence[Cell]) -> None:
    partial = partial_accuracy_frame(cells)
    if partial.empty:
        axes.text(
            0.5,
            0.5,
            "no partial-input accuracy\nin these records",
            ha="center",
            va="center",
            transform=axes.transAxes,
            fontsize=7,
            color="0.4",
        )
        axes.set_axis_off()
        return
    for (ranking, kind), rows in partial.groupby(["ranking", "kind"], sort=True):
        stats = rows.groupby(TOKEN_FRACTION)["accuracy"].agg(lambda values: mean_ci(values))
        x = stats.index.to_numpy(dtype=float)
        mean = np.array([s[0] for s in stats])
        half = np.nan_to_num(np.array([s[1] for s in stats]))
        color = RANKING_COLORS.get(ranking, "0.6")
        style = "-" if kind == CORESET else "--"
        axes.plot(x, mean, marker="o", linestyle=style, color=color, label=f"{ranking} tokens, {kind}s")
        axes.fill_between(x, mean - half, mean + half, color=color, alpha=0.15, linewidth=0)
    _log2_axis(axes, partial[TOKEN_FRACTION].tolist())
    axes.set_xlabel("fraction t of each test image's tokens seen")
    axes.set_ylabel("test accuracy after the last task")
    axes.set_title("accuracy on partial test inputs (mean over tasks, 95% CI over cells)", fontsize=6)
    axes.legend(frameon=False, fontsize=6)


def draw_accuracy_vs_t(frame: pd.DataFrame, task: str | None = None) -> Drawn | None:
    """Left: final accuracy against token fraction t at fixed bytes, a line per retention (and per core
    tokenset method when several), mean ± 95% CI over seeds; the best coreset is the t = 1 square and
    "auto" a star at the mean t it used (``token_fraction_per_task``). Right: accuracy on partial test
    inputs (``partial_input_accuracy``: random vs oracle tokens, the mean over tasks of the matrices'
    last rows) against t. Axes other than retention that vary are fixed at their most common value.

    ``task``: which task (default: the first, by name, with a core tokenset); None when no core
    tokenset of it ran.
    """
    cells = regime_cells(frame)
    tasks = sorted({dict(c.regime)["task"] for c in cells if c.kind == TOKENSET})
    task = task if task is not None else (tasks[0] if tasks else None)
    cells = [c for c in cells if dict(c.regime)["task"] == task]
    if task is None or not any(c.kind == TOKENSET for c in cells):
        return None
    cells, fixed = _fixed_regime(cells)
    figure = Figure(figsize=(TEXT_WIDTH_INCHES, 2.6), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    _accuracy_panel(left, cells)
    _partial_panel(right, cells)
    handles, labels = left.get_legend_handles_labels()
    square = matplotlib.lines.Line2D(
        [], [], linestyle="none", marker="s", markerfacecolor="white", color="0.3", markersize=5
    )
    star = matplotlib.lines.Line2D([], [], linestyle="none", marker="*", color="0.3", markersize=6)
    place_legend(
        figure,
        [*handles, square, star],
        [*labels, "best coreset (t = 1)", "t = auto, at the mean t it chose"],
    )
    settings = settings_text(fixed)
    text = (
        f"{task}. Left: final accuracy against the token fraction t at fixed memory bytes (a line per "
        "retention), mean and Student-t 95% CI over seeds; the square is the best coreset (t = 1), the star "
        "t = auto at the mean t it chose. Right: accuracy after the last task on test inputs reduced to a "
        "share t of their tokens, chosen at random or by the ground-truth mask (oracle)."
        + (f" Fixed at their most common value: {settings}." if settings else "")
    )
    return Drawn(figure, text)
