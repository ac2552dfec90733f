"""The regime map (issue 12): when does a core tokenset beat a coreset at equal bytes, and why.

``regime_table`` compares, per regime, the best core tokenset with the best coreset, paired by
seed; ``draw_regime_heatmaps`` maps their difference over pairs of swept axes;
``draw_accuracy_vs_t`` shows accuracy against the token fraction beside accuracy on partial test
inputs; ``regime_markdown`` is the table in Markdown. ``write_regime_report`` writes them all when
the records sweep a token fraction or a regime axis (and nothing otherwise).

What records need: ``config`` (``task``, ``task_params``, ``method``, ``token_selector``,
``retention``, ``token_fraction`` (a float or "auto"), ``seed``, ``train``, …), ``status``,
``config_hash``, ``final_average_accuracy``, ``bytes_allowed``; optional ``token_fraction_per_task``
(where "auto" is drawn on the t axis) and ``partial_input_accuracy`` (``{ranking: {t: matrix}}``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd

from benchmark.config import DEFAULT_EQUIVALENCE_MARGIN
from benchmark.results import write_text_atomic
from reports.latex import regime_latex
from reports.regime_figures import default_axes_pairs, draw_accuracy_vs_t, draw_regime_heatmaps
from reports.regime_table import (
    AXIS_SHORT_NAMES,
    TOKEN_FRACTION,
    TOKENSET,
    VALIDATION,
    axis_value_text,
    display_value,
    markdown_axes,
    regime_cells,
    regime_markdown,
    regime_table,
    tuned_delta_markdown,
)
from reports.style import PAPER_STYLE, file_slug, save_figure

__all__ = [
    "draw_accuracy_vs_t",
    "draw_regime_heatmaps",
    "regime_markdown",
    "regime_table",
    "swept_tasks",
    "write_regime_report",
]

OUTPUT_GLOBS = (
    "regimes.md",
    "regimes.tex",
    "regime_heatmaps_*",
    "accuracy_vs_t_*",
    "tuned_delta.md",
    "tuned_delta.tex",
)


def swept_tasks(frame: pd.DataFrame) -> dict[str, set[str]]:
    """Per task, what its stored-memory cells sweep beyond retention: ``token_fraction`` (core
    tokensets at several t) and every regime axis taking several values. Tasks sweeping nothing
    are left out."""
    cells = regime_cells(frame)
    swept: dict[str, set[str]] = {}
    for task in sorted({dict(cell.regime)["task"] for cell in cells}):
        at = [cell for cell in cells if dict(cell.regime)["task"] == task]
        axes = {
            axis
            for axis, _ in at[0].regime
            if axis not in ("task", "retention")
            and len({display_value(dict(cell.regime).get(axis)) for cell in at}) > 1
        }
        if len({cell.token_fraction for cell in at if cell.kind == TOKENSET}) > 1:
            axes.add(TOKEN_FRACTION)
        if axes:
            swept[task] = axes
    return swept


def write_regime_report(
    cells: pd.DataFrame, out_dir: Path, caption: str = "", margin: float = DEFAULT_EQUIVALENCE_MARGIN
) -> list[Path]:
    """``regimes.md``, ``regimes.tex``, ``regime_heatmaps_<task>_<a>_x_<b>.pdf/.png`` and
    ``accuracy_vs_t_<task>.pdf/.png`` in ``out_dir`` when some task sweeps a token fraction or a regime
    axis. Otherwise, where cells were chosen on validation (protocol 2), ``tuned_delta.md`` and
    ``tuned_delta.tex``: per task × retention the best core tokenset against the best coreset, each
    chosen on validation and compared on test (a regime map already holds these rows). Otherwise nothing.
    Files of an earlier report that this one does not write are removed. ``margin``: the equivalence
    margin of the verdicts; ``caption``: provenance."""
    stale = {path for pattern in OUTPUT_GLOBS for path in out_dir.glob(pattern)}
    swept = swept_tasks(cells)
    written: list[Path] = []
    if not swept:
        written = _write_tuned_delta(cells, out_dir, caption, margin)
    table = regime_table(cells, margin=margin) if swept else None
    if table is not None and not table.empty:
        per_fraction = regime_table(cells, per_token_fraction=True, margin=margin)
        path = out_dir / "regimes.md"
        write_text_atomic(path, regime_markdown(table, caption, per_fraction))
        latex = out_dir / "regimes.tex"
        axes = markdown_axes(table)
        text = regime_latex(table, axes, AXIS_SHORT_NAMES, axis_value_text, caption, margin)
        write_text_atomic(latex, text + "\n")
        written += [path, latex]
        with matplotlib.rc_context(PAPER_STYLE):
            figures = draw_regime_heatmaps(table, default_axes_pairs(table))
            figures |= draw_regime_heatmaps(
                per_fraction, [pair for pair in default_axes_pairs(per_fraction) if TOKEN_FRACTION in pair]
            )
            for key, drawn in figures.items():
                stem = out_dir / f"regime_heatmaps_{key}"
                written += save_figure(drawn.figure, stem, f"{drawn.caption} {caption}")
            for task, axes in swept.items():
                drawn = draw_accuracy_vs_t(cells, task) if TOKEN_FRACTION in axes else None
                if drawn is not None:
                    stem = out_dir / f"accuracy_vs_t_{file_slug(task)}"
                    written += save_figure(drawn.figure, stem, f"{drawn.caption} {caption}")
    for path in stale - set(written):
        path.unlink(missing_ok=True)
    return written


def _write_tuned_delta(cells: pd.DataFrame, out_dir: Path, caption: str, margin: float) -> list[Path]:
    table = regime_table(cells, margin=margin)
    tuned = table[table["chosen_on"] == VALIDATION] if not table.empty else table
    if tuned.empty:
        return []
    tuned = tuned.reset_index(drop=True)  # Holm was over these rows alone (regime_table)
    tuned.attrs["equivalence_margin"] = margin
    markdown, latex = out_dir / "tuned_delta.md", out_dir / "tuned_delta.tex"
    write_text_atomic(markdown, tuned_delta_markdown(tuned, caption))
    axes = ["task", *(axis for axis in markdown_axes(tuned) if axis != "task")]
    text = regime_latex(tuned, axes, AXIS_SHORT_NAMES, axis_value_text, caption, margin, "tab:tuned-delta")
    write_text_atomic(latex, text + "\n")
    return [markdown, latex]
