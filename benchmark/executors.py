"""Where cells run: in this process, one after another, or in a pool of worker processes.

Executors only run ``run_cell`` and hand records back; the driver (``runner``)
writes every record and talks to MLflow, so workers never race on files or on
the tracking store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

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


# One task cache per worker process: the pool's initializer fills it, cells read it.
_worker_state: dict[str, object] = {}


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    _worker_state["cache"] = TaskCache()


def _run_in_worker(config: CellConfig, commit: str, weights_dir: Path) -> CellResult:
    cache = _worker_state.get("cache")
    assert isinstance(cache, TaskCache)
    return run_cell(config, commit, cache, weights_dir)


@dataclass(frozen=True)
class ProcessExecutor:
    """``jobs`` worker processes on this machine, each with its share of the cores' threads."""

    jobs: int
    weights_dir: Path

    def run(self, cells: list[CellConfig], commit: str, status: StatusFactory) -> Iterator[CellResult]:
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        with ProcessPoolExecutor(
            max_workers=self.jobs,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads,),
        ) as pool:
            running: set[Future[CellResult]] = {
                pool.submit(_run_in_worker, config, commit, self.weights_dir) for config in cells
            }
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
