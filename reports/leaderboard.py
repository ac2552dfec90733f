"""Leaderboard: one row per task × method × retention × token fraction, mean and 95% CI over seeds.

Labels: when cells of one task differ in ``task_params`` (a grid sweeping, say, object
size), the task label carries the differing parameters, ``split_shapes[object_size=0.3]``;
likewise a method label carries differing selector parameters and ``[train]`` settings,
so cells that differ in anything but the seed are never pooled as if they were seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from benchmark.results import write_text_atomic
from reports.comparisons import comparison_frame, rank_intervals
from reports.coreset_size import coreset_size_frame
from reports.records import (
    ACCURACY,
    BOUND,
    KIND_ORDER,
    attribution_columns,
    failed_cells,
    finished_cells,
    is_auto,
)
from reports.records import ATTRIBUTION_PREFIX as CELL_ATTRIBUTION_PREFIX
from reports.stats import (
    DEFAULT_EQUIVALENCE_MARGIN,
    EQUIVALENT,
    format_bytes,
    format_interval,
    format_mean_ci,
    format_number,
    format_p,
    format_row_ratio,
    mean_ci,
    mean_or_nan,
)

Row = dict[str, Any]  # one output row, column → value

LEARNED_THRESHOLD = 0.9
BOUND_ORDER = {"none": 0, "joint": 1}  # lower bound first
ATTRIBUTION_ORDER = ("precision", "recall", "pointing_game")
ATTRIBUTION_PREFIX = "attribution_"
# The rule (``learned`` in ``_group_row``): every seed's diagonal mean reaches the threshold. The
# Diagonal column shows the mean over seeds, so a row can show 0.92 and still carry the mark.
NOT_LEARNED_NOTE = (
    "some seed's diagonal mean (accuracy on each task right after training it) is below "
    f"{LEARNED_THRESHOLD}: in that run the model did not learn every task; compare with care."
)
# The coverage mark: some seed's memory kept no sample of some class of a task (``coverage`` < 1, from
# the record's classes_per_task and classes_covered_per_task; protocol 2 records only).
COVERAGE_NOTE = (
    "memory missed a class: in some seed, some task's memory kept no sample of one of its classes (it "
    "holds fewer samples than the task has classes, or its selector left a class out); part of this "
    "row's gap is class coverage."
)
MISSING = "–"


# --- cells -> groups ------------------------------------------------------------------------------

GROUP_COLUMNS = ["task_label", "method_label", "kind", "retention", "token_fraction"]


def _row_order(row: Row) -> tuple:
    retention = -1.0 if math.isnan(row["retention"]) else row["retention"]
    bound = BOUND_ORDER.get(row["method"].split("[")[0], len(BOUND_ORDER))
    fraction = 2.0 if is_auto(row["token_fraction"]) else float(row["token_fraction"])
    return (row["task"], retention, KIND_ORDER[row["kind"]], bound, row["method"], fraction)


def grouped_cells(cells: pd.DataFrame) -> list[pd.DataFrame]:
    """The finished cells of each leaderboard row (sorted by seed), rows in leaderboard order."""
    finished = finished_cells(cells)
    groups = [
        group.sort_values("seed") for _, group in finished.groupby(GROUP_COLUMNS, sort=False, dropna=False)
    ]
    keys = [
        {
            "task": group["task_label"].iat[0],
            "method": group["method_label"].iat[0],
            "kind": group["kind"].iat[0],
            "retention": group["retention"].iat[0],
            "token_fraction": group["token_fraction"].iat[0],
        }
        for group in groups
    ]
    order = sorted(range(len(groups)), key=lambda index: _row_order(keys[index]))
    return [groups[index] for index in order]


# --- groups -> frame -----------------------------------------------------------------------------


def attribution_names(cells: pd.DataFrame) -> list[str]:
    measured = [column for column in attribution_columns(cells) if cells[column].notna().any()]
    names = {column.removeprefix(CELL_ATTRIBUTION_PREFIX) for column in measured}
    known = [name for name in ATTRIBUTION_ORDER if name in names]
    return known + sorted(names - set(known))


def _joined(values: Iterable[Any]) -> str:
    return ",".join(str(value) for value in sorted(set(values), key=str) if value is not None and value != "")


def _group_row(group: pd.DataFrame, attribution: Sequence[str]) -> Row:
    final_mean, final_ci = mean_ci(group["final_average_accuracy"].dropna())
    forgetting_mean, forgetting_ci = mean_ci(group["average_forgetting"].dropna())
    diagonals = [None if math.isnan(value) else value for value in group["diagonal_mean"]]
    metric = _joined(group["metric"])
    first = group.iloc[0]
    row: Row = {
        "task": first["task_label"],
        "method": first["method_label"],
        "kind": first["kind"],
        "retention": first["retention"],
        "token_fraction": first["token_fraction"],
        "seeds": len(group),
        "final_accuracy_mean": final_mean,
        "final_accuracy_ci": final_ci,
        "forgetting_mean": forgetting_mean,
        "forgetting_ci": forgetting_ci,
        "diagonal_mean": mean_or_nan(diagonals),
        # The learned-each-task threshold is on the accuracy scale; another metric (CIDEr) is not judged.
        "learned": metric != ACCURACY
        or all(value is not None and value >= LEARNED_THRESHOLD for value in diagonals),
        "metric": metric,
        "bytes_used_mean": float(group["bytes_used"].mean()),
        "bytes_allowed": float(group["bytes_allowed"].mean()),
        "coverage_min": _min_or_nan(group["coverage"]),
    }
    for name in attribution:
        row[f"{ATTRIBUTION_PREFIX}{name}_mean"] = mean_or_nan(
            None if math.isnan(value) else value for value in group[f"{CELL_ATTRIBUTION_PREFIX}{name}"]
        )
    row["grid"] = _joined(group["grid"])
    row["seed_values"] = _joined(group["seed"])
    row["commits"] = _joined(group["commit"])
    row["config_hashes"] = _joined(group["config_hash"])
    return row


def _min_or_nan(values: pd.Series) -> float:
    known = values.dropna()
    return float(known.min()) if len(known) else math.nan


def coverage_short(frame: pd.DataFrame) -> pd.Series:
    """True for rows whose memory, in some seed, kept no sample of some class of a task."""
    return frame["coverage_min"].lt(1.0)


def leaderboard_frame(cells: pd.DataFrame, margin: float = DEFAULT_EQUIVALENCE_MARGIN) -> pd.DataFrame:
    """Finished cells (of ``records.cell_frame``) pooled over seeds: one row per task × method × retention ×
    token fraction.

    ``retention`` is NaN for the bounds; ``token_fraction`` a float or ``AUTO``; ``*_ci`` are Student-t
    95% half-widths (NaN for one seed). Then the statistics: ``rank`` within task × retention and its
    bootstrap interval (``rank_low``, ``rank_high``; ``mean_rank_low``/``_high``: of the method's mean
    rank, for ``overall_rank_frame``), the paired comparison with the row's reference
    (``comparisons.COMPARISON_COLUMNS``, ``margin`` the equivalence margin) and, for core tokensets,
    the coreset size they perform like (``coreset_size.COLUMNS``). ``frame.attrs["equivalence_margin"]``
    holds ``margin``.
    """
    groups = grouped_cells(cells)
    attribution = attribution_names(cells)
    rows = [_group_row(group, attribution) for group in groups]
    frame = pd.DataFrame(rows, columns=_frame_columns(attribution))
    frame["rank"] = rank_within_groups(frame)
    frame = pd.concat(
        [frame, comparison_frame(cells, groups, margin), coreset_size_frame(cells, groups)], axis=1
    )
    stored = frame[frame["kind"] != BOUND]
    within = [group.index.to_numpy() for _, group in stored.groupby(["task", "retention"], sort=False)]
    methods = [group.index.to_numpy() for _, group in stored.groupby(["method", "kind"], sort=False)]
    low, high, method_low, method_high = rank_intervals(groups, within, methods)
    frame["rank_low"], frame["rank_high"] = low, high
    frame["mean_rank_low"], frame["mean_rank_high"] = math.nan, math.nan
    for members, lowest, highest in zip(methods, method_low, method_high, strict=True):
        frame.loc[members, ["mean_rank_low", "mean_rank_high"]] = lowest, highest
    frame.attrs["equivalence_margin"] = margin
    return frame


def rank_within_groups(frame: pd.DataFrame) -> pd.Series:
    """Rank of final accuracy (1 = best; ties share the best rank) within task × retention; NaN for bounds."""
    stored = frame[frame["kind"] != BOUND]
    ranks = stored.groupby(["task", "retention"])["final_accuracy_mean"].rank(ascending=False, method="min")
    return ranks.reindex(frame.index)


def overall_rank_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method: its mean rank over every task × retention it ran at, best first, with the bootstrap
    interval of that mean rank (``mean_rank_low``/``_high``; NaN where the frame has none)."""
    stored = frame[frame["kind"] != BOUND]
    stored = stored.assign(
        **{column: stored.get(column, math.nan) for column in ("mean_rank_low", "mean_rank_high")}
    )
    overall = (
        stored.groupby(["method", "kind"], as_index=False)
        .agg(
            mean_rank=("rank", "mean"),
            mean_rank_low=("mean_rank_low", "first"),
            mean_rank_high=("mean_rank_high", "first"),
            groups=("rank", "size"),
            tasks=("task", "nunique"),
        )
        .sort_values(["mean_rank", "method"], ignore_index=True)
    )
    overall.insert(0, "overall_rank", overall["mean_rank"].rank(method="min").astype(int))
    return overall


def overall_rank_rows(frame: pd.DataFrame, markup: Markup) -> list[list[str]]:
    return [
        [
            str(row["overall_rank"]),
            markup.escape(row["method"]),
            row["kind"],
            format_mean_rank(row["mean_rank"], row["mean_rank_low"], row["mean_rank_high"]),
            str(row["groups"]),
            str(row["tasks"]),
        ]
        for _, row in overall_rank_frame(frame).iterrows()
    ]


OVERALL_HEADERS = ["Overall rank", "Method", "Kind", "Mean rank [95% CI]", "Task × retention groups", "Tasks"]


def format_mean_rank(mean: float, low: float, high: float, dash: str = "–") -> str:
    """``"2.33 [1.7–4.0]"``; ``"2.33"`` without an interval."""
    if math.isnan(low) or math.isnan(high):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{low:.1f}{dash}{high:.1f}]"


def _frame_columns(attribution: Sequence[str]) -> list[str]:
    return [
        "task",
        "method",
        "kind",
        "retention",
        "token_fraction",
        "seeds",
        "final_accuracy_mean",
        "final_accuracy_ci",
        "forgetting_mean",
        "forgetting_ci",
        "diagonal_mean",
        "metric",
        "learned",
        "bytes_used_mean",
        "bytes_allowed",
        "coverage_min",  # min over seeds of records.cell_frame's coverage; NaN without class counts
        *(f"{ATTRIBUTION_PREFIX}{name}_mean" for name in attribution),
        "grid",
        "seed_values",
        "commits",
        "config_hashes",
    ]


def failed_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Failed cells (a cell that also finished in another folder is not listed), error on one line."""
    failed = failed_cells(cells)
    rows = [
        {
            "task": row["task"],
            "method": row["method"],
            "retention": None if math.isnan(row["retention"]) else row["retention"],
            "token_fraction": row["token_fraction"],
            "seed": row["seed"],
            "error": " ".join(str(row["error"] or "").split()),
            "config_hash": row["config_hash"],
        }
        for _, row in failed.iterrows()
    ]
    columns = ["task", "method", "retention", "token_fraction", "seed", "error", "config_hash"]
    return pd.DataFrame(rows, columns=columns).sort_values(["task", "method", "seed"], ignore_index=True)


def best_final_mask(frame: pd.DataFrame) -> pd.Series:
    """True for the best final accuracy of each task × retention (bounds excluded; ties all best)."""
    stored = frame["kind"] != BOUND
    best = frame[stored].groupby(["task", "retention"])["final_accuracy_mean"].transform("max")
    return (frame["final_accuracy_mean"] == best.reindex(frame.index)) & stored


def caption_for(frame: pd.DataFrame) -> str:
    """Provenance line: grid names, seeds, commits."""
    grids = _joined(grid for cell in frame["grid"] for grid in cell.split(",") if grid)
    seeds = sorted({int(seed) for cell in frame["seed_values"] for seed in cell.split(",") if seed})
    commits = _joined(
        _short_commit(commit) for cell in frame["commits"] for commit in cell.split(",") if commit
    )
    return (
        f"Grid {grids or 'unknown'}; {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
        f"commit {commits or 'unknown'}."
    )


def _short_commit(commit: str) -> str:
    head = commit[:40]
    if len(head) == 40 and all(char in "0123456789abcdef" for char in head.lower()):
        return commit[:12] + commit[40:]
    return commit


# --- rendering -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Markup:
    """How one output format writes emphasis and symbols."""

    bold: Callable[[str], str]
    escape: Callable[[str], str]
    dagger: str
    coverage_mark: str  # after a final accuracy whose memory missed a class (``COVERAGE_NOTE``)
    plus_minus: str
    percent: str
    missing: str


MARKDOWN = Markup(
    bold=lambda text: f"**{text}**",
    escape=lambda text: text.replace("|", "\\|"),
    dagger=" †",
    coverage_mark=" ‡",
    plus_minus="±",
    percent="%",
    missing=MISSING,
)


def table_headers(frame: pd.DataFrame) -> list[str]:
    attribution = [
        column.removeprefix(ATTRIBUTION_PREFIX).removesuffix("_mean")
        for column in _attribution_columns(frame)
    ]
    return [
        "Task",
        "Method",
        "Kind",
        "Retention",
        "Tokens kept",
        "Seeds",
        "Final accuracy",
        "Rank [95% CI]",
        "Compared with",
        "Difference [95% CI]",
        "Verdict",
        "Coreset size matched",
        "Forgetting",
        "Diagonal",
        "Memory used / allowed",
        *(name.replace("_", " ").capitalize() for name in attribution),
    ]


def _attribution_columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if column.startswith(ATTRIBUTION_PREFIX)]


def _fraction(value: Any, markup: Markup) -> str:
    if is_auto(value):
        return markup.missing  # the method label says "[t=auto]"
    return markup.missing if math.isnan(value) else f"{value * 100:g}{markup.percent}"


def format_rank(rank: float, low: float, high: float, missing: str) -> str:
    """``"3 [1–6]"`` (the interval's ends rounded outward); ``"3"`` without an interval."""
    if math.isnan(rank):
        return missing
    if math.isnan(low) or math.isnan(high):
        return str(int(rank))
    return f"{int(rank)} [{math.floor(low)}–{math.ceil(high)}]"


def format_verdict(row: pd.Series, missing: str) -> str:
    """``"worse (p = 0.012)"``: the verdict and its Holm-adjusted p-value (of the TOST for "equivalent")."""
    verdict = row["verdict"]
    if verdict is None or (isinstance(verdict, float) and math.isnan(verdict)):
        return missing
    p_value = row["p_equivalence_holm"] if verdict == EQUIVALENT else row["p_holm"]
    return verdict if math.isnan(p_value) else f"{verdict} ({format_p(p_value)})"


def _display_row(row: pd.Series, is_best: bool, markup: Markup, attribution: Sequence[str]) -> list[str]:
    final = format_mean_ci(
        row["final_accuracy_mean"],
        row["final_accuracy_ci"],
        plus_minus=markup.plus_minus,
        missing=markup.missing,
    )
    final = markup.bold(final) if is_best else final
    final += "" if row["learned"] else markup.dagger
    final += markup.coverage_mark if row["coverage_min"] < 1.0 else ""
    stored = row["kind"] != BOUND
    compared = row["reference"] is not None
    return [
        markup.escape(row["task"]),
        markup.escape(row["method"]),
        row["kind"],
        _fraction(row["retention"], markup),
        _fraction(row["token_fraction"], markup) if stored else markup.missing,
        str(row["seeds"]),
        final,
        format_rank(row["rank"], row["rank_low"], row["rank_high"], markup.missing),
        markup.escape(row["reference"]) if compared else markup.missing,
        format_interval(
            row["difference_mean"], row["difference_low"], row["difference_high"], missing=markup.missing
        ),
        markup.escape(format_verdict(row, markup.missing)),
        markup.escape(format_row_ratio(row)),
        format_mean_ci(
            row["forgetting_mean"], row["forgetting_ci"], plus_minus=markup.plus_minus, missing=markup.missing
        ),
        format_number(row["diagonal_mean"], missing=markup.missing),
        markup.escape(
            f"{format_bytes(row['bytes_used_mean'], markup.missing)} / "
            f"{format_bytes(row['bytes_allowed'], markup.missing)}"
        ),
        *(format_number(row[column], missing=markup.missing) for column in attribution),
    ]


def display_rows(frame: pd.DataFrame, markup: Markup) -> list[list[str]]:
    attribution = _attribution_columns(frame)
    best = best_final_mask(frame)
    return [_display_row(row, bool(best[index]), markup, attribution) for index, row in frame.iterrows()]


TEXT_COLUMNS = frozenset({"Task", "Method", "Kind", "Compared with", "Verdict"})


def _column_alignment(frame: pd.DataFrame) -> list[str]:
    return ["left" if header in TEXT_COLUMNS else "right" for header in table_headers(frame)]


def metric_notes(frame: pd.DataFrame) -> list[str]:
    """Tasks whose matrix holds another metric than accuracy (captioning: CIDEr) are named."""
    other = frame[frame["metric"] != ACCURACY] if "metric" in frame else frame.iloc[0:0]
    notes = []
    for metric, rows in other.groupby("metric"):
        tasks = ", ".join(sorted(rows["task"].unique()))
        notes.append(
            f"{tasks}: the final-accuracy and forgetting columns hold {metric}, not accuracy "
            "(the † threshold does not apply)."
        )
    return notes


def statistics_note(margin: float) -> str:
    """What the rank, comparison and coreset-size columns mean (one paragraph)."""
    return (
        "Rank: within task × retention, with a 95% percentile-bootstrap interval over seeds. Compared "
        "with: a core tokenset against the coreset of its own sample selector, another coreset against "
        "the random coreset, in the same setting at the same bytes, paired by seed; Difference: this row "
        "− that one, mean and Student-t 95% CI. Verdict (p-values Holm-adjusted over this table): "
        f"equivalent where a paired TOST shows the difference within ±{margin:g}, else better or worse "
        "where a paired t-test rejects no difference, else inconclusive (also with fewer than 2 seeds). "
        "Coreset size matched: the tokenset performs like a coreset of its own sample selector with k "
        "times its bytes (× k, read off that coreset's accuracy-vs-bytes curve in log bytes; 95% "
        "bootstrap CI over seeds); ≤ or ≥: beyond the curve's range, so a bound. The seed paper reports "
        "k = 2–10 for a 1% core tokenset."
    )


def leaderboard_markdown(frame: pd.DataFrame, caption: str) -> str:
    table = tabulate(
        display_rows(frame, MARKDOWN),
        headers=table_headers(frame),
        tablefmt="pipe",
        disable_numparse=True,
        colalign=_column_alignment(frame),
    )
    notes = [
        "Mean ± Student-t 95% confidence interval over seeds (±– with one seed). "
        "Bold: best final accuracy per task and retention (bounds excluded). Memory: bytes stored / "
        "bytes the retention allows.",
        statistics_note(frame.attrs.get("equivalence_margin", DEFAULT_EQUIVALENCE_MARGIN)),
    ]
    if not frame["learned"].all():
        notes.append(f"† {NOT_LEARNED_NOTE}")
    if coverage_short(frame).any():
        notes.append(f"‡ {COVERAGE_NOTE}")
    notes += metric_notes(frame)
    overall = tabulate(
        overall_rank_rows(frame, MARKDOWN),
        headers=OVERALL_HEADERS,
        tablefmt="pipe",
        disable_numparse=True,
        colalign=["right", "left", "left", "right", "right", "right"],
    )
    overall_note = (
        "Mean of a method's ranks over every task × retention it ran at (lower is better), with its 95% "
        "percentile-bootstrap interval over seeds; where a grid excludes methods from a task, that task's "
        "groups hold fewer methods."
    )
    sections = ["# Leaderboard", caption, table, *notes, "## Overall rank", overall, overall_note]
    return "\n\n".join(sections) + "\n"


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    write_text_atomic(path, frame.to_csv(index=False))
    return path


def failed_markdown(failed: pd.DataFrame) -> str:
    rows = [[MARKDOWN.escape(str(value)) for value in row] for row in failed.itertuples(index=False)]
    table = tabulate(rows, headers=list(failed.columns), tablefmt="pipe", disable_numparse=True)
    return f"# Failed cells\n\n{len(failed)} cell(s) failed; rerunning the grid retries them.\n\n{table}\n"
