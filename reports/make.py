"""Build the whole report of a results folder: ``python -m reports.make RESULTS_DIR OUT_DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.errors import UserError
from benchmark.results import load_results, write_text_atomic
from reports.figures import memory_accuracy_figure
from reports.leaderboard import (
    caption_for,
    failed_frame,
    failed_markdown,
    leaderboard_frame,
    write_csv,
    write_tables,
)


def make_report(results_dir: Path, out_dir: Path) -> dict[str, list[Path]]:
    """Tables (``leaderboard.md``, ``.tex``), ``leaderboard.csv``, one figure per task, ``failed.md``.

    Everything goes to ``out_dir``; a ``failed.md`` left from an earlier report is removed when no
    cell failed. Raises ``UserError`` when ``results_dir`` holds no finished cell.
    """
    records = load_results(results_dir)
    frame = leaderboard_frame(records)
    if frame.empty:
        raise UserError(f"no finished cell results under {results_dir}: run a grid first")
    caption = caption_for(frame)
    figures = [
        path
        for task in frame["task"].unique()
        for path in memory_accuracy_figure(records, task, out_dir, caption)
    ]
    return {
        "tables": write_tables(frame, out_dir, caption),
        "csv": [write_csv(frame, out_dir / "leaderboard.csv")],
        "figures": figures,
        "failed": _write_failed(records, out_dir / "failed.md"),
    }


def _write_failed(records: list[dict], path: Path) -> list[Path]:
    failed = failed_frame(records)
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
