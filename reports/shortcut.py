"""The shortcut table (issue 18, item 5): has sparse input come to mean "an old class"?

Per task × method × retention × t, the mean over seeds of the shortcut diagnostics after the last task
(``benchmark.diagnostics.shortcut_row``, in the record's ``shortcut``): accuracy on old tasks and on
the newest one with whole test inputs and with only the kept fraction t of their tokens, and the share
of old tasks' test predictions that fall in the newest task's classes. Only protocol-2 records hold
the diagnostics; ``write_shortcut_report`` writes nothing (and removes an earlier table) without them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from benchmark.diagnostics import diagnostic_fraction
from benchmark.results import write_text_atomic
from reports.leaderboard import MARKDOWN, grouped_cells
from reports.records import BOUND, fraction_text, is_auto
from reports.stats import format_number

# The diagnostics' fields, as the table shows them.
SHORTCUT_FIELDS = {
    "old_whole": "Old tasks, whole",
    "old_partial": "Old tasks, partial",
    "new_whole": "Newest task, whole",
    "new_partial": "Newest task, partial",
    "newest_share_whole": "Old → newest classes, whole",
    "newest_share_partial": "Old → newest classes, partial",
}
OUTPUTS = ("shortcut.md", "shortcut.csv")
EXPLANATION = (
    "After the last task, each cell's model is tested on whole test inputs and on inputs keeping only "
    "a fraction t of their tokens (t: the cell's token fraction, ¼ for coresets, bounds and t = auto; "
    "the ground-truth mask's tokens first where the task has masks; fed as replay feeds them). Old "
    "tasks: mean "
    "accuracy over the tasks before the last; newest task: the last one. Old → newest classes: the "
    "share of old tasks' test samples predicted as one of the newest task's classes. A core tokenset "
    "replays old tasks as partial inputs while new data arrives whole, so a model can learn the format "
    "instead of the content: old-task accuracy much higher on partial than on whole inputs, and "
    "newest-task accuracy much lower on partial than on whole ones (with a high share of old samples "
    'sent to the newest classes on whole inputs), means sparse input has come to mean "an old class". '
    "Mean over seeds; – where not defined."
)


def shortcut_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per leaderboard row (``leaderboard.grouped_cells``) with shortcut diagnostics in some
    seed: task, method, kind, retention (NaN for the bounds), token_fraction (the cell's), ``t`` (the
    fraction the diagnostics kept), seeds (with diagnostics), then the mean over those seeds of each
    of ``SHORTCUT_FIELDS`` (NaN where no seed defines it). Empty where no cell has diagnostics."""
    rows = []
    for group in grouped_cells(cells):
        diagnostics = [value for value in group["shortcut_final"] if isinstance(value, dict)]
        if not diagnostics:
            continue
        first = group.iloc[0]
        fraction = first["token_fraction"]
        row = {
            "task": first["task_label"],
            "method": first["method_label"],
            "kind": first["kind"],
            "retention": first["retention"],
            "token_fraction": fraction,
            "t": diagnostic_fraction(fraction if is_auto(fraction) else float(fraction)),
            "seeds": len(diagnostics),
        }
        for field in SHORTCUT_FIELDS:
            known = [float(d[field]) for d in diagnostics if d.get(field) is not None]
            row[field] = sum(known) / len(known) if known else math.nan
        rows.append(row)
    columns = ["task", "method", "kind", "retention", "token_fraction", "t", "seeds", *SHORTCUT_FIELDS]
    return pd.DataFrame(rows, columns=columns)


def _retention_text(row: pd.Series) -> str:
    return MARKDOWN.missing if row["kind"] == BOUND else f"{row['retention'] * 100:g}%"


def shortcut_markdown(table: pd.DataFrame, caption: str = "") -> str:
    headers = ["Task", "Method", "Retention", "t", "Seeds", *SHORTCUT_FIELDS.values()]
    body = [
        [
            MARKDOWN.escape(row["task"]),
            MARKDOWN.escape(row["method"]),
            _retention_text(row),
            fraction_text(row["t"]),
            str(row["seeds"]),
            *(format_number(row[field], missing=MARKDOWN.missing) for field in SHORTCUT_FIELDS),
        ]
        for _, row in table.iterrows()
    ]
    text = tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True)
    sections = ["# Shortcut diagnostics: whole against partial inputs", caption, EXPLANATION, text]
    return "\n\n".join(section for section in sections if section) + "\n"


def write_shortcut_report(cells: pd.DataFrame, out_dir: Path, caption: str = "") -> list[Path]:
    """``shortcut.md`` and ``shortcut.csv`` where some record has shortcut diagnostics; otherwise
    nothing, and the files of an earlier report are removed."""
    table = shortcut_frame(cells)
    if table.empty:
        for name in OUTPUTS:
            (out_dir / name).unlink(missing_ok=True)
        return []
    markdown, csv = (out_dir / name for name in OUTPUTS)
    write_text_atomic(markdown, shortcut_markdown(table, caption))
    write_text_atomic(csv, table.to_csv(index=False))
    return [markdown, csv]
