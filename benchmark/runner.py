"""Run a grid: skip finished cells, claim and run the rest, write each record atomically, track it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from benchmark.config import CellConfig
from benchmark.executors import ExecutorOptions, make_executor
from benchmark.grid import Grid
from benchmark.learner import TaskCache, total_epochs
from benchmark.plan import FAILED_STATE, STALE, log_plan, plan_grid, still_to_run
from benchmark.preflight import preflight
from benchmark.pretrain import WEIGHTS_DIR
from benchmark.provenance import CodeFingerprints, suite_commit, with_code
from benchmark.results import (
    FAILED,
    FINISHED,
    check_results_dir,
    claim_cell,
    record_status,
    release_cell,
    save_result,
)
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
    running_elsewhere: int = 0  # cells another live run holds the lock of
    stale: int = 0  # cells whose record was made by code that has changed since (rerun unless kept)


@dataclass
class Claims:
    """The cells this run holds the lock of; the rest of the pending ones ran here or elsewhere."""

    results_dir: Path
    retry_failed: bool
    held: set[str] = field(default_factory=set)
    elsewhere: int = 0
    done_meanwhile: int = 0
    on_skip: Callable[[], None] = lambda: None
    needs_run: Callable[[str], bool] | None = None  # is the cell still to run once claimed (default: no
    # finished record, and no failed one unless retry_failed)

    def claimed(self, cells: list[CellConfig]) -> Iterator[CellConfig]:
        """Each cell once its lock is ours and no record of it has appeared since the run began."""
        for cell in cells:
            digest = cell.config_hash
            if not claim_cell(self.results_dir, digest):
                self.elsewhere += 1
                self.on_skip()
                continue
            if not self._needs_run(digest):
                release_cell(self.results_dir, digest)  # another run finished it meanwhile
                self.done_meanwhile += 1
                self.on_skip()
                continue
            self.held.add(digest)
            yield cell

    def _needs_run(self, digest: str) -> bool:
        if self.needs_run is not None:
            return self.needs_run(digest)
        status = record_status(self.results_dir, digest)
        return not (status == FINISHED or (status == FAILED and not self.retry_failed))

    def release(self, digest: str) -> None:
        self.held.discard(digest)
        release_cell(self.results_dir, digest)

    def release_all(self) -> None:
        for digest in list(self.held):
            self.release(digest)


def run_grid(
    grid: Grid,
    results_root: Path,
    tracker: MlflowTracker,
    weights_dir: Path = WEIGHTS_DIR,
    show_progress: bool = True,
    jobs: int = 1,
    retry_failed: bool = False,
    executor: str = "local",
    options: ExecutorOptions | None = None,
    keep_stale: bool = False,
) -> GridSummary:
    """Run every pending cell of ``grid`` on ``executor`` (``jobs`` > 1: local worker processes).

    Each cell is claimed (``cells/<hash>.lock``) just before it starts, so two runs of
    one grid share its cells instead of running them twice; the lock goes once the
    record is written. A lock left by a killed run on this host is taken over. A cell whose
    record was made by code that has changed since (``benchmark.plan``) runs again unless
    ``keep_stale``; each record written holds the fingerprint of its code.
    """
    started = time.perf_counter()
    results_dir = results_root / grid.name
    cache = TaskCache()
    options = options or ExecutorOptions(weights_dir=weights_dir, jobs=jobs)
    preflight(grid, cache, options.weights_dir)
    runner = make_executor(executor, options, cache)
    check_results_dir(results_dir)
    plan = plan_grid(grid.cells, results_dir, cache, CodeFingerprints(options.weights_dir))
    log_plan(plan, keep_stale)
    pending = plan.to_run(retry_failed, keep_stale)
    skipped = len(plan.cells) - len(pending)
    commit = suite_commit()
    failed: list[str] = []
    ran = 0
    cells_bar = tqdm(total=len(pending), desc=f"grid {grid.name}", unit="cell", disable=not show_progress)
    claims = Claims(
        results_dir,
        retry_failed,
        on_skip=lambda: cells_bar.update(1),
        needs_run=lambda digest: still_to_run(plan, results_dir, retry_failed, keep_stale, digest),
    )
    try:
        with cells_bar, EpochBars(cache, show_progress) as epoch_bars:
            for result in runner.run(claims.claimed(pending), commit, epoch_bars.status_for):
                epoch_bars.finish(result.config_hash)
                result = with_code(result, plan.code_for(result.config_hash))
                path = save_result(results_dir, result)
                claims.release(result.config_hash)
                tracker.log_cell(result, path)
                ran += 1
                cells_bar.update(1)
                if result.status == FAILED:
                    label = CellConfig.from_dict(result.config).label
                    failed.append(f"{label}: {result.error}")
                    cells_bar.write(f"cell failed: {label}: {result.error}")
    finally:
        claims.release_all()  # an interrupted run frees the cells it had not finished
    return GridSummary(
        results_dir=results_dir,
        cells=len(grid.cells),
        skipped=skipped + claims.done_meanwhile,
        skipped_failed=0 if retry_failed else plan.counts()[FAILED_STATE],
        finished=ran - len(failed),
        failed=failed,
        seconds=time.perf_counter() - started,
        running_elsewhere=claims.elsewhere,
        stale=plan.counts()[STALE],
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
            total=total_epochs(config, stream),
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
