"""Where cells run: in this process, one after another, or in a pool of worker processes.

Executors only run ``run_cell`` and hand records back; the driver (``runner``)
writes every record and talks to MLflow, so workers never race on files or on
the tracking store.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from benchmark.cell import TaskCache, run_cell
from benchmark.config import CellConfig
from benchmark.results import CellResult

StatusFactory = Callable[[CellConfig], Callable[[str, int], None]]


@dataclass(frozen=True)
class LocalExecutor:
    """Sequential, in this process; the task cache is shared by every cell."""

    cache: TaskCache
    weights_dir: Path

    def run(self, cells: list[CellConfig], commit: str, status: StatusFactory) -> Iterator[CellResult]:
        for config in cells:
            yield run_cell(config, commit, self.cache, self.weights_dir, status(config))


# Per worker process: a task cache and the queue that carries progress to the driver.
# The pool's initializer fills it once; cells only read it.
_worker_state: dict[str, Any] = {}


def _init_worker(threads: int, progress: Any) -> None:
    torch.set_num_threads(threads)
    _worker_state["cache"] = TaskCache()
    _worker_state["progress"] = progress


def _run_in_worker(config: CellConfig, commit: str, weights_dir: Path) -> CellResult:
    progress = _worker_state["progress"]
    digest = config.config_hash

    def on_status(message: str, advance: int) -> None:
        progress.put((digest, message, advance))

    return run_cell(config, commit, _worker_state["cache"], weights_dir, on_status)


@dataclass(frozen=True)
class ProcessExecutor:
    """``jobs`` worker processes on this machine, each with its share of the cores' threads."""

    jobs: int
    weights_dir: Path

    def run(self, cells: list[CellConfig], commit: str, status: StatusFactory) -> Iterator[CellResult]:
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        context = get_context("spawn")
        by_hash = {config.config_hash: config for config in cells}
        hooks: dict[str, Callable[[str, int], None]] = {}
        with context.Manager() as manager:
            progress = manager.Queue()
            with ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=context,
                initializer=_init_worker,
                initargs=(threads, progress),
            ) as pool:
                running: set[Future[CellResult]] = {
                    pool.submit(_run_in_worker, config, commit, self.weights_dir) for config in cells
                }
                while running:
                    done, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                    _forward_progress(progress, by_hash, hooks, status)
                    for future in done:
                        result = future.result()
                        hooks.pop(result.config_hash, None)
                        yield result


def _forward_progress(
    progress: Any,
    by_hash: dict[str, CellConfig],
    hooks: dict[str, Callable[[str, int], None]],
    status: StatusFactory,
) -> None:
    """Hand the workers' progress messages to the driver's per-cell hooks."""
    while True:
        try:
            digest, message, advance = progress.get_nowait()
        except queue.Empty:
            return
        if digest not in hooks:
            hooks[digest] = status(by_hash[digest])
        hooks[digest](message, advance)
