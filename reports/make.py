"""Build the whole report of a results folder: ``python -m reports.make RESULTS_DIR OUT_DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from benchmark.config import DEFAULT_EQUIVALENCE_MARGIN
from benchmark.errors import UserError
from benchmark.grid import declared_equivalence_margin
from benchmark.results import load_results, write_text_atomic
from reports.figures import (
    accuracy_matrix_figures,
    budget_split_figure,
    coreset_size_figure,
    forgetting_figure,
    memory_accuracy_figure,
)
from reports.gallery import attribution_gallery
from reports.latex import coreset_size_latex, leaderboard_latex
from reports.leaderboard import (
    caption_for,
    failed_frame,
    failed_markdown,
    leaderboard_frame,
    leaderboard_markdown,
    write_csv,
)
from reports.records import cell_frame
from reports.regimes import write_regime_report
from reports.shortcut import write_shortcut_report
from reports.site import write_site

# Figures drawn for only some tasks or settings: those an earlier report drew and this one does not go.
STALE_GLOBS = ("memory_accuracy_*", "forgetting_*", "accuracy_matrix_*", "budget_split_*", "coreset_size_*")
GRIDS_DIR = Path(__file__).resolve().parent.parent / "grids"


def make_report(
    results_dir: Path,
    out_dir: Path,
    *,
    gallery: bool = True,
    site: bool = True,
    equivalence_margin: float | None = None,
) -> dict[str, list[Path]]:
    """Everything in ``out_dir``: tables (``leaderboard.md``; ``leaderboard.tex``, the accuracy pivot and
    overall rank; ``coreset_size.tex`` where a core tokenset has a coreset curve), ``leaderboard.csv``,
    figures, ``failed.md`` (only while a cell failed) and the browsable ``index.html``.

    ``equivalence_margin``: of the verdicts' TOST; by default the one the grid file of the records
    declares (``grids/<grid>.toml``, ``benchmark.grid.declared_equivalence_margin``), else 0.02.

    Figures per task: memory vs accuracy, forgetting per method, accuracy matrices (bounds and the best
    coreset and core tokenset at the middle retention), the budget split (only when a core tokenset ran
    at several token fractions); and one attribution gallery, computed at report time on the first task
    with ground-truth masks (``gallery=False`` skips it; without such a task it is skipped with a note).
    Per-task figures of an earlier report that this one does not draw are removed. Each figure has its
    caption (what it shows, and the provenance) in ``<stem>.caption.txt`` beside it. When the records
    sweep a token fraction or a regime axis (``reports.regimes``), also the regime map: ``regimes.md``,
    ``regime_heatmaps_*`` and ``accuracy_vs_t_*`` (key "regimes"); without one, where the cells were
    chosen on validation (protocol 2), the tuned Δ per task × retention, ``tuned_delta.md``/``.tex``
    (key "regimes"). Where records hold shortcut diagnostics (protocol 2), ``shortcut.md`` and
    ``shortcut.csv`` (key "shortcut"; removed otherwise).
    Raises ``UserError`` when ``results_dir`` holds no finished cell.
    """
    cells = cell_frame(load_results(results_dir))
    margin = declared_margin(cells) if equivalence_margin is None else equivalence_margin
    frame = leaderboard_frame(cells, margin)
    if frame.empty:
        raise UserError(f"no finished cell results under {results_dir}: run a grid first")
    caption = caption_for(frame)
    stale = {path for pattern in STALE_GLOBS for path in out_dir.glob(pattern)}
    figures: list[Path] = []
    for task in frame["task"].unique():
        figures += memory_accuracy_figure(frame, task, out_dir, caption)
        figures += budget_split_figure(frame, task, out_dir, caption)
        figures += forgetting_figure(frame, task, out_dir, caption)
        figures += coreset_size_figure(frame, task, out_dir, caption)
        figures += accuracy_matrix_figures(cells, frame, task, out_dir, caption)
    for path in stale - set(figures):
        path.unlink(missing_ok=True)
    notes: list[str] = []
    gallery_paths: list[Path] = []
    if gallery:
        gallery_paths, note = attribution_gallery(cells, out_dir, caption)
        notes += [note] if note else []
    else:
        notes.append("Attribution gallery not made for this report (gallery=False).")
    failed = _write_failed(cells, out_dir / "failed.md")
    regimes = write_regime_report(cells, out_dir, caption, margin)
    shortcut = write_shortcut_report(cells, out_dir, caption)
    outputs = {
        "tables": write_tables(frame, out_dir, caption),
        "csv": [write_csv(frame, out_dir / "leaderboard.csv")],
        "figures": figures,
        "gallery": gallery_paths,
        "failed": failed,
        "regimes": regimes,
        "shortcut": shortcut,
    }
    if site:
        failed_count = len(failed_frame(cells)) if failed else 0
        existing = [*figures, *gallery_paths, *regimes]
        if not gallery:  # keep showing a gallery an earlier report made
            existing += [path for path in out_dir.glob("attribution_gallery.*")]
        outputs["site"] = [write_site(frame, cells, caption, existing, out_dir, notes, failed_count)]
    return outputs


def declared_margin(cells: pd.DataFrame) -> float:
    """The equivalence margin the grid files of these cells declare (``grids/<name>.toml``; a grid
    not found there declares the default); a UserError when two grids declare different margins."""
    margins = {
        declared_equivalence_margin(path) if path.exists() else DEFAULT_EQUIVALENCE_MARGIN
        for path in (GRIDS_DIR / f"{name}.toml" for name in sorted(set(cells["grid"])) if name)
    }
    if len(margins) > 1:
        raise UserError(
            f"the grids of these results declare different equivalence margins: {sorted(margins)}"
        )
    return margins.pop() if margins else DEFAULT_EQUIVALENCE_MARGIN


def write_tables(board: pd.DataFrame, out_dir: Path, caption: str) -> list[Path]:
    """``leaderboard.md``, ``leaderboard.tex`` and (where any core tokenset has a coreset curve)
    ``coreset_size.tex`` in ``out_dir`` (a stale ``coreset_size.tex`` is removed)."""
    written = {
        out_dir / "leaderboard.md": leaderboard_markdown(board, caption),
        out_dir / "leaderboard.tex": leaderboard_latex(board, caption),
    }
    coreset_size = coreset_size_latex(board, caption)
    if coreset_size is None:
        (out_dir / "coreset_size.tex").unlink(missing_ok=True)
    else:
        written[out_dir / "coreset_size.tex"] = coreset_size
    for path, text in written.items():
        write_text_atomic(path, text if text.endswith("\n") else text + "\n")
    return list(written)


def _write_failed(cells: pd.DataFrame, path: Path) -> list[Path]:
    failed = failed_frame(cells)
    if failed.empty:
        path.unlink(missing_ok=True)
        return []
    write_text_atomic(path, failed_markdown(failed))
    return [path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.make", description=__doc__)
    parser.add_argument("results_dir", type=Path, help="folder searched for cells/*.json")
    parser.add_argument("out_dir", type=Path, help="where tables and figures go")
    arguments = parser.parse_args(argv)
    try:
        outputs = make_report(arguments.results_dir, arguments.out_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in (path for paths in outputs.values() for path in paths):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
