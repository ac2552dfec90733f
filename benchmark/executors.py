"""Where cells run: in this process, in a pool of worker processes, or as Ray tasks on a cluster.

Executors only run ``run_cell`` and hand records back; the driver (``runner``)
writes every record and talks to MLflow, so workers never race on files or on
the tracking store. An executor pulls cells from the iterable it is given only
when it has room to start one, so the runner can claim each cell just before
it starts (see ``results.claim_cell``).

Thread counts change float results (the order of reductions), so every executor
sets ``torch.set_num_threads`` for each cell from an explicit ``threads`` value
and records it in the cell's provenance: by default all cores in this process,
``cpu_count // jobs`` per worker process, and the cell's CPU request on Ray.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import torch

from benchmark.cell import run_cell
from benchmark.config import CellConfig
from benchmark.errors import UserError
from benchmark.learner import TaskCache
from benchmark.results import FAILED, CellResult

StatusFactory = Callable[[CellConfig], Callable[[str, int], None]]
RAY_INSTALL_HINT = "pip install core-tokenset-bench[ray]"


class Executor(Protocol):
    def run(self, cells: Iterable[CellConfig], commit: str, status: StatusFactory) -> Iterator[CellResult]:
        """Run the cells pulled from ``cells``; yield each one's result as it ends."""
        ...


@dataclass(frozen=True)
class ExecutorOptions:
    """What ``run --executor ... --jobs --threads --ray-address --cpus-per-cell --gpus-per-cell`` set."""

    weights_dir: Path
    jobs: int = 1
    threads: int | None = None  # None: the executor's default (module docstring)
    ray_address: str | None = None  # None: $RAY_ADDRESS, else a local Ray instance
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0


def with_threads(result: CellResult, threads: int) -> CellResult:
    return dataclasses.replace(result, provenance={**result.provenance, "threads": threads})


def run_with_threads(
    config: CellConfig,
    commit: str,
    cache: TaskCache,
    weights_dir: Path,
    threads: int,
    on_status: Callable[[str, int], None] | None = None,
) -> CellResult:
    """``run_cell`` at exactly ``threads`` intra-op threads (restored after), recorded in provenance."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = run_cell(config, commit, cache, weights_dir, on_status)
    finally:
        torch.set_num_threads(before)
    return with_threads(result, threads)


@dataclass(frozen=True)
class LocalExecutor:
    """Sequential, in this process; the task cache is shared by every cell."""

    cache: TaskCache
    weights_dir: Path
    threads: int

    def run(self, cells: Iterable[CellConfig], commit: str, status: StatusFactory) -> Iterator[CellResult]:
        for config in cells:
            yield run_with_threads(config, commit, self.cache, self.weights_dir, self.threads, status(config))


# Per worker process: a task cache and the queue that carries progress to the driver.
# The pool's initializer fills it once; cells only read it.
_worker_state: dict[str, Any] = {}


def _init_worker(progress: Any) -> None:
    _worker_state["cache"] = TaskCache()
    _worker_state["progress"] = progress


def _run_in_worker(config: CellConfig, commit: str, weights_dir: Path, threads: int) -> CellResult:
    progress = _worker_state["progress"]
    digest = config.config_hash

    def on_status(message: str, advance: int) -> None:
        progress.put((digest, message, advance))

    return run_with_threads(config, commit, _worker_state["cache"], weights_dir, threads, on_status)


@dataclass(frozen=True)
class ProcessExecutor:
    """``jobs`` worker processes on this machine, each with ``threads`` threads."""

    jobs: int
    weights_dir: Path
    threads: int

    def run(self, cells: Iterable[CellConfig], commit: str, status: StatusFactory) -> Iterator[CellResult]:
        context = get_context("spawn")
        by_hash: dict[str, CellConfig] = {}
        hooks: dict[str, Callable[[str, int], None]] = {}
        source = iter(cells)
        with context.Manager() as manager, exit_on_sigterm():
            progress = manager.Queue()
            with ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=context, initializer=_init_worker, initargs=(progress,)
            ) as pool:
                try:
                    running: set[Future[CellResult]] = set()
                    while True:
                        while len(running) < self.jobs and (config := next(source, None)) is not None:
                            by_hash[config.config_hash] = config
                            running.add(
                                pool.submit(_run_in_worker, config, commit, self.weights_dir, self.threads)
                            )
                        if not running:
                            return
                        done, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                        _forward_progress(progress, by_hash, hooks, status)
                        for future in done:
                            result = future.result()
                            hooks.pop(result.config_hash, None)
                            yield result
                except BaseException:  # SIGTERM, Ctrl-C, a closed generator: no worker outlives the run
                    stop_workers(pool)
                    raise


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """While a pool runs, SIGTERM ends the driver by SystemExit (exit status 143), so that its
    workers are stopped on the way out instead of left running as orphans (a default SIGTERM
    ends the driver at once). Only the main thread can set a handler; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued cells and terminate the pool's worker processes (their cells are lost:
    no record is written, their claims are taken over by the next run)."""
    pool.shutdown(wait=False, cancel_futures=True)
    for process in list((pool._processes or {}).values()):  # no public way before Python 3.14
        process.terminate()


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


# --- Ray ---------------------------------------------------------------------------------------------

_ray_worker_cache: dict[str, TaskCache] = {}  # one per Ray worker process, reused by its later cells


def _run_on_ray(config: CellConfig, commit: str, weights_dir: str, threads: int) -> CellResult:
    cache = _ray_worker_cache.setdefault("cache", TaskCache())
    return run_with_threads(config, commit, cache, Path(weights_dir), threads)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


@dataclass(frozen=True)
class RayExecutor:
    """Each cell a Ray task asking for ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs.

    Connects to ``address`` (``auto``, ``ray://host:10001``, ``host:6379``), else
    ``$RAY_ADDRESS``, else starts a local Ray instance for the run. A Ray session
    that this process already opened (``ray.init`` before the run) is used as it
    is and left open. Every node must have this suite installed and the weights
    files at the same path as the driver.
    """

    weights_dir: Path
    threads: int
    address: str | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0

    def run(self, cells: Iterable[CellConfig], commit: str, status: StatusFactory) -> Iterator[CellResult]:
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            self._connect(ray)
        try:
            remote = ray.remote(_run_on_ray).options(
                num_cpus=self.cpus_per_cell, num_gpus=self.gpus_per_cell, max_retries=1
            )
            limit = self._in_flight_limit(ray)
            source = iter(cells)
            running: dict[Any, CellConfig] = {}
            while True:
                while len(running) < limit and (config := next(source, None)) is not None:
                    ref = remote.remote(config, commit, str(self.weights_dir.resolve()), self.threads)
                    running[ref] = config
                if not running:
                    return
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    config = running.pop(ref)
                    yield self._result(ray, ref, config, commit)
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray: Any) -> None:
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        try:
            if address is None:
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as error:  # ConnectionError, ValueError, RuntimeError across Ray versions
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            where = f"Ray cluster at {address!r}" if address else "a local Ray instance"
            raise UserError(f"cannot start or reach {where}: {message}") from None

    def _in_flight_limit(self, ray: Any) -> int:
        """Cells submitted at once: as many as the cluster can run now (claimed just before they start)."""
        resources = ray.cluster_resources()
        limits = [int(resources.get("CPU", 1) // self.cpus_per_cell) if self.cpus_per_cell > 0 else 1]
        if self.gpus_per_cell > 0:
            gpus = resources.get("GPU", 0)
            if gpus < self.gpus_per_cell:
                raise UserError(
                    f"--gpus-per-cell {self.gpus_per_cell:g} but the Ray cluster has {gpus:g} GPUs"
                )
            limits.append(int(gpus // self.gpus_per_cell))
        return max(1, min(limits))

    def _result(self, ray: Any, ref: Any, config: CellConfig, commit: str) -> CellResult:
        """The task's record; a task Ray itself lost (worker or node died) becomes a failed record."""
        try:
            return ray.get(ref)
        except Exception as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return with_threads(
                CellResult(
                    config=config.to_dict(),
                    config_hash=config.config_hash,
                    status=FAILED,
                    error=f"Ray: {type(error).__name__}: {message}",
                    provenance={"commit": commit},
                ),
                self.threads,
            )


# --- Which executor: ``--executor NAME`` -----------------------------------------------------------------


def _cores() -> int:
    return os.cpu_count() or 1


def _make_local(options: ExecutorOptions, cache: TaskCache) -> Executor:
    if options.jobs <= 1:
        return LocalExecutor(cache, options.weights_dir, options.threads or _cores())
    threads = options.threads or max(1, _cores() // options.jobs)
    return ProcessExecutor(options.jobs, options.weights_dir, threads)


def _make_ray(options: ExecutorOptions, cache: TaskCache) -> Executor:
    import_ray()  # fail before any cell with the install hint
    return RayExecutor(
        weights_dir=options.weights_dir,
        threads=options.threads or max(1, int(options.cpus_per_cell)),
        address=options.ray_address,
        cpus_per_cell=options.cpus_per_cell,
        gpus_per_cell=options.gpus_per_cell,
    )


EXECUTORS: dict[str, Callable[[ExecutorOptions, TaskCache], Executor]] = {
    "local": _make_local,
    "ray": _make_ray,
}


def check_options(name: str, options: ExecutorOptions) -> None:
    """Refuse an unknown executor or impossible sizes with a one-line UserError (before any work)."""
    from benchmark.registry import unknown_name_message

    if name not in EXECUTORS:
        raise UserError(unknown_name_message("executor", name, sorted(EXECUTORS)))
    if options.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {options.jobs}")
    if options.threads is not None and options.threads < 1:
        raise UserError(f"--threads must be at least 1, got {options.threads}")
    if options.cpus_per_cell <= 0 or options.gpus_per_cell < 0:
        raise UserError(
            f"--cpus-per-cell must be positive and --gpus-per-cell non-negative, got "
            f"{options.cpus_per_cell:g} and {options.gpus_per_cell:g}"
        )
    if name != "ray" and (options.ray_address or options.gpus_per_cell or options.cpus_per_cell != 1.0):
        raise UserError("--ray-address, --cpus-per-cell and --gpus-per-cell are for --executor ray")
    if name == "ray" and options.jobs != 1:
        raise UserError("--jobs sizes the local process pool; with --executor ray use --cpus-per-cell")


def make_executor(name: str, options: ExecutorOptions, cache: TaskCache) -> Executor:
    check_options(name, options)
    return EXECUTORS[name](options, cache)
