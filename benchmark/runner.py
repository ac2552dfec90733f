"""Run a grid: skip finished cells, run the rest, write each record atomically, track it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from benchmark.cell import TaskCache, epochs_for
from benchmark.config import CellConfig
from benchmark.executors import LocalExecutor, ProcessExecutor
from benchmark.grid import Grid
from benchmark.preflight import preflight
from benchmark.pretrain import WEIGHTS_DIR
from benchmark.provenance import suite_commit
from benchmark.results import FAILED, FINISHED, recorded_statuses, save_result
from benchmark.track import MlflowTracker


@dataclass(frozen=True)
class GridSummary:
    results_dir: Path
    cells: int
    skipped: int
    skipped_failed: int
    finished: int
    failed: list[str]  # "label: error" per failed cell
    seconds: float


def pending_cells(grid: Grid, results_dir: Path, retry_failed: bool = False) -> tuple[list[CellConfig], int]:
    """Cells to run (unique by hash), and how many were skipped as already recorded.

    A finished cell is never rerun; a failed one only with ``retry_failed``
    (it failed for a reason that a rerun alone would not change).
    """
    statuses = recorded_statuses(results_dir)
    done = {h for h, status in statuses.items() if status == FINISHED or not retry_failed}
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
    jobs: int = 1,
    retry_failed: bool = False,
) -> GridSummary:
    """Run every pending cell of ``grid``; ``jobs`` > 1 runs cells in worker processes."""
    started = time.perf_counter()
    results_dir = results_root / grid.name
    cache = TaskCache()
    preflight(grid, cache, weights_dir)
    pending, skipped = pending_cells(grid, results_dir, retry_failed)
    commit = suite_commit()
    attempted = {cell.config_hash for cell in pending}
    failed: list[str] = []
    cells_bar = tqdm(total=len(pending), desc=f"grid {grid.name}", unit="cell", disable=not show_progress)
    executor = LocalExecutor(cache, weights_dir) if jobs <= 1 else ProcessExecutor(jobs, weights_dir)
    with cells_bar, EpochBars(cache, show_progress) as epoch_bars:
        for result in executor.run(pending, commit, epoch_bars.status_for):
            epoch_bars.finish(result.config_hash)
            path = save_result(results_dir, result)
            tracker.log_cell(result, path)
            cells_bar.update(1)
            if result.status == FAILED:
                label = CellConfig.from_dict(result.config).label
                failed.append(f"{label}: {result.error}")
                cells_bar.write(f"cell failed: {label}: {result.error}")
    return GridSummary(
        results_dir=results_dir,
        cells=len(grid.cells),
        skipped=skipped,
        skipped_failed=sum(
            1
            for h, status in recorded_statuses(results_dir).items()
            if status == FAILED and h not in attempted
        ),
        finished=len(pending) - len(failed),
        failed=failed,
        seconds=time.perf_counter() - started,
    )


class EpochBars:
    """Inner progress bars: one per running cell, over its tasks × epochs, closed when it ends."""

    def __init__(self, cache: TaskCache, enabled: bool) -> None:
        self.cache = cache
        self.enabled = enabled
        self.bars: dict[str, tqdm] = {}

    def __enter__(self) -> EpochBars:
        return self

    def __exit__(self, *exc: object) -> None:
        for digest in list(self.bars):
            self.finish(digest)

    def finish(self, digest: str) -> None:
        bar = self.bars.pop(digest, None)
        if bar is not None:
            bar.close()

    def status_for(self, config: CellConfig) -> Callable[[str, int], None]:
        if not self.enabled:
            return lambda message, advance: None
        stream = self.cache.get(config.task, config.task_params)
        used = {bar.pos for bar in self.bars.values()}
        position = next(p for p in range(1, len(self.bars) + 2) if p not in used and -p not in used)
        bar = tqdm(
            total=len(stream.experiences) * epochs_for(config, stream),
            desc=f"{config.task} {config.method}",
            unit="epoch",
            leave=False,
            position=position,
        )
        self.bars[config.config_hash] = bar

        def on_status(message: str, advance: int) -> None:
            bar.set_postfix_str(message, refresh=False)
            bar.update(advance)

        return on_status
