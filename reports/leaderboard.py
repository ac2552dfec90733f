"""Leaderboard: one row per task × method × retention × token fraction, mean and 95% CI over seeds.

Labels: when cells of one task differ in ``task_params`` (a grid sweeping, say, object
size), the task label carries the differing parameters, ``split_shapes[object_size=0.3]``;
likewise a method label carries differing selector parameters and ``[train]`` settings,
so cells that differ in anything but the seed are never pooled as if they were seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from benchmark.results import FAILED, FINISHED, write_text_atomic
from reports.stats import format_bytes, format_mean_ci, format_number, mean_ci, mean_or_nan, present

Record = dict[str, Any]

BOUND_METHODS = frozenset({"none", "joint"})
LEARNED_THRESHOLD = 0.9
ACCURACY = "accuracy"
KIND_ORDER = {"bound": 0, "coreset": 1, "core tokenset": 2}
BOUND_ORDER = {"none": 0, "joint": 1}  # lower bound first
ATTRIBUTION_ORDER = ("precision", "recall", "pointing_game")
ATTRIBUTION_PREFIX = "attribution_"
# The rule (``learned`` in ``_group_row``): every seed's diagonal mean reaches the threshold. The
# Diagonal column shows the mean over seeds, so a row can show 0.92 and still carry the mark.
NOT_LEARNED_NOTE = (
    "some seed's diagonal mean (accuracy on each task right after training it) is below "
    f"{LEARNED_THRESHOLD}: in that run the model did not learn every task; compare with care."
)
MISSING = "–"


@dataclass(frozen=True)
class GroupKey:
    """What a leaderboard row pools over seeds."""

    task: str
    method: str
    kind: str
    retention: float | None
    token_fraction: float


# --- records -> groups ---------------------------------------------------------------------------


def unique_records(records: Iterable[Record]) -> list[Record]:
    """One record per config hash (the same cell found in two grids' folders), a finished one first."""
    chosen: dict[str, Record] = {}
    for record in records:
        previous = chosen.get(record["config_hash"])
        if previous is None or (previous["status"] != FINISHED and record["status"] == FINISHED):
            chosen[record["config_hash"]] = record
    return list(chosen.values())


def finished_records(records: Iterable[Record]) -> list[Record]:
    return [record for record in unique_records(records) if record["status"] == FINISHED]


def method_kind(config: Record) -> str:
    if config["method"] in BOUND_METHODS or config.get("retention") is None:
        return "bound"
    return "coreset" if config.get("token_selector") is None else "core tokenset"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def varying_keys(param_dicts: Iterable[Record]) -> list[str]:
    """Keys whose value (or presence) is not the same in every dict."""
    dicts = list(param_dicts)
    keys = sorted({key for params in dicts for key in params})
    unset = object()
    return [
        key
        for key in keys
        if len({_canonical(params[key]) if key in params else id(unset) for params in dicts}) > 1
    ]


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else _canonical(value)


def _label(name: str, params: Record, keys: Sequence[str]) -> str:
    if not keys:
        return name
    shown = ", ".join(f"{key}={_plain(params.get(key))}" for key in keys)
    return f"{name}[{shown}]"


def _method_params(config: Record) -> Record:
    params = dict(config.get("selector_params") or {})
    params.update(
        {f"token.{key}": value for key, value in (config.get("token_selector_params") or {}).items()}
    )
    params.update({f"train.{key}": value for key, value in (config.get("train") or {}).items()})
    return params


def group_keys(records: Sequence[Record]) -> list[GroupKey]:
    """The row each record belongs to, labels made from the parameters that vary among ``records``."""
    configs = [record["config"] for record in records]
    task_keys = {
        task: varying_keys(c.get("task_params") or {} for c in configs if c["task"] == task)
        for task in {c["task"] for c in configs}
    }
    method_keys = {
        method: varying_keys(_method_params(c) for c in configs if c["method"] == method)
        for method in {c["method"] for c in configs}
    }
    return [
        GroupKey(
            task=_label(c["task"], c.get("task_params") or {}, task_keys[c["task"]]),
            method=_label(c["method"], _method_params(c), method_keys[c["method"]]) + _auto_suffix(c),
            kind=method_kind(c),
            retention=None if c.get("retention") is None else float(c["retention"]),
            token_fraction=_token_fraction(c),
        )
        for c in configs
    ]


def grouped_records(records: Iterable[Record]) -> dict[GroupKey, list[Record]]:
    """Finished records by row, rows in leaderboard order."""
    finished = finished_records(records)
    groups: dict[GroupKey, list[Record]] = {}
    for key, record in zip(group_keys(finished), finished, strict=True):
        groups.setdefault(key, []).append(record)
    return {key: sorted(groups[key], key=_seed) for key in sorted(groups, key=_row_order)}


def _token_fraction(config: dict) -> float:
    """t as a number; NaN for ``"auto"`` (t chosen per task: the method label says so)."""
    value = config.get("token_fraction", 1.0)
    return math.nan if isinstance(value, str) else float(value)


def _auto_suffix(config: dict) -> str:
    return " [t=auto]" if isinstance(config.get("token_fraction"), str) else ""


def _row_order(key: GroupKey) -> tuple:
    retention = -1.0 if key.retention is None else key.retention
    bound = BOUND_ORDER.get(key.method.split("[")[0], len(BOUND_ORDER))
    fraction = 2.0 if math.isnan(key.token_fraction) else key.token_fraction
    return (key.task, retention, KIND_ORDER[key.kind], bound, key.method, fraction)


def _seed(record: Record) -> int:
    return int(record["config"].get("seed", 0))


# --- groups -> frame -----------------------------------------------------------------------------


def diagonal_mean(record: Record) -> float | None:
    """The record's diagonal mean, or the mean of its accuracy matrix's diagonal when not stored."""
    if record.get("diagonal_mean") is not None:
        return float(record["diagonal_mean"])
    matrix = record.get("accuracy_matrix") or []
    diagonal = [row[index] for index, row in enumerate(matrix) if index < len(row)]
    return sum(diagonal) / len(diagonal) if diagonal else None


def attribution_names(records: Iterable[Record]) -> list[str]:
    names = {name for record in records for name in (record.get("attribution") or {})}
    known = [name for name in ATTRIBUTION_ORDER if name in names]
    return known + sorted(names - set(known))


def _joined(values: Iterable[Any]) -> str:
    return ",".join(str(value) for value in sorted(set(values), key=str) if value is not None)


def _group_row(key: GroupKey, records: Sequence[Record], attribution: Sequence[str]) -> Record:
    final_mean, final_ci = mean_ci(present(record["final_average_accuracy"] for record in records))
    forgetting_mean, forgetting_ci = mean_ci(present(record.get("average_forgetting") for record in records))
    diagonals = [diagonal_mean(record) for record in records]
    metric = _joined(record.get("metric", ACCURACY) for record in records)
    row: Record = {
        "task": key.task,
        "method": key.method,
        "kind": key.kind,
        "retention": math.nan if key.retention is None else key.retention,
        "token_fraction": key.token_fraction,
        "seeds": len(records),
        "final_accuracy_mean": final_mean,
        "final_accuracy_ci": final_ci,
        "forgetting_mean": forgetting_mean,
        "forgetting_ci": forgetting_ci,
        "diagonal_mean": mean_or_nan(diagonals),
        # The learned-each-task threshold is on the accuracy scale; another metric (CIDEr) is not judged.
        "learned": metric != ACCURACY
        or all(value is not None and value >= LEARNED_THRESHOLD for value in diagonals),
        "metric": metric,
        "bytes_used_mean": mean_or_nan(record.get("bytes_used") for record in records),
        "bytes_allowed": mean_or_nan(record.get("bytes_allowed") for record in records),
    }
    for name in attribution:
        values = ((record.get("attribution") or {}).get(name) for record in records)
        row[f"{ATTRIBUTION_PREFIX}{name}_mean"] = mean_or_nan(values)
    row["grid"] = _joined(record["config"].get("grid") for record in records)
    row["seed_values"] = _joined(_seed(record) for record in records)
    row["commits"] = _joined((record.get("provenance") or {}).get("commit") for record in records)
    row["config_hashes"] = _joined(record["config_hash"] for record in records)
    return row


def leaderboard_frame(records: Iterable[Record]) -> pd.DataFrame:
    """Finished cells pooled over seeds: one row per task × method × retention × token fraction.

    ``retention`` is NaN for the bounds; ``*_ci`` are Student-t 95% half-widths (NaN for one seed).
    """
    groups = grouped_records(records)
    attribution = attribution_names(record for group in groups.values() for record in group)
    rows = [_group_row(key, group, attribution) for key, group in groups.items()]
    frame = pd.DataFrame(rows, columns=_frame_columns(attribution))
    frame["rank"] = rank_within_groups(frame)
    return frame


def rank_within_groups(frame: pd.DataFrame) -> pd.Series:
    """Rank of final accuracy (1 = best; ties share the best rank) within task × retention; NaN for bounds."""
    stored = frame[frame["kind"] != "bound"]
    ranks = stored.groupby(["task", "retention"])["final_accuracy_mean"].rank(ascending=False, method="min")
    return ranks.reindex(frame.index)


def overall_rank_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method: its mean rank over every task × retention it ran at, best first."""
    stored = frame[frame["kind"] != "bound"]
    overall = (
        stored.groupby(["method", "kind"], as_index=False)
        .agg(mean_rank=("rank", "mean"), groups=("rank", "size"), tasks=("task", "nunique"))
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
            f"{row['mean_rank']:.2f}",
            str(row["groups"]),
            str(row["tasks"]),
        ]
        for _, row in overall_rank_frame(frame).iterrows()
    ]


OVERALL_HEADERS = ["Overall rank", "Method", "Kind", "Mean rank", "Task × retention groups", "Tasks"]


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
        *(f"{ATTRIBUTION_PREFIX}{name}_mean" for name in attribution),
        "grid",
        "seed_values",
        "commits",
        "config_hashes",
    ]


def failed_frame(records: Iterable[Record]) -> pd.DataFrame:
    """Failed cells (a cell that also finished in another folder is not listed), error on one line."""
    failed = [record for record in unique_records(records) if record["status"] == FAILED]
    rows = [
        {
            "task": record["config"]["task"],
            "method": record["config"]["method"],
            "retention": record["config"].get("retention"),
            "token_fraction": record["config"].get("token_fraction"),
            "seed": record["config"].get("seed"),
            "error": " ".join(str(record.get("error") or "").split()),
            "config_hash": record["config_hash"],
        }
        for record in failed
    ]
    columns = ["task", "method", "retention", "token_fraction", "seed", "error", "config_hash"]
    return pd.DataFrame(rows, columns=columns).sort_values(["task", "method", "seed"], ignore_index=True)


def best_final_mask(frame: pd.DataFrame) -> pd.Series:
    """True for the best final accuracy of each task × retention (bounds excluded; ties all best)."""
    stored = frame["kind"] != "bound"
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
    plus_minus: str
    percent: str
    missing: str


MARKDOWN = Markup(
    bold=lambda text: f"**{text}**",
    escape=lambda text: text.replace("|", "\\|"),
    dagger=" †",
    plus_minus="±",
    percent="%",
    missing=MISSING,
)

LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def escape_latex(text: str) -> str:
    """Text-mode escapes; ``+`` and ``-`` are not special in text mode and stay as they are."""
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


LATEX = Markup(
    bold=lambda text: f"\\textbf{{{text}}}",
    escape=escape_latex,
    dagger=r"$^\dagger$",
    plus_minus=r"$\pm$",
    percent=r"\%",
    missing="--",
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
        "Rank",
        "Forgetting",
        "Diagonal",
        "Memory used / allowed",
        *(name.replace("_", " ").capitalize() for name in attribution),
    ]


def _attribution_columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if column.startswith(ATTRIBUTION_PREFIX)]


def _fraction(value: float, markup: Markup) -> str:
    return markup.missing if math.isnan(value) else f"{value * 100:g}{markup.percent}"


def _display_row(row: pd.Series, is_best: bool, markup: Markup, attribution: Sequence[str]) -> list[str]:
    final = format_mean_ci(
        row["final_accuracy_mean"],
        row["final_accuracy_ci"],
        plus_minus=markup.plus_minus,
        missing=markup.missing,
    )
    final = markup.bold(final) if is_best else final
    final += "" if row["learned"] else markup.dagger
    stored = row["kind"] != "bound"
    return [
        markup.escape(row["task"]),
        markup.escape(row["method"]),
        row["kind"],
        _fraction(row["retention"], markup),
        _fraction(row["token_fraction"], markup) if stored else markup.missing,
        str(row["seeds"]),
        final,
        markup.missing if math.isnan(row["rank"]) else str(int(row["rank"])),
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


def _column_alignment(frame: pd.DataFrame) -> list[str]:
    return ["left", "left", "left", *["right"] * (len(table_headers(frame)) - 3)]


def _metric_notes(frame: pd.DataFrame) -> list[str]:
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
        "Bold: best final accuracy per task and retention (bounds excluded); Rank: its rank there. "
        "Memory: bytes stored / bytes the retention allows.",
    ]
    if not frame["learned"].all():
        notes.append(f"† {NOT_LEARNED_NOTE}")
    notes += _metric_notes(frame)
    overall = tabulate(
        overall_rank_rows(frame, MARKDOWN),
        headers=OVERALL_HEADERS,
        tablefmt="pipe",
        disable_numparse=True,
        colalign=["right", "left", "left", "right", "right", "right"],
    )
    overall_note = (
        "Mean of a method's ranks over every task × retention it ran at (lower is better); where a grid "
        "excludes methods from a task, that task's groups hold fewer methods."
    )
    sections = ["# Leaderboard", caption, table, *notes, "## Overall rank", overall, overall_note]
    return "\n\n".join(sections) + "\n"


def leaderboard_latex(frame: pd.DataFrame, caption: str) -> str:
    """A ``table*`` with a booktabs tabular (needs ``\\usepackage{booktabs}``)."""
    headers = [escape_latex(header) for header in table_headers(frame)]
    spec = "lll" + "r" * (len(headers) - 3)
    body: list[str] = []
    previous_task = None
    for task, cells in zip(frame["task"], display_rows(frame, LATEX), strict=True):
        if previous_task is not None and task != previous_task:
            body.append(r"\midrule")
        body.append(" & ".join(cells) + r" \\")
        previous_task = task
    notes = (
        r"Mean $\pm$ Student-t 95\% confidence interval over seeds. "
        r"Bold: best final accuracy per task and retention (bounds excluded)."
    )
    if not frame["learned"].all():
        notes += r" $^\dagger$ " + escape_latex(NOT_LEARNED_NOTE[0].upper() + NOT_LEARNED_NOTE[1:])
    notes += "".join(" " + escape_latex(note) for note in _metric_notes(frame))
    lines = [
        r"% Generated by reports.leaderboard; needs \usepackage{booktabs}.",
        r"\begin{table*}[t]",
        r"\centering",
        r"\footnotesize",
        rf"\caption{{Leaderboard. {escape_latex(caption)}}}",
        r"\label{tab:leaderboard}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(headers) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\par\smallskip",
        rf"{{\scriptsize {notes}}}",
        r"\end{table*}",
        *overall_rank_latex(frame, caption),
    ]
    return "\n".join(lines) + "\n"


def overall_rank_latex(frame: pd.DataFrame, caption: str) -> list[str]:
    """A second, small booktabs table: the overall rank of each method."""
    body = [" & ".join(cells) + r" \\" for cells in overall_rank_rows(frame, LATEX)]
    return [
        "",
        r"\begin{table}[t]",
        r"\centering",
        r"\footnotesize",
        rf"\caption{{Overall rank: mean rank of final accuracy over task $\times$ retention. "
        rf"{escape_latex(caption)}}}",
        r"\label{tab:overall-rank}",
        r"\begin{tabular}{rllrrr}",
        r"\toprule",
        " & ".join(escape_latex(header) for header in OVERALL_HEADERS) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]


def write_tables(frame: pd.DataFrame, out_dir: Path, caption: str | None = None) -> list[Path]:
    """``leaderboard.md`` and ``leaderboard.tex`` in ``out_dir``; caption defaults to ``caption_for``."""
    caption = caption_for(frame) if caption is None else caption
    markdown_path = out_dir / "leaderboard.md"
    latex_path = out_dir / "leaderboard.tex"
    write_text_atomic(markdown_path, leaderboard_markdown(frame, caption))
    write_text_atomic(latex_path, leaderboard_latex(frame, caption))
    return [markdown_path, latex_path]


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    write_text_atomic(path, frame.to_csv(index=False))
    return path


def failed_markdown(failed: pd.DataFrame) -> str:
    rows = [[MARKDOWN.escape(str(value)) for value in row] for row in failed.itertuples(index=False)]
    table = tabulate(rows, headers=list(failed.columns), tablefmt="pipe", disable_numparse=True)
    return f"# Failed cells\n\n{len(failed)} cell(s) failed; rerunning the grid retries them.\n\n{table}\n"
