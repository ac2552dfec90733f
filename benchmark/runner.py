"""Run a grid: skip finished cells, run the rest, write each record atomically, track it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from benchmark.cell import TaskCache, run_cell
from benchmark.config import CellConfig
from benchmark.grid import Grid
from benchmark.preflight import preflight
from benchmark.pretrain import WEIGHTS_DIR
from benchmark.provenance import suite_commit
from benchmark.results import FAILED, finished_hashes, save_result
from benchmark.track import MlflowTracker


@dataclass(frozen=True)
class GridSummary:
    results_dir: Path
    cells: int
    skipped: int
    finished: int
    failed: list[str]  # "label: error" per failed cell
    seconds: float


def pending_cells(grid: Grid, results_dir: Path) -> tuple[list[CellConfig], int]:
    """Cells without a finished record (unique by hash), and how many were already done."""
    done = finished_hashes(results_dir)
    pending: dict[str, CellConfig] = {}
    skipped = 0
    for cell in grid.cells:
        digest = cell.config_hash
        if digest in done:
            skipped += 1
        elif digest not in pending:
            pending[digest] = cell
    return list(pending.values()), skipped


def run_grid(
    grid: Grid,
    results_root: Path,
    tracker: MlflowTracker,
    weights_dir: Path = WEIGHTS_DIR,
    show_progress: bool = True,
) -> GridSummary:
    started = time.perf_counter()
    results_dir = results_root / grid.name
    cache = TaskCache()
    preflight(grid, cache, weights_dir)
    pending, skipped = pending_cells(grid, results_dir)
    commit = suite_commit()
    failed: list[str] = []
    cells_bar = tqdm(pending, desc=f"grid {grid.name}", unit="cell", disable=not show_progress, position=0)
    for config in cells_bar:
        stream = cache.get(config.task, config.task_params)
        epochs_bar = tqdm(
            total=len(stream.experiences) * config.train.epochs,
            desc=f"{config.task} {config.method}",
            unit="epoch",
            leave=False,
            disable=not show_progress,
            position=1,
        )

        def on_status(message: str, advance: int, bar: tqdm = epochs_bar) -> None:
            bar.set_postfix_str(message, refresh=False)
            bar.update(advance)

        result = run_cell(config, commit, cache, weights_dir, on_status)
        epochs_bar.close()
        path = save_result(results_dir, result)
        tracker.log_cell(result, path)
        if result.status == FAILED:
            failed.append(f"{config.label}: {result.error}")
            cells_bar.write(f"cell failed: {config.label}: {result.error}")
    return GridSummary(
        results_dir=results_dir,
        cells=len(grid.cells),
        skipped=skipped,
        finished=len(pending) - len(failed),
        failed=failed,
        seconds=time.perf_counter() - started,
    )
