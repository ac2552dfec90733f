"""Build the whole report of a results folder: ``python -m reports.make RESULTS_DIR OUT_DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from benchmark.errors import UserError
from benchmark.results import load_results, write_text_atomic
from reports.figures import (
    accuracy_matrix_figures,
    budget_split_figure,
    forgetting_figure,
    memory_accuracy_figure,
)
from reports.gallery import attribution_gallery
from reports.leaderboard import (
    caption_for,
    failed_frame,
    failed_markdown,
    leaderboard_frame,
    write_csv,
    write_tables,
)
from reports.records import cell_frame
from reports.regimes import write_regime_report
from reports.site import write_site

MATRIX_GLOB = "accuracy_matrix_*"


def make_report(
    results_dir: Path, out_dir: Path, *, gallery: bool = True, site: bool = True
) -> dict[str, list[Path]]:
    """Everything in ``out_dir``: tables (``leaderboard.md``, ``.tex``), ``leaderboard.csv``, figures,
    ``failed.md`` (only while a cell failed) and the browsable ``index.html``.

    Figures per task: memory vs accuracy, forgetting per method, accuracy matrices (bounds and the best
    coreset and core tokenset at the middle retention), the budget split (only when a core tokenset ran
    at several token fractions); and one attribution gallery, computed at report time on the first task
    with ground-truth masks (``gallery=False`` skips it; without such a task it is skipped with a note).
    Accuracy matrices and budget-split figures of an earlier report that this one does not draw are
    removed. When the records sweep a token fraction or a regime axis (``reports.regimes``), also the
    regime map: ``regimes.md``, ``regime_heatmaps_*`` and ``accuracy_vs_t_*`` (key "regimes").
    Raises ``UserError`` when ``results_dir`` holds no finished cell.
    """
    cells = cell_frame(load_results(results_dir))
    frame = leaderboard_frame(cells)
    if frame.empty:
        raise UserError(f"no finished cell results under {results_dir}: run a grid first")
    caption = caption_for(frame)
    stale = {path for pattern in (MATRIX_GLOB, "budget_split_*") for path in out_dir.glob(pattern)}
    figures: list[Path] = []
    for task in frame["task"].unique():
        figures += memory_accuracy_figure(frame, task, out_dir, caption)
        figures += budget_split_figure(frame, task, out_dir, caption)
        figures += forgetting_figure(frame, task, out_dir, caption)
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
    regimes = write_regime_report(cells, out_dir, caption)
    outputs = {
        "tables": write_tables(frame, out_dir, caption),
        "csv": [write_csv(frame, out_dir / "leaderboard.csv")],
        "figures": figures,
        "gallery": gallery_paths,
        "failed": failed,
        "regimes": regimes,
    }
    if site:
        failed_count = len(failed_frame(cells)) if failed else 0
        existing = [*figures, *gallery_paths, *regimes]
        if not gallery:  # keep showing a gallery an earlier report made
            existing += [path for path in out_dir.glob("attribution_gallery.*")]
        outputs["site"] = [write_site(frame, cells, caption, existing, out_dir, notes, failed_count)]
    return outputs


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
