"""Run a grid: skip finished cells, claim and run the rest, write each record atomically, track it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from tqdm.auto import tqdm

from benchmark.config import CellConfig
from benchmark.crashpoints import crash_point
from benchmark.errors import UserError
from benchmark.executors import CellHooks, ExecutorOptions, HookFactory, exit_on_sigterm, make_executor
from benchmark.grid import Grid
from benchmark.learner import TaskCache, total_epochs
from benchmark.plan import FAILED_STATE, STALE, log_plan, plan_grid, still_to_run
from benchmark.preflight import preflight
from benchmark.pretrain import WEIGHTS_DIR
from benchmark.provenance import CodeFingerprints, suite_commit, with_code
from benchmark.results import (
    FAILED,
    FINISHED,
    LOCK_HEARTBEAT_SECONDS,
    MAX_PROCESS_DEATHS,
    CellResult,
    check_results_dir,
    record_status,
    release_cell,
    save_result,
    sweep_stale_locks,
    sweep_temp_files,
    touch_lock,
    try_claim,
)
from benchmark.track import GridRun, MlflowTracker, ReconcileSummary, varying_keys


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
    held_elsewhere: list[str] = field(default_factory=list)  # those locks, each with its holder
    parent_run_id: str | None = None  # this grid run's MLflow run
    reconciled: ReconcileSummary | None = None  # what bringing MLflow in line with the records did


@dataclass
class Claims:
    """The cells this run holds the lock of; the rest of the pending ones ran here or elsewhere.

    ``in_process``: the executor computes cells in this process (``--jobs 1``), so a process
    death under a cell is counted by its lock, and a cell that ``MAX_PROCESS_DEATHS`` runs died
    computing is given up: recorded as failed (``given_up``) instead of run again.
    """

    results_dir: Path
    retry_failed: bool
    in_process: bool = False
    held: set[str] = field(default_factory=set)
    elsewhere: list[str] = field(default_factory=list)  # the live locks that kept this run off a cell
    done_meanwhile: int = 0
    given_up: list[CellConfig] = field(default_factory=list)
    on_skip: Callable[[], None] = lambda: None
    needs_run: Callable[[str], bool] | None = None  # is the cell still to run once claimed (default: no
    # finished record, and no failed one unless retry_failed)

    def claimed(self, cells: list[CellConfig]) -> Iterator[CellConfig]:
        """Each cell once its lock is ours and no record of it has appeared since the run began."""
        for cell in cells:
            digest = cell.config_hash
            claim = try_claim(self.results_dir, digest, self.in_process)
            if not claim.taken:
                self.elsewhere.append(claim.describe())
                self.on_skip()
                continue
            self.held.add(digest)
            crash_point("after_claim", digest)
            if not self._needs_run(digest):
                self.release(digest)  # another run finished it meanwhile
                self.done_meanwhile += 1
                self.on_skip()
                continue
            if claim.deaths >= MAX_PROCESS_DEATHS:
                self.given_up.append(cell)
                continue
            yield cell

    def _needs_run(self, digest: str) -> bool:
        if self.needs_run is not None:
            return self.needs_run(digest)
        status = record_status(self.results_dir, digest)
        return not (status == FINISHED or (status == FAILED and not self.retry_failed))

    def given_up_results(self, commit: str) -> Iterator[CellResult]:
        """Failed records of the cells given up, once the executor is done (it never saw them)."""
        while self.given_up:
            cell = self.given_up.pop(0)
            yield CellResult(
                config=cell.to_dict(),
                config_hash=cell.config_hash,
                status=FAILED,
                error=(
                    f"ProcessDied: {MAX_PROCESS_DEATHS} runs died while computing this cell in their own "
                    "process (out of memory, a crash or a kill); rerun with --retry-failed, or with "
                    "--jobs 2 to run it in a worker process that reports how it ends"
                ),
                provenance={"commit": commit},
            )

    def release(self, digest: str) -> None:
        self.held.discard(digest)
        release_cell(self.results_dir, digest)

    def release_all(self) -> None:
        for digest in list(self.held):
            self.release(digest)

    @contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Touch every held lock each ``LOCK_HEARTBEAT_SECONDS`` while the run lasts (results module)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(LOCK_HEARTBEAT_SECONDS):
                for digest in list(self.held):
                    touch_lock(self.results_dir, digest)

        thread = threading.Thread(target=beat, name="lock-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def prepare_results_dir(results_dir: Path) -> None:
    """Before any cell: the results directory is writable, holds no directory where a record
    belongs, and what killed runs left is cleared (their temporary files, their stale locks
    beside records)."""
    check_results_dir(results_dir)
    sweep_temp_files(results_dir / "cells")
    sweep_temp_files(results_dir)
    sweep_stale_locks(results_dir)


def write_record(results_dir: Path, result: CellResult) -> Path:
    """The cell's record, written atomically; a write that fails (a full disk) ends the run with
    one line: the records written so far are kept."""
    try:
        return save_result(results_dir, result)
    except OSError as error:
        label = CellConfig.from_dict(result.config).label
        raise UserError(
            f"cannot write the record of cell {label} in {results_dir}: {error.strerror or error}; "
            "the cells recorded so far are kept: fix it and rerun"
        ) from None


def tracked_hooks(tracking: GridRun, epoch_bars: EpochBars) -> HookFactory:
    """Hooks for each cell as it starts: its MLflow run opens, progress goes to its bar and each
    task's validation row to its run."""

    def hooks(config: CellConfig) -> CellHooks:
        digest = config.config_hash
        tracking.open(config)
        crash_point("after_run_opened", digest)
        return CellHooks(
            status=epoch_bars.status_for(config),
            task_ended=lambda candidate, index, row: tracking.task_ended(digest, candidate, index, row),
            ended=lambda at: tracking.ended(digest, at),
        )

    return hooks


def grid_tags(commit: str, executor: str, options: ExecutorOptions, runner: object) -> dict[str, str]:
    return {
        "commit": commit,
        "executor": executor,
        "jobs": str(options.jobs),
        "threads": str(getattr(runner, "threads", options.threads)),
    }


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
    one grid share its cells instead of running them twice. A cell's way: claimed, its MLflow
    run opened, computed, its record written, its MLflow run ended, its lock released; a kill
    at any point is made good by the next run (``tests/test_crash_points.py``). A cell whose
    record was made by code that has changed since (``benchmark.plan``) runs again unless
    ``keep_stale``; each record written holds the fingerprint of its code.
    """
    started = time.perf_counter()
    results_dir = results_root / grid.name
    cache = TaskCache()
    options = options or ExecutorOptions(weights_dir=weights_dir, jobs=jobs)
    preflight(grid, cache, options.weights_dir)
    runner = make_executor(executor, options, cache)
    prepare_results_dir(results_dir)
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
        getattr(runner, "in_process", False),
        on_skip=lambda: cells_bar.update(1),
        needs_run=lambda digest: still_to_run(plan, results_dir, retry_failed, keep_stale, digest),
    )
    tracking = GridRun(
        tracker,
        results_dir,
        varying_keys(cell.to_dict() for cell in grid.cells),
        grid_tags(commit, executor, options, runner),
    )
    tracking.start(grid.path)
    outcome = "FAILED"
    try:
        with exit_on_sigterm(), cells_bar, EpochBars(cache, show_progress) as epoch_bars, claims.heartbeat():
            results = runner.run(claims.claimed(pending), commit, tracked_hooks(tracking, epoch_bars))
            for result in chain(results, claims.given_up_results(commit)):
                digest = result.config_hash
                epoch_bars.finish(digest)
                result = with_code(result, plan.code_for(digest))
                path = write_record(results_dir, result)
                crash_point("after_record_write", digest)
                tracking.finish(CellConfig.from_dict(result.config), path)
                crash_point("before_lock_release", digest)
                claims.release(digest)
                ran += 1
                cells_bar.update(1)
                if result.status == FAILED:
                    label = CellConfig.from_dict(result.config).label
                    failed.append(f"{label}: {result.error}")
                    cells_bar.write(f"cell failed: {label}: {result.error}")
        outcome = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        outcome = "KILLED"
        raise
    finally:
        claims.release_all()  # an interrupted run frees the cells it had not finished
        tracking.close(
            outcome,
            {
                "cells": len(grid.cells),
                "ran": ran,
                "failed": len(failed),
                "seconds": time.perf_counter() - started,
            },
        )
    return GridSummary(
        results_dir=results_dir,
        cells=len(grid.cells),
        skipped=skipped + claims.done_meanwhile,
        skipped_failed=0 if retry_failed else plan.counts()[FAILED_STATE],
        finished=ran - len(failed),
        failed=failed,
        seconds=time.perf_counter() - started,
        running_elsewhere=len(claims.elsewhere),
        stale=plan.counts()[STALE],
        held_elsewhere=claims.elsewhere,
        parent_run_id=tracking.parent,
        reconciled=tracking.reconciled,
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
        """A bar for the cell (made as it starts), fed by its status hook."""
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
